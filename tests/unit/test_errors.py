"""Permanent or transient, and named: real failures, raised for real, classified (include/nightshift/errors.py).

Every exception here comes from the real thing: a query on a table that does not exist, a login
with the wrong password on a PostgreSQL that checks passwords, a write into a folder the writer
may not write, a lock that times out, a port nothing listens on, an MLflow version whose files
were deleted, a training window whose labels have one class. The only fault injected by hand is an
HTTP server answering 503, which an MLflow server does when it is overloaded.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import multiprocessing
import os
import shutil
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

import pandas as pd
import psycopg
import pytest

from include.nightshift import demo_data, training
from include.nightshift.artifacts import ArtifactStore
from include.nightshift.errors import PERMANENT_TYPES, chain, classify, describe
from include.nightshift.nightly import NotEnoughRows, train_challenger
from include.nightshift.registry import ModelArtifactsMissing
from include.nightshift.run_record import build_run_record
from include.nightshift.spec import SpecError, load_spec
from local_stack import free_port

ROOT = Path(__file__).resolve().parents[2]
SPEC = load_spec(ROOT / "include" / "specs" / "churn.yaml")
NIGHT = dt.date(2026, 3, 20)


def raised(action):
    """The exception `action()` raises (it must raise)."""
    with pytest.raises(Exception) as info:
        action()
    return info.value


# --- PostgreSQL ------------------------------------------------------------------------------


def test_a_query_on_a_missing_source_table_is_permanent(pg_conn):
    from include.nightshift.snapshot import read_day

    exc = raised(lambda: read_day(pg_conn, SPEC, NIGHT))  # the snapshot's own query, on an empty database
    assert isinstance(exc, psycopg.errors.UndefinedTable)
    found = classify(exc)
    assert found.permanent and "table does not exist" in found.reason and "42P01" in found.reason
    text = describe(exc, found)
    assert text.startswith('UndefinedTable: relation "public.churn_events" does not exist'), text
    assert text.endswith("not retried]") and "\n" not in text


def test_a_missing_column_and_a_missing_privilege_are_permanent(pg_conn):
    with pg_conn.cursor() as cur:
        cur.execute("CREATE TABLE t (a int); CREATE ROLE nightshift_no_grant_test NOLOGIN")
    pg_conn.commit()
    try:
        with pg_conn.cursor() as cur:
            column = raised(lambda: cur.execute("SELECT b FROM t"))
        pg_conn.rollback()
        with pg_conn.cursor() as cur:
            cur.execute("SET ROLE nightshift_no_grant_test")
            privilege = raised(lambda: cur.execute("SELECT a FROM t"))
        pg_conn.rollback()
    finally:
        with pg_conn.cursor() as cur:
            cur.execute("RESET ROLE; DROP TABLE t; DROP ROLE nightshift_no_grant_test")
        pg_conn.commit()
    assert isinstance(column, psycopg.errors.UndefinedColumn) and classify(column).permanent
    assert isinstance(privilege, psycopg.errors.InsufficientPrivilege) and classify(privilege).permanent
    assert "lacks the privilege" in classify(privilege).reason


def test_a_lock_timeout_is_transient(pg_uri):
    holder, waiter = psycopg.connect(pg_uri), psycopg.connect(pg_uri)
    try:
        with holder.cursor() as cur:
            cur.execute("CREATE TABLE busy (a int)")
        holder.commit()
        with holder.cursor() as cur:
            cur.execute("LOCK TABLE busy IN ACCESS EXCLUSIVE MODE")  # held until rollback
        with waiter.cursor() as cur:
            cur.execute("SET lock_timeout = '100ms'")
            exc = raised(lambda: cur.execute("SELECT * FROM busy"))
    finally:
        holder.rollback(), waiter.rollback()
        holder.close(), waiter.close()
    assert isinstance(exc, psycopg.errors.LockNotAvailable)
    found = classify(exc)
    assert not found.permanent and "lock timeout" in found.reason


@pytest.fixture(scope="module")
def password_server(tmp_path_factory):
    """A PostgreSQL of this module's own that checks passwords (scram-sha-256 on its socket), with its
    superuser's password set to 'right'; the shared test server trusts local logins."""
    import pgserver

    folder = tmp_path_factory.mktemp("pg_password")
    server = pgserver.get_server(folder, cleanup_mode="stop")
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        conn.execute("ALTER ROLE CURRENT_USER PASSWORD 'right'")
        (folder / "pg_hba.conf").write_text("local all all scram-sha-256\n")
        conn.execute("SELECT pg_reload_conf()")
        user = conn.execute("SELECT current_user").fetchone()[0]
    url = urlparse(server.get_uri())
    socket_dir = dict(p.split("=", 1) for p in url.query.split("&") if "=" in p).get("host") or url.hostname
    try:
        yield {"host": socket_dir, "user": user}
    finally:
        with psycopg.connect(host=socket_dir, user=user, password="right", dbname="postgres",
                             autocommit=True) as conn:  # trusted again, so that cleanup can stop it
            (folder / "pg_hba.conf").write_text("local all all trust\n")
            conn.execute("SELECT pg_reload_conf()")
        server.cleanup()


