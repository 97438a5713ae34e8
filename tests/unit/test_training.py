"""Training core: dtype normalisation, the out-of-time split, determinism, quality on demo data, the
candidate families and the holdout's choice, calibration, the training key."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import brier_score_loss, roc_auc_score

from include.nightshift import training
from include.nightshift.demo_data import generate_day
from include.nightshift.spec import Candidate, NumericFeature, load_spec

FIRST_DAY = dt.date(2026, 1, 1)
DAYS = 6
ROWS_PER_DAY = 3000


@pytest.fixture(scope="module")
def spec():
    """The churn spec with windows that fit six days: 4 days to train, the last 2 held out."""
    base = load_spec(Path(__file__).resolve().parents[2] / "include" / "specs" / "churn.yaml")
    return dataclasses.replace(base, training=dataclasses.replace(base.training, window_days=4, holdout_days=2))


@pytest.fixture(scope="module")
def demo() -> pd.DataFrame:
    days = [FIRST_DAY + dt.timedelta(days=i) for i in range(DAYS)]
    return pd.concat([generate_day(day, ROWS_PER_DAY) for day in days], ignore_index=True)


@pytest.fixture(scope="module")
def split(demo, spec):
    return training.split_train_holdout(demo, spec, FIRST_DAY + dt.timedelta(days=DAYS - 1))


@pytest.fixture(scope="module")
def fitted(split, spec):
    train, _ = split
    return training.fit(training.build_model(spec), train, spec)


# --- features and labels ---------------------------------------------------------------

def test_features_frame_normalises_dtypes_whatever_the_reader(demo, spec):
    rows = demo.head(4).copy()
    rows["tenure_months"] = pd.array([1, None, 3, 4], dtype="Int64")  # nullable ints (connectorx/ADBC)
    rows["age"] = rows["age"].astype("Float64")
    rows["plan"] = pd.Categorical(["basic", None, "premium", "basic"])
    rows["region"] = pd.array(["north", pd.NA, "east", "west"], dtype="string")
    rows["payment_method"] = pd.Series([7, "card", None, 2.5], dtype=object, index=rows.index)  # mixed: all text
    rows["extra_column"] = 1

    frame = training.features_frame(rows[list(reversed(rows.columns))], spec)

    assert list(frame.columns) == spec.feature_names
    assert all(frame[c].dtype == np.float64 for c in spec.numeric_features)
    assert all(frame[c].dtype == object for c in spec.categorical_features)
    assert np.isnan(frame["tenure_months"].iloc[1]) and frame["tenure_months"].iloc[2] == 3.0
    assert frame["plan"].tolist() == ["basic", None, "premium", "basic"]
    assert frame["region"].tolist() == ["north", None, "east", "west"]
    assert frame["payment_method"].tolist() == ["7", "card", None, "2.5"]


def test_features_frame_names_missing_columns(demo, spec):
    with pytest.raises(KeyError, match="plan"):
        training.features_frame(demo.drop(columns=["plan"]).head(3), spec)


def test_labels_are_int_and_refuse_missing_or_other_values(demo, spec):
    rows = demo.head(5).copy()
    assert training.labels(rows, spec).dtype == np.int64
    rows["churned"] = pd.array([0, 1, None, 0, 1], dtype="Int64")
    with pytest.raises(ValueError, match="no label"):
        training.labels(rows, spec)
    rows["churned"] = [0, 1, 2, 0, 1]
    with pytest.raises(ValueError, match="0 or 1"):
        training.labels(rows, spec)


# --- split -----------------------------------------------------------------------------

def _one_row_at_each_day_edge(first: dt.date, days: int) -> pd.DataFrame:
    """Rows at 00:00:00 and 23:59:59 UTC of each day, keys descending, in a shuffled order."""
    stamps, keys = [], []
    for i in range(days):
        start = pd.Timestamp(first + dt.timedelta(days=i), tz="UTC")
        stamps += [start + pd.Timedelta(hours=23, minutes=59, seconds=59), start]
        keys += [2 * (days - i), 2 * (days - i) + 1]
    df = pd.DataFrame({"event_ts": stamps, "customer_id": keys})
    return df.sample(frac=1.0, random_state=0)


def test_split_days_land_in_train_or_holdout(spec):
    end = dt.date(2026, 1, 20)
    rows = _one_row_at_each_day_edge(dt.date(2026, 1, 10), 12)  # Jan 10 .. Jan 21

    train, holdout = training.split_train_holdout(rows, spec, end)

    holdout_days = sorted(set(holdout["event_ts"].dt.date))
    train_days = sorted(set(train["event_ts"].dt.date))
    assert holdout_days == [dt.date(2026, 1, 19), dt.date(2026, 1, 20)]  # 2 days ending at end, inclusive
    assert train_days == [dt.date(2026, 1, d) for d in (15, 16, 17, 18)]  # the 4 days before
    assert len(train) == 8 and len(holdout) == 4  # both edges of every day; Jan 21 and before Jan 15 dropped


def test_split_sorts_by_timestamp_then_key_with_a_fresh_index(spec):
    rows = _one_row_at_each_day_edge(dt.date(2026, 1, 15), 6)
    tie = rows.iloc[[0]].assign(customer_id=0)  # same timestamp as a row already there, smaller key
    train, holdout = training.split_train_holdout(pd.concat([rows, tie]), spec, dt.date(2026, 1, 20))
    for part in (train, holdout):
        assert list(part.index) == list(range(len(part)))
        assert part.equals(part.sort_values(["event_ts", "customer_id"]).reset_index(drop=True))
    both = pd.concat([train, holdout])
    same_time = both[both["event_ts"] == tie["event_ts"].iloc[0]]
    assert same_time["customer_id"].iloc[0] == 0 and len(same_time) == 2


def test_split_reads_timestamps_as_utc(spec):
    # 01:00 at +02:00 is 23:00 UTC the day before: that row belongs to the earlier (train) day.
    local = pd.DataFrame({"event_ts": pd.to_datetime(["2026-01-19T01:00:00+02:00"]), "customer_id": [1]})
    naive = pd.DataFrame({"event_ts": pd.to_datetime(["2026-01-19T01:00:00"]), "customer_id": [1]})
    assert len(training.split_train_holdout(local, spec, dt.date(2026, 1, 20))[0]) == 1
    assert len(training.split_train_holdout(naive, spec, dt.date(2026, 1, 20))[1]) == 1


# --- models ----------------------------------------------------------------------------

def test_model_takes_seed_and_params_from_the_spec(spec):
    xgb = training.build_model(spec).named_steps["model"]
    params = xgb.get_params()
    assert params["random_state"] == spec.training.seed
    assert params["tree_method"] == "hist" and params["n_jobs"] == training.N_JOBS
    for key, value in spec.training.params.items():
        assert params[key] == value


def test_training_is_deterministic_whatever_the_row_order(demo, spec, fitted, split):
    _, holdout = split
    shuffled = demo.sample(frac=1.0, random_state=1)
    train_again, _ = training.split_train_holdout(shuffled, spec, FIRST_DAY + dt.timedelta(days=DAYS - 1))
    again = training.fit(training.build_model(spec), train_again, spec)

    first = training.predict_scores(fitted, holdout, spec)
    assert first.dtype == np.float64
    assert np.array_equal(first, training.predict_scores(again, holdout, spec))


def test_challenger_and_baseline_learn_the_demo_data(split, spec, fitted):
    train, holdout = split
    assert len(train) == 4 * ROWS_PER_DAY and len(holdout) == 2 * ROWS_PER_DAY
    y = training.labels(holdout, spec)
    baseline = training.fit(training.build_baseline(spec), train, spec)

    model_auc = roc_auc_score(y, training.predict_scores(fitted, holdout, spec))
    baseline_auc = roc_auc_score(y, training.predict_scores(baseline, holdout, spec))
    assert model_auc > 0.7
    assert baseline_auc > 0.7


def test_unseen_and_missing_values_at_predict_time_do_not_crash(split, spec, fitted):
    _, holdout = split
    rows = holdout.head(4).copy()
    rows["region"] = ["atlantis", None, "north", np.nan]
    rows["plan"] = ["enterprise", "basic", None, "basic"]
    rows["tenure_months"] = np.nan
    baseline = training.fit(training.build_baseline(spec), holdout, spec)
    for model in (fitted, baseline):
        scores = training.predict_scores(model, rows, spec)
        assert scores.shape == (4,) and np.isfinite(scores).all()
        assert ((scores >= 0) & (scores <= 1)).all()


# --- candidates ------------------------------------------------------------------------

FAMILIES = ("xgboost", "hist_gradient_boosting", "logistic_regression")


def test_default_candidates_are_every_family_with_xgboost_taking_params(spec):
    models = spec.candidates
    assert [c.family for c in models] == list(FAMILIES)
    assert models[0].params == spec.training.params and models[1].params == {} == models[2].params


def test_regression_s_linear_family_is_ridge_and_a_spec_naming_the_other_task_s_is_refused(spec, tmp_path):
    import yaml

    from include.nightshift.spec import SpecError, load_spec

    regression = dataclasses.replace(spec, task="regression")
    assert [c.family for c in regression.candidates] == ["xgboost", "hist_gradient_boosting", "ridge"]
    assert type(training.build_baseline(regression)[-1]).__name__ == "Ridge"
    data = yaml.safe_load(open(spec.path))
    data["training"] = {**data["training"], "params": {}, "candidates": [{"family": "xgboost"}, {"family": "ridge"}]}
    path = tmp_path / "binary_ridge.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError, match=r"training.candidates\[1\].family: 'ridge' is not task binary's linear model; "
                                        r"use logistic_regression"):
        load_spec(path)


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_trains_predicts_and_learns_the_demo_data(split, spec, family):
    train, holdout = split
    candidate = Candidate(family=family, params={"n_estimators": 50} if family == "xgboost" else {})
    model = training.fit(training.build_candidate(spec, candidate), train, spec)
    scores = training.predict_scores(model, holdout, spec)
    assert scores.dtype == np.float64 and scores.shape == (len(holdout),)
    assert ((scores >= 0) & (scores <= 1)).all()
    assert roc_auc_score(training.labels(holdout, spec), scores) > 0.7


def test_the_seed_wins_over_a_random_state_in_params(spec):
    for family in FAMILIES:
        model = training.build_candidate(spec, Candidate(family=family, params={"random_state": 7}))
        assert model.named_steps["model"].get_params()["random_state"] == spec.training.seed
    lr = training.build_candidate(spec, Candidate(family="logistic_regression", params={"C": 0.1}))
    assert lr.named_steps["model"].C == 0.1


def _toy_spec(spec, **training_changes):
    """Five numeric features x0..x4 and a label y: the churn spec's policy, other columns."""
    features = tuple(NumericFeature(name=f"x{i}", type="numeric") for i in range(5))
    return dataclasses.replace(
        spec, features=features, label=dataclasses.replace(spec.label, name="y"),
        promotion=dataclasses.replace(spec.promotion, slice_columns=()),
        training=dataclasses.replace(spec.training, **training_changes))


