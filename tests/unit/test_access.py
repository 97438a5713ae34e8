"""Who may do what in the warehouse, on a real PostgreSQL with real, non-superuser roles.

The pipeline writes with its own role (it owns the schema and tables); consumers log in as
a reader role (spec key warehouse.reader_role) that ensure_warehouse grants USAGE and SELECT
to, and nothing else. Identifiers from the spec are quoted (a schema named "Select" works)
and a value with SQL in it never gets past the spec loader. The last section runs the
deployed stack's own docker/postgres-init.sql with psql and checks the roles it makes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import secrets
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pytest
import yaml
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from include.nightshift import audit
from include.nightshift import warehouse as wh
from include.nightshift.spec import SpecError, load_spec

ROOT = Path(__file__).resolve().parents[2]
DAY = dt.date(2026, 3, 1)


@dataclasses.dataclass(frozen=True)
class Roles:
    """A database owned by a non-superuser writer role, and a reader role that may connect to it."""

    uri: str
    writer: str
    writer_password: str
    reader: str
    reader_password: str

    def connect_writer(self) -> psycopg.Connection:
        return psycopg.connect(self.uri, user=self.writer, password=self.writer_password)

    def connect_reader(self) -> psycopg.Connection:
        return psycopg.connect(self.uri, user=self.reader, password=self.reader_password)


@pytest.fixture
def roles(pg_server_uri: str, pg_uri: str) -> Iterator[Roles]:
    """Set up like the deployed stack: the writer owns the database, PUBLIC may not connect.

    Role names are unique per test (roles are server-wide); the database and then the
    roles are dropped afterwards.
    """
    suffix = uuid.uuid4().hex[:10]
    made = Roles(pg_uri, f"ns_writer_{suffix}", secrets.token_urlsafe(24), f"ns_reader_{suffix}",
                 secrets.token_urlsafe(24))
    admin = psycopg.connect(pg_server_uri, autocommit=True)
    dbname = conninfo_to_dict(pg_uri)["dbname"]
    db, writer, reader = (sql.Identifier(n) for n in (dbname, made.writer, made.reader))
    with admin.cursor() as cur:
        cur.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {}").format(
            writer, sql.Literal(made.writer_password)))  # DDL takes no bound parameters: a quoted literal
        cur.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {}").format(
            reader, sql.Literal(made.reader_password)))
        cur.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(db, writer))
        cur.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(db))
        cur.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(db, reader))
    try:
        yield made
    finally:
        with admin.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(db))
            cur.execute(sql.SQL("DROP ROLE IF EXISTS {}, {}").format(reader, writer))
        admin.close()


def _reading(spec, reader: str | None):
    return dataclasses.replace(spec, warehouse=dataclasses.replace(spec.warehouse, reader_role=reader))


def _predictions_file(path: Path, keys, key_name: str = "customer_id") -> Path:
    score = np.linspace(0.1, 0.9, len(keys))
    pd.DataFrame({
        key_name: keys, "score": score, "predicted_label": (score >= 0.5).astype("int64"),
        "model_name": "nightshift_churn", "model_version": 1, "snapshot_sha256": "cd" * 32,
        "dag_run_id": "run_1", "scored_at": pd.Timestamp("2026-03-02 01:00", tz="UTC"),
    }).to_parquet(path, index=False)
    return path


def _publish(conn, spec, tmp_path: Path, key_name: str = "customer_id") -> None:
    """What the pipeline writes in a night: the tables, the partition, the run, a promotion."""
    wh.ensure_warehouse(conn, spec)
    audit.ensure_audit(conn, spec)
    wh.replace_partition(conn, spec, DAY, _predictions_file(tmp_path / "p.parquet", [1, 2, 3], key_name))
    wh.upsert_run(conn, spec, {"logical_date": DAY, "rows_in": 3, "validation_passed": True, "decision": "skipped"})
    audit.record_change(conn, spec, {"event": "promote", "model_name": "m", "to_version": 1,
                                     "actor": "nightshift", "reason": "gate passed", "dag_run_id": "r"})


RELATIONS = (wh.PREDICTIONS, wh.PREDICTIONS_LATEST, wh.PIPELINE_RUNS, audit.CHANGES)
PUBLISHED_COUNTS = (3, 3, 1, 1)


def _counts(conn, schema: str) -> tuple[int, ...]:
    """Rows in each relation a consumer reads; raises when the connection's role may not read one."""
    with conn.transaction(), conn.cursor() as cur:
        found = []
        for name in RELATIONS:
            cur.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(name)))
            found.append(cur.fetchone()[0])
    return tuple(found)


