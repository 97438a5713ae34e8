"""Fault: PostgreSQL is restarted (immediate: every backend killed) while a nightly run is publishing.

A PostgreSQL server of this module's own (the session's server is never touched) holds the
source and the warehouse. Night 1 runs cold; night 2 runs with the test holding a SHARE lock
on churn.predictions, as a long reader or a maintenance job might, so that night 2's publish
is caught for certain inside its transaction: advisory lock taken, DELETE waiting. When
pg_stat_activity shows that, the server is restarted with `pg_ctl restart -m immediate`.
The publish fails with the connection, Airflow retries it (NIGHTSHIFT_RETRY_DELAY_SECONDS=1),
and the run must end with the night published once and its history consistent.
"""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest

from faultkit import (ROWS, Nights, OwnPostgres, cold_start, database_uri, history, next_night, partition, query,
                      wait_for)

pytestmark = pytest.mark.integration

N1, N2 = dt.date(2026, 3, 1), dt.date(2026, 3, 2)


def publish_waiting_on_lock(warehouse_uri: str) -> bool:
    """True once a pipeline backend is inside the night's DELETE, blocked by the test's lock."""
    rows = query(warehouse_uri, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'nightshift' "
                                "AND wait_event_type = 'Lock' AND query LIKE 'DELETE FROM \"churn\".\"predictions\"%%'")
    return rows[0][0] == 1


@pytest.fixture(scope="module")
def restarted(tmp_path_factory):
    root = tmp_path_factory.mktemp("pg_restart")
    pg = OwnPostgres(root / "pg")
    warehouse = database_uri(pg.uri, "warehouse")
    nights = Nights(root / "home", pg.uri, [
        *cold_start(N1),
        *next_night(N2),
        {"run": {"day": N2.isoformat(), "conf": {"note": "postgres restarted mid-publish"}}},
    ])
    try:
        first = nights.next_run()
        assert first["state"] == "success", nights.tail()
        locker = psycopg.connect(warehouse)
        with locker.cursor() as cur:  # a transaction left open: the lock holds until the restart kills it
            cur.execute("LOCK TABLE churn.predictions IN SHARE MODE")
        wait_for("night 2's publish to block inside its transaction", lambda: publish_waiting_on_lock(warehouse))
        pg.restart("immediate")
        locker.close()
        second = nights.next_run()
        nights.finish()
        yield {"nights": nights, "warehouse": warehouse, "first": first, "second": second}
    finally:
        nights.stop()
        pg.stop()


def test_the_run_succeeds_through_a_retry_of_publish(restarted):
    nights, second = restarted["nights"], restarted["second"]
    assert second["state"] == "success", nights.log(N2)[-3000:]
    state, tries = nights.task(N2, "publish")
    # the first try died with the server; a loaded machine may need one more try while it comes back up
    assert state == "success" and tries in (2, 3), (state, tries)
    assert "server closed the connection unexpectedly" in nights.log(N2)


def test_each_night_is_published_exactly_once_by_its_own_run(restarted):
    first, second, warehouse = restarted["first"], restarted["second"], restarted["warehouse"]
    assert partition(warehouse, N1) == (ROWS, ROWS, [first["run_id"]], [first["champion"]])
    assert partition(warehouse, N2) == (ROWS, ROWS, [second["run_id"]], [second["champion"]])


def test_run_history_has_one_consistent_row_per_night(restarted):
    runs = history(restarted["warehouse"])
    assert sorted(runs) == [N1.isoformat(), N2.isoformat()]
    night2 = runs[N2.isoformat()]
    assert night2["run_id"] == restarted["second"]["run_id"]
    assert night2["published"] == ROWS and night2["details"]["failed_tasks"] == []
    assert night2["decision"] == "skipped" and night2["note"] == "postgres restarted mid-publish"