def _toy_rows(kind: str, days: int = 6, per_day: int = 400, seed: int = 0) -> pd.DataFrame:
    """`linear`: the log-odds are a sum of the features (a logistic regression is the true model);
    `xor`: the label is the sign of x0 * x1 (no linear model can see it)."""
    rng = np.random.default_rng(seed)
    n = days * per_day
    x = rng.normal(size=(n, 5))
    if kind == "linear":
        logit = 1.2 * x[:, 0] - 0.9 * x[:, 1] + 0.6 * x[:, 2] - 0.4 * x[:, 3]
    else:
        logit = 4.0 * np.sign(x[:, 0] * x[:, 1])
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    stamps = pd.Timestamp(FIRST_DAY, tz="UTC") + pd.to_timedelta(np.repeat(np.arange(days), per_day), unit="D") \
        + pd.to_timedelta(np.tile(np.arange(per_day), days), unit="s")
    return pd.DataFrame({"customer_id": np.arange(n), "event_ts": stamps, **{f"x{i}": x[:, i] for i in range(5)},
                         "y": y})


@pytest.mark.parametrize("kind, winner", [("linear", "logistic_regression"), ("xor", "tree")])
def test_the_holdout_picks_the_family_that_fits_the_data(spec, kind, winner):
    toy = _toy_spec(spec)
    train, holdout = training.split_train_holdout(_toy_rows(kind), toy, FIRST_DAY + dt.timedelta(days=5))
    fits = training.fit_candidates(toy, train, holdout)
    chosen = training.choose(fits, toy)
    metrics = {f.family: f.metric for f in fits}
    assert [f.family for f in fits] == list(FAMILIES) and all(f.fit_seconds > 0 for f in fits)
    assert chosen.metric == max(metrics.values())
    if winner == "tree":
        assert chosen.family in ("xgboost", "hist_gradient_boosting") and metrics["logistic_regression"] < 0.6
    else:
        assert chosen.family == "logistic_regression", metrics
    assert chosen.summary()["metric"] == chosen.metric