@pytest.fixture
def published(roles: Roles, churn_spec, tmp_path):
    """The churn warehouse published by the writer, with the reader role configured."""
    spec = _reading(churn_spec, roles.reader)
    writer = roles.connect_writer()
    try:
        _publish(writer, spec, tmp_path)
    finally:
        writer.close()
    return spec


def test_reader_reads_every_relation(roles, published):
    reader = roles.connect_reader()
    try:
        assert _counts(reader, "churn") == PUBLISHED_COUNTS
        with reader.transaction(), reader.cursor() as cur:
            cur.execute("SELECT customer_id FROM churn.predictions WHERE score_date = %s ORDER BY 1", (DAY,))
            assert cur.fetchall() == [(1,), (2,), (3,)]
        assert wh.recent_row_counts(reader, published, DAY + dt.timedelta(days=1), 7) == [3]
    finally:
        reader.close()


def test_grants_are_usage_and_select_to_the_reader_and_nobody_else(roles, published):
    """Every privilege on the schema and its relations, as the catalog holds it: owner aside,
    the reader's USAGE and SELECT are the only grants (not PUBLIC, not other roles)."""
    writer = roles.connect_writer()
    try:
        with writer.transaction(), writer.cursor() as cur:
            cur.execute("""
                SELECT 'schema'::text, a.grantee::regrole::text, a.privilege_type
                FROM pg_namespace n, aclexplode(n.nspacl) a WHERE n.nspname = 'churn'
                UNION ALL
                SELECT c.relname, CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END, a.privilege_type
                FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(c.relacl) a
                WHERE n.nspname = 'churn' AND c.relkind IN ('r', 'v')
                UNION ALL
                SELECT 'default ' || d.defaclobjtype::text, a.grantee::regrole::text, a.privilege_type
                FROM pg_default_acl d JOIN pg_namespace n ON n.oid = d.defaclnamespace, aclexplode(d.defaclacl) a
                WHERE n.nspname = 'churn'
            """)
            grants = {(obj, grantee, privilege) for obj, grantee, privilege in cur.fetchall() if grantee != roles.writer}
    finally:
        writer.close()
    assert grants == {
        ("schema", roles.reader, "USAGE"),
        ("predictions", roles.reader, "SELECT"),
        ("predictions_latest", roles.reader, "SELECT"),
        ("pipeline_runs", roles.reader, "SELECT"),
        ("champion_changes", roles.reader, "SELECT"),
        ("run_attempts", roles.reader, "SELECT"),
        ("model_versions", roles.reader, "SELECT"),
        ("model_staleness", roles.reader, "SELECT"),
        ("task_costs", roles.reader, "SELECT"),
        ("ml_test_score", roles.reader, "SELECT"),
        ("predictions_shadow", roles.reader, "SELECT"),
        ("predictions_staging", roles.reader, "SELECT"),  # readable, documented as not for consumers
        ("schema_version", roles.reader, "SELECT"),
        ("default r", roles.reader, "SELECT"),
    }


READER_REFUSED = {
    "insert": "INSERT INTO {s}.predictions (score_date, customer_id) VALUES ('2026-03-09', 9)",
    "update": "UPDATE {s}.predictions SET score = 0",
    "delete": "DELETE FROM {s}.predictions",
    "truncate": "TRUNCATE {s}.predictions",
    "insert run": "INSERT INTO {s}.pipeline_runs (logical_date) VALUES ('2026-03-09')",
    "update run": "UPDATE {s}.pipeline_runs SET note = 'mine'",
    "drop table": "DROP TABLE {s}.predictions",
    "drop view": "DROP VIEW {s}.predictions_latest",
    "replace view": "CREATE OR REPLACE VIEW {s}.predictions_latest AS SELECT 1 AS x",
    "create table in schema": "CREATE TABLE {s}.mine (x int)",
    "create schema": "CREATE SCHEMA mine",
    "alter table": "ALTER TABLE {s}.predictions ADD COLUMN mine int",
    "alter view": "ALTER VIEW {s}.predictions_latest RENAME TO mine",
    "drop schema": "DROP SCHEMA {s} CASCADE",
    # A consumer must not be able to hold a lock that makes the nightly publish wait.
    "select for update": "SELECT * FROM {s}.predictions FOR UPDATE",
    "lock table": "LOCK TABLE {s}.predictions IN ACCESS EXCLUSIVE MODE",
}


