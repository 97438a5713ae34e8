"""Fault: the warehouse cannot be reached for a whole night, then comes back.

A PostgreSQL server of this module's own holds the source and the warehouse. Night 1 runs with the
warehouse connection (AIRFLOW_CONN_NIGHTSHIFT_WAREHOUSE, for that run only) pointed at a loopback
port nothing listens on, as a warehouse host that is down would be; the source is reachable. The
run must fail, the first task that reads the warehouse (validate for the row-count norm, or snapshot
checking the night's history) naming the connection, record_run naming it too and keeping the night's
record in the artifact store, and nothing may reach the warehouse.
Night 2 runs with the warehouse back (a cold start: night 1 trained nothing): its record_run writes
night 1's kept record first, then its own, and the kept file is gone.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest

from faultkit import (HISTORY_DAYS, ROWS, Nights, OwnPostgres, d, database_uri, free_port, history, next_night,
                      partition, query)

pytestmark = pytest.mark.integration

N1, N2 = dt.date(2026, 3, 1), dt.date(2026, 3, 2)
CONN_ID = "nightshift_warehouse"
CLOSED_PORT = free_port()  # nothing listens there: connecting is refused at once
DOWN = {f"AIRFLOW_CONN_{CONN_ID.upper()}": json.dumps(
    {"conn_type": "postgres", "host": "127.0.0.1", "port": CLOSED_PORT, "login": "postgres", "schema": "warehouse"})}


def written(warehouse_uri: str) -> dict[str, int]:
    """Rows of each table the pipeline writes (0 for a table not created yet)."""
    counts = {}
    for name in ("predictions", "pipeline_runs", "run_attempts"):
        exists = query(warehouse_uri, "SELECT to_regclass(%s) IS NOT NULL", (f"churn.{name}",))[0][0]
        counts[name] = query(warehouse_uri, f"SELECT count(*) FROM churn.{name}")[0][0] if exists else 0
    return counts


@pytest.fixture(scope="module")
def outage(tmp_path_factory):
    root = tmp_path_factory.mktemp("warehouse_down")
    pg = OwnPostgres(root / "pg")
    warehouse = database_uri(pg.uri, "warehouse")
    pending = root / "home" / "artifacts" / "pending_records" / "churn"
    nights = Nights(root / "home", pg.uri, [
        {"load_days": {"from": d(N1, -HISTORY_DAYS), "to": d(N1, -1), "labels": True}},
        {"load_days": {"from": d(N1), "to": d(N1)}},
        {"run": {"day": d(N1), "conf": {"note": "warehouse down"}, "env": DOWN}},
        *next_night(N2),
        {"run": {"day": d(N2), "conf": {"promotion_policy": "force", "note": "warehouse back"}}},
    ])
    try:
        first = nights.next_run()
        # night 2 writes its first warehouse row seconds from now and its record minutes from now
        kept = sorted(p.name for p in pending.glob("*")) if pending.exists() else []
        after_first = written(warehouse)
        second = nights.next_run()
        nights.finish()
        yield {"nights": nights, "warehouse": warehouse, "first": first, "second": second, "kept": kept,
               "after_first": after_first, "pending": pending}
    finally:
        nights.stop()
        pg.stop()


def test_the_night_fails_naming_the_warehouse_connection(outage):
    """The first task that reads the warehouse fails naming the connection: validate (the row-count
    norm), or snapshot when it checks the night's history first; record_run names it too."""
    nights, first = outage["nights"], outage["first"]
    assert first["state"] == "failed", nights.log(N1)[-3000:]
    reader = [t for t in ("snapshot", "validate") if nights.task(N1, t)[0] == "failed"]
    assert len(reader) == 1 and nights.task(N1, "record_run")[0] == "failed", reader
    log = nights.log(N1)
    assert f"ConnectionFailed: connection '{CONN_ID}' (127.0.0.1:{CLOSED_PORT}/warehouse) failed" in log
    recorded = log[log.index("AirflowFailException: the run record could not be written"):].splitlines()[0]
    assert recorded.startswith(f"AirflowFailException: the run record could not be written: the warehouse "
                               f"(Airflow connection '{CONN_ID}') is unreachable (connection '{CONN_ID}'")
    assert f"decision failed; failed: {reader[0]}; could not run: " in recorded
    assert "will be written to churn.run_attempts and churn.pipeline_runs by the next run" in recorded


def test_nothing_reaches_the_warehouse_and_the_record_is_kept(outage):
    assert outage["after_first"] == {"predictions": 0, "pipeline_runs": 0, "run_attempts": 0}
    run_id = outage["first"]["run_id"]
    assert len(outage["kept"]) == 1 and outage["kept"][0].endswith(".json"), outage["kept"]
    assert run_id.replace(":", "_").replace("+", "_") + ".json" == outage["kept"][0]


def test_the_next_night_records_both_nights_and_removes_the_kept_record(outage):
    first, second, warehouse = outage["first"], outage["second"], outage["warehouse"]
    assert second["state"] == "success", outage["nights"].log(N2)[-3000:]
    runs = history(warehouse)
    assert {day: (r["run_id"], r["decision"], r["note"]) for day, r in runs.items()} == {
        d(N1): (first["run_id"], "failed", "warehouse down"), d(N2): (second["run_id"], "promoted", "warehouse back")}
    assert "validate" in runs[d(N1)]["details"]["failed_tasks"]
    attempts = query(warehouse, "SELECT logical_date, dag_run_id, decision, 'validate' = ANY(failed_tasks) "
                                "FROM churn.run_attempts ORDER BY logical_date")
    assert attempts == [(N1, first["run_id"], "failed", True), (N2, second["run_id"], "promoted", False)]
    assert partition(warehouse, N1)[0] == 0 and partition(warehouse, N2)[:2] == (ROWS, ROWS)
    assert list(outage["pending"].iterdir()) == []
