"""Run records the warehouse could not take: kept in the artifact store, written once it is back,
on a real PostgreSQL (pending_records.py)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import psycopg
import pytest

from include.nightshift import warehouse as wh
from include.nightshift.artifacts import ArtifactStore
from include.nightshift.pending_records import (keep_pending, pending_records, pending_url, unreachable_message,
                                                write_pending)
from include.nightshift.run_record import RunRecord

NIGHT = dt.date(2026, 3, 1)
T0 = dt.datetime(2026, 3, 2, 1, 0, tzinfo=dt.timezone.utc)


def record(run_id: str, started: dt.datetime, decision: str = "failed", night: dt.date = NIGHT, **changes) -> RunRecord:
    base = RunRecord(logical_date=night, dag_run_id=run_id, rows_in=1000, validation_passed=None, drift_share=None,
                     retrain_reason=None, decision=decision, champion_version=None, challenger_version=None,
                     champion_metric=None, challenger_metric=None, metric_name="roc_auc", rows_published=0,
                     started_at=started, finished_at=started + dt.timedelta(minutes=5), note="n",
                     details={"failed_tasks": ["drift", "validate"],
                              "task_states": {"validate": "failed", "drift": "upstream_failed"}},
                     conf={"note": "n", "dry_run": False})
    return dataclasses.replace(base, **changes)


def rows(conn: psycopg.Connection, spec, table: str, key: str) -> list[tuple]:
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(f'SELECT {key}, dag_run_id, decision FROM "{spec.warehouse.schema}"."{table}" ORDER BY 1, 2')
        return cur.fetchall()


@pytest.fixture
def store(tmp_path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "artifacts")


@pytest.fixture
def conn(pg_conn, churn_spec):
    wh.ensure_warehouse(pg_conn, churn_spec)
    return pg_conn


def test_a_kept_record_round_trips_and_names_the_connection(store, churn_spec):
    kept = record("scheduled__2026-03-01T00:00:00+00:00", T0)
    url = keep_pending(store, churn_spec, kept)
    assert url == pending_url(store, churn_spec, kept.dag_run_id) and url.endswith(".json") and "+" not in url
    assert pending_records(store, churn_spec) == [(url, kept)]
    message = unreachable_message(churn_spec, kept, url, RuntimeError("connection refused"))
    assert "'nightshift_warehouse'" in message and url in message and "connection refused" in message
    assert "next run" in message and "decision failed; failed: validate; could not run: drift" in message


def test_pending_records_are_written_once_and_their_files_removed(conn, store, churn_spec):
    first, second = record("a", T0), record("b", T0 + dt.timedelta(days=1), "promoted", NIGHT + dt.timedelta(days=1))
    keep_pending(store, churn_spec, second)
    keep_pending(store, churn_spec, first)
    assert write_pending(conn, store, churn_spec) == ["a", "b"]  # oldest run first
    assert pending_records(store, churn_spec) == []
    assert store.list(store.url("pending_records", churn_spec.name)) == []
    keep_pending(store, churn_spec, first)  # the same record again (a crash before the delete): no duplicate
    assert write_pending(conn, store, churn_spec) == ["a"]
    expected = [(NIGHT, "a", "failed"), (NIGHT + dt.timedelta(days=1), "b", "promoted")]
    assert rows(conn, churn_spec, "run_attempts", "logical_date") == expected
    assert rows(conn, churn_spec, "pipeline_runs", "logical_date") == expected


def test_a_later_run_of_the_night_keeps_its_pipeline_runs_row(conn, store, churn_spec):
    """pipeline_runs holds the latest non-dry run of a night: an older pending record goes to run_attempts only."""
    later = record("rerun", T0 + dt.timedelta(hours=3), "skipped")
    wh.record_attempt(conn, churn_spec, later.attempt_row())
    wh.upsert_run(conn, churn_spec, later.row())
    keep_pending(store, churn_spec, record("first", T0))
    write_pending(conn, store, churn_spec)
    assert rows(conn, churn_spec, "pipeline_runs", "logical_date") == [(NIGHT, "rerun", "skipped")]
    assert rows(conn, churn_spec, "run_attempts", "logical_date") == [(NIGHT, "first", "failed"),
                                                                      (NIGHT, "rerun", "skipped")]


def test_a_pending_record_of_a_later_run_replaces_an_earlier_row(conn, store, churn_spec):
    earlier = record("first", T0, "skipped")
    wh.upsert_run(conn, churn_spec, earlier.row())
    keep_pending(store, churn_spec, record("rerun", T0 + dt.timedelta(hours=3)))
    keep_pending(store, churn_spec, record("dry", T0 + dt.timedelta(hours=4), "rejected", dry_run=True))
    assert write_pending(conn, store, churn_spec) == ["rerun", "dry"]
    assert rows(conn, churn_spec, "pipeline_runs", "logical_date") == [(NIGHT, "rerun", "failed")]  # not the dry run
    assert rows(conn, churn_spec, "run_attempts", "logical_date") == [(NIGHT, "dry", "rejected"),
                                                                      (NIGHT, "rerun", "failed")]


def test_a_write_that_fails_keeps_the_file_and_writes_nothing(conn, store, churn_spec, pg_uri):
    url = keep_pending(store, churn_spec, record("a", T0))
    killer = psycopg.connect(pg_uri, autocommit=True)
    with killer.cursor() as cur:  # the server ends the pipeline's session, as a restart or a network cut would
        cur.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
    killer.close()
    with pytest.raises(psycopg.OperationalError):
        write_pending(conn, store, churn_spec)
    assert [u for u, _ in pending_records(store, churn_spec)] == [url]
    with psycopg.connect(pg_uri) as fresh:
        assert rows(fresh, churn_spec, "run_attempts", "logical_date") == []
        assert write_pending(fresh, store, churn_spec) == ["a"]  # the warehouse back: written, file gone
        assert rows(fresh, churn_spec, "pipeline_runs", "logical_date") == [(NIGHT, "a", "failed")]
    assert pending_records(store, churn_spec) == []
