"""The drift step's core, on the demo's churn data, with the real Evidently."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re

import numpy as np
import pytest

from include.nightshift.demo_data import DriftPlan, generate_day
from include.nightshift.drift import ALL_NULL_CURRENT, ALL_NULL_REFERENCE, measure_drift, reference_sample

ROWS = 3000
DAY1, DAY2, DRIFT_DAY = dt.date(2026, 1, 5), dt.date(2026, 1, 6), dt.date(2026, 1, 7)
# What the demo's covariate drift moves (demo_data.generate_day), and what it leaves alone.
SHIFTED = {"tenure_months", "monthly_charges", "price_increase_pct", "outage_minutes_30d",
           "logins_30d", "avg_session_minutes", "data_usage_gb", "plan", "acquisition_channel"}
UNTOUCHED = {"age", "region", "payment_method", "late_payments_12m", "referrals", "discount_pct"}


# What would make a browser fetch something: an element loading a URL, or CSS importing one.
# (Plain links such as Plotly's logo link are not loads.)
FETCHING_ELEMENT = re.compile(r"""<(?:script|link|img|iframe|embed|object|source|video|audio)\b[^>]*?"""
                              r"""\b(?:src|href|data)\s*=\s*["']?(?:https?:)?//""", re.I)
FETCHING_CSS = re.compile(r"""(?:@import\s*|url\(\s*)["']?(?:https?:)?//""", re.I)


def assert_loads_nothing(text: str) -> None:
    assert not FETCHING_ELEMENT.findall(text), FETCHING_ELEMENT.findall(text)[:3]
    assert not FETCHING_CSS.findall(text), FETCHING_CSS.findall(text)[:3]
    assert not re.search(r"<script\b[^>]*\bsrc\s*=", text, re.I)


def with_drift(spec, **changes):
    return dataclasses.replace(spec, drift=dataclasses.replace(spec.drift, **changes))


@pytest.fixture(scope="module")
def reference():
    return generate_day(DAY1, ROWS)


@pytest.fixture(scope="module")
def normal_day():
    return generate_day(DAY2, ROWS)


@pytest.fixture(scope="module")
def drifted_day():
    return generate_day(DRIFT_DAY, ROWS, drift=DriftPlan(covariate_from=DRIFT_DAY))


def test_same_distribution_is_below_threshold(churn_spec, reference, normal_day):
    result = measure_drift(normal_day, reference, churn_spec)

    assert result.share < churn_spec.drift.share_threshold
    assert set(result.columns) == set(churn_spec.feature_names)
    assert result.share == len(result.drifted) / len(churn_spec.feature_names)
    assert (result.n_current, result.n_reference, result.sampled) == (ROWS, ROWS, False)
    # Above 1,000 rows Evidently uses distances; the spec's types decide which one.
    assert result.columns["age"]["method"] == "Wasserstein distance (normed)"
    assert result.columns["plan"]["method"] == "Jensen-Shannon distance"


def test_covariate_drift_is_above_threshold_and_names_the_columns(churn_spec, reference, drifted_day, tmp_path):
    html = tmp_path / "reports" / "drift.html"
    result = measure_drift(drifted_day, reference, churn_spec, html_path=html)

    assert result.share >= churn_spec.drift.share_threshold
    assert SHIFTED <= set(result.drifted)
    assert not UNTOUCHED & set(result.drifted)
    for name in result.drifted:
        col = result.columns[name]
        assert col["drifted"] and col["score"] >= col["threshold"]
    # The HTML report is Evidently's own, written where asked.
    assert result.report_path == str(html)
    text = html.read_text()
    assert "<html" in text.lower() and len(text) > 10_000
    assert_loads_nothing(text)  # Evidently inlines its scripts and data: opens offline, from any URL
    # JSON-safe, and the same facts.
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["drifted"] == result.drifted and data["report_path"] == str(html)


def test_small_samples_use_evidentlys_own_verdict(churn_spec, reference, drifted_day):
    """At <= 1,000 reference rows Evidently switches to p-values: drift is a score BELOW the threshold."""
    spec = with_drift(churn_spec, sample_rows=800)
    result = measure_drift(drifted_day, reference, spec)

    assert result.sampled and (result.n_current, result.n_reference) == (ROWS, ROWS)
    assert result.columns["tenure_months"]["method"] == "K-S p_value"
    assert result.columns["tenure_months"]["score"] < result.columns["tenure_months"]["threshold"]
    assert SHIFTED <= set(result.drifted)
    assert result.share >= spec.drift.share_threshold
    assert result.report_path is None


def test_reference_sample_is_seeded_capped_and_features_only(churn_spec, reference):
    spec = with_drift(churn_spec, sample_rows=500)

    first, again = reference_sample(reference, spec), reference_sample(reference, spec)
    other_seed = reference_sample(reference, with_drift(spec, seed=spec.drift.seed + 1))

    assert list(first.columns) == churn_spec.feature_names
    assert len(first) == 500
    assert first.equals(again)
    assert not first.equals(other_seed)
    # Below the cap every row is kept, in order.
    small = reference_sample(reference.head(200), spec)
    assert len(small) == 200 and small["age"].tolist() == reference["age"].head(200).tolist()


def test_feature_missing_from_the_data_is_refused(churn_spec, reference):
    with pytest.raises(KeyError, match="region"):
        reference_sample(reference.drop(columns=["region"]), churn_spec)


def test_all_null_column_on_one_side_does_not_crash(churn_spec, reference, normal_day):
    current, ref = normal_day.copy(), reference.copy()
    current["age"] = np.nan
    ref["plan"] = None

    result = measure_drift(current, ref, churn_spec)

    assert result.columns["age"]["method"] == ALL_NULL_CURRENT
    assert result.columns["plan"]["method"] == ALL_NULL_REFERENCE
    assert {"age", "plan"} <= set(result.drifted)
    assert result.columns["age"]["score"] == pytest.approx(1.0)
    # The other features were still measured by Evidently.
    assert result.columns["region"]["method"] == "Jensen-Shannon distance"
    assert not result.columns["region"]["drifted"]
    json.dumps(result.to_dict(), allow_nan=False)


def test_nothing_testable_still_gives_a_verdict_and_a_report(churn_spec, reference, normal_day, tmp_path):
    current = normal_day.copy()
    current[churn_spec.feature_names] = None

    result = measure_drift(current, reference, churn_spec, html_path=tmp_path / "drift.html")

    assert result.share == 1.0 and result.drifted == churn_spec.feature_names
    text = (tmp_path / "drift.html").read_text()
    assert "No feature could be tested" in text and "<li>age: all null in current</li>" in text
    assert "://" not in text
