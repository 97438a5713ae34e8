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


def test_reference_sample_is_seeded_capped_and_the_features_and_label_only(churn_spec, reference):
    spec = with_drift(churn_spec, sample_rows=500)

    first, again = reference_sample(reference, spec), reference_sample(reference, spec)
    other_seed = reference_sample(reference, with_drift(spec, seed=spec.drift.seed + 1))

    assert list(first.columns) == [*churn_spec.feature_names, "churned"]
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


# --- configured evidence: which features, which tests, which windows -----------------------------------


def test_excluded_features_are_not_compared_nor_counted(churn_spec, reference, drifted_day):
    spec = with_drift(churn_spec, exclude=("tenure_months", "plan", "age"))
    result = measure_drift(drifted_day, reference, spec)

    compared = [n for n in churn_spec.feature_names if n not in spec.drift.exclude]
    assert list(result.columns) == compared and result.excluded == ["tenure_months", "age", "plan"]
    assert not {"tenure_months", "plan"} & set(result.drifted)  # shifted, but left out
    assert result.share == len(result.drifted) / len(compared)
    assert (SHIFTED - {"tenure_months", "plan"}) <= set(result.drifted)


# Days of fewer rows for the TVD test: Evidently's TVD p-value is a permutation test in pure Python (100
# shuffles of both frames' values per categorical column: most of that test's time, in proportion to the rows).
# What it checks is that the spec's methods and thresholds reach Evidently. Above 1000 rows, as at ROWS, so that
# Evidently's own default for a numeric column is still Wasserstein (K-S at 1000 rows or fewer).
TVD_ROWS = 1200


def test_per_column_and_per_type_methods_and_thresholds_reach_evidently(churn_spec):
    from include.nightshift.spec import DriftTest

    reference = generate_day(DAY1, TVD_ROWS)
    drifted_day = generate_day(DRIFT_DAY, TVD_ROWS, drift=DriftPlan(covariate_from=DRIFT_DAY))
    spec = with_drift(churn_spec, columns={"tenure_months": DriftTest(method="psi", threshold=5.0),
                                           "age": DriftTest(method="ks"),
                                           "contract_months_left": DriftTest(threshold=0.0)},
                      categorical=DriftTest(method="TVD"))
    result = measure_drift(drifted_day, reference, spec)
    cols = result.columns

    # a method set in the spec is reported by its name, Evidently's default by its title
    assert cols["tenure_months"]["method"] == "psi" and cols["tenure_months"]["threshold"] == 5.0
    assert not cols["tenure_months"]["drifted"]  # shifted, but under its own (very high) threshold
    assert cols["age"]["method"] == "ks" and cols["age"]["threshold"] == 0.05  # the method's own default
    assert cols["plan"]["method"] == "TVD" and cols["region"]["method"] == "TVD"  # the spec's categorical test
    # TVD is a p-value test: the shifted plan drifts with a p-value below its threshold; region does not
    assert cols["plan"]["drifted"] and cols["plan"]["score"] < cols["plan"]["threshold"]
    assert not cols["region"]["drifted"]
    assert cols["contract_months_left"]["method"] == "Wasserstein distance (normed)"  # threshold only
    assert cols["contract_months_left"]["threshold"] == 0.0 and cols["contract_months_left"]["drifted"]
    assert cols["monthly_charges"]["method"] == "Wasserstein distance (normed)"  # Evidently's default still


def test_the_spec_knows_every_evidently_method_and_its_types():
    """spec.py keeps a static table (it must not import evidently at DAG-parse time): it must match
    Evidently's registry of stattests for numeric and categorical columns."""
    from evidently.legacy.calculations.stattests import registry  # its package registers every stattest

    from include.nightshift.spec import DRIFT_METHOD_TYPES

    kinds = {"num": "numeric", "cat": "categorical"}
    registered = {}
    for name, by_type in registry._registered_stat_tests.items():
        types = tuple(kinds[t.value] for t in by_type if t.value in kinds)
        if types:
            registered[name] = types
    assert {n: set(t) for n, t in DRIFT_METHOD_TYPES.items()} == {n: set(t) for n, t in registered.items()}


def test_prediction_drift_is_measured_apart_from_the_share(churn_spec, reference, normal_day, drifted_day):
    def score(frame):
        return 1 / (1 + np.exp(-(frame["price_increase_pct"].to_numpy() - 5) / 3))

    calm = measure_drift(normal_day, reference, churn_spec, score=score)
    moved = measure_drift(drifted_day, reference, churn_spec, score=score)

    assert calm.prediction["method"] == "Wasserstein distance (normed)" and not calm.prediction["drifted"]
    assert moved.prediction["drifted"] and moved.prediction["score"] > calm.prediction["score"]
    assert "champion score" not in moved.columns and moved.share == len(moved.drifted) / len(churn_spec.feature_names)
    assert json.loads(json.dumps(moved.to_dict(), allow_nan=False))["prediction"]["drifted"] is True
    assert measure_drift(normal_day, reference, churn_spec).prediction is None


