"""Alerts reach a real HTTP receiver through a real Airflow connection, and never fail a task.

The receiver is an http.server in a thread that records every JSON body. Connections and the
`nightshift_notifiers` Variable are set the way a deployment sets them (AIRFLOW_CONN_* /
AIRFLOW_VAR_* environment variables). The last test runs a real DAG with `dag.test` in a
subprocess (own AIRFLOW_HOME, `airflow db migrate`): a task sends every pipeline event and
another one fails, its `on_failure_callback` being `TaskFailureNotifier()`.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest

from nightshift_airflow import notifiers
from nightshift_airflow.notifiers import (NOTIFIERS_VARIABLE, LogNotifier, NotifierSettingError, TaskFailureNotifier,
                                          WebhookNotifier, notify)

ROOT = Path(__file__).resolve().parents[2]
CONN_ID = "nightshift_test_alerts"


class Receiver:
    """A webhook receiver: records (path, JSON body) and answers with `status`."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict]] = []
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append((self.path, json.loads(body)))
                reply = b"ok" if receiver.status == 200 else b"server error"
                self.send_response(receiver.status)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def bodies(self) -> list[dict]:
        return [body for _, body in self.received]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.thread.start()
    yield r
    r.server.shutdown()
    r.server.server_close()


def webhook_connection(url: str, token: str = "") -> str:
    """An Airflow `slackwebhook` connection in JSON form: host + token, or the whole URL as password."""
    if token:
        return json.dumps({"conn_type": "slackwebhook", "host": url, "password": token})
    return json.dumps({"conn_type": "slackwebhook", "password": url})


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# A task context as the task runner passes it, reduced to what the notifiers read.
CONTEXT = {"ti": SimpleNamespace(dag_id="nightshift_churn", run_id="manual__2026-11-20", task_id="drift",
                                 try_number=1)}


def test_log_notifier_writes_one_warning_line(caplog, monkeypatch):
    monkeypatch.setenv(f"AIRFLOW_VAR_{NOTIFIERS_VARIABLE.upper()}", "log")
    with caplog.at_level(logging.WARNING, logger=notifiers.__name__):
        notify("drift", "drift share 0.45 >= 0.30", CONTEXT, {"share": 0.45, "drifted": ["tenure", "plan"]})
    lines = [r for r in caplog.records if r.name == notifiers.__name__]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    assert lines[0].getMessage() == (
        "nightshift drift: drift share 0.45 >= 0.30 (dag nightshift_churn, run manual__2026-11-20, task drift)"
        ' | details {"drifted": ["tenure", "plan"], "share": 0.45}')


def test_unset_variable_means_log_only(caplog, monkeypatch, receiver):
    monkeypatch.delenv(f"AIRFLOW_VAR_{NOTIFIERS_VARIABLE.upper()}", raising=False)
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", webhook_connection(receiver.url + "/hook"))
    with caplog.at_level(logging.WARNING, logger=notifiers.__name__):
        notify("promotion", "v3 is champion", CONTEXT)
    assert [type(n) for n in notifiers.configured_notifiers()] == [LogNotifier]
    assert any("nightshift promotion: v3 is champion" in r.getMessage() for r in caplog.records)
    assert receiver.received == []


@pytest.mark.parametrize("event", notifiers.EVENTS)
def test_webhook_receives_slack_style_json_for_each_event(event, monkeypatch, receiver):
    monkeypatch.setenv(f"AIRFLOW_VAR_{NOTIFIERS_VARIABLE.upper()}", f"log, webhook:{CONN_ID}")
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", webhook_connection(receiver.url + "/hook"))
    notify(event, f"something about {event}", CONTEXT, {"version": 3, "metric": 0.81})
    assert receiver.received == [("/hook", {
        "text": f"nightshift {event}: something about {event} "
                "(dag nightshift_churn, run manual__2026-11-20, task drift)",
        "event": event, "dag_id": "nightshift_churn", "run_id": "manual__2026-11-20", "task_id": "drift",
        "details": {"version": 3, "metric": 0.81}})]


