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


# --------------------------------------------------------------------------- task multiclass

STATUS = ROOT / "examples" / "flights_status" / "flights_status.yaml"
CLASSES = ["on_time", "late", "very_late", "cancelled"]


@pytest.fixture(scope="module")
def status_spec():
    base = load_spec(STATUS)
    return dataclasses.replace(base, training=dataclasses.replace(base.training, window_days=4, holdout_days=2,
                                                                  params={"n_estimators": 20, "max_depth": 3}))


def status_like(spec, seed: int = 5) -> pd.DataFrame:
    """flights_like rows whose status follows the delay: late hours are late, EWR is very late more often."""
    delay_spec = load_spec(DELAY)
    df = flights_like(delay_spec, seed=seed)
    delay = df.pop("arr_delay_min").to_numpy()
    df["status"] = np.select([delay >= 45, delay >= 30, delay >= 10], ["cancelled", "very_late", "late"], "on_time")
    return df


def test_a_multiclass_spec_declares_its_classes(tmp_path):
    spec = load_spec(STATUS)
    assert (spec.task, list(spec.label.classes), spec.promotion.metric) == ("multiclass", CLASSES, "log_loss")
    raw = _spec_text(STATUS)
    del raw["label"]["classes"]
    with pytest.raises(SpecError, match=r"label.classes: is required by task multiclass and only allowed there"):
        _load(tmp_path, raw)
    with pytest.raises(SpecError, match=r"label.classes: is required by task multiclass and only allowed there "
                                        r"\(task binary\)"):
        _load(tmp_path, _spec_text(FLIGHTS, **{"label.classes": CLASSES}))
    with pytest.raises(SpecError, match="lists a class more than once"):
        _load(tmp_path, _spec_text(STATUS, **{"label.classes": ["a", "b", "a"]}))
    with pytest.raises(SpecError, match="roc_auc' does not judge task multiclass; use one of log_loss, macro_f1, accuracy"):
        _load(tmp_path, _spec_text(STATUS, **{"promotion.metric": "roc_auc", "promotion.floor": 0.6}))


def test_multiclass_metrics_match_their_definitions():
    y = np.array([0, 1, 2, 2])
    p = np.array([[0.7, 0.2, 0.1], [0.3, 0.6, 0.1], [0.2, 0.2, 0.6], [0.5, 0.3, 0.2]])
    assert metric_value("log_loss", y, p) == pytest.approx(-np.mean(np.log([0.7, 0.6, 0.6, 0.2])))
    assert metric_value("accuracy", y, p) == pytest.approx(0.75)
    assert metric_value("macro_f1", y, p) == pytest.approx(np.mean([2 / 3, 1.0, 2 / 3]))
    from include.nightshift.evaluation import per_class_recall
    assert per_class_recall(y, p, ["a", "b", "c"]) == {"a": 1.0, "b": 1.0, "c": 0.5}
    with pytest.raises(ValueError, match="does not judge class probabilities"):
        metric_value("roc_auc", y, p)


def test_multiclass_candidates_give_class_probabilities_and_the_gate_judges_them(status_spec):
    df = status_like(status_spec)
    train, hold = training.split_train_holdout(df, status_spec, dt.date(2013, 6, 6))
    fits = training.fit_candidates(status_spec, train, hold)
    assert [type(f.model.named_steps["model"]).__name__ for f in fits] == [
        "XGBClassifier", "HistGradientBoostingClassifier", "LogisticRegression"]
    y = training.labels(hold, status_spec)
    prior = np.bincount(training.labels(train, status_spec), minlength=4) / len(train)
    naive = metric_value("log_loss", y, np.tile(prior, (len(y), 1)))
    for f in fits:
        assert f.holdout_scores.shape == (len(hold), 4), f.family
        assert np.allclose(f.holdout_scores.sum(axis=1), 1.0)
        assert math.isfinite(f.metric), f.family
    chosen = training.choose(fits, status_spec)
    assert chosen.metric == min(f.metric for f in fits) < 0.95 * naive  # the chosen one beats the class shares
    baseline = training.fit(training.build_baseline(status_spec), train, status_spec)
    base_scores = training.predict_scores(baseline, hold, status_spec)
    flat = np.full_like(chosen.holdout_scores, 0.25)
    ev = evaluate(hold, y, {"challenger": chosen.holdout_scores, "champion": flat, "baseline": base_scores},
                  status_spec)
    assert set(ev["per_class_recall"]["challenger"]) == set(CLASSES)
    verdict = gate(ev, status_spec.promotion, challenger_scores=chosen.holdout_scores, roundtrip_equal=True,
                   challenger_family=chosen.family)
    assert verdict.promote, verdict.message()
    assert "over 4 classes" in {c.name: c.detail for c in verdict.checks}["finite"]
    bad = chosen.holdout_scores.copy()
    bad[0, 0] = np.nan
    refused = gate(ev, status_spec.promotion, challenger_scores=bad, roundtrip_equal=True,
                   challenger_family=chosen.family)
    assert not {c.name: c.passed for c in refused.checks}["finite"]
    # The prediction-drift input is the predicted class's position; the published columns name it.
    drift = training.drift_scores(chosen.model, hold, status_spec)
    assert drift.shape == (len(hold),) and set(np.unique(drift)) <= {0.0, 1.0, 2.0, 3.0}
    from include.nightshift.scoring import _multiclass_columns
    extra = _multiclass_columns(chosen.holdout_scores[:3], status_spec)
    assert extra["predicted_class"].to_pylist() == [CLASSES[i] for i in chosen.holdout_scores[:3].argmax(axis=1)]
    import json
    assert list(json.loads(extra["class_probabilities"][0].as_py())) == CLASSES


def test_a_training_window_without_a_class_is_refused_naming_it(status_spec):
    df = status_like(status_spec)
    df = df[df["status"] != "cancelled"]
    days = [dt.date(2013, 6, 6) - dt.timedelta(days=i) for i in range(6)]
    message = training.one_class_problem(df, status_spec, days)
    assert "no row of class 'cancelled'" in message


def test_realised_quality_of_class_probabilities_has_an_interval_and_no_calibration():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, 900)
    p = np.full((900, 3), 0.2)
    p[np.arange(900), y] = 0.6
    q = realised_quality("log_loss", y, p, threshold=0.5, confidence=0.95, resamples=50, seed=1,
                         days=np.repeat(np.arange(3), 300))
    assert q.value == pytest.approx(-math.log(0.6)) and q.brier is None and q.ece is None


def test_the_predictions_table_has_the_multiclass_columns_for_a_multiclass_spec_only(status_spec, delay_spec):
    from include.nightshift.warehouse import prediction_schema
    assert prediction_schema(status_spec).names[-2:] == ["predicted_class", "class_probabilities"]
    assert prediction_schema(delay_spec).names == prediction_schema(load_spec(FLIGHTS)).names[:1] + \
        prediction_schema(delay_spec).names[1:]
    assert "predicted_class" not in prediction_schema(load_spec(FLIGHTS)).names
