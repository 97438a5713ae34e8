"""Task types beyond binary: the spec's `task`, each task's metrics, candidates, gate and realised quality.

On small synthetic rows shaped like examples/flights_delay (task regression), with known answers.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from include.nightshift import training
from include.nightshift.evaluation import evaluate, gate, metric_value
from include.nightshift.quality import realised_quality
from include.nightshift.spec import SpecError, load_spec

ROOT = Path(__file__).resolve().parents[2]
DELAY = ROOT / "examples" / "flights_delay" / "flights_delay.yaml"
FLIGHTS = ROOT / "examples" / "flights" / "flights.yaml"


@pytest.fixture(scope="module")
def delay_spec():
    base = load_spec(DELAY)
    return dataclasses.replace(base, training=dataclasses.replace(base.training, window_days=4, holdout_days=2,
                                                                  params={"n_estimators": 20, "max_depth": 3}))


def flights_like(spec, days: int = 6, rows: int = 300, seed: int = 5) -> pd.DataFrame:
    """Rows with the spec's columns; the delay grows with the departure hour and differs by origin."""
    rng = np.random.default_rng(seed)
    n = days * rows
    start = pd.Timestamp("2013-06-01", tz="UTC")
    hour = rng.integers(5, 23, n).astype(float)
    origin = rng.choice(["EWR", "JFK", "LGA"], n)
    delay = 3.0 * (hour - 12) + np.where(origin == "EWR", 15.0, 0.0) + rng.normal(0, 10, n)
    carriers = [f for f in spec.features if f.name == "carrier"][0].categories
    dests = [f for f in spec.features if f.name == "dest"][0].categories
    return pd.DataFrame({
        "flight_id": np.arange(1, n + 1, dtype="int64"),
        "sched_dep_ts": start + pd.to_timedelta(np.repeat(np.arange(days), rows), unit="D")
        + pd.to_timedelta(hour, unit="h"),
        "carrier": rng.choice(list(carriers), n), "origin": origin, "dest": rng.choice(list(dests), n),
        "distance": rng.uniform(100, 2500, n), "sched_dep_hour": hour, "sched_arr_hour": (hour + 2) % 24,
        "day_of_week": rng.integers(0, 7, n).astype(float),
        spec.label.name: np.clip(delay, -60, 240),
    })


def _spec_text(path: Path, **changes) -> dict:
    raw = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        node, *keys = dotted.split(".")
        target = raw
        for key in [node, *keys][:-1]:
            target = target[key]
        target[[node, *keys][-1]] = value
    return raw


def _load(tmp_path: Path, raw: dict):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_spec(path)


# --------------------------------------------------------------------------- the spec


def test_binary_is_the_default_and_its_label_key_is_unchanged():
    spec = load_spec(FLIGHTS)
    assert spec.task == "binary"
    assert spec.label.key_fields() == {"name": "disrupted", "delay_days": 0}  # as dataclasses.asdict gave before


def test_regression_spec_loads_with_its_label_range():
    spec = load_spec(DELAY)
    assert (spec.task, spec.label.min, spec.label.max) == ("regression", -60.0, 240.0)
    assert spec.promotion.metric == "rmse" and not spec.promotion.greater_is_better


@pytest.mark.parametrize("changes, message", [
    ({"promotion.metric": "roc_auc", "promotion.floor": 0.6}, "roc_auc' does not judge task regression; use one of rmse, mae, r2"),
    ({"training.calibration": "sigmoid"}, "task regression has none"),
    ({"label.min": 300}, "must be at least label.min (300.0), got 240.0"),
])
def test_a_regression_spec_that_does_not_fit_its_task_is_refused(tmp_path, changes, message):
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _load(tmp_path, _spec_text(DELAY, **changes))


def test_a_binary_spec_with_a_regression_metric_or_label_range_is_refused(tmp_path):
    with pytest.raises(SpecError, match="does not judge task binary"):
        _load(tmp_path, _spec_text(FLIGHTS, **{"promotion.metric": "rmse", "promotion.floor": 80.0}))
    with pytest.raises(SpecError, match="for task regression only"):
        _load(tmp_path, _spec_text(FLIGHTS, **{"label.min": 0}))