@pytest.mark.parametrize(("allow", "dry_run"), [(False, False), (True, False), (False, True)])
def test_a_night_without_a_model_alerts_naming_the_setting_unless_a_dry_run(allow, dry_run, monkeypatch, receiver):
    """What the score task sends and raises when no champion is left after the gate (nightly.NoModel)."""
    import dataclasses
    import datetime as dt

    from include.nightshift.nightly import NoModel
    from include.nightshift.spec import load_spec
    from include.nightshift.steps import ScoringStep

    spec = load_spec(ROOT / "include" / "specs" / "churn.yaml")
    spec = dataclasses.replace(spec, scoring=dataclasses.replace(spec.scoring, allow_no_predictions=allow))
    found = NoModel(spec, ScoringStep(url=None, rows=0, model_version=None, day=dt.date(2026, 5, 1)), dry_run=dry_run)
    assert found.allowed == (allow or dry_run) and found.scored.no_model
    assert "no_model" in str(found) and ("the run fails" in str(found)) == (not found.allowed)
    if dry_run:
        assert found.alert is None  # a dry run publishes nothing on purpose: nobody is left without predictions
        return
    assert f"scoring.allow_no_predictions is {str(allow).lower()}" in str(found)
    monkeypatch.setenv(f"AIRFLOW_VAR_{NOTIFIERS_VARIABLE.upper()}", f"webhook:{CONN_ID}")
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", webhook_connection(receiver.url + "/hook"))
    message, details = found.alert
    notify("no_model", message, CONTEXT, details)
    [body] = receiver.bodies()
    assert body["event"] == "no_model" and body["text"].startswith(
        "nightshift no_model: churn 2026-05-01: no predictions tonight: nightshift_churn has no champion")
    assert body["details"] == {"night": "2026-05-01", "model_name": "nightshift_churn", "allow_no_predictions": allow}