def test_a_wrong_password_is_permanent_and_names_the_connection(password_server, monkeypatch):
    from nightshift_airflow import runtime

    conn_id = "nightshift_wrong_password_test"
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({
        "conn_type": "postgres", "host": password_server["host"], "login": password_server["user"],
        "password": "wrong", "schema": "postgres"}))
    exc = raised(lambda: runtime.postgres_connection(conn_id))
    assert isinstance(exc, runtime.ConnectionFailed) and isinstance(exc.__cause__, psycopg.OperationalError)
    assert "password authentication failed" in str(exc.__cause__)
    found = classify(exc)
    assert found.permanent and found.reason == "the database refused the password", found
    text = describe(exc, found)
    assert text.startswith(f"ConnectionFailed: connection '{conn_id}'") and "password authentication failed" in text

    right = dict(json.loads(os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"]), password="right")
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(right))
    runtime.postgres_connection(conn_id).close()  # the control: the same connection with the right password


def test_a_refused_connection_is_transient_though_wrapped(monkeypatch):
    from nightshift_airflow import runtime

    conn_id = "nightshift_refused_test"
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({
        "conn_type": "postgres", "host": "127.0.0.1", "port": free_port(), "login": "x", "schema": "postgres"}))
    exc = raised(lambda: runtime.postgres_connection(conn_id))
    assert isinstance(exc, runtime.ConnectionFailed) and "refused" in str(exc).lower()
    assert not classify(exc).permanent


# --- files -----------------------------------------------------------------------------------


def _write_as_other_user(folder: str, queue) -> None:
    """Child process: write a report into `folder` through the artifact store (as `nobody` when run as
    root, which no permission stops) and send back how it failed."""
    if os.geteuid() == 0:
        os.setgid(65534), os.setuid(65534)
    try:
        ArtifactStore(folder).put_text("report", ArtifactStore(folder).url("reports", "night.html"))
        queue.put(None)
    except Exception as exc:  # noqa: BLE001 - what failed is the test's answer
        found = classify(exc)
        queue.put((type(exc).__name__, exc.errno, found.permanent, found.reason, describe(exc, found)))


def test_a_write_into_a_read_only_folder_is_permanent():
    folder = tempfile.mkdtemp(prefix="nightshift-readonly-")  # under /tmp, which `nobody` can reach
    try:
        if os.geteuid() == 0:
            os.chown(folder, 65534, 65534)
        os.chmod(folder, 0o500)
        queue = multiprocessing.get_context("fork").Queue()
        child = multiprocessing.get_context("fork").Process(target=_write_as_other_user, args=(folder, queue))
        child.start()
        result = queue.get(timeout=60)
        child.join(60)
    finally:
        os.chmod(folder, 0o700)
        shutil.rmtree(folder)
    assert result is not None, "the write into a 0o500 folder succeeded"
    name, code, permanent, reason, text = result
    assert (name, code, permanent) == ("PermissionError", 13, True), result
    assert reason.startswith("permission denied on ") and folder in reason
    assert folder in text


