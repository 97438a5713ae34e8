"""What a new user meets in the UI (issue 13 items 6, 12, 13), in a real browser on the real stack:
the run header names the night a run processed and its conf (the run's note), the trigger form takes
the run date as the YYYY-MM-DD its description names and marks no on/off switch as required, and the
validation report sends no one to Great Expectations' Data Docs (empty offline). Only the first night,
which every e2e module shares, is run. Screenshots: test-artifacts/e2e/screenshots/demo-ui-*.png.
"""

from __future__ import annotations

import json
import sys

import pytest

from .airflow_stack import ROOT, Api
from .scenario import D1, FIRST_NOTE, FIRST_RUN, NIGHTLY, screenshot
from .test_e2e_ui import log_in, open_trigger_form

pytestmark = pytest.mark.e2e

SWITCHES = ("force_retrain", "dry_run", "rerun_published", "allow_later_model")  # the nightly DAG's yes/no params


def test_the_run_header_names_the_night_and_the_conf(browser_page, stack, api: Api, first_night):
    """The scheduler's listener (nightshift_airflow.run_note) wrote the note when the run started."""
    note = (api.run(NIGHTLY, FIRST_RUN)["note"] or "").split("\n\n")[0]  # a later rerun (backfill) adds its own
    assert note.startswith(f"night {D1.isoformat()} · conf {{"), note
    conf = json.loads(note.split(" · conf ", 1)[1])
    assert conf == {"note": FIRST_NOTE, "run_date": D1.isoformat()}  # what the trigger sent beyond the defaults

    page = browser_page
    log_in(page, stack, f"/dags/{NIGHTLY}/runs/{FIRST_RUN}")
    page.get_by_text(f"night {D1.isoformat()}", exact=False).first.wait_for()
    screenshot(page, "demo-ui-01-run-header-note")


def test_the_trigger_form_takes_the_date_as_described_and_marks_no_switch_required(browser_page, stack):
    page = browser_page
    log_in(page, stack, f"/dags/{NIGHTLY}")
    dialog = open_trigger_form(page)
    run_date = dialog.locator("[name=element_run_date]")
    # a date picker would show the browser's locale (mm/dd/yyyy) against a YYYY-MM-DD description
    assert run_date.evaluate("input => input.type") == "text"
    assert "YYYY-MM-DD" in dialog.inner_text()
    run_date.fill(D1.isoformat())
    marked = dialog.evaluate(
        "d => Array.from(d.querySelectorAll('.chakra-field__requiredIndicator'))"
        ".map(e => (e.closest('[data-part=root]') || e.parentElement).querySelector('input[name^=element_]'))"
        ".filter(i => i).map(i => i.name.replace('element_', ''))")
    screenshot(page, "demo-ui-02-trigger-form")
    for name in SWITCHES:
        assert dialog.locator(f"[name=element_{name}]").count() == 1, f"no switch for {name}"
    assert "promotion_policy" in marked, marked  # the check sees the marks (a choice with no null is required)
    assert not set(marked) & set(SWITCHES), f"switches marked required: {marked}"


def test_the_validation_report_has_no_link_to_data_docs(browser_page, stack, api: Api, first_night):
    links = api.get(f"/dags/{NIGHTLY}/dagRuns/{FIRST_RUN}/taskInstances/validate/links")["extra_links"]
    url = links["Validation report"]
    page = browser_page
    log_in(page, stack, f"/dags/{NIGHTLY}")
    assert page.goto(url).ok
    html = page.content()
    screenshot(page, "demo-ui-03-validation-report")
    assert "validation.json" in html  # the report itself
    assert "Data Docs" not in html and 'href="index.html"' not in html, "the report links Data Docs (empty offline)"


def test_make_ui_binds_every_server_to_loopback_and_starts_no_log_server():
    """`airflow standalone` started log servers on 0.0.0.0:8793/8794; make ui runs the components itself."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import local_stack

    env = local_stack.ui_env("postgresql://postgres@127.0.0.1:5432/postgres", 8080)
    assert env["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].startswith("http://127.0.0.1:")
    for component in ("scheduler", "triggerer"):
        assert f"{component} --skip-serve-logs" in local_stack.UI_COMPONENTS
    assert "scripts/demo.py ui" in (ROOT / "Makefile").read_text()
