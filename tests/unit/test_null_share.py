"""max_null_share 1 allows a night whose column is entirely null (issue 12, item 5): a calm day has no
wind gusts. Below 1 the share is still enforced, with a message that does not contradict itself."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pytest

from include.nightshift.demo_data import generate_day
from include.nightshift.validation import validate_snapshot

DAY = dt.date(2026, 3, 2)
ROWS = 500


def _with_null_share(spec, column: str, share: float):
    features = tuple(dataclasses.replace(f, max_null_share=share) if f.name == column else f for f in spec.features)
    return dataclasses.replace(spec, features=features)


@pytest.mark.parametrize("column", ["satisfaction_score", "acquisition_channel"])  # numeric and categorical
def test_a_column_entirely_null_passes_when_max_null_share_is_1(churn_spec, column):
    df = generate_day(DAY, ROWS)
    df[column] = None if column == "acquisition_channel" else np.nan
    result = validate_snapshot(df, _with_null_share(churn_spec, column, 1.0), day=DAY)
    assert result.success, result.message()


def test_below_1_an_entirely_null_column_fails_naming_the_share(churn_spec):
    df = generate_day(DAY, ROWS)
    df["satisfaction_score"] = np.nan
    result = validate_snapshot(df, _with_null_share(churn_spec, "satisfaction_score", 0.99), day=DAY)
    assert not result.success
    assert [f.column for f in result.failures] == ["satisfaction_score"]
    assert f"{ROWS} of {ROWS} values (100.00%) are null (allowed: at most 99.00%)" in result.failures[0].details