@pytest.mark.parametrize("statement", READER_REFUSED.values(), ids=READER_REFUSED.keys())
def test_reader_cannot_change_anything(roles, published, statement):
    reader = roles.connect_reader()
    try:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            with reader.transaction(), reader.cursor() as cur:
                cur.execute(sql.SQL(statement).format(s=sql.Identifier("churn")))
    finally:
        reader.close()
    writer = roles.connect_writer()
    try:
        assert _counts(writer, "churn") == PUBLISHED_COUNTS
    finally:
        writer.close()


def test_writer_cannot_act_as_superuser(roles, published):
    writer = roles.connect_writer()
    try:
        _assert_not_superuser(writer)
    finally:
        writer.close()


def _assert_not_superuser(conn) -> None:
    """Server-wide powers a pipeline login must not have; each attempt raises InsufficientPrivilege."""
    refused = [
        "CREATE ROLE ns_intruder",
        "CREATE DATABASE ns_intruder",
        "ALTER SYSTEM SET log_statement = 'none'",
        "SET ROLE postgres",
        "COPY (SELECT 1) TO PROGRAM 'true'",
        "SELECT pg_read_file('postgresql.conf')",
    ]
    conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
    for statement in refused:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            with conn.cursor() as cur:
                cur.execute(statement)
    conn.autocommit = False


def test_tables_the_writer_creates_later_are_readable_too(roles, published):
    writer = roles.connect_writer()
    try:
        with writer.transaction(), writer.cursor() as cur:
            cur.execute("CREATE TABLE churn.monthly_summary AS SELECT 1 AS n")
            cur.execute("DROP VIEW churn.predictions_latest")
        wh.ensure_warehouse(writer, published)  # recreates the view: a new object, same grants
    finally:
        writer.close()
    reader = roles.connect_reader()
    try:
        with reader.transaction(), reader.cursor() as cur:
            cur.execute("SELECT n FROM churn.monthly_summary")
            assert cur.fetchall() == [(1,)]
        assert _counts(reader, "churn") == PUBLISHED_COUNTS
    finally:
        reader.close()


def test_reader_role_added_later_is_granted_once_and_concurrently_safe(roles, churn_spec, tmp_path):
    writer = roles.connect_writer()
    try:
        _publish(writer, _reading(churn_spec, None), tmp_path)
    finally:
        writer.close()
    reader = roles.connect_reader()
    try:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            _counts(reader, "churn")
    finally:
        reader.close()

    spec, errors = _reading(churn_spec, roles.reader), []
    barrier = threading.Barrier(3)

    def ensure() -> None:  # three tasks of the night at once: GRANTs on one ACL must not collide
        conn = roles.connect_writer()
        try:
            barrier.wait()
            wh.ensure_warehouse(conn, spec)
            wh.ensure_warehouse(conn, spec)
        except BaseException as exc:  # collected, asserted below
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=ensure) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    reader = roles.connect_reader()
    try:
        assert _counts(reader, "churn") == PUBLISHED_COUNTS
    finally:
        reader.close()


def test_missing_reader_role_is_named_and_nothing_is_created(roles, churn_spec):
    spec = _reading(churn_spec, "ns_nobody_" + uuid.uuid4().hex[:8])
    writer = roles.connect_writer()
    try:
        with pytest.raises(ValueError, match=r"warehouse\.reader_role .*'ns_nobody_\w+' does not exist"):
            wh.ensure_warehouse(writer, spec)
        with writer.transaction(), writer.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'churn'")
            assert cur.fetchone() == (0,)
    finally:
        writer.close()


