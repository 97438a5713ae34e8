"""Shared fixtures: a real PostgreSQL server for the whole session, a fresh database per test.

The server is the embedded one the demo uses (pgserver), unless NIGHTSHIFT_TEST_PG_URI
points at a real server (a superuser URI; each test gets its own database there too).
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
# MLflow 3.17 refuses to unpickle models unless told to; the registries here hold only models the tests trained.
os.environ.setdefault("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
# OpenMP workers spin-wait by default; with two cores and several processes (Airflow, PostgreSQL,
# the test) spinning threads starve the others. Passive waiting changes no result.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
for extra in (ROOT, ROOT / "plugins", ROOT / "scripts"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

import local_stack  # noqa: E402  (scripts/, on the path just above)

SPECS = ROOT / "include" / "specs"  # the shipped specs name the reader roles the tests' server needs


@pytest.fixture(scope="session")
def pg_server_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URI of a PostgreSQL superuser connection to the maintenance database."""
    external = os.environ.get("NIGHTSHIFT_TEST_PG_URI")
    if external:
        local_stack.create_reader_roles(external, SPECS)
        yield external
        return
    import pgserver

    server = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop")
    local_stack.create_reader_roles(server.get_uri(), SPECS)
    yield server.get_uri()
    server.cleanup()


@pytest.fixture
def pg_uri(pg_server_uri: str) -> Iterator[str]:
    """URI of a fresh, empty database that is dropped after the test."""
    dbname = f"t_{uuid.uuid4().hex[:12]}"
    admin = psycopg.connect(pg_server_uri, autocommit=True)
    with admin.cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    try:
        yield local_stack.database_uri(pg_server_uri, dbname)
    finally:
        with admin.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
        admin.close()


@pytest.fixture
def pg_conn(pg_uri: str) -> Iterator[psycopg.Connection]:
    conn = psycopg.connect(pg_uri)
    try:
        yield conn
    finally:
        conn.close()


@pytest.fixture
def churn_spec():
    from include.nightshift.spec import load_spec

    return load_spec(ROOT / "include" / "specs" / "churn.yaml")


def pytest_unconfigure(config: pytest.Config) -> None:
    """pgserver logs from an atexit hook, after pytest has closed the streams it captured; the
    resulting '--- Logging error ---' tracebacks say nothing about the tests, so keep them out."""
    import logging

    logging.raiseExceptions = False