def test_windows_pool_the_current_nights_and_the_recent_reference_before_them(churn_spec):
    from include.nightshift.drift import current_days, reference_days

    day = dt.date(2026, 3, 10)
    assert current_days(churn_spec, day) == [day] and reference_days(churn_spec, day) == []  # champion_training
    spec = with_drift(churn_spec, current_nights=3, reference="recent", reference_nights=4)
    assert current_days(spec, day) == [dt.date(2026, 3, d) for d in (10, 9, 8)]
    assert reference_days(spec, day) == [dt.date(2026, 3, d) for d in (7, 6, 5, 4)]  # just before, no overlap


def test_persistence_counts_consecutive_drifted_nights_against_the_same_champion(churn_spec):
    from include.nightshift.nightly import persisted_nights

    day = dt.date(2026, 3, 10)
    spec = with_drift(churn_spec, persist_nights=3)

    def history(*drifted_days):
        return [{"day": f"2026-03-{d:02d}", "drifted": True} for d in drifted_days]

    assert persisted_nights(False, history(9, 8), day, spec) == 0  # tonight not drifted
    assert persisted_nights(True, [], day, spec) == 1  # no history: tonight only
    assert persisted_nights(True, history(9), day, spec) == 2
    assert persisted_nights(True, history(9, 8, 7), day, spec) == 3  # capped at persist_nights
    assert persisted_nights(True, history(8), day, spec) == 1  # a missing night breaks the run


def test_drift_history_reads_pipeline_runs(pg_conn, churn_spec):
    from include.nightshift import warehouse
    from include.nightshift.nightly import drift_history

    spec = with_drift(churn_spec, persist_nights=3)
    warehouse.ensure_warehouse(pg_conn, spec)
    base = {"dag_run_id": "r", "decision": "skipped", "metric_name": "roc_auc", "rows_published": 0,
            "finished_at": dt.datetime(2026, 3, 10, tzinfo=dt.timezone.utc)}
    for day, share, version in ((7, 0.5, 1), (8, 0.5, 2), (9, 0.3, 2), (10, 0.9, 2)):
        warehouse.upsert_run(pg_conn, spec, {**base, "logical_date": dt.date(2026, 3, day), "drift_share": share,
                                              "champion_version": version})
    found = drift_history(pg_conn, spec, dt.date(2026, 3, 10), champion_version=2)
    assert [(h["day"], h["drifted"]) for h in found] == [("2026-03-09", True), ("2026-03-08", True)]
    assert [h["drifted"] for h in drift_history(pg_conn, spec, dt.date(2026, 3, 9), champion_version=2)] == [
        True, False]  # 8 against the same champion, 7 against another one
    recent = with_drift(spec, reference="recent")
    assert [h["drifted"] for h in drift_history(pg_conn, recent, dt.date(2026, 3, 9), champion_version=2)] == [
        True, True]  # a recent reference does not depend on the champion
    assert drift_history(pg_conn, with_drift(spec, persist_nights=1), dt.date(2026, 3, 10), 2) == []


