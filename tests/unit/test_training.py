"""Training core: dtype normalisation, the out-of-time split, determinism, quality on demo data."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from include.nightshift import training
from include.nightshift.demo_data import generate_day
from include.nightshift.spec import load_spec

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
    rows["extra_column"] = 1

    frame = training.features_frame(rows[list(reversed(rows.columns))], spec)

    assert list(frame.columns) == spec.feature_names
    assert all(frame[c].dtype == np.float64 for c in spec.numeric_features)
    assert all(frame[c].dtype == object for c in spec.categorical_features)
    assert np.isnan(frame["tenure_months"].iloc[1]) and frame["tenure_months"].iloc[2] == 3.0
    assert frame["plan"].tolist() == ["basic", None, "premium", "basic"]
    assert frame["region"].tolist() == ["north", None, "east", "west"]


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
