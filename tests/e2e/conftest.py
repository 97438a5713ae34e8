"""One real Airflow stack for all end-to-end tests (package scope), the data it runs on, and a browser.

The stack's state, the component and task logs and the screenshots are test artifacts: they
are written under test-artifacts/e2e/ (git-ignored; NIGHTSHIFT_E2E_ARTIFACTS moves it),
emptied at the start of a session and printed at the end.

The tests tell one story in order, like the nights of a real deployment: the first night
(cold start, v1), a dry run from the browser, a backfill over the first nights, two triggers
of one night at once (two challengers promoted one after the other), then a rollback.
Fixtures hold the shared steps, so that any test can also run alone.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from .airflow_stack import DATABASES, Api, AirflowStack, local_stack
from .scenario import (ARTIFACTS, D1, D2, D3, FIRST_NOTE, FIRST_RUN, HISTORY_DAYS, NIGHTLY, REPORTED_RUN,
                       ROLLBACK, ROWS, midnight)

_STARTED: list[Path] = []  # the artifact folder, once a stack was started in this session


# The story's order: the REST and UI modules tell it (first night, backfill, twins, rollbacks); the modules
# after them look at the state it leaves, and the alias module, which moves the champion outside Nightshift,
# comes last. A module not listed runs after these, in name order.
STORY = ("test_e2e_rest", "test_e2e_ui", "test_e2e_demo_ui", "test_e2e_evaluation_plots", "test_e2e_reports_index",
         "test_e2e_task_logs", "test_e2e_health", "test_e2e_alias")


def pytest_collection_modifyitems(items: list) -> None:
    """Run the e2e modules in the story's order (pytest's own is by file name): a backfill of an early night
    must come before the twin runs promote a model trained for a later one (history.refuse_look_ahead)."""
    def rank(item) -> int:
        name = item.path.stem if item.path.parent.name == "e2e" else ""
        return STORY.index(name) if name in STORY else len(STORY) if name else -1

    items.sort(key=rank)


def pytest_terminal_summary(terminalreporter) -> None:
    for folder in _STARTED:
        terminalreporter.write_line(f"e2e artifacts (screenshots, Airflow and task logs): {folder}")


@pytest.fixture(scope="package")
def stack(pg_server_uri: str) -> Iterator[AirflowStack]:
    """api-server, scheduler and dag-processor on loopback, metadata in PostgreSQL; stopped at the end."""
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    (ARTIFACTS / "screenshots").mkdir(parents=True)
    print(f"\ne2e artifacts: {ARTIFACTS}")
    _STARTED.append(ARTIFACTS)
    airflow = AirflowStack.start(pg_server_uri, ARTIFACTS / "stack", dag_ids=(NIGHTLY, ROLLBACK))
    try:
        yield airflow
    finally:
        airflow.stop()


@pytest.fixture(scope="package")
def api(stack: AirflowStack) -> Api:
    return stack.api()


@pytest.fixture(scope="package")
def source(stack: AirflowStack, pg_server_uri: str) -> None:
    """The demo's seeded churn data: labelled history, then D1..D3, the labels of D1 and D2 known
    (each night sees the previous day's labels, as when they arrive a day late)."""
    from include.nightshift import demo_data

    conn = psycopg.connect(local_stack.database_uri(pg_server_uri, DATABASES["source"]))
    try:
        demo_data.create_source_table(conn)
        for back in range(HISTORY_DAYS, 0, -1):
            demo_data.load_day(conn, D1 - dt.timedelta(days=back), ROWS, with_labels=True)
        for day in (D1, D2, D3):
            demo_data.load_day(conn, day, ROWS, with_labels=day < D3)
    finally:
        conn.close()


@pytest.fixture(scope="package")
def warehouse(stack: AirflowStack, pg_server_uri: str) -> Iterator[psycopg.Connection]:
    # autocommit: every query sees the latest committed night
    conn = psycopg.connect(local_stack.database_uri(pg_server_uri, DATABASES["warehouse"]), autocommit=True)
    try:
        yield conn
    finally:
        conn.close()


@pytest.fixture(scope="package")
def registry(stack: AirflowStack):
    from include.nightshift.registry import Registry

    return Registry(stack.env["AIRFLOW_VAR_NIGHTSHIFT_MLFLOW_TRACKING_URI"])


@pytest.fixture(scope="package")
def first_night(api: Api, source: None) -> dict:
    """Night D1 triggered through the REST API with a conf: the cold start that trains and promotes v1.

    The logical date and data interval are the ones the daily schedule gives D1, so a later
    backfill over D1 finds this run instead of making a second one."""
    api.trigger(NIGHTLY, {"note": FIRST_NOTE, "run_date": D1.isoformat()}, run_id=FIRST_RUN,
                logical_date=midnight(D1), data_interval=(midnight(D1), midnight(D2)))
    (run,) = api.wait(NIGHTLY, [FIRST_RUN])
    return run


@pytest.fixture(scope="package")
def reported_night(first_night: dict, api: Api) -> dict:
    """A dry run of D2 with v1 as champion: every report exists (validation of the night and of the
    labels that arrived, drift against v1, evaluation of a forced challenger); nothing is published
    or promoted, so the other tests' story is unchanged."""
    api.trigger(NIGHTLY, {"run_date": D2.isoformat(), "dry_run": True, "force_retrain": True,
                          "note": "e2e: every report"}, run_id=REPORTED_RUN)
    (run,) = api.wait(NIGHTLY, [REPORTED_RUN])
    return run


@pytest.fixture(scope="package")
def twin_runs(first_night: dict, api: Api) -> list[dict]:
    """Two runs of night D3 posted at the same moment, each forcing a retrain and a promotion.

    No logical date (allowed in Airflow 3; the night comes from run_date). max_active_runs=1
    must queue the second: two registrations and promotions never interleave."""
    conf = {"run_date": D3.isoformat(), "force_retrain": True, "promotion_policy": "force",
            "rerun_published": True}  # the second reprocesses the night the first published
    ids = ["e2e_twin_a", "e2e_twin_b"]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda run_id: api.trigger(NIGHTLY, {**conf, "note": run_id}, run_id=run_id), ids))
    return sorted(api.wait(NIGHTLY, ids), key=lambda r: r["start_date"])


@pytest.fixture(scope="package")
def nightly_params(stack: AirflowStack) -> dict[str, dict]:
    """Title and description of each trigger param, read from the DAG file's PARAMS (in a subprocess:
    importing a DAG file configures Airflow, which this test process must not do for the others)."""
    code = ("import json; from dags.nightshift_nightly import PARAMS; print(json.dumps({n: {'title': p.schema.get("
            "'title', n), 'description': p.description} for n, p in PARAMS.items()}))")
    return json.loads(stack.python(code).strip().splitlines()[-1])


@pytest.fixture
def browser_page(stack: AirflowStack) -> Iterator:
    """A fresh headless Chromium page (Debian's chromium driven by Playwright; no browser download)."""
    from playwright.sync_api import sync_playwright

    chromium = os.environ.get("NIGHTSHIFT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.fail(f"no Chromium at {chromium}: install Debian's `chromium` (.ci/run does) or set NIGHTSHIFT_CHROMIUM")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(30_000)
        try:
            yield page
        finally:
            browser.close()