def test_webhook_token_in_password_is_appended_to_host(monkeypatch, receiver):
    """The documented form: public endpoint in host, secret token in password (masked by Airflow)."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}",
                       webhook_connection(receiver.url + "/services", token="T000/B000/XXXX"))
    WebhookNotifier(CONN_ID).send(notifiers.alert_from_context("rollback", "back to v2", CONTEXT))
    assert [path for path, _ in receiver.received] == ["/services/T000/B000/XXXX"]


def test_details_that_are_not_json_become_strings(monkeypatch, receiver):
    import datetime as dt

    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", webhook_connection(receiver.url))
    WebhookNotifier(CONN_ID).send(
        notifiers.alert_from_context("drift", "x", CONTEXT, {"day": dt.date(2026, 11, 20)}))
    assert receiver.bodies()[0]["details"] == {"day": "2026-11-20"}


def test_long_multiline_message_is_one_bounded_line():
    alert = notifiers.alert_from_context("validation_failed", "rule a failed\nrule b failed " + "x" * 2000, CONTEXT)
    assert "\n" not in alert.text and len(alert.text) == notifiers.TEXT_LIMIT and alert.text.endswith("...")


@pytest.mark.parametrize("fault", ["closed_port", "http_500", "no_connection"])
def test_undelivered_webhook_logs_a_warning_and_does_not_raise(fault, caplog, monkeypatch, receiver):
    monkeypatch.setenv(f"AIRFLOW_VAR_{NOTIFIERS_VARIABLE.upper()}", f"webhook:{CONN_ID}")
    if fault == "closed_port":
        url = f"http://127.0.0.1:{closed_port()}/hook"
    else:
        url = receiver.url + "/hook"
        receiver.status = 500
    if fault != "no_connection":
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", webhook_connection(url))
    else:
        monkeypatch.delenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", raising=False)
    with caplog.at_level(logging.WARNING, logger=notifiers.__name__):
        notify("rollback", "back to v2", CONTEXT)  # must not raise
    warnings = [r.getMessage() for r in caplog.records
                if r.name == notifiers.__name__ and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"alert rollback not delivered to webhook connection '{CONN_ID}'")
    assert len(receiver.received) == (1 if fault == "http_500" else 0)


@pytest.mark.parametrize("value", ["log,slack", "webhook", "log,webhook:", "email:ops"])
def test_unknown_notifier_names_the_variable(value, monkeypatch):
    monkeypatch.setenv(f"AIRFLOW_VAR_{NOTIFIERS_VARIABLE.upper()}", value)
    with pytest.raises(NotifierSettingError, match=f"Airflow Variable '{NOTIFIERS_VARIABLE}': unknown notifier"):
        notify("drift", "x", CONTEXT)


def test_unknown_event_is_refused():
    with pytest.raises(ValueError, match="unknown alert event 'drifted'"):
        notify("drifted", "x", CONTEXT)


DAG_FILE = '''
import datetime as dt

from airflow.sdk import dag, task

from nightshift_airflow.notifiers import TaskFailureNotifier, notify


@dag(schedule=None, start_date=dt.datetime(2026, 1, 1), catchup=False,
     default_args={"retries": 0, "on_failure_callback": TaskFailureNotifier()})
def notifier_probe():
    @task
    def emit(**context):
        for event in ("validation_failed", "drift", "no_model", "promotion", "rollback"):
            notify(event, f"{event} happened", context, {"n": 1})

    @task
    def boom():
        raise RuntimeError("the source is gone\\nsecond line")

    emit() >> boom()


notifier_probe()
'''

RUN = '''
import datetime as dt
from airflow.utils.cli import get_bagged_dag
run = get_bagged_dag(bundle_names=None, dag_id="notifier_probe").test(
    logical_date=dt.datetime(2026, 11, 20, tzinfo=dt.timezone.utc))
print("RUN_STATE", run.state, run.run_id)
'''


@pytest.mark.dagrun
def test_real_dag_run_sends_events_and_task_failure(tmp_path, receiver):
    """dag.test: `notify` from inside a real task and `TaskFailureNotifier` as on_failure_callback."""
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "notifier_probe.py").write_text(DAG_FILE)
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "home"), "AIRFLOW__CORE__DAGS_FOLDER": str(tmp_path / "dags"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins")]),
           f"AIRFLOW_VAR_{NOTIFIERS_VARIABLE.upper()}": f"log,webhook:{CONN_ID}",
           f"AIRFLOW_CONN_{CONN_ID.upper()}": webhook_connection(receiver.url + "/hook")}
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True, capture_output=True,
                   timeout=120)
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(RUN)], env=env, capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    state_line = next(line for line in out.stdout.splitlines() if line.startswith("RUN_STATE"))
    _, state, run_id = state_line.split()
    assert state == "failed"

    bodies = receiver.bodies()
    assert [b["event"] for b in bodies] == ["validation_failed", "drift", "no_model", "promotion", "rollback",
                                            "task_failed"]
    assert {(b["dag_id"], b["run_id"]) for b in bodies} == {("notifier_probe", run_id)}
    assert [b["task_id"] for b in bodies] == ["emit"] * 5 + ["boom"]
    assert bodies[1]["text"] == f"nightshift drift: drift happened (dag notifier_probe, run {run_id}, task emit)"
    failure = bodies[-1]
    assert failure["text"] == (f"nightshift task_failed: RuntimeError: the source is gone second line "
                               f"(dag notifier_probe, run {run_id}, task boom)")
    assert failure["details"]["error_type"] == "RuntimeError"
    assert failure["details"]["error"] == "the source is gone\nsecond line"
    assert failure["details"]["try_number"] == 1
    assert "/dags/notifier_probe/runs/" in failure["details"]["log_url"]
    # The log notifier wrote its line for the failure too (dag.test prints task logs).
    assert "nightshift task_failed: RuntimeError: the source is gone" in out.stdout + out.stderr
