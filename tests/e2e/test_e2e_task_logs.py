"""What the person on call reads: the real Airflow task logs of the e2e story's nights.

A task log must fit on a screen, every line in it must be about the night (no library warnings,
no library start-up chatter, no ERROR line in a task that succeeded), and when validation stops a
night the last lines of the validate log must name the rule that failed. The logs are the files
the stack's task runner wrote (what the UI's Logs tab shows), under
<artifacts>/stack/airflow/logs/dag_id=<dag>/run_id=<run>/task_id=<task>/attempt=<n>.log.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from nightshift_airflow.operators import SKIP_TRAINING  # plugins/ is on the path (tests/conftest.py)

from .airflow_stack import AirflowStack, Api
from .scenario import D1, FIRST_RUN, HISTORY_DAYS, NIGHTLY, REPORTED_RUN, screenshot
from .test_e2e_ui import log_in

pytestmark = pytest.mark.e2e

SCREEN = 30  # lines: a log longer than this scrolls in the UI's log view
EMPTY_NIGHT_RUN = "e2e_empty_night"
EMPTY_NIGHT = D1 - dt.timedelta(days=HISTORY_DAYS + 30)  # the source has no rows for it


def task_logs(stack: AirflowStack, run_id: str) -> dict[str, list[dict]]:
    """task id -> the records of its last attempt's log (one JSON object a line)."""
    run = stack.home / "airflow" / "logs" / f"dag_id={NIGHTLY}" / f"run_id={run_id}"
    assert run.is_dir(), f"no task logs for run {run_id} under {run}"
    logs: dict[str, list[dict]] = {}
    for task in sorted(run.glob("task_id=*")):
        last = max(task.glob("attempt=*.log"), key=lambda p: int(p.stem.split("=")[1]))
        logs[task.name.split("=", 1)[1]] = [json.loads(line) for line in _lines(last)]
    return logs


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.strip()]


def _show(records: list[dict]) -> str:
    return "\n".join(f"{r.get('level')} {r.get('logger')}: {str(r.get('event'))[:160]}" for r in records)


@pytest.fixture(scope="module")
def empty_night(first_night: dict, api: Api) -> dict:
    """A dry run of a night the source has no rows for: validation stops it (row count), nothing is
    written for a consumer. Triggered here: no other test of the story fails a validation."""
    api.trigger(NIGHTLY, {"run_date": EMPTY_NIGHT.isoformat(), "dry_run": True,
                          "note": "e2e: validation stops an empty night"}, run_id=EMPTY_NIGHT_RUN)
    (run,) = api.wait(NIGHTLY, [EMPTY_NIGHT_RUN])
    return run


@pytest.mark.parametrize("run_id", [FIRST_RUN, REPORTED_RUN])
def test_a_night_s_task_logs_fit_on_a_screen_with_no_library_noise(stack, first_night, reported_night, api, run_id):
    """The cold start (train, evaluate, promote) and a dry run with every report: before the fix
    drift, monitor, train, evaluate and score each logged about 1,170 lines (skops probing Airflow's
    deprecated modules while MLflow loads a model) and validate about 225 (GX start-up)."""
    states = api.task_states(NIGHTLY, run_id)
    logs = task_logs(stack, run_id)
    # The EmptyOperator branch (taken when a rerun finds no reason to retrain) is marked success by the
    # scheduler without running, so it has no log.
    ran = {task for task, state in states.items() if state in ("success", "failed")} - {SKIP_TRAINING}
    assert ran <= set(logs) and {"validate", "score", "record_run"} <= ran, (states, sorted(logs))
    # (train ran on the first try of the first night; the backfill's rerun of that run found no reason to)
    sizes = {task: len(records) for task, records in logs.items()}
    print(f"\n{run_id}: task log lines {sizes}")
    for task, records in logs.items():
        assert len(records) <= SCREEN, f"{task} logged {len(records)} lines:\n{_show(records)}"
        warnings = [r for r in records if r.get("logger") == "py.warnings"]
        assert not warnings, f"{task} logged Python warnings:\n{_show(warnings)}"
        chatter = [r for r in records if str(r.get("logger", "")).startswith(("great_expectations", "mlflow",
                                                                                 "evidently", "alembic"))]
        assert not chatter, f"{task} logged library INFO lines:\n{_show(chatter)}"


@pytest.mark.parametrize("run_id", [FIRST_RUN, REPORTED_RUN])
def test_a_successful_task_logs_no_error_line(stack, first_night, reported_night, api, run_id):
    """MLflow wrote to stderr ("Registered model ... already exists", progress bars), which Airflow
    records as ERROR; resolving a skipped step's output logged "XCom not found" at ERROR."""
    states = api.task_states(NIGHTLY, run_id)
    for task, records in task_logs(stack, run_id).items():
        if states.get(task) != "success":
            continue
        errors = [r for r in records if r.get("level") in ("error", "critical")]
        assert not errors, f"{task} succeeded but logged errors:\n{_show(errors)}"


def test_a_failed_validation_ends_its_log_with_the_failing_rule(stack, api, empty_night):
    """The validate log of a night stopped by validation: short, and its last lines say which
    rule failed and why (the row count against validation.min_rows), not GX's start-up."""
    assert empty_night["state"] == "failed"
    states = api.task_states(NIGHTLY, EMPTY_NIGHT_RUN)
    assert states["validate"] == "failed", states
    records = task_logs(stack, EMPTY_NIGHT_RUN)["validate"]
    print(f"\nvalidate of the empty night ({len(records)} lines):\n{_show(records)}")
    assert len(records) <= SCREEN, _show(records)
    said = [r for r in records if not str(r.get("event")).startswith("::")]  # Airflow's fold markers left out
    last = str(said[-1].get("event"))
    assert "[expect_table_row_count_to_be_between] the snapshot has 0 rows" in last, _show(said[-3:])
    assert "expected at least 100 rows (validation.min_rows = 100)" in last, _show(said[-3:])
    (failed,) = [r for r in records if r.get("event") == "Task failed with exception"]  # the traceback, whole
    assert "validation.min_rows = 100" in failed["error_detail"][0]["exc_value"]
    alert = next(r for r in records if "validation_failed" in str(r.get("event")))  # the alert names the rule
    assert "[expect_table_row_count_to_be_between] the snapshot has 0 rows" in alert["event"], alert["event"]
    assert not [r for r in records if str(r.get("logger", "")).startswith("great_expectations")], _show(records)


def test_the_failed_night_s_validation_report_shows_what_each_rule_observed(browser_page, stack, api, empty_night):
    """The Validation report link of the stopped night, in the browser: the failing row-count rule
    with the 0 rows it saw, and next to every other rule what it observed (screenshot kept)."""
    links = api.get(f"/dags/{NIGHTLY}/dagRuns/{EMPTY_NIGHT_RUN}/taskInstances/validate/links")["extra_links"]
    url = links["Validation report"]
    assert url and url.startswith(stack.base_url + "/nightshift/reports/churn/"), links
    page = browser_page
    log_in(page, stack, f"/dags/{NIGHTLY}/runs/{EMPTY_NIGHT_RUN}/tasks/validate/details")
    assert page.goto(url).ok
    checks = page.locator("#checks")
    assert "observed" in checks.locator("thead").inner_text()
    row_count = checks.locator("tr", has_text="expect_table_row_count_to_be_between")
    assert "FAILED" in row_count.inner_text() and "0 rows" in row_count.locator("td.observed").inner_text()
    observed = [text.strip() for text in checks.locator("td.observed").all_inner_texts()]
    assert observed and all(observed), "a rule without its observed value"
    screenshot(page, "task-logs-validation-report-observed")