def test_an_unsupported_task_is_refused_at_load(tmp_path):
    with pytest.raises(SpecError, match="task"):
        _load(tmp_path, _spec_text(FLIGHTS, task="ranking"))


# --------------------------------------------------------------------------- metrics


def test_regression_metrics_match_their_definitions():
    y, s = np.array([1.0, 2.0, 4.0, 8.0]), np.array([1.5, 2.0, 3.0, 9.0])
    assert metric_value("rmse", y, s) == pytest.approx(math.sqrt((0.25 + 0 + 1 + 1) / 4))
    assert metric_value("mae", y, s) == pytest.approx((0.5 + 0 + 1 + 1) / 4)
    assert metric_value("r2", y, s) == pytest.approx(1 - 2.25 / np.sum((y - y.mean()) ** 2))
    assert metric_value("rmse", np.array([0.4]), np.array([0.4])) == 0.0  # labels stay floats, never cast to int
    assert math.isnan(metric_value("r2", np.array([3.0, 3.0]), np.array([1.0, 2.0])))  # nothing to explain
    assert math.isnan(metric_value("rmse", y, np.array([1.0, np.nan, 3.0, 4.0])))


# --------------------------------------------------------------------------- training and the gate


def test_regression_candidates_fit_predict_values_and_the_gate_judges_minutes(delay_spec):
    df = flights_like(delay_spec)
    train, hold = training.split_train_holdout(df, delay_spec, dt.date(2013, 6, 6))
    fits = training.fit_candidates(delay_spec, train, hold)
    assert [type(f.model.named_steps["model"]).__name__ for f in fits] == [
        "XGBRegressor", "HistGradientBoostingRegressor", "Ridge"]
    y = training.labels(hold, delay_spec)
    assert y.dtype == np.float64
    mean_rmse = metric_value("rmse", y, np.full(len(y), training.labels(train, delay_spec).mean()))
    for f in fits:
        assert f.metric < 0.7 * mean_rmse, f.family  # every family learns the hour and origin effect
    chosen = training.choose(fits, delay_spec)
    assert chosen.metric == min(f.metric for f in fits)  # lower is better
    assert chosen.holdout_scores.max() > 1.0  # values in minutes, not probabilities
    baseline = training.fit(training.build_baseline(delay_spec), train, delay_spec)
    scores = {"challenger": chosen.holdout_scores, "champion": chosen.holdout_scores + 20.0,
              "baseline": training.predict_scores(baseline, hold, delay_spec) + 5.0}
    ev = evaluate(hold, y, scores, delay_spec)
    assert ev["greater_is_better"] is False and {s["value"] for s in ev["slices"]} == {"EWR", "JFK", "LGA"}
    verdict = gate(ev, delay_spec.promotion, challenger_scores=chosen.holdout_scores, roundtrip_equal=True,
                   challenger_family="xgboost")
    assert verdict.promote, verdict.message()
    checks = {c.name: c.detail for c in verdict.checks}
    assert "<= ceiling 80.0000" in checks["floor"] and "challenger scores finite" in checks["finite"]
    worse = gate(evaluate(hold, y, {**scores, "challenger": scores["champion"] + 1.0}, delay_spec),
                 delay_spec.promotion, challenger_scores=scores["champion"] + 1.0, roundtrip_equal=True,
                 challenger_family="xgboost")
    assert {c.name for c in worse.checks if not c.passed} == {"champion", "baseline"}  # 1 minute: within slice_tolerance


def test_training_key_names_the_task_only_when_not_binary(delay_spec):
    binary = load_spec(FLIGHTS)
    as_binary = dataclasses.replace(delay_spec, task="binary")
    assert training.training_key(delay_spec, ["a"]) != training.training_key(as_binary, ["a"])
    assert training.training_key(binary, ["a"]) == training.training_key(binary, ["a"])


def test_realised_quality_of_a_regression_has_an_interval_and_no_calibration():
    rng = np.random.default_rng(3)
    y = rng.normal(10, 5, 2000)
    s = y + rng.normal(0, 2, 2000)
    q = realised_quality("rmse", y, s, threshold=0.5, confidence=0.95, resamples=100, seed=1,
                         days=np.repeat(np.arange(4), 500))
    assert q.low <= q.value <= q.high and q.value == pytest.approx(2.0, abs=0.15)
    assert q.brier is None and q.ece is None
