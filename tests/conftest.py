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


# --- test tiers, cheapest first (pytest.ini registers them; README "Tests" says when to run which) ---
TIERS = ("pure", "postgres", "dagrun", "faults", "e2e")
# Every test under these folders starts Airflow in a subprocess (a DagBag parse in tests/dags costs
# 2-5 s of interpreter start and imports; tests/integration runs whole DAGs), breaks real services,
# or drives a real Airflow stack.
FOLDER_TIERS = {"dags": "dagrun", "integration": "dagrun", "faults": "faults", "e2e": "e2e", "celery": "e2e"}
# Fixtures that start or open a service; a test that uses one, directly or through another fixture
# (pytest resolves the closure), is in that tier. Airflow in a subprocess without such a fixture:
# mark the test itself (@pytest.mark.dagrun), which wins over this table.
FIXTURE_TIERS = {
    "pg_server_uri": "postgres", "pg_uri": "postgres", "pg_conn": "postgres",  # PostgreSQL (this file)
    "deployed": "postgres",  # test_access.py: its own PostgreSQL with the deployed stack's init SQL
    "registry": "postgres", "mlflow_env": "postgres",  # an MLflow tracking store and registry
    "dag_run": "dagrun",  # test_links.py: a real DAG run in an Airflow subprocess
}


def tier_of(item: pytest.Item) -> str:
    """The one tier of a test: its own tier marker, else its folder's, else the costliest fixture it uses."""
    marked = {mark.name for mark in item.iter_markers() if mark.name in TIERS}
    if len(marked) > 1:
        raise pytest.UsageError(f"{item.nodeid} is marked with several tiers: {sorted(marked)}")
    if marked:
        return marked.pop()
    folders = Path(str(item.path)).relative_to(ROOT / "tests").parts[:-1]
    for folder in folders:
        if folder in FOLDER_TIERS:
            return FOLDER_TIERS[folder]
    used = {FIXTURE_TIERS[name] for name in getattr(item, "fixturenames", ()) if name in FIXTURE_TIERS}
    return max(used, key=TIERS.index, default="pure")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give every test its tier marker, so that `-m "pure or postgres"` (make test-fast) selects by
    cost without anyone having to remember to mark a test; and run the cheap tiers first, so that a
    whole run (make test) reports a broken core in minutes, not after the DAG runs and the e2e stack.
    The sort is stable: within a tier, tests keep their file order (the e2e story relies on it)."""
    tiers = {item.nodeid: tier_of(item) for item in items}
    for item in items:
        item.add_marker(tiers[item.nodeid])
    items.sort(key=lambda item: TIERS.index(tiers[item.nodeid]))


def pytest_unconfigure(config: pytest.Config) -> None:
    """pgserver logs from an atexit hook, after pytest has closed the streams it captured; the
    resulting '--- Logging error ---' tracebacks say nothing about the tests, so keep them out."""
    import logging

    logging.raiseExceptions = False
