"""The Model health page in a real browser, on the story's state after the twin runs (issue 13 defect 1).

The page is opened as a person opens it (through the reports app, behind the Airflow login): its
header names the version the registry serves, every recorded night is on it with its links, and
a night's Airflow-run link lands on that run's page in the Airflow UI. Screenshot: 11-model-health.
"""

from __future__ import annotations

import re
import urllib.parse

import pytest

from .airflow_stack import AirflowStack, Api
from .scenario import D1, D3, NIGHTLY, screenshot
from .test_e2e_ui import MODEL, log_in

pytestmark = pytest.mark.e2e


def test_model_health_names_the_serving_version_and_links_each_night(browser_page, stack: AirflowStack, api: Api,
                                                                     twin_runs, registry, warehouse):
    assert [r["state"] for r in twin_runs] == ["success", "success"], [api.task_states(NIGHTLY, r["dag_run_id"])
                                                                       for r in twin_runs]
    serving = registry.champion(MODEL).version
    with warehouse.cursor() as cur:
        cur.execute("SELECT logical_date, dag_run_id FROM churn.pipeline_runs ORDER BY logical_date DESC")
        nights = cur.fetchall()

    page = browser_page
    log_in(page, stack, f"/nightshift/health/{NIGHTLY}")  # what the DAG's "Model health" tab opens
    page.wait_for_url(re.compile(r"/nightshift/reports/churn/health\.html$"))
    header = page.locator("#serving").inner_text()
    screenshot(page, "11-model-health")

    assert f"champion v{serving}" in header, header
    for figure_id in ("drift", "features", "metric", "scores", "rate", "rows", "versions"):
        assert page.locator(f"figure#{figure_id} img").evaluate("img => img.naturalWidth") > 400, figure_id
    rows = page.locator("table#runs tbody tr")
    assert [rows.nth(i).locator("a.night").inner_text() for i in range(rows.count())] == \
        [day.isoformat() for day, _ in nights]
    assert {D1.isoformat(), D3.isoformat()} <= {day.isoformat() for day, _ in nights}

    # The newest night's Airflow-run link opens that run in the Airflow UI (a new tab for a person).
    newest = rows.nth(0).locator("a.airflow-run")
    assert newest.get_attribute("target") == "_blank"
    run_url = urllib.parse.urljoin(page.url, newest.get_attribute("href"))
    assert run_url == f"{stack.base_url}/dags/{NIGHTLY}/runs/{urllib.parse.quote(nights[0][1], safe='')}"
    # And one of its reports is served (the link is relative to the page, under reports/churn/).
    report = rows.nth(0).locator("a.report").first
    report_url = urllib.parse.urljoin(page.url, report.get_attribute("href"))
    answer = page.goto(report_url)
    assert answer.ok and report_url.startswith(f"{stack.base_url}/nightshift/reports/churn/"), report_url
    page.goto(run_url)
    page.get_by_text(nights[0][1]).first.wait_for()
    screenshot(page, "12-model-health-airflow-run")
