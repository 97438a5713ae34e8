"""What a run may rewrite: the rules that keep the warehouse's history faithful.

A night that was published is what consumers read and what pipeline_runs describes. A rerun
of it, a run for a night that has not happened yet, or a past night scored by a model trained
on later data would each rewrite that history silently; each is refused here, before anything
is read, unless the run says so with a parameter (which run_attempts.conf then keeps).
"""

from __future__ import annotations

import datetime as dt
import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from psycopg import Connection, sql

from include.nightshift import warehouse
from include.nightshift.spec import DatasetSpec

RERUN_PARAM = "rerun_published"
LATER_MODEL_PARAM = "allow_later_model"


class RunRefused(ValueError):
    """A run that would rewrite history without being asked to: permanent, a retry changes nothing."""


def refuse_unknown_conf(conf: Mapping[str, Any] | None, known: Iterable[str]) -> None:
    """Refuse a run whose conf has a key no parameter of its DAG declares: Airflow accepts any key,
    and a typo ({"run_dat": ...}) would otherwise run another night than the one intended."""
    names = sorted(known)
    unknown = sorted(set(conf or {}) - set(names))
    if unknown:
        close = difflib.get_close_matches(unknown[0], names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise RunRefused(f"unknown run parameter {unknown[0]!r} in the run's conf{hint} (this DAG's parameters: "
                         f"{', '.join(names)}); nothing was read or written")


def refuse_future(day: dt.date, today: dt.date) -> dt.date:
    """`day` when it is not after `today` (UTC): a night that has not happened has no data, and its
    rows would hide every real night from the health page, which shows the newest nights."""
    if day > today:
        raise RunRefused(f"run_date {day} is in the future (today is {today} UTC): a night can only be "
                         "processed once it has happened")
    return day


def published_by(conn: Connection, spec: DatasetSpec, day: dt.date) -> tuple[str, int] | None:
    """(dag_run_id, rows) of the run that published night `day` (pipeline_runs), None when it was not."""
    if not warehouse.table_exists(conn, spec, warehouse.PIPELINE_RUNS):
        return None
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT dag_run_id, rows_published FROM {} WHERE logical_date = %s AND "
                            "rows_published > 0").format(warehouse.table(spec, warehouse.PIPELINE_RUNS)), (day,))
        row = cur.fetchone()
    return None if row is None else (row[0], int(row[1]))


def refuse_unasked_rerun(conn: Connection, spec: DatasetSpec, day: dt.date, dag_run_id: str, *,
                         params: dict[str, Any]) -> None:
    """Refuse a new run of a night another run already published, unless it sets rerun_published.

    A retry or a cleared task of the publishing run itself (same dag_run_id) and a dry run (which
    publishes nothing) pass. A rerun that is allowed replaces the night's predictions and its
    pipeline_runs row only if it publishes (warehouse.upsert_run); both runs stay in run_attempts.
    """
    if params.get(RERUN_PARAM) or params.get("dry_run"):
        return
    found = published_by(conn, spec, day)
    if found is not None and found[0] != dag_run_id:
        raise RunRefused(
            f"night {day} was already published by run {found[0]!r} ({found[1]} rows in "
            f"{spec.warehouse.schema}.{warehouse.PREDICTIONS}); trigger with {RERUN_PARAM}=true to process it "
            f"again (its predictions and pipeline_runs row are replaced only if the rerun publishes; both runs "
            f"are kept in {spec.warehouse.schema}.{warehouse.RUN_ATTEMPTS})")


def refuse_look_ahead(spec: DatasetSpec, version: int, trained_for: dt.date | None, day: dt.date, *,
                      allowed: bool) -> None:
    """Refuse scoring night `day` with a champion trained on a later night (it has seen labels the night
    could not know), unless the run sets allow_later_model."""
    if allowed or trained_for is None or trained_for <= day:
        return
    raise RunRefused(
        f"{spec.model_name} v{version}, the champion, was trained on the night of {trained_for}, after night "
        f"{day}: scoring {day} with it would use data from after that night (look-ahead); trigger with "
        f"{LATER_MODEL_PARAM}=true to score it anyway, or roll back to a version trained by then")
