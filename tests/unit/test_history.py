"""What a run may rewrite (include/nightshift/history.py, warehouse.upsert_run): on a real PostgreSQL.

A published night is not rerun unless asked, a failed rerun does not replace the row of the run
that published, a night in the future is refused, and a past night is not scored by a model
trained on later nights unless asked.
"""

from __future__ import annotations

import datetime as dt

import pytest

from include.nightshift import warehouse
from include.nightshift.history import (RunRefused, published_by, refuse_future, refuse_look_ahead,
                                        refuse_unasked_rerun, refuse_unknown_conf)

DAY = dt.date(2026, 3, 1)


def _run(run_id: str, rows: int, decision: str, note: str) -> dict:
    return {"logical_date": DAY, "dag_run_id": run_id, "rows_published": rows, "decision": decision, "note": note,
            "metric_name": "roc_auc", "finished_at": dt.datetime(2026, 3, 2, tzinfo=dt.UTC)}


def _row(conn, spec) -> tuple:
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(f'SELECT dag_run_id, rows_published, decision, note FROM "{spec.warehouse.schema}".pipeline_runs')
        return cur.fetchall()


def test_an_unknown_conf_key_is_refused_naming_it_and_the_closest_parameter():
    known = ["dry_run", "force_retrain", "note", "run_date"]
    refuse_unknown_conf({"run_date": "2026-03-01", "note": "x"}, known)
    refuse_unknown_conf(None, known)  # a scheduled run has no conf
    with pytest.raises(RunRefused, match=r"unknown run parameter 'run_dat' in the run's conf; did you mean "
                                         r"'run_date'\? \(this DAG's parameters: dry_run, force_retrain, note, run_date\)"):
        refuse_unknown_conf({"run_dat": "2026-03-01"}, known)
    with pytest.raises(RunRefused, match=r"unknown run parameter 'typo_param' in the run's conf \(this DAG"):
        refuse_unknown_conf({"typo_param": 1}, known)


def test_a_future_night_is_refused_naming_the_date():
    today = dt.date(2026, 11, 30)
    assert refuse_future(today, today) == today
    with pytest.raises(RunRefused, match=r"run_date 2026-12-01 is in the future \(today is 2026-11-30 UTC\)"):
        refuse_future(dt.date(2026, 12, 1), today)


def test_a_model_trained_on_a_later_night_is_refused_unless_allowed(churn_spec):
    refuse_look_ahead(churn_spec, 4, DAY, DAY, allowed=False)  # trained tonight: what a night promotes
    refuse_look_ahead(churn_spec, 4, None, DAY, allowed=False)  # no training night on record: nothing to judge
    refuse_look_ahead(churn_spec, 4, DAY + dt.timedelta(days=3), DAY, allowed=True)
    with pytest.raises(RunRefused, match=r"v4, the champion, was trained on the night of 2026-03-04, after night "
                                         r"2026-03-01: .* allow_later_model=true"):
        refuse_look_ahead(churn_spec, 4, DAY + dt.timedelta(days=3), DAY, allowed=False)


def test_a_published_night_is_rerun_only_when_asked(pg_conn, churn_spec):
    refuse_unasked_rerun(pg_conn, churn_spec, DAY, "r2", params={})  # no warehouse yet: nothing published
    warehouse.ensure_warehouse(pg_conn, churn_spec)
    warehouse.upsert_run(pg_conn, churn_spec, _run("r1", 0, "failed", "failed night"))
    refuse_unasked_rerun(pg_conn, churn_spec, DAY, "r2", params={})  # a failed night may be run again
    warehouse.upsert_run(pg_conn, churn_spec, _run("r1", 300, "promoted", "published"))
    assert published_by(pg_conn, churn_spec, DAY) == ("r1", 300)

    with pytest.raises(RunRefused, match=r"night 2026-03-01 was already published by run 'r1' \(300 rows in "
                                         r"churn.predictions\); trigger with rerun_published=true"):
        refuse_unasked_rerun(pg_conn, churn_spec, DAY, "r2", params={"rerun_published": False})
    refuse_unasked_rerun(pg_conn, churn_spec, DAY, "r1", params={})  # a retry of the run that published
    refuse_unasked_rerun(pg_conn, churn_spec, DAY, "r2", params={"rerun_published": True})
    refuse_unasked_rerun(pg_conn, churn_spec, DAY, "r2", params={"dry_run": True})  # publishes nothing


def test_a_rerun_that_publishes_nothing_keeps_the_row_of_the_run_that_published(pg_conn, churn_spec):
    warehouse.ensure_warehouse(pg_conn, churn_spec)
    assert warehouse.upsert_run(pg_conn, churn_spec, _run("r1", 300, "promoted", "first"))
    assert not warehouse.upsert_run(pg_conn, churn_spec, _run("r2", 0, "failed", "failed rerun"))
    assert _row(pg_conn, churn_spec) == [("r1", 300, "promoted", "first")]
    assert warehouse.upsert_run(pg_conn, churn_spec, _run("r1", 0, "failed", "its own retry"))  # same run: its row
    assert warehouse.upsert_run(pg_conn, churn_spec, _run("r3", 280, "skipped", "published rerun"))
    assert _row(pg_conn, churn_spec) == [("r3", 280, "skipped", "published rerun")]
