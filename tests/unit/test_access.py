"""Who may do what in the warehouse, with the deployed stack's own setup SQL on a real PostgreSQL.

docker/postgres-init.sql (what the postgres container runs on first start) is run with psql
against a server of its own; then the pipeline's role writes everything it writes at night,
and the consumers' role is shown to read it all and to change nothing, even after switching
its session back to read-write.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import subprocess
from pathlib import Path

import pandas as pd
import psycopg2
import pytest
from psycopg2 import errors

from include.nightshift import audit, warehouse

ROOT = Path(__file__).resolve().parents[2]
DAY = dt.date(2026, 3, 1)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import pgserver
    from pgserver._commands import POSTGRES_BIN_PATH

    folder = tmp_path_factory.mktemp("pg_access")
    srv = pgserver.get_server(folder, cleanup_mode="stop")
    env = {**os.environ, **{k: secrets.token_urlsafe(16) for k in (
        "AIRFLOW_DB_PASSWORD", "MLFLOW_DB_PASSWORD", "NIGHTSHIFT_DB_PASSWORD", "NIGHTSHIFT_READER_PASSWORD")}}
    subprocess.run([str(POSTGRES_BIN_PATH / "psql"), srv.get_uri(), "-q", "-v", "ON_ERROR_STOP=1",
                    "-f", str(ROOT / "docker" / "postgres-init.sql")], env=env, check=True, capture_output=True)
    yield srv.get_uri()
    srv.cleanup()


def _connect(uri: str, user: str, dbname: str = "warehouse"):
    return psycopg2.connect(uri, user=user, dbname=dbname)


@pytest.fixture(scope="module")
def published(server, tmp_path_factory):
    """Everything the pipeline writes, written as the pipeline's role."""
    from include.nightshift.spec import load_spec

    churn_spec = load_spec(ROOT / "include" / "specs" / "churn.yaml")
    conn = _connect(server, "nightshift")
    warehouse.ensure_warehouse(conn, churn_spec)
    audit.ensure_audit(conn, churn_spec)
    path = tmp_path_factory.mktemp("pred") / "p.parquet"
    pd.DataFrame({"customer_id": [1, 2, 3], "score": [0.1, 0.5, 0.9], "predicted_label": [0, 1, 1],
                  "model_name": "m", "model_version": 1, "snapshot_sha256": "abc", "dag_run_id": "r",
                  "scored_at": pd.Timestamp("2026-03-02", tz="UTC")}).to_parquet(path)
    assert warehouse.replace_partition(conn, churn_spec, DAY, path) == 3
    warehouse.upsert_run(conn, churn_spec, {"logical_date": DAY, "dag_run_id": "r", "decision": "skipped"})
    audit.record_change(conn, churn_spec, {"event": "promote", "model_name": "m", "to_version": 1,
                                           "actor": "nightshift", "reason": "gate passed", "dag_run_id": "r"})
    yield conn
    conn.close()


RELATIONS = ("predictions", "predictions_latest", "pipeline_runs", "champion_changes")

WRITES = {
    "insert": "INSERT INTO churn.pipeline_runs (logical_date, decision) VALUES ('2026-01-01', 'skipped')",
    "update": "UPDATE churn.predictions SET score = 0",
    "delete": "DELETE FROM churn.predictions",
    "truncate": "TRUNCATE churn.champion_changes",
    "drop": "DROP TABLE churn.predictions",
    "create": "CREATE TABLE churn.mine (x int)",
    "create in public": "CREATE TABLE public.mine (x int)",
    "alter": "ALTER TABLE churn.predictions ADD COLUMN x int",
    "drop view": "DROP VIEW churn.predictions_latest",
    "drop schema": "DROP SCHEMA churn CASCADE",
}


@pytest.mark.parametrize("relation", RELATIONS)
def test_reader_reads_everything_the_pipeline_writes(server, published, relation):
    with _connect(server, "nightshift_reader") as conn, conn.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM churn.{relation}")
        assert cur.fetchone()[0] >= 1
    conn.close()


@pytest.mark.parametrize("write", list(WRITES))
def test_reader_cannot_write_even_in_a_read_write_session(server, published, write):
    conn = _connect(server, "nightshift_reader")
    with conn.cursor() as cur, pytest.raises(errors.ReadOnlySqlTransaction):
        cur.execute(WRITES[write])  # first line of defence: the role's sessions are read-only
    conn.rollback()
    conn.autocommit = True  # each statement its own transaction, started after the switch
    with conn.cursor() as cur:
        cur.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE")
        with pytest.raises(errors.InsufficientPrivilege):
            cur.execute(WRITES[write])  # second: no grant to write, whatever the session says
    conn.close()
    with _connect(server, "nightshift") as check, check.cursor() as cur:
        cur.execute("SELECT count(*) FROM churn.predictions")
        assert cur.fetchone()[0] == 3  # and nothing changed


@pytest.mark.parametrize("dbname", ["source", "airflow", "mlflow"])
def test_reader_may_connect_to_the_warehouse_only(server, dbname):
    with pytest.raises(psycopg2.OperationalError, match="permission denied"):
        _connect(server, "nightshift_reader", dbname)


def test_pipeline_role_is_not_a_superuser(server, published):
    with published.cursor() as cur, pytest.raises(errors.InsufficientPrivilege):
        cur.execute("CREATE ROLE intruder")
    published.rollback()
