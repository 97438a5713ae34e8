"""Which run's reports belong to each night: the per-night index behind Browse > Nightshift reports.

Reports are kept per DAG run (artifacts.run_folder: reports/<dataset>/<day>/<run>/), so a rerun
or a dry run of a night writes beside the run that published it. Which of those runs speaks for
the night is the warehouse's to say, not the folders': pipeline_runs holds the run that published
the night (or, for a night never published, its last failed run), run_attempts every run. The
record task writes this index from both, after its own row, as ``reports/<dataset>/nights.json``
in the artifact store: the reports app (plugins/nightshift_airflow/web.py) reads it from there
like every other report, with no connection to the warehouse.

A night's status: published (rows_published > 0), failed, no model, dry run only (no pipeline_runs
row, only dry runs), or the recorded decision. A run's status: published (the night's publisher),
replaced (it published, a later rerun published again), dry run, failed, no model, or its decision.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from psycopg import Connection, sql
from psycopg.rows import dict_row

from include.nightshift import warehouse
from include.nightshift.artifacts import REPORTS, RUN_INDEX, ArtifactStore, safe_name
from include.nightshift.spec import DatasetSpec

INDEX_NIGHTS = 366  # nights in the index (older nights' folders stay in the store, listed by the app)
COLUMNS = ("dag_run_id", "logical_date", "decision", "rows_published", "note", "finished_at")
STATUS = {"failed": "failed", "no_model": "no model"}


def run_status(run: dict[str, Any], publisher: str | None) -> str:
    """What one run did for its night (see the module's docstring)."""
    if run.get("dry_run"):
        return "dry run"
    if run.get("rows_published"):
        return "published" if run["dag_run_id"] == publisher else "replaced"
    return STATUS.get(run.get("decision"), run.get("decision") or "unknown")


def night_status(night: dict[str, Any] | None, runs: list[dict[str, Any]]) -> str:
    """What the night came to: from its pipeline_runs row, else from its runs (all dry runs, or unrecorded)."""
    if night is None:
        return "dry run only" if runs and all(r.get("dry_run") for r in runs) else "not recorded"
    if night.get("rows_published"):
        return "published"
    return STATUS.get(night.get("decision"), night.get("decision") or "unknown")


def _entry(run: dict[str, Any], publisher: str | None) -> dict[str, Any]:
    return {"run": run["dag_run_id"], "folder": safe_name(run["dag_run_id"]), "status": run_status(run, publisher),
            "decision": run.get("decision"), "dry_run": bool(run.get("dry_run")), "note": run.get("note"),
            "rows_published": int(run.get("rows_published") or 0), "finished_at": _iso(run.get("finished_at"))}


def build_index(nights: list[dict[str, Any]], attempts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each night, newest first: its status, the run that speaks for it (pipeline_runs' run: the
    publisher) and its other runs, newest first. `nights`: pipeline_runs rows; `attempts`: run_attempts rows."""
    by_night: dict[str, dict[str, Any]] = {_iso(n["logical_date"]): n for n in nights}
    runs: dict[str, list[dict[str, Any]]] = {}
    for attempt in attempts:
        runs.setdefault(_iso(attempt["logical_date"]), []).append(attempt)
    return [_night(day, by_night.get(day), runs.get(day, [])) for day in sorted(set(by_night) | set(runs), reverse=True)]


def _night(day: str, night: dict[str, Any] | None, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One night of the index: `night` its pipeline_runs row (None: none), `runs` its run_attempts rows."""
    publisher = (night or {}).get("dag_run_id")
    others = sorted((r for r in runs if r["dag_run_id"] != publisher),
                    key=lambda r: _iso(r.get("finished_at")) or "", reverse=True)
    return {"night": day, "status": night_status(night, runs),
            "run": _entry({**night, "dry_run": False}, publisher) if publisher else None,
            "runs": [_entry(r, publisher) for r in others]}


def read_index(conn: Connection, spec: DatasetSpec, nights: int = INDEX_NIGHTS) -> list[dict[str, Any]]:
    """build_index over the `nights` newest nights of pipeline_runs and run_attempts ([] before the first)."""
    return build_index(_rows(conn, spec, warehouse.PIPELINE_RUNS, COLUMNS, nights),
                       _rows(conn, spec, warehouse.RUN_ATTEMPTS, (*COLUMNS, "dry_run"), nights))


def _rows(conn: Connection, spec: DatasetSpec, name: str, columns: tuple[str, ...], nights: int) -> list[dict]:
    """`columns` of the table's rows of its `nights` newest nights; [] when there is no table yet."""
    if not warehouse.table_exists(conn, spec, name):
        return []
    target = warehouse.table(spec, name)
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql.SQL("SELECT {} FROM {} WHERE logical_date > (SELECT max(logical_date) FROM {}) "
                            "- %s::integer ORDER BY logical_date").format(sql.SQL(", ").join(map(sql.Identifier, columns)),
                                                            target, target), (nights,))
        return cur.fetchall()


def write_index(conn: Connection, store: ArtifactStore, spec: DatasetSpec) -> str:
    """Regenerate reports/<dataset>/nights.json from the warehouse; its address."""
    url = store.url(REPORTS, spec.name, RUN_INDEX)
    text = json.dumps({"dataset": spec.name, "written_at": dt.datetime.now(dt.timezone.utc).isoformat(),
                       "nights": read_index(conn, spec)}, indent=1)
    return store.put_text(text, url)


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, dt.date | dt.datetime) else value