# --- the pipeline's own errors ---------------------------------------------------------------


def test_every_permanent_pipeline_error_named_in_errors_py_exists():
    """errors.py names the core's error classes as text (it imports none of them): a rename must fail here."""
    import importlib

    for name in PERMANENT_TYPES:
        module, _, cls = name.rpartition(".")
        found = getattr(importlib.import_module(module), cls, None)
        assert isinstance(found, type) and issubclass(found, Exception), name
        instance = found.__new__(found)  # NoModel's constructor needs a spec; the class is what is judged
        assert classify(instance).permanent, name


def test_an_invalid_spec_is_permanent(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text((ROOT / "include" / "specs" / "churn.yaml").read_text().replace("min_rows: 2000",
                                                                                      "min_rows: lots"))
    exc = raised(lambda: load_spec(broken))
    assert isinstance(exc, SpecError) and classify(exc).permanent


def _one_class_window(rows_per_day: int = 150) -> pd.DataFrame:
    """The labelled days a night on NIGHT trains and holds out on, every label 0 (nobody churned)."""
    _, days = training.training_days(SPEC, NIGHT)
    frame = pd.concat([demo_data.generate_day(day, rows_per_day) for day in days], ignore_index=True)
    return frame.assign(churned=0)


def test_the_one_class_check_names_label_window_and_rows_per_class():
    frame = _one_class_window()
    end, days = training.training_days(SPEC, NIGHT)
    train, holdout = training.split_train_holdout(frame, SPEC, end)
    problem = training.one_class_problem(train, SPEC, days)
    window = sorted(days)[: SPEC.training.window_days]
    assert problem is not None
    assert "label 'churned' has a single class" in problem
    assert f"training window {window[0]}..{window[-1]} (14 days, {len(train)} rows" in problem
    assert f"per class: 0: {len(train)} rows" in problem
    assert classify(NotEnoughRows(problem)).permanent
    # without the check, the fit fails with a message naming none of it
    sklearn = raised(lambda: training.fit_candidates(SPEC, train, holdout))
    assert "churned" not in str(sklearn) and str(window[0]) not in str(sklearn)
    both = train.assign(churned=[i % 2 for i in range(len(train))])
    assert training.one_class_problem(both, SPEC, days) is None


def test_training_a_one_class_window_fails_before_fitting(pg_conn, tmp_path):
    """train_challenger on a real source: snapshots taken, then refused before any candidate is fitted."""
    demo_data.create_source_table(pg_conn, SPEC.source.table)
    _, days = training.training_days(SPEC, NIGHT)
    for day in days:
        demo_data.load_day(pg_conn, day, 150, table=SPEC.source.table, with_labels=True)
    with pg_conn.transaction():
        pg_conn.execute("UPDATE public.churn_events SET churned = 0")
    store = ArtifactStore(tmp_path / "artifacts")
    exc = raised(lambda: train_challenger(pg_conn, store, None, SPEC, NIGHT, None, "manual__one_class"))
    assert isinstance(exc, NotEnoughRows) and "label 'churned' has a single class" in str(exc), exc
    assert classify(exc).permanent


def test_a_model_version_whose_files_are_gone_is_named_and_permanent(registry):
    data = pd.concat([demo_data.generate_day(dt.date(2026, 1, d), 400) for d in (1, 2)], ignore_index=True)
    spec = dataclasses.replace(SPEC, name="errors_missing_files", training=dataclasses.replace(
        SPEC.training, params={"n_estimators": 5}))
    model = training.fit(training.build_model(spec), data, spec)
    baseline = training.fit(training.build_baseline(spec), data, spec)
    info = registry.log_challenger(model, baseline, spec=spec, train_df=data, reference=data.head(50), params={},
                                   metrics={}, tags={})
    registry.load_model(spec.model_name, info.version)  # loads while its files are there
    source = registry.client.get_model_version(spec.model_name, str(info.version)).source
    files = unquote(urlparse(registry.client.get_logged_model(source.removeprefix("models:/")).artifact_location).path)
    shutil.rmtree(files)

    exc = raised(lambda: registry.load_model(spec.model_name, info.version))
    assert isinstance(exc, ModelArtifactsMissing), exc
    message = str(exc)
    assert f"model {spec.model_name} v{info.version} cannot load: its files are missing at " in message
    assert files in message and source in message and info.run_id in message
    assert "No such artifact" in message  # MLflow's own words are kept, after the names
    assert classify(exc).permanent


# --- MLflow over HTTP ------------------------------------------------------------------------


@pytest.fixture
def overloaded_server():
    """An HTTP server answering every request 503, as an overloaded MLflow server (or its proxy) does."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            body = b'{"error_code": "TEMPORARILY_UNAVAILABLE", "message": "overloaded"}'
            self.send_response(503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET  # noqa: N815

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("where", ["503", "nothing listening"])
def test_mlflow_unavailable_is_transient(overloaded_server, monkeypatch, where):
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # MLflow's own retries would take minutes
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    uri = overloaded_server if where == "503" else f"http://127.0.0.1:{free_port()}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exc = raised(lambda: client.get_registered_model("nightshift_churn"))
    found = classify(exc)
    assert not found.permanent, (found, [type(e).__name__ for e in chain(exc)])


# --- the run record names the root cause first -----------------------------------------------


def test_the_run_record_names_the_root_task_and_its_error_first():
    states = {"snapshot": "failed", "validate": "upstream_failed", "drift": "upstream_failed",
              "decide": "upstream_failed", "score": "skipped", "record_run": "running"}
    error = {"message": 'UndefinedTable: relation "public.churn_events" does not exist [permanent (the table does '
                        'not exist, SQLSTATE 42P01): not retried]', "permanent": True, "try_number": 1}
    record = build_run_record(SPEC, day=NIGHT, dag_run_id="run", states=states, snapshot=None, validation=None,
                              drift=None, decision=None, trained=None, verdict=None, published=None, started_at=None,
                              finished_at=dt.datetime(2026, 3, 21, tzinfo=dt.timezone.utc),
                              errors={"snapshot": error})
    text = record.error(SPEC)
    assert text.startswith(f"run failed at snapshot: {error['message']}; could not run because of it: "
                           "decide, drift, validate; recorded in churn.pipeline_runs"), text
    assert record.details["root_failure"] == [{"task": "snapshot", **error}]
    assert record.details["failed_tasks"] == ["decide", "drift", "snapshot", "validate"]  # unchanged

    two = build_run_record(SPEC, day=NIGHT, dag_run_id="run", states={**states, "snapshot": "success",
                                                                          "drift": "failed", "train": "failed"},
                           snapshot=None, validation=None, drift=None, decision=None, trained=None, verdict=None,
                           published=None, started_at=None, finished_at=dt.datetime(2026, 3, 21),
                           errors={"train": {"message": "NotEnoughRows: one class"}})
    assert two.error(SPEC).startswith("run failed at drift: no error recorded (see the task log); and at train: "
                                      "NotEnoughRows: one class; could not run because of them: decide, validate")


def test_a_non_finite_number_in_a_step_s_output_is_named_by_its_key_before_xcom_refuses_it():
    from nightshift_airflow.base import refuse_non_finite

    refuse_non_finite({"cadence": {"interval": [1.0, None]}, "rows": 3}, "MonitorOperator")  # JSON-safe: passes
    with pytest.raises(ValueError, match=r"MonitorOperator.staleness.cadence.interval\[1\] is inf, which XCom"):
        refuse_non_finite({"staleness": {"cadence": {"interval": [1.0, float("inf")]}}}, "MonitorOperator")
