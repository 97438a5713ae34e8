"""The evaluation report's plots in a real browser (issue 13), on the story's reported night.

The report is opened as a person opens it, from the evaluate task's Extra Link behind the Airflow
login: the reports app serves it under a sandboxing CSP, and every plot must still draw (a PNG data
URI inside the page, nothing fetched) with its alt text naming it. Screenshot: 12-evaluation-plots.
"""

from __future__ import annotations

import pytest

from .airflow_stack import AirflowStack, Api
from .scenario import NIGHTLY, REPORTED_RUN, screenshot
from .test_e2e_ui import EVALUATE, log_in

pytestmark = pytest.mark.e2e

PLOTS = {"roc": "ROC curve: ", "precision_recall": "Precision-recall curve: ", "calibration": "Calibration curve: ",
         "score_histogram": "Score histograms, champion vs challenger: ",
         "confusion_matrix": "Confusion matrix at the decision threshold: ", "lift": "Lift: "}


def test_the_evaluation_report_draws_every_plot_behind_the_login(browser_page, stack: AirflowStack, api: Api,
                                                                 reported_night):
    assert reported_night["state"] == "success", api.task_states(NIGHTLY, REPORTED_RUN)
    links = api.get(f"/dags/{NIGHTLY}/dagRuns/{REPORTED_RUN}/taskInstances/{EVALUATE}/links")["extra_links"]
    page = browser_page
    log_in(page, stack, f"/dags/{NIGHTLY}/runs/{REPORTED_RUN}/tasks/{EVALUATE}/details")
    answer = page.goto(links["Evaluation report"])
    assert answer.ok and answer.headers.get("content-security-policy", "").startswith("sandbox")
    page.locator("#plots").scroll_into_view_if_needed()
    screenshot(page, "12-evaluation-plots")

    for plot_id, title in PLOTS.items():
        image = page.locator(f"figure#plot-{plot_id} img")
        assert image.evaluate("img => img.complete && img.naturalWidth") > 300, plot_id  # drawn, not blocked
        assert image.get_attribute("src").startswith("data:image/png;base64,"), plot_id
        alt = image.get_attribute("alt")
        assert alt.startswith(title) and "champion" in alt, alt  # v1 is the champion the challenger met
