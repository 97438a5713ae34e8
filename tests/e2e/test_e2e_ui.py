"""What a person sees: headless Chromium logs into the real Airflow UI, opens the nightly DAG's
grid view and its trigger form, triggers a run from it, opens each task's report links, and rolls
the champion back from the rollback DAG's form. Screenshots are kept under test-artifacts/e2e/screenshots/.
"""

from __future__ import annotations

import re
import urllib.parse

import pytest

from .airflow_stack import USERNAME, AirflowStack, Api
from .scenario import D2, NIGHTLY, REPORTED_RUN, ROLLBACK, screenshot

pytestmark = pytest.mark.e2e

DECIDE, RECORD, VALIDATE, DRIFT, EVALUATE = "decide", "record_run", "validate", "drift", "evaluate"  # task ids
MODEL = "nightshift_churn"


def log_in(page, stack: AirflowStack, path: str) -> None:
    """Open a page; the simple auth manager sends us to its login form first."""
    page.goto(stack.base_url + path)
    page.get_by_label("Username").wait_for()
    screenshot(page, "01-login")
    page.get_by_label("Username").fill(USERNAME)
    page.get_by_label("Password").fill(stack.password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/auth/login" not in url)


def open_trigger_form(page):
    page.get_by_role("button", name="Trigger").first.click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Run Parameters").wait_for()
    return dialog


def test_login_grid_view_and_trigger_form_show_every_param_with_its_description(browser_page, stack, first_night,
                                                                                nightly_params):
    page = browser_page
    log_in(page, stack, f"/dags/{NIGHTLY}")
    assert urllib.parse.urlparse(page.url).path == f"/dags/{NIGHTLY}"
    for task in (DECIDE, RECORD):  # the grid lists the tasks (groups collapsed) ...
        page.get_by_text(task, exact=True).first.wait_for()
    screenshot(page, "02-grid")

    dialog = open_trigger_form(page)
    screenshot(page, "03-trigger-form")
    text = dialog.inner_text()
    assert nightly_params
    for name, param in nightly_params.items():
        assert param["title"] in text and param["description"] in text, f"param {name!r} ({param}) not in the form"


def test_trigger_form_with_its_defaults_can_be_submitted(browser_page, stack):
    """The form must open valid: a scheduled night needs no input, and neither should a manual one."""
    page = browser_page
    log_in(page, stack, f"/dags/{NIGHTLY}")
    dialog = open_trigger_form(page)
    trigger = dialog.get_by_role("button", name="Trigger")
    empty_required = dialog.evaluate("d => Array.from(d.querySelectorAll('input[required]'))"
                                     ".filter(i => i.type !== 'checkbox' && !i.value).map(i => i.name)")
    screenshot(page, "04-trigger-form-defaults")
    assert trigger.is_enabled() and not empty_required, (
        f"the trigger form refuses its own defaults; required but empty: {empty_required} (the UI makes a param "
        "required unless its type allows null, and an empty string does not fill a required field)")


def test_run_triggered_from_the_form_runs_with_what_was_typed(browser_page, stack, api: Api, first_night, warehouse):
    """A dry run for D2 from the form: the conf holds what was typed, the run succeeds, nothing is published."""
    page = browser_page
    log_in(page, stack, f"/dags/{NIGHTLY}")
    dialog = open_trigger_form(page)
    note = "e2e: dry run from the browser"
    dialog.locator("[name=element_note]").fill(note)
    dialog.locator("[name=element_run_date]").fill(D2.isoformat())
    dialog.locator("label:has([name=element_dry_run])").click()
    assert dialog.locator("[name=element_dry_run]").is_checked()
    screenshot(page, "05-trigger-form-filled")
    with warehouse.cursor() as cur:
        cur.execute("SELECT count(*) FROM churn.predictions WHERE score_date = %s", (D2,))
        before = cur.fetchone()
    dialog.get_by_role("button", name="Trigger").click()

    page.wait_for_url(re.compile(rf"/dags/{NIGHTLY}/runs/.+"))
    run_id = urllib.parse.unquote(page.url.rsplit("/runs/", 1)[1].split("?")[0])
    screenshot(page, "06-triggered-run")
    (run,) = api.wait(NIGHTLY, [run_id])
    assert run["conf"]["note"] == note and run["conf"]["run_date"] == D2.isoformat() and run["conf"]["dry_run"] is True
    assert run["state"] == "success", api.task_states(NIGHTLY, run_id)
    assert run["triggering_user_name"] == USERNAME
    with warehouse.cursor() as cur:
        cur.execute("SELECT count(*) FROM churn.predictions WHERE score_date = %s", (D2,))
        assert cur.fetchone() == before  # a dry run publishes nothing

    # which night the run processed shows in the runs list too (its conf column), not only in its header
    page.goto(f"{stack.base_url}/dags/{NIGHTLY}/runs")
    row = page.locator("tbody tr", has=page.get_by_text(run_id, exact=True))
    row.wait_for()
    page.get_by_role("button", name="Expand all extra JSON").click()  # the Conf column shows it collapsed
    row.get_by_text(D2.isoformat()).first.wait_for()
    page.locator("table").first.hover()  # the list re-renders as it polls: scrolled by the mouse, not an element handle
    page.mouse.wheel(3000, 0)  # to the Conf column, for the screenshot
    screenshot(page, "06b-runs-list-conf")
    assert D2.isoformat() in row.inner_text(), row.inner_text()  # the run itself ran today: D2 is its conf


# --- (g) report links of a task ------------------------------------------------------------------

REPORT_LINKS = {VALIDATE: ("Validation report", "Validation report (labelled)"), DRIFT: ("Drift report",),
                EVALUATE: ("Evaluation report",), RECORD: ("Model health",)}


@pytest.mark.parametrize("task_id", list(REPORT_LINKS))
def test_task_report_links_open_the_night_s_report_in_the_browser(browser_page, stack, api: Api, reported_night,
                                                                   task_id):
    assert reported_night["state"] == "success", api.task_states(NIGHTLY, REPORTED_RUN)
    links = api.get(f"/dags/{NIGHTLY}/dagRuns/{REPORTED_RUN}/taskInstances/{task_id}/links")["extra_links"]
    assert {name: bool(links.get(name)) for name in REPORT_LINKS[task_id]} == dict.fromkeys(REPORT_LINKS[task_id], True), links

    page = browser_page
    log_in(page, stack, f"/dags/{NIGHTLY}/runs/{REPORTED_RUN}/tasks/{task_id}/details")
    buttons = {name: page.get_by_role("link", name=name, exact=True) for name in REPORT_LINKS[task_id]}
    for button in buttons.values():
        button.wait_for()  # the task's Extra Links, on its Details tab
    screenshot(page, f"07-{task_id}-report-links")
    hrefs = {name: button.get_attribute("href") for name, button in buttons.items()}
    for number, (name, url) in enumerate(hrefs.items()):
        assert url == links[name] and url.startswith(stack.base_url + "/nightshift/reports/churn/"), url
        answer = page.goto(url)  # with the UI's session cookie, as a click would
        assert answer.ok, f"{name}: {url} -> {answer.status}"
        assert answer.headers.get("content-security-policy", "").startswith("sandbox")
        assert "<html" in page.content().lower()
        screenshot(page, f"08-{task_id}-{number}-report")


# --- (f) rollback from the trigger form ----------------------------------------------------------


def test_rollback_from_the_form_restores_the_previous_champion(browser_page, stack, api: Api, twin_runs, registry,
                                                              warehouse):
    # Named in the form's version field: the REST rollback before this one may have used up the only
    # "previous champion" (the twins now register one version between them, not two).
    current = registry.champion(MODEL).version
    served = [v for v in registry.versions(MODEL) if v.champion_since is not None and v.version != current]
    assert served, f"no version other than v{current} ever served"
    previous = max(served, key=lambda v: (v.champion_since, v.version)).version

    page = browser_page
    log_in(page, stack, f"/dags/{ROLLBACK}")
    dialog = open_trigger_form(page)
    text = dialog.inner_text()
    for title in ("Version to restore", "Reason", "Re-publish the latest night"):
        assert title in text, f"{title!r} not in the rollback form"
    reason = "e2e: rolled back from the browser"
    dialog.locator("[name=element_reason]").fill(reason)
    dialog.locator("[name=element_version]").fill(str(previous))
    screenshot(page, "09-rollback-form")
    dialog.get_by_role("button", name="Trigger").click()

    page.wait_for_url(re.compile(rf"/dags/{ROLLBACK}/runs/.+"))
    run_id = urllib.parse.unquote(page.url.rsplit("/runs/", 1)[1].split("?")[0])
    (run,) = api.wait(ROLLBACK, [run_id])
    page.reload()
    screenshot(page, "10-rollback-run")
    assert run["state"] == "success", api.task_states(ROLLBACK, run_id)
    assert registry.champion(MODEL).version == previous
    with warehouse.cursor() as cur:
        cur.execute("SELECT from_version, to_version, actor, reason FROM churn.champion_changes "
                    "WHERE event = 'rollback' AND dag_run_id = %s", (run_id,))
        assert cur.fetchall() == [(current, previous, USERNAME, reason)]