def test_night_drift_pools_windows_from_the_source_and_counts_persistence(pg_conn, registry, churn_spec, tmp_path):
    """The drift step end to end without Airflow: a recent reference and a two-night current window,
    re-taken from a real source; no champion is needed for a `recent` reference (nor output drift)."""
    from include.nightshift import demo_data, warehouse
    from include.nightshift.artifacts import ArtifactStore
    from include.nightshift.nightly import measure_night_drift, take_night
    from include.nightshift.reports import Origin, airflow_run_url

    spec = with_drift(churn_spec, reference="recent", current_nights=2, reference_nights=3, persist_nights=2)
    night = dt.date(2026, 4, 10)
    plan = DriftPlan(covariate_from=night - dt.timedelta(days=1))  # the whole current window drifted
    demo_data.create_source_table(pg_conn, spec.source.table)
    for back in range(5, -1, -1):
        demo_data.load_day(pg_conn, night - dt.timedelta(days=back), 1500, table=spec.source.table, drift=plan,
                           with_labels=back > 0)
    warehouse.ensure_warehouse(pg_conn, spec)
    warehouse.upsert_run(pg_conn, spec, {
        "logical_date": night - dt.timedelta(days=1), "dag_run_id": "r", "decision": "skipped", "drift_share": 0.6,
        "metric_name": "roc_auc", "rows_published": 0, "finished_at": dt.datetime(2026, 4, 9, tzinfo=dt.timezone.utc)})
    store = ArtifactStore(tmp_path / "artifacts")
    snapshot = take_night(pg_conn, store, spec, night)

    origin = Origin("r1", airflow_run_url(None, spec.dag_id, "r1"))
    drift = measure_night_drift(pg_conn, pg_conn, store, registry, spec, snapshot, origin=origin)

    windows = drift.details["windows"]
    assert windows["current_days"] == ["2026-04-10", "2026-04-09"]
    assert windows["reference_days"] == ["2026-04-08", "2026-04-07", "2026-04-06"]
    assert drift.details["n_current"] == 3000 and drift.details["n_reference"] == 4500  # pooled
    assert drift.detected and drift.share >= spec.drift.share_threshold and SHIFTED <= set(drift.drifted)
    assert drift.persisted_nights == 2 and drift.details["history"][0]["drifted"] is True
    assert drift.champion_version is None and drift.prediction_drift is None  # no champion: no output drift
    assert f'Written by DAG run <a href="/dags/{spec.dag_id}/runs/r1">r1</a>' in store.read_text(drift.report_url)
    calm = measure_night_drift(pg_conn, pg_conn, store, registry, with_drift(spec, current_nights=1,
                                                                               reference_nights=1), snapshot,
                               origin=Origin("r2"))
    # against the night before (drifted too), a recent reference has caught up: nothing to act on
    assert calm.details["windows"]["reference_days"] == ["2026-04-09"]
    assert calm.detected is False and calm.persisted_nights == 0
    json.dumps(drift.to_xcom(), allow_nan=False)


# --- the target -----------------------------------------------------------------------


def _labels(rate: float, rows: int, seed: int):
    import pandas as pd

    return pd.Series(np.random.default_rng(seed).binomial(1, rate, rows), name="churned")


def test_the_training_sample_keeps_the_label_next_to_the_features(churn_spec, reference):
    marked = reference.assign(churned=(reference["tenure_months"] > reference["tenure_months"].median()).astype(int))
    sample = reference_sample(marked, churn_spec)

    assert set(sample.columns) == {*churn_spec.feature_names, "churned"}
    median = reference["tenure_months"].median()
    assert (sample["churned"] == (sample["tenure_months"] > median).astype(int)).all()  # each label stays on its row
    assert set(measure_drift(reference, sample, churn_spec).columns) == set(churn_spec.feature_names)  # label not a feature


def test_a_binary_label_whose_rate_moved_has_drifted_and_one_that_did_not_is_stable(churn_spec):
    from include.nightshift.drift import measure_target_drift

    training = _labels(0.2, 5000, 1)
    stable = measure_target_drift(_labels(0.2, 3000, 2), training, churn_spec)
    moved = measure_target_drift(_labels(0.45, 3000, 3), training, churn_spec)

    assert not stable["drifted"] and moved["drifted"], (stable, moved)
    assert moved["score"] >= moved["threshold"] > 0  # a distance (above 1,000 rows), from Evidently's own test
    assert moved["current"]["1"] == pytest.approx(0.45, abs=0.03) and moved["reference"]["1"] == pytest.approx(0.2, abs=0.02)
    assert (moved["current_rows"], moved["reference_rows"]) == (3000, 5000)


def test_a_numeric_target_is_tested_as_a_number_with_the_spec_s_method(churn_spec):
    import pandas as pd

    from include.nightshift.drift import measure_target_drift

    spec = dataclasses.replace(churn_spec, task="regression")
    spec = with_drift(spec, target=dataclasses.replace(churn_spec.drift.numeric or _drift_test(), method="ks"))
    rng = np.random.default_rng(0)
    training = pd.Series(rng.normal(10, 2, 4000))
    later = measure_target_drift(pd.Series(rng.normal(13, 2, 2000)), training, spec)
    same = measure_target_drift(pd.Series(rng.normal(10, 2, 2000)), training, spec)

    assert later["method"].lower().startswith("k") and later["drifted"] and not same["drifted"], (later, same)
    assert later["current"]["mean"] == pytest.approx(13, abs=0.2) and later["reference"]["p50"] == pytest.approx(10, abs=0.2)


def test_labels_that_are_all_missing_on_one_side_are_drifted_without_evidently(churn_spec):
    import pandas as pd

    from include.nightshift.drift import measure_target_drift

    result = measure_target_drift(pd.Series([None] * 50, dtype="object"), _labels(0.3, 500, 4), churn_spec)

    assert result["drifted"] and result["method"] == ALL_NULL_CURRENT


def _drift_test():
    from include.nightshift.spec import DriftTest

    return DriftTest()
