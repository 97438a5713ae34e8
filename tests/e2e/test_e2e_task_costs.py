"""Step costs on the deployed stack (issue 14 part 5): the scheduler runs each task in its own process, so
what the operators' base class measures there is each task's own process, not the one process of the local
demo. The first night and the dry run of the story: every step that ran has its task_costs row, and the
Model health page shows the task costs chart and table in a browser. Screenshot: task-costs.
"""

from __future__ import annotations

import re

import pytest

from .airflow_stack import AirflowStack
from .scenario import NIGHTLY, screenshot
from .test_e2e_ui import log_in

pytestmark = pytest.mark.e2e
# record_run writes the rows; no_retrain_needed is an EmptyOperator; plan_shards only counts a night's shards
UNMEASURED = {"record_run", "no_retrain_needed", "plan_shards"}


def _costs(warehouse, run_id: str) -> dict[str, tuple]:
    with warehouse.cursor() as cur:
        cur.execute("SELECT task_id, wall_seconds, cpu_seconds, rss_start_bytes, rss_peak_bytes, rows, outcome, dry_run "
                    "FROM churn.task_costs WHERE dag_run_id = %s", (run_id,))
        return {r[0]: r[1:] for r in cur.fetchall()}


def test_every_step_of_a_scheduled_run_is_measured_in_its_own_process(first_night, reported_night, warehouse):
    with warehouse.cursor() as cur:
        cur.execute("SELECT dag_run_id, rows_in, dry_run, details FROM churn.run_attempts WHERE dag_run_id = ANY(%s)",
                    ([first_night["dag_run_id"], reported_night["dag_run_id"]],))
        attempts = cur.fetchall()
    assert len(attempts) == 2
    for run_id, rows_in, dry_run, details in attempts:
        executed = {t for t, s in details["task_states"].items() if s in ("success", "failed")} - UNMEASURED
        costs = _costs(warehouse, run_id)
        assert executed <= set(costs), (run_id, sorted(executed - set(costs)))
        for task, (wall, cpu, start, peak, _, outcome, dry) in costs.items():
            assert wall > 0 and cpu >= 0 and peak >= start > 0 and dry is dry_run, (run_id, task)
        assert costs["snapshot"][4] == rows_in
        assert set(details["costs"]["tasks"]) == set(costs)
    first = _costs(warehouse, first_night["dag_run_id"])
    assert {"snapshot", "validate", "train", "evaluate", "score", "publish"} <= set(first)
    assert first["train"][4] > 0 and first["publish"][5] == "success"


def test_the_model_health_page_shows_the_task_costs(browser_page, stack: AirflowStack, first_night, warehouse):
    page = browser_page
    log_in(page, stack, f"/nightshift/health/{NIGHTLY}")
    page.wait_for_url(re.compile(r"/nightshift/reports/churn/health\.html$"))
    figure = page.locator("figure#task-costs")
    figure.scroll_into_view_if_needed()
    screenshot(page, "task-costs")
    assert figure.locator("img").evaluate("img => img.naturalWidth") > 400
    steps = page.locator("table#task-costs-tasks tbody tr td:first-child").all_inner_texts()
    assert {"snapshot", "validate", "score", "publish"} <= set(steps), steps
