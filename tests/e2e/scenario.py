"""The story the end-to-end tests tell, in names and dates shared by the fixtures and the tests."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from .airflow_stack import ROOT

ARTIFACTS = Path(os.environ.get("NIGHTSHIFT_E2E_ARTIFACTS", ROOT / "test-artifacts" / "e2e")).resolve()
NIGHTLY, ROLLBACK = "nightshift_churn", "nightshift_churn_rollback"
ROWS = 1000
D1 = dt.date(2026, 3, 1)                      # the first night (cold start)
D2, D3 = D1 + dt.timedelta(days=1), D1 + dt.timedelta(days=2)
HISTORY_DAYS = 18                             # labelled days before D1: training window + holdout + label delay
FIRST_RUN = "e2e_first_night"
FIRST_NOTE = "e2e: first night through the REST API"
REPORTED_RUN = "e2e_reported_night"  # a dry run of D2 that writes every report


def midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.timezone.utc)


def screenshot(page, name: str) -> Path:
    path = ARTIFACTS / "screenshots" / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
