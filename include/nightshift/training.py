"""Training: turn labelled snapshot rows into a challenger model and a simple baseline.

Everything about the columns comes from the dataset spec, so the same code trains any data
set. Models are scikit-learn Pipelines (preprocessing + estimator in one object) so that the
registry stores, and scoring loads, exactly what was evaluated: no separate encoder to lose.

Determinism matters: the same rows and seed must give bit-identical predictions, so that a
rerun of a night reproduces its model and its scores. Hence the fixed row order, the fixed
thread count and the fixed seed below.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from xgboost import XGBClassifier

from include.nightshift.spec import DatasetSpec

# Fixed, not "all cores": a model must not depend on the machine that trained it.
N_JOBS = 2
BASELINE_MAX_ITER = 2000


def features_frame(df: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """The spec's features in spec order: numeric as float64 (NaN when missing), categorical as
    object strings (None when missing).

    The one place that normalises dtypes: Parquet, psycopg, connectorx or ADBC each hand back
    different types (nullable Int64, Float64, pyarrow strings, categoricals), and a model must
    see the same input whichever reader produced the rows.
    """
    missing = [name for name in spec.feature_names if name not in df.columns]
    if missing:
        raise KeyError(f"feature columns missing from the data: {missing}")
    out = {}
    for feature in spec.features:
        col = df[feature.name]
        if feature.type == "numeric":
            out[feature.name] = pd.to_numeric(col, errors="raise").to_numpy(dtype="float64", na_value=np.nan)
        else:
            values = col.astype(object).to_numpy()
            present = pd.notna(values)
            values[present] = [str(v) for v in values[present]]
            values[~present] = None
            out[feature.name] = values
    return pd.DataFrame(out, index=df.index, columns=spec.feature_names)


def labels(df: pd.DataFrame, spec: DatasetSpec) -> np.ndarray:
    """The label as int 0/1; a missing or other value is an error, never a silent class."""
    col = df[spec.label.name]
    if col.isna().any():
        raise ValueError(f"{spec.label.name}: {int(col.isna().sum())} rows have no label")
    y = col.to_numpy(dtype="int64")
    bad = set(np.unique(y)) - {0, 1}
    if bad:
        raise ValueError(f"{spec.label.name}: labels must be 0 or 1, found {sorted(bad)}")
    return y


def _utc(ts: pd.Series) -> pd.Series:
    """Timestamps as UTC; naive ones are taken to be UTC already."""
    return pd.to_datetime(ts, utc=True)


def training_days(spec: DatasetSpec, run_date: dt.date) -> tuple[dt.date, list[dt.date]]:
    """The newest labelled day a run on `run_date` can use (the holdout's end), and every day of
    the training window plus holdout, newest first: labels arrive `label.delay_days` late."""
    end = run_date - dt.timedelta(days=spec.label.delay_days)
    t = spec.training
    return end, [end - dt.timedelta(days=i) for i in range(t.window_days + t.holdout_days)]


def split_train_holdout(labelled: pd.DataFrame, spec: DatasetSpec,
                        end_day: dt.date) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Out-of-time split by the spec's timestamp (UTC days).

    holdout: the `holdout_days` days ending at `end_day` inclusive; train: the `window_days`
    days just before them. Rows outside both windows are dropped. Each part is sorted by
    (timestamp, entity key) with a fresh index, so row order (and so the model) does not
    depend on how the rows were read.
    """
    t = spec.training
    holdout_start = pd.Timestamp(end_day, tz="UTC") - pd.Timedelta(days=t.holdout_days - 1)
    holdout_end = pd.Timestamp(end_day, tz="UTC") + pd.Timedelta(days=1)
    train_start = holdout_start - pd.Timedelta(days=t.window_days)
    ts = _utc(labelled[spec.timestamp])
    return (_sorted(labelled[(ts >= train_start) & (ts < holdout_start)], spec),
            _sorted(labelled[(ts >= holdout_start) & (ts < holdout_end)], spec))


def _sorted(df: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    order = pd.DataFrame({"ts": _utc(df[spec.timestamp]), "key": df[spec.entity_key.name]})
    positions = order.reset_index(drop=True).sort_values(["ts", "key"], kind="mergesort").index
    return df.iloc[positions].reset_index(drop=True)


def _one_hot(spec: DatasetSpec) -> OneHotEncoder:
    """One column per category the spec declares; unseen values and missing ones encode as all
    zeros instead of failing the night (validation bounds how many there may be)."""
    return OneHotEncoder(
        categories=[list(f.categories) for f in spec.features if f.type == "categorical"],
        handle_unknown="ignore",
        sparse_output=False,
        dtype=np.float64,
    )


def build_model(spec: DatasetSpec) -> Pipeline:
    """The challenger: numeric passthrough (XGBoost handles NaN itself), one-hot categoricals,
    a hist XGBoost classifier seeded from the spec.

    Dense output on purpose: XGBoost reads the absent entries of a sparse matrix as missing,
    not as zero, which would change what a one-hot zero means.
    """
    prep = ColumnTransformer(
        [("numeric", "passthrough", spec.numeric_features),
         ("categorical", _one_hot(spec), spec.categorical_features)],
        sparse_threshold=0.0,
    )
    params = {"tree_method": "hist", "n_jobs": N_JOBS, **spec.training.params, "random_state": spec.training.seed}
    return Pipeline([("prep", prep), ("model", XGBClassifier(**params))])


def build_baseline(spec: DatasetSpec) -> Pipeline:
    """The simple baseline a challenger must beat: median-imputed, scaled numerics and one-hot
    categoricals into a logistic regression."""
    numeric = make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True), StandardScaler())
    prep = ColumnTransformer(
        [("numeric", numeric, spec.numeric_features),
         ("categorical", _one_hot(spec), spec.categorical_features)],
        sparse_threshold=0.0,
    )
    return Pipeline([("prep", prep), ("model", LogisticRegression(max_iter=BASELINE_MAX_ITER))])


def fit(model: Pipeline, df: pd.DataFrame, spec: DatasetSpec) -> Pipeline:
    """Fit on the spec's features and label; returns the same (fitted) pipeline."""
    return model.fit(features_frame(df, spec), labels(df, spec))


def predict_scores(model: Pipeline, df: pd.DataFrame, spec: DatasetSpec) -> np.ndarray:
    """Probability of the positive class (label 1) as float64, one per row."""
    proba = model.predict_proba(features_frame(df, spec))
    positive = list(model.classes_).index(1)
    return proba[:, positive].astype(np.float64)
