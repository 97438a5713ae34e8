"""The validation step on real Great Expectations, with demo data broken one way at a time.

One demo day is generated once; each test copies it, breaks one thing, and checks that the
verdict fails with a message naming the column and the rule (and, for a clean day, passes).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from include.nightshift.demo_data import generate_day
from include.nightshift.spec import EntityKey
from include.nightshift.validation import ValidationResult, build_suite, validate_snapshot

DAY = dt.date(2026, 3, 2)
ROWS = 2000


@pytest.fixture(scope="module")
def demo_day() -> pd.DataFrame:
    return generate_day(DAY, ROWS)


@pytest.fixture
def day_df(demo_day: pd.DataFrame) -> pd.DataFrame:
    return demo_day.copy()


def _failed(df: pd.DataFrame, spec, **kwargs) -> ValidationResult:
    result = validate_snapshot(df, spec, day=DAY, **kwargs)
    assert not result.success, result.message()
    assert result.failures
    return result


def test_clean_demo_day_passes_labelled_or_not(churn_spec, day_df):
    for labelled in (False, True):
        result = validate_snapshot(day_df, churn_spec, day=DAY, labelled=labelled,
                                   recent_row_counts=[ROWS] * 7)
        assert result.success, result.message()
        assert result.failures == [] and result.rows == ROWS and result.report_path is None
        assert result.evaluated == len(build_suite(churn_spec, day=DAY, labelled=labelled).expectations)
        assert "passed" in result.message()


def test_unlabelled_day_with_null_labels_passes(churn_spec, day_df):
    day_df[churn_spec.label.name] = pd.array([None] * ROWS, dtype="Int64")
    assert validate_snapshot(day_df, churn_spec, day=DAY).success


def _set_rows(column: str, value, rows: slice = slice(0, 40)) -> Callable[[pd.DataFrame], None]:
    def apply(df: pd.DataFrame) -> None:
        df.loc[df.index[rows], column] = value
    return apply


def _drop(df): df.drop(columns=["age"], inplace=True)
def _extra(df): df["coupon_code"] = "X"
def _as_text(df): df["tenure_months"] = df["tenure_months"].astype(str)
def _all_null(df): df["monthly_charges"] = np.nan
def _dup_keys(df): df.loc[df.index[:10], "customer_id"] = 1
def _late_ts(df): df.loc[df.index[3], "event_ts"] = pd.Timestamp(DAY + dt.timedelta(days=1), tz="UTC")
def _null_ts(df): df.loc[df.index[:2], "event_ts"] = pd.NaT


def _null_key(df):
    """As a snapshot delivers it: a bigint column with nulls reaches pandas as float64 with NaN."""
    df["customer_id"] = df["customer_id"].astype("float64")
    df.loc[df.index[:3], "customer_id"] = np.nan


# break the data -> (the column named, words of the rule in its failure, number of failures).
# The counts are exact: a missing column is reported once, numbers stored as text give one type
# failure (not also a range failure), +inf breaks both the range and the no-inf rule.
CASES = {
    "missing column": (_drop, "age", "is missing", 1),
    "extra column": (_extra, "coupon_code", "extra column", 1),
    "numbers as text": (_as_text, "tenure_months", f"{ROWS} of {ROWS} values (100.00%) are not numeric", 1),
    "feature entirely null": (_all_null, "monthly_charges", "are null (never allowed)", 1),
    "nulls above allowed share": (_set_rows("total_charges", np.nan, slice(0, 200)), "total_charges",
                                  "are null (allowed: at most 5.00%)", 1),
    "values out of range": (_set_rows("age", 150.0, slice(0, 12)), "age",
                            f"12 of {ROWS} values (0.60%) outside [18, 100], e.g. 150.0", 1),
    "unseen category above share": (_set_rows("region", "mars", slice(0, 100)), "region",
                                    "not among the spec's categories (allowed: at most 1.00% unseen), e.g. 'mars'", 1),
    "duplicate keys": (_dup_keys, "customer_id", "duplicated keys", 1),
    "+inf in a numeric feature": (_set_rows("outage_minutes_30d", np.inf, slice(0, 1)), "outage_minutes_30d",
                                  "are +/-inf", 2),
    "-inf in a numeric feature": (_set_rows("price_increase_pct", -np.inf, slice(0, 1)), "price_increase_pct",
                                  "are +/-inf", 2),
    "NaN in a numeric feature": (_set_rows("logins_30d", np.nan, slice(0, 3)), "logins_30d",
                                 f"3 of {ROWS} values (0.15%) are null (never allowed)", 1),
    "label value 2": (_set_rows("churned", 2, slice(5, 6)), "churned", "are not 0 or 1, e.g. 2", 1),
    "null entity key": (_null_key, "customer_id", f"3 of {ROWS} values (0.15%) are null (the entity key never is)", 1),
    # The next two cannot reach a nightly snapshot (its query selects event_ts >= day AND < day + 1,
    # which no null or out-of-day timestamp satisfies), so they are proved here only.
    "timestamp outside the day": (_late_ts, "event_ts", "outside the day [2026-03-02 00:00 UTC, 2026-03-03 00:00 UTC)", 1),
    "null timestamp": (_null_ts, "event_ts", "are null (the timestamp never is)", 1),
}


@pytest.mark.parametrize("case", list(CASES))
def test_broken_snapshot_fails_naming_column_and_rule(churn_spec, day_df, case):
    breaks, column, words, count = CASES[case]
    breaks(day_df)
    result = _failed(day_df, churn_spec)
    assert f"'{column}'" in result.message() and words in result.message(), result.message()
    assert any(f.column == column and words in f.details for f in result.failures), result.failures
    assert len(result.failures) == count, result.failures
    assert "could not run" not in result.message()


def test_shares_within_the_spec_allowance_pass(churn_spec, day_df):
    _set_rows("region", "mars", slice(0, 10))(day_df)  # 0.5% unseen, 1% allowed
    _set_rows("total_charges", np.nan, slice(0, 40))(day_df)  # about 3% null with the demo's own, 5% allowed
    assert validate_snapshot(day_df, churn_spec, day=DAY).success


def test_empty_snapshot_fails_on_row_count(churn_spec, day_df):
    result = _failed(day_df.iloc[0:0], churn_spec)
    assert [(f.expectation, f.column) for f in result.failures] == [("expect_table_row_count_to_be_between", None)]
    assert "0 rows" in result.message() and "min_rows" in result.message()
    assert _failed(pd.DataFrame(), churn_spec).rows == 0  # no columns at all: fails cleanly too


def test_row_count_far_below_recent_norm_fails(churn_spec, day_df):
    result = _failed(day_df, churn_spec, recent_row_counts=[ROWS * 10, ROWS * 12, ROWS * 11])
    assert "median" in result.message() and f"at least {int(ROWS * 11 * 0.5)} rows" in result.message()
    assert validate_snapshot(day_df, churn_spec, day=DAY, recent_row_counts=[ROWS * 2] * 7).success


def test_row_count_far_above_recent_norm_fails_naming_rule_count_and_bound(churn_spec, day_df):
    """A duplicated or runaway load (here 200x the median) fails on validation.max_row_ratio."""
    median = ROWS // 200  # 10 rows a night recently; min_rows (100) is above it, so the norm is min_rows
    result = _failed(day_df, churn_spec, recent_row_counts=[median] * 7)
    assert [(f.expectation, f.column) for f in result.failures] == [("expect_table_row_count_to_be_between", None)]
    ceiling = int(churn_spec.validation.max_row_ratio * churn_spec.validation.min_rows)
    assert f"the snapshot has {ROWS} rows, expected at most {ceiling} rows (validation.max_row_ratio 10" in \
        result.message()
    spec = dataclasses.replace(churn_spec, validation=dataclasses.replace(churn_spec.validation, min_rows=1))
    result = _failed(day_df, spec, recent_row_counts=[median] * 7)
    assert (f"the snapshot has {ROWS} rows, expected at most {10 * median} rows (validation.max_row_ratio 10 x "
            f"median {median} of the 7 recent days)") in result.message()
    assert "at least" not in result.message()  # the bound crossed, not both


def test_row_count_ceiling_follows_max_row_ratio_and_needs_history(churn_spec, day_df):
    assert validate_snapshot(day_df, churn_spec, day=DAY, recent_row_counts=[ROWS // 9] * 7).success  # 9x
    assert validate_snapshot(day_df, churn_spec, day=DAY).success  # no history, no ceiling
    tight = dataclasses.replace(churn_spec, validation=dataclasses.replace(churn_spec.validation, max_row_ratio=2.0))
    result = _failed(day_df, tight, recent_row_counts=[ROWS // 3] * 7)
    assert f"expected at most {2 * (ROWS // 3)} rows (validation.max_row_ratio 2 x median" in result.message()
    assert validate_snapshot(day_df, tight, recent_row_counts=[ROWS // 2] * 7, day=DAY).success  # exactly 2x


def test_labelled_day_with_a_null_label_fails(churn_spec, day_df):
    day_df["churned"] = day_df["churned"].astype("Int64")
    day_df.loc[day_df.index[7], "churned"] = pd.NA
    assert validate_snapshot(day_df, churn_spec, day=DAY, labelled=False).success
    result = _failed(day_df, churn_spec, labelled=True)
    assert "'churned'" in result.message() and "null" in result.message()


def test_text_entity_key_comes_from_the_spec(churn_spec, day_df):
    spec = dataclasses.replace(churn_spec, entity_key=EntityKey(name="customer_id", type="text"))
    result = _failed(day_df, spec)
    assert "'customer_id'" in result.message() and "not strings" in result.message()
    day_df["customer_id"] = "c" + day_df["customer_id"].astype(str)
    assert validate_snapshot(day_df, spec, day=DAY).success


def test_report_files_name_the_failed_column(churn_spec, day_df, tmp_path: Path):
    _set_rows("age", 150.0, slice(0, 12))(day_df)
    report = tmp_path / "report"
    result = _failed(day_df, churn_spec, report_dir=report)
    assert result.report_path == str(report / "validation.html")
    page = Path(result.report_path).read_text()
    assert "FAILED" in page and "age" in page and "outside [18, 100]" in page
    record = json.loads((report / "validation.json").read_text())
    assert record["success"] is False and record["failures"][0]["column"] == "age"
    assert len(record["checks"]) == result.evaluated
    data_docs = (report / record["data_docs_page"]).read_text()  # Great Expectations' own page
    assert "age" in data_docs and "150.0" in data_docs
    assert (report / "index.html").is_file()
    assert json.loads(json.dumps(result.to_dict())) == result.to_dict()
    assert result.report_path in result.message()


def test_float_key_is_still_not_an_integer_key(churn_spec, day_df):
    """The nullable-integer repair is only for nulls: fractions, or a float key without nulls, fail the type check."""
    fractions = day_df.copy()
    fractions["customer_id"] = fractions["customer_id"] + 0.5
    fractions.loc[fractions.index[0], "customer_id"] = np.nan
    assert "are not integers" in _failed(fractions, churn_spec).message()
    whole = day_df.copy()
    whole["customer_id"] = whole["customer_id"].astype("float64")
    assert "are not integers" in _failed(whole, churn_spec).message()


def test_markup_in_the_data_is_text_on_the_page(churn_spec, day_df, tmp_path: Path):
    evil = "<script>alert('x')</script>"
    day_df.loc[day_df.index[:3], "plan"] = evil  # a category the spec does not know, written as markup
    result = _failed(day_df, churn_spec, report_dir=tmp_path)
    page = Path(result.report_path).read_text()
    assert evil in result.message()  # the value is named in the failure ...
    assert evil not in page and "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page  # ... as text on the page
    assert "<script" not in page and "FAILED" in page and '<style>' in page  # the stylesheet inlined, no script


def test_report_shows_what_each_check_observed(churn_spec, day_df, tmp_path: Path):
    """Next to each rule, the values it saw: the null share, the column's min and max, the unseen
    categories, the row count and dtype, passing or not (GX's counts, plus min/max from the data)."""
    _set_rows("age", 150.0, slice(0, 12))(day_df)  # out of range: 12 rows
    day_df.loc[day_df.index[:7], "plan"] = "platinum-x"  # a category the spec does not know
    result = _failed(day_df, churn_spec, report_dir=tmp_path)
    record = json.loads((tmp_path / "validation.json").read_text())
    by_rule = {(c["column"], c["expectation"]): c for c in record["checks"]}
    age = by_rule[("age", "expect_column_values_to_be_between")]
    assert age["success"] is False and age["measured"]["max"] == 150.0
    assert age["measured"]["min"] == float(day_df["age"].min())
    assert age["observed"].startswith(f"min {float(day_df['age'].min())}, max 150.0; ")
    assert "12 of 2000 (0.60%) out of range, e.g. 150.0" in age["observed"]
    plan = by_rule[("plan", "expect_column_values_to_be_in_set")]
    assert plan["success"] is False and plan["measured"]["examples"] == ["platinum-x"]
    assert "7 of 2000 (0.35%) not in the set (unseen), e.g. 'platinum-x'" == plan["observed"]
    nulls = by_rule[("satisfaction_score", "expect_column_values_to_not_be_null")]  # nulls within its allowance
    expected_nulls = int(day_df["satisfaction_score"].isna().sum())
    assert expected_nulls > 0
    assert nulls["success"] is True and nulls["measured"]["nulls"] == expected_nulls
    assert nulls["observed"] == f"{expected_nulls} of 2000 ({100 * expected_nulls / 2000:.2f}%) null"
    assert by_rule[(None, "expect_table_row_count_to_be_between")]["observed"] == "2000 rows"
    assert by_rule[("customer_id", "expect_column_values_to_be_in_type_list")]["observed"] == "dtype int64"
    assert by_rule[(None, "expect_table_columns_to_match_set")]["observed"] == \
        f"{len(churn_spec.columns)} columns, as in the spec"
    page = Path(result.report_path).read_text()
    assert "<th>observed</th>" in page and age["observed"] in page and "e.g. &#39;platinum-x&#39;" in page


def test_a_numeric_feature_stored_as_text_fails_with_its_report_written(churn_spec, day_df, tmp_path: Path):
    """The range check on a text column reports no counts: the page says so instead of the report crashing
    (a KeyError in the report once hid the validation failure behind a failed task)."""
    day_df["age"] = day_df["age"].astype(str)
    report = tmp_path / "report"
    result = _failed(day_df, churn_spec, report_dir=report)
    assert "age" in result.message() and "found str" in result.message()
    checks = json.loads((report / "validation.json").read_text())["checks"]
    assert any(c["column"] == "age" and not c["success"] for c in checks)
    assert all(c["observed"] for c in checks)


def test_no_check_deep_copies_the_frame_and_the_caller_keeps_its_frame_and_options(churn_spec, day_df, monkeypatch):
    """GX's pandas engine takes each checked column's non-null rows from the whole frame; without pandas'
    copy-on-write that was a deep copy of every column for every per-value check (half of GX's time on a
    1M-row night: benchmarks/bench_validation.py). The caller's frame and pandas options are left as they were."""
    day_df["customer_id"] = day_df["customer_id"].astype("float64")
    day_df.loc[day_df.index[:3], "customer_id"] = np.nan  # the key made nullable Int64 (a new column) first
    before = day_df.copy()
    deep_copies: list[object] = []
    real_copy = pd.DataFrame.copy

    def copy(self: pd.DataFrame, deep: bool | None = True) -> pd.DataFrame:
        if self.shape == day_df.shape and (deep is True or (deep is None and not pd.get_option("mode.copy_on_write"))):
            deep_copies.append(deep)
        return real_copy(self, deep=deep)

    monkeypatch.setattr(pd.DataFrame, "copy", copy)
    result = validate_snapshot(day_df, churn_spec, day=DAY)
    monkeypatch.setattr(pd.DataFrame, "copy", real_copy)
    assert not result.success and any(f.column == "customer_id" for f in result.failures)
    assert deep_copies == []
    assert pd.get_option("mode.copy_on_write") is False
    pd.testing.assert_frame_equal(day_df, before)