def test_reader_role_that_could_write_is_refused(roles, churn_spec, pg_server_uri):
    writer = roles.connect_writer()
    try:
        with pytest.raises(ValueError, match=r"warehouse\.reader_role .*role the pipeline writes with"):
            wh.ensure_warehouse(writer, _reading(churn_spec, roles.writer))
        superuser = conninfo_to_dict(pg_server_uri).get("user") or "postgres"
        with pytest.raises(ValueError, match=r"warehouse\.reader_role .*is a superuser"):
            wh.ensure_warehouse(writer, _reading(churn_spec, superuser))
    finally:
        writer.close()


# --- identifiers from configuration ---------------------------------------------------------


def _spec_file(tmp_path: Path, **warehouse_and_key) -> Path:
    """churn.yaml with some values replaced, written out, so the real loader reads it."""
    data = yaml.safe_load((ROOT / "include" / "specs" / "churn.yaml").read_text())
    for dotted, value in warehouse_and_key.items():
        section, key = dotted.split("__")
        data[section][key] = value
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_names_that_need_quoting_work_end_to_end(pg_server_uri, roles, tmp_path):
    """A reserved, mixed-case schema ("Select"), entity key ("User") and reader role all work."""
    reader_role = f"Reader_{uuid.uuid4().hex[:8]}"
    admin = psycopg.connect(pg_server_uri, autocommit=True)
    try:
        with admin.cursor() as cur:
            cur.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(reader_role), sql.Literal(roles.reader_password)))
            cur.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                sql.Identifier(conninfo_to_dict(roles.uri)["dbname"]), sql.Identifier(reader_role)))
        spec = load_spec(_spec_file(tmp_path, warehouse__schema="Select", warehouse__reader_role=reader_role,
                                    entity_key__name="User"))
        writer = roles.connect_writer()
        try:
            _publish(writer, spec, tmp_path, key_name="User")
            with writer.transaction(), writer.cursor() as cur:
                cur.execute('SELECT "User" FROM "Select".predictions WHERE score_date = %s ORDER BY 1', (DAY,))
                assert cur.fetchall() == [(1,), (2,), (3,)]
            with writer.transaction(), writer.cursor() as cur:
                cur.execute("SELECT nspname FROM pg_namespace WHERE lower(nspname) = 'select'")
                assert cur.fetchall() == [("Select",)]
        finally:
            writer.close()
        reader = psycopg.connect(roles.uri, user=reader_role, password=roles.reader_password)
        try:
            assert _counts(reader, "Select") == PUBLISHED_COUNTS
            with reader.transaction(), reader.cursor() as cur:
                cur.execute('SELECT "User" FROM "Select".predictions_latest ORDER BY 1')
                assert cur.fetchall() == [(1,), (2,), (3,)]
        finally:
            reader.close()
    finally:
        admin.close()
        in_database = psycopg.connect(roles.uri, autocommit=True)  # as the superuser: DROP OWNED acts on this database
        with in_database.cursor() as cur:
            cur.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(reader_role)))
            cur.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(reader_role)))
        in_database.close()


SQL_IN_CONFIG = {
    "schema": ("warehouse__schema", "churn; DROP SCHEMA public CASCADE", "warehouse.schema"),
    "schema quote": ("warehouse__schema", 'churn"."x', "warehouse.schema"),
    "reader role": ("warehouse__reader_role", 'x"; DROP ROLE postgres; --', "warehouse.reader_role"),
    "reader role PUBLIC": ("warehouse__reader_role", "public", "warehouse.reader_role"),
    "reader role pg_*": ("warehouse__reader_role", "pg_read_all_data", "warehouse.reader_role"),
    "entity key": ("entity_key__name", "id) ; DELETE FROM x; --", "entity_key.name"),
    "source table": ("source__table", "public.t; DELETE FROM t", "source.table"),
}


@pytest.mark.parametrize(("key", "value", "named"), SQL_IN_CONFIG.values(), ids=SQL_IN_CONFIG.keys())
def test_sql_in_configuration_is_refused_at_load(tmp_path, key, value, named):
    with pytest.raises(SpecError, match="^" + re.escape(f"spec.yaml: {named}: ")):
        load_spec(_spec_file(tmp_path, **{key: value}))


