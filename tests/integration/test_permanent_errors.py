"""A permanent error fails its task at once, named, on a real nightly DAG run (issue 11, items 11-12).

One night (run_nights.py: real `dag.test`, PostgreSQL, MLflow) on a source whose table does not
exist: the snapshot's query raises psycopg's UndefinedTable. The DAG gives every task two retries
with back-off; a missing table is permanent (include/nightshift/errors.py), so the base operator
(plugins/nightshift_airflow/base.py) fails the task on its first try, and record_run names it
first, with its message, in pipeline_runs, run_attempts and its own failure. Kept to one night on
an empty source: nothing is trained, the cost is Airflow's start and one short run.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import pytest

NIGHT = dt.date(2026, 4, 1)
MISSING = 'UndefinedTable: relation "public.churn_events" does not exist'
PLAN = {"rows": 100, "steps": [
    {"sql": "DROP TABLE public.churn_events"},
    {"run": {"day": NIGHT.isoformat(), "conf": {"note": "source table missing"}}},
]}


@pytest.fixture(scope="module")
def night(run_plan, tmp_path_factory):
    home = tmp_path_factory.mktemp("nightshift-permanent")
    runs, warehouse = run_plan(PLAN, home)
    return {"run": runs[0], "home": home, "warehouse": warehouse}


def _details(night, table: str) -> dict:
    with night["warehouse"].cursor() as cur:
        cur.execute(f"SELECT decision, details FROM churn.{table} WHERE logical_date = %s", (NIGHT,))
        rows = cur.fetchall()
    assert len(rows) == 1, rows
    assert rows[0][0] == "failed"
    return rows[0][1]


def test_a_missing_source_table_fails_the_snapshot_once_and_is_named_first(night):
    run = night["run"]
    assert run["state"] == "failed", run

    # Airflow's own account: one try, no earlier try kept in the history, failed (not up_for_retry)
    db = sqlite3.connect(Path(night["home"]) / "airflow" / "airflow.db")
    try:
        ti = db.execute("SELECT state, try_number, max_tries FROM task_instance WHERE run_id = ? AND "
                        "task_id = 'snapshot'", (run["run_id"],)).fetchone()
        earlier = db.execute("SELECT count(*) FROM task_instance_history WHERE run_id = ? AND task_id = 'snapshot'",
                             (run["run_id"],)).fetchone()[0]
    finally:
        db.close()
    assert ti == ("failed", 1, 2), ti  # two retries allowed, none used
    assert earlier == 0

    for table in ("pipeline_runs", "run_attempts"):
        details = _details(night, table)
        [root] = details["root_failure"]
        assert root["task"] == "snapshot" and root["try_number"] == 1 and root["permanent"] is True, root
        assert root["message"].startswith(MISSING) and "permanent (the table does not exist" in root["message"]
        assert "validate" in details["failed_tasks"]  # what could not run is still listed

    log = Path(run["log"]).read_text()
    assert f"run failed at snapshot: {MISSING}" in log  # record_run's own failure names the root first
    assert "could not run because of it: " in log
