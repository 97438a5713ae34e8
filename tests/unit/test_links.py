"""The report buttons: artifact-store address -> the reports app's http address, end to end in Airflow.

The mapping is a pure function (tested directly); the wiring is tested with a real DAG run:
Airflow's task runner computes each link when the task ends and stores it as XCom, and the
API server's code path (the serialized DAG's `get_extra_links`, what
GET /api/v2/dags/{dag}/dagRuns/{run}/taskInstances/{task}/links calls) reads it back.
The run happens in a subprocess so that Airflow is configured before it is imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from nightshift_airflow.links import NotAReport, report_http_url

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("root", "base_url", "expected"), [
    ("/data/store", "http://localhost:8080", "http://localhost:8080/nightshift/reports/churn/2026-02-01/drift.html"),
    ("/data/store/", "http://localhost:8080/", "http://localhost:8080/nightshift/reports/churn/2026-02-01/drift.html"),
    ("/data/store", "https://airflow.example.com/team-a",
     "https://airflow.example.com/team-a/nightshift/reports/churn/2026-02-01/drift.html"),
    ("/data/store", None, "/nightshift/reports/churn/2026-02-01/drift.html"),
])
def test_local_store_address_becomes_the_apps_address(root, base_url, expected):
    assert report_http_url("/data/store/reports/churn/2026-02-01/drift.html", root, base_url) == expected


def test_object_store_address_and_odd_characters_are_quoted():
    url = "s3://bucket/nightshift/reports/churn/2026-02-01/validation/current/validations/run 1#x.html"
    assert report_http_url(url, "s3://bucket/nightshift", "http://h:8080") == (
        "http://h:8080/nightshift/reports/churn/2026-02-01/validation/current/validations/run%201%23x.html")


def test_each_run_of_a_night_links_its_own_report():
    """Reports are kept per DAG run: a rerun's or a dry run's button never opens another run's page."""
    from include.nightshift.artifacts import ArtifactStore, run_folder

    store = ArtifactStore("/data/store")
    links = {run: report_http_url(store.url(*run_folder("churn", "2026-02-01", run), "evaluation.html"), store.root,
                                  "http://h:8080")
             for run in ("scheduled__2026-02-01T00:00:00+00:00", "manual__2026-02-03T09:00:00+00:00")}
    assert list(links.values()) == [
        "http://h:8080/nightshift/reports/churn/2026-02-01/scheduled__2026-02-01T00_00_00_00_00/evaluation.html",
        "http://h:8080/nightshift/reports/churn/2026-02-01/manual__2026-02-03T09_00_00_00_00/evaluation.html"]


@pytest.mark.parametrize("url", [
    "/elsewhere/reports/churn/drift.html",        # another root
    "/data/storeX/reports/churn/drift.html",      # a root that only shares a prefix
    "/data/store/snapshots/churn/x.parquet",      # inside the store but not a report
    "/data/store/reports",                        # the folder itself
    "/data/store/reports/churn/../../secret",     # climbing out
    "/data/store/reports//drift.html",            # empty segment
])
def test_addresses_outside_the_reports_folder_are_refused(url):
    with pytest.raises(NotAReport, match="report address"):
        report_http_url(url, "/data/store", "http://h:8080")


