"""The run's note: which night a Nightshift run processed, and its conf, where the UI shows runs.

Airflow's grid, run header and runs list show a run's logical date or trigger time, not the
night a `run_date` param chose, and they hide its conf. The run's note is what they do show, so
each Nightshift run gets one: ``night 2026-02-12 · conf {"force_retrain": true}``.

A task cannot write its DAG run's note in Airflow 3 (the Execution API has no such call, and task
code may not use the metadata DB), so the note is written where Airflow itself starts the run:
a listener (``on_dag_run_running``, called by the scheduler when a queued run starts, in the
scheduler's own session). The demo's in-process runs (``dag.test``) never pass there; its night
runner writes the same note with ``note_for`` (scripts/local_stack.py). A note typed in the
trigger form is kept: the line is added below it, once.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Mapping
from typing import Any

from airflow.listeners import hookimpl

log = logging.getLogger(__name__)

PREFIX = "nightshift_"  # spec.dag_id of every nightly DAG, and its rollback DAG's prefix
MAX_NOTE = 1000  # dag_run_note.content is String(1000)


def night_of(conf: Mapping[str, Any] | None, data_interval_start: dt.datetime | None,
             logical_date: dt.datetime | None, run_after: dt.datetime | None) -> dt.date | None:
    """The night a run processes, by the tasks' rule (runtime.run_date): its run_date param, else the
    data interval's start, else the logical date, else the day before run_after; None for a run_date
    that is not a date (the first task refuses it and says why)."""
    if (conf or {}).get("run_date"):
        try:
            return dt.date.fromisoformat(str(conf["run_date"]))
        except ValueError:
            return None
    for moment in (data_interval_start, logical_date):
        if moment is not None:
            return moment.date()
    return run_after.date() - dt.timedelta(days=1) if run_after is not None else None


def note_line(dag_id: str, conf: Mapping[str, Any] | None, night: dt.date | None,
              defaults: Mapping[str, Any] | None = None) -> str:
    """``night YYYY-MM-DD · conf {...}`` for a nightly DAG (``conf {...}`` alone for a rollback). The conf
    shows what differs from the DAG's defaults (the form sends every param), else every value set."""
    if defaults is not None:
        given = {k: v for k, v in (conf or {}).items() if k not in defaults or defaults[k] != v}
    else:
        given = {k: v for k, v in (conf or {}).items() if v not in (None, False, "")}
    shown = f"conf {json.dumps(given, default=str, separators=(', ', ': '))}" if given else "conf {} (defaults)"
    is_rollback = dag_id.endswith("_rollback")
    head = "" if is_rollback else f"night {night.isoformat() if night else '?'} · "
    return head + shown


def merged(existing: str | None, line: str) -> str:
    """The note with `line` added below what a person wrote (once; a cleared run keeps one line)."""
    existing = (existing or "").strip()
    if line in existing:
        return existing[:MAX_NOTE]
    text = f"{existing}\n\n{line}" if existing else line
    return text if len(text) <= MAX_NOTE else text[:MAX_NOTE - 1] + "…"


def note_for(dag_run: Any, defaults: Mapping[str, Any] | None = None) -> str:
    """The note a DagRun (the metadata DB's model) should carry."""
    night = night_of(dag_run.conf, dag_run.data_interval_start, dag_run.logical_date, dag_run.run_after)
    return merged(dag_run.note, note_line(dag_run.dag_id, dag_run.conf, night, defaults))


def _defaults(dag_run: Any) -> dict[str, Any] | None:
    """The DAG's param defaults, when the scheduler attached the DAG to the run (else None)."""
    try:
        params = dag_run.dag.params
        return {name: params[name] for name in params}
    except Exception:  # noqa: BLE001 - without defaults the note shows every value set
        return None


@hookimpl
def on_dag_run_running(dag_run: Any, msg: str) -> None:
    """Write the note when the scheduler starts a Nightshift run (the scheduler commits it)."""
    if not str(dag_run.dag_id).startswith(PREFIX):
        return
    try:
        dag_run.note = note_for(dag_run, _defaults(dag_run))
    except Exception:  # noqa: BLE001 - a note must never stop a run from starting
        log.exception("could not write the run note of %s %s", dag_run.dag_id, dag_run.run_id)