# --- the deployed stack's roles --------------------------------------------------------------
# docker/postgres-init.sql, run by psql as the postgres image runs it, on a server of its own
# (the script creates fixed, server-wide role and database names). The embedded server trusts
# local logins, so the passwords are set but not what is tested.


@pytest.fixture(scope="module")
def deployed(tmp_path_factory) -> Iterator[str]:
    import pgserver
    from pgserver._commands import POSTGRES_BIN_PATH

    server = pgserver.get_server(tmp_path_factory.mktemp("pg_deployed"), cleanup_mode="stop")
    env = {**os.environ, **{name: secrets.token_urlsafe(16) for name in (
        "AIRFLOW_DB_PASSWORD", "MLFLOW_DB_PASSWORD", "NIGHTSHIFT_DB_PASSWORD", "NIGHTSHIFT_READER_PASSWORD")}}
    done = subprocess.run([str(POSTGRES_BIN_PATH / "psql"), server.get_uri(), "--no-psqlrc", "-q",
                           "-v", "ON_ERROR_STOP=1", "-f", str(ROOT / "docker" / "postgres-init.sql")],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


def _connect(uri: str, user: str, dbname: str = "warehouse"):
    return psycopg.connect(uri, user=user, dbname=dbname)


@pytest.fixture(scope="module")
def deployed_night(deployed, tmp_path_factory) -> str:
    """A night written by the pipeline's role `nightshift`, with no reader_role in the spec:
    the script's default privileges alone must make it readable."""
    spec = load_spec(ROOT / "include" / "specs" / "churn.yaml")
    spec = dataclasses.replace(spec, warehouse=dataclasses.replace(spec.warehouse, reader_role=None))
    writer = _connect(deployed, "nightshift")
    try:
        _publish(writer, spec, tmp_path_factory.mktemp("night"))
    finally:
        writer.close()
    return deployed


def test_deployed_reader_reads_everything_the_pipeline_writes(deployed_night):
    reader = _connect(deployed_night, "nightshift_reader")
    try:
        assert _counts(reader, "churn") == PUBLISHED_COUNTS
    finally:
        reader.close()


@pytest.mark.parametrize("statement", READER_REFUSED.values(), ids=READER_REFUSED.keys())
def test_deployed_reader_cannot_write_even_in_a_read_write_session(deployed_night, statement):
    statement = sql.SQL(statement).format(s=sql.Identifier("churn"))
    reader = _connect(deployed_night, "nightshift_reader")
    try:
        # First line of defence: the role's sessions are read-only (LOCK TABLE checks the grant first).
        with reader.cursor() as cur, pytest.raises((psycopg.errors.ReadOnlySqlTransaction,
                                                    psycopg.errors.InsufficientPrivilege)):
            cur.execute(statement)
        reader.rollback()
        reader.autocommit = True  # so the switch is not itself inside a read-only transaction
        with reader.cursor() as cur:
            cur.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE")
        reader.autocommit = False  # the next transaction starts read-write
        with reader.cursor() as cur, pytest.raises(psycopg.errors.InsufficientPrivilege):
            cur.execute(statement)  # second: no grant to write, whatever the session says
        reader.rollback()
    finally:
        reader.close()
    writer = _connect(deployed_night, "nightshift")
    try:
        assert _counts(writer, "churn") == PUBLISHED_COUNTS  # and nothing changed
    finally:
        writer.close()


@pytest.mark.parametrize(("user", "dbname"), [("nightshift_reader", "source"), ("nightshift_reader", "airflow"),
                                              ("nightshift_reader", "mlflow"), ("nightshift", "airflow"),
                                              ("nightshift", "mlflow")])
def test_deployed_roles_connect_only_to_their_databases(deployed, user, dbname):
    with pytest.raises(psycopg.OperationalError, match="permission denied"):
        _connect(deployed, user, dbname)


def test_deployed_pipeline_role_is_not_a_superuser(deployed_night):
    writer = _connect(deployed_night, "nightshift")
    try:
        _assert_not_superuser(writer)
    finally:
        writer.close()