DAG_FILE = '''
import datetime as dt
from airflow.sdk import DAG, BaseOperator
from airflow.sdk.exceptions import AirflowFailException
from nightshift_airflow.links import DriftReportLink, LabelledValidationReportLink, ValidationReportLink


class Validate(BaseOperator):
    operator_extra_links = (ValidationReportLink(), LabelledValidationReportLink())

    def __init__(self, *, urls, fail=False, **kwargs):
        super().__init__(**kwargs)
        self.urls, self.fail = urls, fail

    def execute(self, context):
        for key, url in self.urls.items():
            context["ti"].xcom_push(key=key, value=url)
        if self.fail:
            raise AirflowFailException("validation failed")


class Drift(Validate):
    operator_extra_links = (DriftReportLink(),)


with DAG("links_check", schedule=None, start_date=dt.datetime(2026, 1, 1)):
    day = "{root}/reports/churn/2026-02-01"
    Validate(task_id="validate", urls={{"report_url": day + "/validation/current/validation.html",
                                        "labelled_report_url": day + "/validation/labelled/validation.html"}})
    Validate(task_id="failed_validate", urls={{"report_url": day + "/validation/current/validation.html"}}, fail=True)
    Drift(task_id="drift_without_champion", urls={{}})
    Drift(task_id="drift_outside_store", urls={{"report_url": "/somewhere/else/drift.html"}})
'''

RUN = '''
import datetime as dt, json
from airflow.utils.db import upgradedb
upgradedb()
from airflow.utils.cli import get_bagged_dag
from airflow.models.serialized_dag import SerializedDagModel
from airflow.models.taskinstance import TaskInstance
from airflow.utils.session import create_session

dag = get_bagged_dag(bundle_names=None, dag_id="links_check")
run = dag.test(logical_date=dt.datetime(2026, 2, 1, tzinfo=dt.timezone.utc))
dag = SerializedDagModel.get_dag("links_check")
out = {"state": str(run.state), "tasks": {}}
with create_session() as session:
    for ti in session.query(TaskInstance).filter_by(dag_id="links_check", run_id=run.run_id):
        task = dag.get_task(ti.task_id)
        out["tasks"][ti.task_id] = {"state": str(ti.state),
                                    "links": {n: task.get_extra_links(ti, n) or None for n in task.extra_links}}
print("RESULT " + json.dumps(out))
'''


@pytest.fixture(scope="module")
def dag_run(tmp_path_factory) -> dict:
    home = tmp_path_factory.mktemp("airflow_links")
    store = home / "store"
    (home / "dags").mkdir()
    (home / "dags" / "links_check.py").write_text(textwrap.dedent(DAG_FILE).format(root=store))
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
           "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__API__BASE_URL": "http://airflow.example:8080/sub",
           "AIRFLOW_VAR_NIGHTSHIFT_ARTIFACT_ROOT": str(store),
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins")])}
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(RUN)], env=env, cwd=home, capture_output=True,
                         text=True, timeout=300)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    assert out.returncode == 0 and lines, (out.stdout + out.stderr)[-4000:]
    return {**json.loads(lines[-1].removeprefix("RESULT ")), "output": out.stdout + out.stderr}


BASE = "http://airflow.example:8080/sub/nightshift/reports/churn/2026-02-01"


def test_both_validation_buttons_point_at_the_app(dag_run):
    assert dag_run["tasks"]["validate"] == {"state": "success", "links": {
        "Validation report": f"{BASE}/validation/current/validation.html",
        "Validation report (labelled)": f"{BASE}/validation/labelled/validation.html"}}


def test_a_failed_task_still_links_the_report_it_pushed_before_failing(dag_run):
    assert dag_run["tasks"]["failed_validate"] == {"state": "failed", "links": {
        "Validation report": f"{BASE}/validation/current/validation.html", "Validation report (labelled)": None}}


def test_no_report_means_no_button_and_no_error_in_the_log(dag_run):
    assert dag_run["tasks"]["drift_without_champion"]["links"] == {"Drift report": None}
    assert "XCom not found" not in dag_run["output"]


def test_an_address_outside_the_store_gives_no_button_and_says_why(dag_run):
    assert dag_run["tasks"]["drift_outside_store"]["links"] == {"Drift report": None}
    assert "Drift report: no link: report address '/somewhere/else/drift.html' is not inside" in dag_run["output"]


def test_the_address_is_also_written_to_the_task_log(dag_run):
    assert f"Validation report: {BASE}/validation/current/validation.html" in dag_run["output"]
