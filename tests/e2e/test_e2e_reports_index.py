"""Browse > Nightshift reports in a real browser: the per-night index, on the story's state after the twin
runs of D3 and the dry run of D2 (issue 13 defect 2).

Each published night shows the run that published it (pipeline_runs) and links to that run's own
reports; the first twin of D3, whose night the second twin published again, is listed under it as
replaced; D2 had a dry run only, listed with its own evaluation report, and the dry run registered
nothing in MLflow. Screenshots: 13-reports-index (inside the Airflow UI), 14-reports-index-page,
15-reports-index-dry-run-evaluation.
"""

from __future__ import annotations

import urllib.parse

import pytest

from include.nightshift.artifacts import safe_name

from .airflow_stack import AirflowStack, Api
from .scenario import D2, D3, NIGHTLY, REPORTED_RUN, screenshot
from .test_e2e_ui import MODEL, log_in

pytestmark = pytest.mark.e2e
CHURN = 'section[data-dataset="churn"]'


def _rows(frame, kind: str, night: str) -> list[dict]:
    """Text, the run's link (to its page in the Airflow UI) and the report links of each row of one kind
    (night / other-run) of one night of churn's table."""
    rows = frame.locator(f'{CHURN} tr.{kind}[data-night="{night}"]')
    return [{"text": rows.nth(i).inner_text(),
             "run": [a.get_attribute("href") for a in rows.nth(i).locator("td:nth-child(3) a").all()],
             "hrefs": [a.get_attribute("href") for a in rows.nth(i).locator("td:nth-child(4) a").all()]}
            for i in range(rows.count())]


def _run_page(run_id: str) -> str:
    """A run's page in the Airflow UI, under the stack's [api] base_url."""
    return f"/dags/{NIGHTLY}/runs/{urllib.parse.quote(run_id, safe='')}"


def test_the_reports_index_shows_each_night_s_status_and_the_publishing_run_s_reports(
        browser_page, stack: AirflowStack, api: Api, twin_runs, reported_night, registry, warehouse):
    assert reported_night["state"] == "success", api.task_states(NIGHTLY, REPORTED_RUN)
    with warehouse.cursor() as cur:
        cur.execute("SELECT logical_date, dag_run_id FROM churn.pipeline_runs WHERE rows_published > 0")
        published = {day.isoformat(): run for day, run in cur.fetchall()}
    assert D3.isoformat() in published

    page = browser_page
    log_in(page, stack, "/plugin/nightshift-reports")  # Browse > Nightshift reports, inside the Airflow UI
    frame = page.frame_locator("iframe")
    frame.locator(f"{CHURN} table.nights").wait_for()
    screenshot(page, "13-reports-index")

    for night, run in published.items():
        (row,) = _rows(frame, "night", night)
        assert "published" in row["text"] and run in row["text"], row
        assert row["hrefs"] and all(f"/{night}/{safe_name(run)}/" in href for href in row["hrefs"]), row
        assert row["run"] == [stack.base_url + _run_page(run)], row  # the run id opens the run in the Airflow UI
    replaced = [r["text"] for r in _rows(frame, "other-run", D3.isoformat()) if "replaced" in r["text"]]
    for twin in (r["dag_run_id"] for r in twin_runs if r["dag_run_id"] != published[D3.isoformat()]):
        assert [text for text in replaced if twin in text], (twin, replaced)  # it published, then a rerun did

    if D2.isoformat() not in published:  # in this module's story D2 had only the dry run
        (dry_night,) = _rows(frame, "night", D2.isoformat())
        assert "dry run only" in dry_night["text"] and not dry_night["hrefs"], dry_night
    (dry,) = [r for r in _rows(frame, "other-run", D2.isoformat()) if REPORTED_RUN in r["text"]]
    assert "dry run" in dry["text"], dry
    assert [href.rsplit("/", 1)[-1] for href in dry["hrefs"]][-2:] == ["drift.html", "evaluation.html"], dry

    page.goto(f"{stack.base_url}/nightshift/")  # the index on its own, as the iframe shows it
    page.locator(f"{CHURN} table.nights").wait_for()
    screenshot(page, "14-reports-index-page")
    answer = page.goto(urllib.parse.urljoin(f"{stack.base_url}/nightshift/", dry["hrefs"][-1]))
    assert answer.ok and "challenger of a dry run (not registered)" in page.content()
    origin = page.locator("p.origin")  # which run wrote the page, a link back to it (no MLflow run: a dry run)
    assert origin.inner_text() == f"Written by DAG run {REPORTED_RUN}", origin.inner_text()
    assert origin.locator("a").get_attribute("href") == stack.base_url + _run_page(REPORTED_RUN)
    screenshot(page, "15-reports-index-dry-run-evaluation")
    origin.locator("a").click()  # from the report back to its run in the Airflow UI
    page.wait_for_url(lambda url: urllib.parse.unquote(urllib.parse.urlparse(url).path)
                      == urllib.parse.unquote(_run_page(REPORTED_RUN)))
    page.get_by_text(REPORTED_RUN).first.wait_for()
    screenshot(page, "15b-report-origin-opens-the-run")
    # the dry run trained and judged a challenger, and MLflow has no version or run of it
    assert not [v for v in registry.client.search_model_versions(f"name = '{MODEL}'")
                if v.tags.get("nightshift.dag_run_id") == REPORTED_RUN]
