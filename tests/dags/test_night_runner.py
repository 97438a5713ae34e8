"""The demo's night runner (scripts/local_stack.NightRunner) leaves what the Airflow UI shows for a run the
scheduler made (issue 13 items 3, 4, 6): each task's log in Airflow's log folder and layout, as Airflow's
JSON lines; the run's start date when it ran, not its logical date; a note naming the night and conf.

One real `dag.test` of a two-task DAG (one task logs, one fails) in a subprocess with its own Airflow home.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import local_stack  # noqa: E402

TINY_DAG = '''
import datetime as dt, logging
from airflow.sdk import DAG, Param, task

with DAG("nightshift_tiny", schedule="@daily", start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
         catchup=False, default_args={"retries": 0},
         params={"run_date": Param(None, type=["null", "string"]), "note": Param(None, type=["null", "string"]),
                 "force_retrain": Param(False, type=["boolean", "null"])}):
    @task
    def speak():
        logging.getLogger("nightshift.tiny").warning("the tiny task speaks")

    @task
    def fail():
        raise ValueError("the tiny task fails on purpose")

    speak() >> fail()
'''

RUN = """
    import datetime as dt, json, sys
    sys.path.insert(0, "scripts")
    import local_stack
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    night = local_stack.NightRunner("nightshift_tiny").run(dt.date(2026, 2, 12), {"force_retrain": True})
    with create_session() as session:
        session.expire_all()  # dag.test's DagRun is cached in this (scoped) session; read what was committed
        run = session.query(DagRun).filter_by(dag_id="nightshift_tiny").one()
        print(json.dumps({"state": str(run.state), "start": run.start_date.isoformat(), "end": run.end_date.isoformat(),
                          "note": run.note, "log": str(night.log)}))
"""


@pytest.fixture(scope="module")
def night(tmp_path_factory) -> dict:
    home = tmp_path_factory.mktemp("night_runner")
    (home / "dags").mkdir()
    (home / "dags" / "tiny.py").write_text(TINY_DAG)
    env = {**os.environ, "NIGHTSHIFT_HOME": str(home), "AIRFLOW_HOME": str(home / "airflow"),
           "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"), "AIRFLOW__CORE__PLUGINS_FOLDER": str(home / "plugins"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'plugins'}"}
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, cwd=ROOT, check=True,
                   capture_output=True, timeout=300)
    began = dt.datetime.now(dt.timezone.utc)
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(RUN)], env=env, cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "began": began, "logs": home / "airflow" / "logs"}


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_each_task_s_log_is_in_airflow_s_log_folder_as_its_json_lines(night):
    folder = night["logs"] / "dag_id=nightshift_tiny"
    logs = {p.parent.name: p for p in folder.glob("run_id=*/task_id=*/attempt=1.log")}
    assert set(logs) == {"task_id=speak", "task_id=fail"}, sorted(folder.rglob("*"))
    spoken = _records(logs["task_id=speak"])
    said = [r for r in spoken if r["event"] == "the tiny task speaks"]
    assert said and said[0]["level"] == "warning" and said[0]["logger"] == "nightshift.tiny"
    assert all(dt.datetime.fromisoformat(r["timestamp"]) for r in spoken if "timestamp" in r)
    failed = "\n".join(r["event"] for r in _records(logs["task_id=fail"]))
    assert "ValueError: the tiny task fails on purpose" in failed  # the traceback, line by line
    assert "the tiny task speaks" not in failed  # one task's lines only
    night_log = Path(night["log"]).read_text()
    assert "the tiny task speaks" in night_log and "the tiny task fails on purpose" in night_log  # kept there too


def test_the_run_started_when_it_ran_and_its_note_names_the_night_and_conf(night):
    start, end = dt.datetime.fromisoformat(night["start"]), dt.datetime.fromisoformat(night["end"])
    assert night["began"] - dt.timedelta(seconds=5) <= start <= end  # not the logical date, months before
    assert (end - start).total_seconds() < 300
    assert night["state"] == "failed"
    assert night["note"] == 'night 2026-02-12 · conf {"run_date": "2026-02-12", "force_retrain": true}'


@pytest.mark.pure
def test_console_lines_become_airflow_records_with_level_logger_and_time():
    text = ("2026-02-01T23:09:26.409491Z [info     ] DAG bundles loaded: dags-folder [airflow.bundles.Manager] "
            "loc=manager.py:304\n"
            "2026-02-01T23:09:27.000001Z [error    ] Task failed; ti=<TI [State.SCHEDULED] x=1>     [airflow.dag] "
            "loc=dag.py:1 run_id=r1\n"
            "Traceback (most recent call last):\n"
            "\x1b[31mValueError: boom\x1b[0m\n")
    records = local_stack.airflow_log_records(text)
    assert records[0] == {"timestamp": "2026-02-01T23:09:26.409491Z", "level": "info",
                          "event": "DAG bundles loaded: dags-folder", "logger": "airflow.bundles.Manager"}
    assert records[1]["logger"] == "airflow.dag" and records[1]["event"].endswith("x=1> run_id=r1")
    assert records[3] == {"timestamp": "2026-02-01T23:09:27.000001Z", "level": "error", "event": "ValueError: boom"}
