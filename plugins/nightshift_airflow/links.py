"""Operator extra links: a button on a task in the Airflow UI that opens the report it wrote.

How Airflow 3.3 resolves them (checked in airflow/sdk/execution_time/task_runner.py `finalize`
and airflow/serialization/definitions/operatorlink.py): when a task ends, in any terminal
state, the worker calls `get_link` of every link in the operator's `operator_extra_links` and
stores the result as XCom `_link_<LinkClassName>`; the DAG processor serialises only each
link's name and XCom key; the API server reads that XCom back when the UI asks. So the links
run on the worker, after `execute`, and work for a failed task too (a failed validation is when
the report matters most) as long as the operator pushed the report's address before raising.

The contract with the operators: a reporting task pushes XCom `report_url` (validation also
`labelled_report_url`; the task that writes the model-health page `health_url`) holding the
artifact-store address of the page, as `ArtifactStore.url()` returns it: a page of that run's own
folder (reports/<dataset>/<night>/<run>/, include/nightshift/artifacts.run_folder), so the button of an
older run still opens that run's report after a rerun or a dry run of the night. The link turns it into
`<[api] base_url>/nightshift/reports/<path under the store root>`, served by the web app in
web.py: a browser on the Airflow UI cannot open file:// or s3:// addresses. Without
`[api] base_url` the link is root-relative (`/nightshift/reports/...`), which the browser
resolves against the UI it was clicked in. The address is also logged, so it is the last line
of the task log when a link cannot be used.

Only Airflow's task SDK is imported here: operators import this module, and the DAG processor
imports operators on every parse.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote, urljoin

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

log = logging.getLogger(__name__)

URL_PREFIX = "/nightshift"  # where plugin.py mounts the web app in the API server
REPORTS_FOLDER = "reports"  # the only folder of the artifact store the web app serves


class NotAReport(ValueError):
    """An address that is not a report inside the artifact store."""


def report_http_url(store_url: str, store_root: str, base_url: str | None) -> str:
    """The web app's address for an artifact-store address under `<store_root>/reports/`.

    :param store_url: what the operator pushed, e.g.
        `s3://bucket/nightshift/reports/churn/2026-02-01/scheduled__2026-02-01T00_00_00_00_00/drift.html`.
    :param store_root: the artifact store's root (Variable `nightshift_artifact_root`).
    :param base_url: Airflow's `[api] base_url` (may carry a path), or None for a root-relative link.
    """
    root = store_root.rstrip("/") + "/"
    if not store_url.startswith(root):
        raise NotAReport(f"report address {store_url!r} is not inside the artifact store {store_root!r}")
    relative = store_url[len(root):]
    parts = relative.split("/")
    if parts[0] != REPORTS_FOLDER or len(parts) < 2 or any(p in ("", ".", "..") for p in parts):
        raise NotAReport(f"report address {store_url!r} is not a file under {root}{REPORTS_FOLDER}/")
    base = (base_url or "/").rstrip("/") + "/"
    return urljoin(base, quote(URL_PREFIX.strip("/") + "/" + relative, safe="/"))


class NightshiftReportLink(BaseOperatorLink):
    """Base for the report buttons: subclasses name the button and the XCom key the address is in.

    The XCom key Airflow stores the link under is `_link_<class name>`, so each button is its own
    class (one class with several instances would share one key).
    """

    name: ClassVar[str]
    report_key: ClassVar[str]

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow.sdk.configuration import conf
        from airflow.sdk.execution_time.xcom import XCom

        from nightshift_airflow import runtime

        store_url = _pushed(XCom, ti_key, self.report_key)
        if not store_url:
            return ""  # no report this run (e.g. no champion to compare with): Airflow hides the button
        try:
            url = report_http_url(str(store_url), runtime.artifact_store().root,
                                  conf.get("api", "base_url", fallback=None))
        except (NotAReport, runtime.SettingMissing) as error:
            log.warning("%s: no link: %s", self.name, error)
            return ""
        log.info("%s: %s", self.name, url)
        return url


def _pushed(xcom: Any, ti_key: TaskInstanceKey, key: str) -> Any:
    """What the task pushed under `key`, or None. Asked for as a sequence: a missing single XCom
    (`XCom.get_value`) is logged as an error in the task log, and most tasks lack some report."""
    if ti_key.map_index >= 0:
        return xcom.get_value(ti_key=ti_key, key=key)
    values = xcom.get_all(key=key, dag_id=ti_key.dag_id, task_id=ti_key.task_id, run_id=ti_key.run_id)
    return values[0] if values else None


class ValidationReportLink(NightshiftReportLink):
    name = "Validation report"
    report_key = "report_url"


class LabelledValidationReportLink(NightshiftReportLink):
    name = "Validation report (labelled)"
    report_key = "labelled_report_url"


class DriftReportLink(NightshiftReportLink):
    name = "Drift report"
    report_key = "report_url"


class EvaluationReportLink(NightshiftReportLink):
    name = "Evaluation report"
    report_key = "report_url"


class HealthPageLink(NightshiftReportLink):
    name = "Model health"
    report_key = "health_url"


ALL_LINKS = (ValidationReportLink, LabelledValidationReportLink, DriftReportLink, EvaluationReportLink,
             HealthPageLink)