def _fit(family: str, metric: float | None) -> training.CandidateFit:
    return training.CandidateFit(family, None, np.zeros(1), metric, 0.1)


def test_choose_follows_the_metric_direction_never_picks_undefined_and_breaks_ties_by_order(spec):
    fits = [_fit("xgboost", 0.7), _fit("hist_gradient_boosting", None), _fit("logistic_regression", 0.7)]
    assert training.choose(fits, spec).family == "xgboost"  # a tie: the first listed
    fits[1] = _fit("hist_gradient_boosting", 0.9)
    assert training.choose(fits, spec).family == "hist_gradient_boosting"
    log_loss_spec = dataclasses.replace(spec, promotion=dataclasses.replace(spec.promotion, metric="log_loss"))
    assert training.choose(fits, log_loss_spec).family == "xgboost"  # lower is better
    assert training.choose([_fit("xgboost", None), _fit("logistic_regression", 0.2)], spec).family \
        == "logistic_regression"
    with pytest.raises(ValueError, match="no candidate"):
        training.choose([], spec)


# --- calibration -----------------------------------------------------------------------

def _ece(y: np.ndarray, s: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: |mean score - positive rate| per score decile, weighted by rows."""
    edges = np.quantile(s, np.linspace(0, 1, bins + 1))
    which = np.clip(np.searchsorted(edges, s, side="right") - 1, 0, bins - 1)
    return float(sum(abs(s[which == b].mean() - y[which == b].mean()) * (which == b).mean()
                     for b in range(bins) if (which == b).any()))


@pytest.mark.parametrize("method", ["sigmoid", "isotonic"])
def test_calibration_on_the_last_days_fixes_a_miscalibrated_model(spec, method):
    """class_weight=balanced on a rare positive class inflates every score; calibrated on later days
    the same model's scores match the positive rate again (Brier and ECE both fall)."""
    rows = _toy_rows("linear", days=8, per_day=800, seed=3)
    rows["y"] = (rows["x0"] + rows["x1"] + np.random.default_rng(4).normal(size=len(rows)) > 2.6).astype(int)
    candidates = (Candidate(family="logistic_regression", params={"class_weight": "balanced"}),)
    raw_spec = _toy_spec(spec, candidates=candidates, params={}, window_days=6, holdout_days=2)
    cal_spec = _toy_spec(spec, candidates=candidates, params={}, window_days=6, holdout_days=2,
                         calibration=method, calibration_days=2)
    train, holdout = training.split_train_holdout(rows, raw_spec, FIRST_DAY + dt.timedelta(days=7))
    y = training.labels(holdout, raw_spec)
    raw, = training.fit_candidates(raw_spec, train, holdout)
    calibrated, = training.fit_candidates(cal_spec, train, holdout)

    assert y.mean() < 0.1 and raw.holdout_scores.mean() > 3 * y.mean()  # miscalibrated on purpose
    assert brier_score_loss(y, calibrated.holdout_scores) < 0.8 * brier_score_loss(y, raw.holdout_scores)
    assert _ece(y, calibrated.holdout_scores) < 0.5 * _ece(y, raw.holdout_scores)
    assert abs(calibrated.holdout_scores.mean() - y.mean()) < 0.02
    assert hasattr(calibrated.model, "predict_proba") and list(calibrated.model.classes_) == [0, 1]


def test_calibration_split_is_time_ordered_and_names_the_key_when_impossible(spec):
    toy = _toy_spec(spec, calibration="sigmoid", calibration_days=2)
    rows = _toy_rows("linear", days=4)
    fit_part, cal_part = training.calibration_split(rows, toy)
    assert fit_part["event_ts"].max() < cal_part["event_ts"].min()
    assert sorted(set(cal_part["event_ts"].dt.date)) == [FIRST_DAY + dt.timedelta(days=d) for d in (2, 3)]
    with pytest.raises(ValueError, match="training.calibration_days 4"):
        training.calibration_split(rows, _toy_spec(spec, calibration="sigmoid", calibration_days=4))


def test_calibrated_fits_are_deterministic(spec):
    """Rows read in another order (re-split, as every night's rows are) give the same scores to the bit."""
    toy, rows, end = _toy_spec(spec, calibration="isotonic", calibration_days=1), _toy_rows("xor"), \
        FIRST_DAY + dt.timedelta(days=5)
    train, holdout = training.split_train_holdout(rows, toy, end)
    first = [f.holdout_scores for f in training.fit_candidates(toy, train, holdout)]
    train, holdout = training.split_train_holdout(rows.sample(frac=1.0, random_state=2), toy, end)
    again = [f.holdout_scores for f in training.fit_candidates(toy, train, holdout)]
    assert len(first) == 3 and all(np.array_equal(a, b) for a, b in zip(first, again))


# --- training key ----------------------------------------------------------------------

def test_training_key_changes_with_data_params_metric_and_calibration_only(spec):
    hashes = ["a" * 64, "b" * 64]
    key = training.training_key(spec, hashes)
    assert len(key) == 64 and key == training.training_key(spec, list(reversed(hashes)))
    assert key == training.training_key(dataclasses.replace(spec, description="other words"), hashes)
    changed = [
        training.training_key(spec, ["a" * 64, "c" * 64]),
        training.training_key(spec, hashes[:1]),
        training.training_key(dataclasses.replace(spec, training=dataclasses.replace(
            spec.training, params={**spec.training.params, "max_depth": 5})), hashes),
        training.training_key(dataclasses.replace(spec, training=dataclasses.replace(spec.training, seed=1)), hashes),
        training.training_key(dataclasses.replace(spec, training=dataclasses.replace(
            spec.training, calibration="sigmoid")), hashes),
        training.training_key(dataclasses.replace(spec, promotion=dataclasses.replace(
            spec.promotion, metric="log_loss")), hashes),
    ]
    assert len({key, *changed}) == 1 + len(changed)


def test_training_key_covers_library_versions(spec, monkeypatch):
    key = training.training_key(spec, ["a" * 64])
    monkeypatch.setattr(training, "installed_version", lambda name: "0.0" if name == "xgboost" else "1")
    assert training.training_key(spec, ["a" * 64]) != key
