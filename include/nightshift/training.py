"""Training: turn labelled snapshot rows into a challenger model and a simple baseline.

Everything about the columns comes from the dataset spec, so the same code trains any data
set. Models are scikit-learn Pipelines (preprocessing + estimator in one object) so that the
registry stores, and scoring loads, exactly what was evaluated: no separate encoder to lose.

Several model families compete (spec training.candidates: XGBoost, scikit-learn's
HistGradientBoosting, logistic regression). Each is fitted on the same training rows and
scored on the same out-of-time holdout; the best by promotion.metric becomes the challenger
(fit_candidates, choose). On real data a logistic regression often wins: then it is the model
that is registered and served. With training.calibration, each candidate is fitted on the
earlier days of the window and calibrated on its last days (never on rows it was fitted on);
the result stays one scikit-learn object with predict_proba.

Determinism matters: the same rows and seed must give bit-identical predictions, so that a
rerun of a night reproduces its model and its scores. Hence the fixed row order, the fixed
thread count and the fixed seed below.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any

# Idle OpenMP threads sleep instead of spinning. Measured here on 2 shared cores (load ~5): with
# the default (active) policy the three families took 5-8x (XGBoost) and ~10x (HistGradientBoosting)
# longer than with PASSIVE. libgomp reads this once, when it loads: it only takes effect when this
# module is the first to import scikit-learn or XGBoost; workers should set it in their environment.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pandas as pd
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.frozen import FrozenEstimator
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler, TargetEncoder
from threadpoolctl import threadpool_limits
from xgboost import XGBClassifier, XGBRegressor

from include.nightshift.evaluation import metric_value
from include.nightshift.spec import LINEAR_FAMILY, METRICS, Candidate, CategoricalFeature, DatasetSpec

# Fixed, not "all cores": a model must not depend on the machine that trained it.
N_JOBS = 2
BASELINE_MAX_ITER = 2000
# HistGradientBoosting's default (and largest) max_bins: the most categories it takes natively.
HGB_MAX_BINS = 255
# The linear model's features stay sparse below this density (scikit-learn's ColumnTransformer default).
SPARSE_BELOW = 0.3
# What the training key hashes besides data and spec: the libraries that fit and the code that
# builds and chooses the models. Any change there means a new model, never a reused one.
KEY_LIBRARIES = ("scikit-learn", "xgboost", "numpy", "pandas", "scipy")
KEY_CODE = (Path(__file__), *(Path(__file__).with_name(name) for name in (
    "evaluation.py", "training_window.py", "training_dask.py")))
# The linear families (the logistic/ridge candidate and the baseline) fit on at most this many training rows, a
# seeded time-stratified sample (linear_rows). Their few dozen coefficients are settled long before: at 1M rows a
# coefficient's sampling error is ~1e-3 of its spread, below the holdout metric's own noise (measured in
# benchmarks/bench_training.py), while their dense design matrix and solver copies grow with every row (issue 15:
# the logistic fit on a 14M-row window raised the train task's peak from 16.4 to 21.4 GB). Windows up to this
# size fit exactly as before.
LINEAR_MAX_ROWS = 1_000_000


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
            if pd.api.types.infer_dtype(values, skipna=True) != "string":  # text read back as text is kept as it is
                values[present] = [str(v) for v in values[present]]
            values[~present] = None
            out[feature.name] = values
    return pd.DataFrame(out, index=df.index, columns=spec.feature_names)


def labels(df: pd.DataFrame, spec: DatasetSpec) -> np.ndarray:
    """The label as int 0/1 (task regression: as float64); a missing or other value is an error, never a
    silent class."""
    col = df[spec.label.name]
    if col.isna().any():
        raise ValueError(f"{spec.label.name}: {int(col.isna().sum())} rows have no label")
    if spec.task == "regression":
        y = pd.to_numeric(col, errors="raise").to_numpy(dtype="float64")
        if not np.isfinite(y).all():
            raise ValueError(f"{spec.label.name}: {int((~np.isfinite(y)).sum())} labels are not finite")
        return y
    if spec.task == "multiclass":
        return class_codes(col, spec)
    y = col.to_numpy(dtype="int64")
    bad = set(np.unique(y)) - {0, 1}
    if bad:
        raise ValueError(f"{spec.label.name}: labels must be 0 or 1, found {sorted(bad)}")
    return y


def class_codes(col: pd.Series, spec: DatasetSpec) -> np.ndarray:
    """Task multiclass: each label as its position in label.classes (int64); a value not listed is an error."""
    values = col.astype(str)
    codes = pd.Categorical(values, categories=list(spec.label.classes)).codes.astype("int64")
    if (codes < 0).any():
        raise ValueError(f"{spec.label.name}: labels not in label.classes: {sorted(set(values[codes < 0]))[:10]}")
    return codes


def _utc(ts: pd.Series) -> pd.Series:
    """Timestamps as UTC; naive ones are taken to be UTC already."""
    return pd.to_datetime(ts, utc=True)


def _local(ts: pd.Series, spec: DatasetSpec) -> pd.Series:
    """Timestamps in the spec's day zone (source.timezone): their dates are the nights that hold them."""
    return _utc(ts).dt.tz_convert(spec.source.timezone)


def row_days(df: pd.DataFrame, spec: DatasetSpec) -> np.ndarray:
    """Each row's day in source.timezone (as the night that holds it), by the spec's timestamp."""
    return _local(df[spec.timestamp], spec).dt.date.to_numpy()


def training_days(spec: DatasetSpec, run_date: dt.date) -> tuple[dt.date, list[dt.date]]:
    """The newest labelled day a run on `run_date` can use (the holdout's end), and every day of
    the training window plus holdout, newest first: labels arrive `label.delay_days` late."""
    end = run_date - dt.timedelta(days=spec.label.delay_days)
    t = spec.training
    return end, [end - dt.timedelta(days=i) for i in range(t.window_days + t.holdout_days)]


def split_train_holdout(labelled: pd.DataFrame, spec: DatasetSpec,
                        end_day: dt.date) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Out-of-time split by the spec's timestamp (days in source.timezone).

    holdout: the `holdout_days` days ending at `end_day` inclusive; train: the `window_days`
    days just before them. Rows outside both windows are dropped. Each part is sorted by
    (timestamp, entity key) with a fresh index, so row order (and so the model) does not
    depend on how the rows were read.
    """
    t = spec.training
    zone = spec.source.timezone  # local midnights: a day is 23 or 25 hours when the clocks change
    holdout_first = end_day - dt.timedelta(days=t.holdout_days - 1)
    holdout_start = pd.Timestamp(holdout_first, tz=zone)
    holdout_end = pd.Timestamp(end_day + dt.timedelta(days=1), tz=zone)
    train_start = pd.Timestamp(holdout_first - dt.timedelta(days=t.window_days), tz=zone)
    ts = _utc(labelled[spec.timestamp])
    return (_sorted(labelled[(ts >= train_start) & (ts < holdout_start)], spec),
            _sorted(labelled[(ts >= holdout_start) & (ts < holdout_end)], spec))


def _sorted(df: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    order = pd.DataFrame({"ts": _utc(df[spec.timestamp]), "key": df[spec.entity_key.name]})
    positions = order.reset_index(drop=True).sort_values(["ts", "key"], kind="mergesort").index
    return df.iloc[positions].reset_index(drop=True)


def _one_hot(spec: DatasetSpec) -> OneHotEncoder:
    """One sparse column per category the spec declares; unseen values and missing ones encode as all
    zeros instead of failing the night (validation bounds how many there may be).

    Sparse because a dense one-hot costs rows x categories x 8 bytes: 4 GB for 100k rows of a
    5,000-value category, where the sparse matrix holds one entry per row and feature.
    """
    return OneHotEncoder(
        categories=[list(f.categories) for f in spec.features if f.type == "categorical"],
        handle_unknown="ignore",
        sparse_output=True,
        dtype=np.float64,
    )


def _ordinal(features: Sequence[CategoricalFeature]) -> OrdinalEncoder:
    """Each category as its position in the spec's list, one float column per feature: unseen values and
    missing ones become NaN, which both tree families read as missing (the branch they learned for it),
    instead of failing the night. Codes come from the declared list, never from the data, so the same
    value has the same code in every night's model."""
    return OrdinalEncoder(
        categories=[list(f.categories) for f in features],
        handle_unknown="use_encoded_value",
        unknown_value=np.nan,
        encoded_missing_value=np.nan,
        dtype=np.float64,
    )


def _target(features: Sequence[CategoricalFeature], seed: int, regression: bool = False,
            classes: int = 0) -> TargetEncoder:
    """Each category as its (shrunk) positive rate, cross-fitted on seeded folds when fitting, so a row's
    own label never encodes its category; unseen and missing values get the overall rate."""
    if regression:
        folds: Any = KFold(n_splits=5, shuffle=True, random_state=seed)
    else:
        folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    kind = "continuous" if regression else ("multiclass" if classes else "binary")
    return TargetEncoder(categories=[list(f.categories) for f in features], target_type=kind, cv=folds)


def _categoricals(spec: DatasetSpec, native_max: int | None) -> tuple[list[CategoricalFeature], list[CategoricalFeature]]:
    """(native, target-encoded): the categoricals with at most `native_max` declared categories (all of
    them when None), and the others."""
    features = [f for f in spec.features if isinstance(f, CategoricalFeature)]
    if native_max is None:
        return features, []
    return ([f for f in features if len(f.categories) <= native_max],
            [f for f in features if len(f.categories) > native_max])


def _tree_prep(spec: DatasetSpec, native_max: int | None = None) -> ColumnTransformer:
    """Numeric passthrough (the tree models handle NaN themselves), then one ordinal-code column per
    categorical that the model splits on natively, then one target-encoded column per categorical with
    more than `native_max` categories. Columns come out in that order (_categorical_columns relies on it).

    Native categories instead of a one-hot: one column per feature whatever its cardinality (a dense
    one-hot of 5,000 values is 80 KB a row), and a split can group any set of categories. A sparse
    one-hot is no answer for the trees: HistGradientBoosting refuses sparse input, and XGBoost reads a
    sparse matrix's absent entries as missing, which would also turn every numeric zero into missing.
    XGBoost takes any number of categories natively (native_max None); HistGradientBoosting only up
    to max_bins (255 at most), so above that its categoricals are target-encoded: ordinal codes as
    numbers would bin 5,000 arbitrary codes into 255 ranges of unrelated categories, while the
    category's cross-fitted positive rate orders them by what matters and stays one column.
    """
    native, encoded = _categoricals(spec, native_max)
    parts = [("numeric", "passthrough", spec.numeric_features),
             ("categorical", _ordinal(native), [f.name for f in native])]
    if encoded:
        parts.append(("target_encoded", _target(encoded, spec.training.seed, spec.task == "regression",
                                                _class_count(spec)), [f.name for f in encoded]))
    return ColumnTransformer(parts, sparse_threshold=0.0)


def _categorical_columns(spec: DatasetSpec, native_max: int | None = None) -> list[bool]:
    """Which of _tree_prep's output columns hold native category codes."""
    native, encoded = _categoricals(spec, native_max)
    per_feature = _class_count(spec) or 1  # a multiclass target encoding is one column per class
    return [False] * len(spec.numeric_features) + [True] * len(native) + [False] * (len(encoded) * per_feature)


def _class_count(spec: DatasetSpec) -> int:
    """Task multiclass: how many classes; else 0."""
    return len(spec.label.classes) if spec.task == "multiclass" else 0


def _linear_prep(spec: DatasetSpec) -> ColumnTransformer:
    """Median-imputed, scaled numerics and one-hot categoricals: what a linear model needs.

    The output is a CSR matrix when under SPARSE_BELOW of its cells are non-zero (a large one-hot:
    one entry per row and feature), which LogisticRegression takes as it is (a zero there is a zero);
    denser (a few small categoricals, as in the demo) it is a dense array, no bigger than a few
    columns per feature, and the fit is the same as with the dense one-hot it always had."""
    numeric = make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True), StandardScaler())
    return ColumnTransformer(
        [("numeric", numeric, spec.numeric_features),
         ("categorical", _one_hot(spec), spec.categorical_features)],
        sparse_threshold=SPARSE_BELOW,
    )


def _xgboost(spec: DatasetSpec, params: dict[str, Any]) -> Pipeline:
    """XGBoost's hist trees on numerics and native categories (feature type "c": partition splits)."""
    types = ["c" if native else "q" for native in _categorical_columns(spec)]
    estimator = XGBRegressor if spec.task == "regression" else XGBClassifier
    model = estimator(**{"tree_method": "hist", "n_jobs": N_JOBS, **params, "random_state": spec.training.seed,
                         "enable_categorical": True, "feature_types": types})
    return Pipeline([("prep", _tree_prep(spec)), ("model", model)])


def _hist_gradient_boosting(spec: DatasetSpec, params: dict[str, Any]) -> Pipeline:
    """HistGradientBoosting with native categories up to its max_bins, target encoding above (_tree_prep)."""
    native_max = int(params.get("max_bins", HGB_MAX_BINS))
    estimator = HistGradientBoostingRegressor if spec.task == "regression" else HistGradientBoostingClassifier
    model = estimator(**{**params, "random_state": spec.training.seed,
                         "categorical_features": _categorical_columns(spec, native_max)})
    return Pipeline([("prep", _tree_prep(spec, native_max)), ("model", model)])


def build_candidate(spec: DatasetSpec, candidate: Candidate) -> Pipeline:
    """One candidate's unfitted pipeline, its params as the spec gives them, seeded from training.seed.

    The seed always wins over a random_state in params: the seed is what makes a rerun reproduce.
    """
    seed, params = spec.training.seed, dict(candidate.params)
    if candidate.family == "xgboost":
        return _xgboost(spec, params)
    if candidate.family == "hist_gradient_boosting":
        return _hist_gradient_boosting(spec, params)
    if candidate.family == "ridge":
        return Pipeline([("prep", _linear_prep(spec)), ("model", Ridge(**{**params, "random_state": seed}))])
    if candidate.family == "logistic_regression":
        model = LogisticRegression(**{"max_iter": BASELINE_MAX_ITER, **params, "random_state": seed})
        return Pipeline([("prep", _linear_prep(spec)), ("model", model)])
    raise ValueError(f"training.candidates: unknown family {candidate.family!r}")


def build_model(spec: DatasetSpec) -> Pipeline:
    """The XGBoost candidate (with its params from the spec): a hist XGBoost classifier."""
    xgb = next((c for c in spec.candidates if c.family == "xgboost"),
               Candidate(family="xgboost", params=dict(spec.training.params)))
    return build_candidate(spec, xgb)


def build_baseline(spec: DatasetSpec) -> Pipeline:
    """The simple baseline a challenger must beat: median-imputed, scaled numerics and one-hot
    categoricals into the task's linear model with its defaults (never the spec's params)."""
    return build_candidate(spec, Candidate(family=LINEAR_FAMILY[spec.task]))


def fit(model: Pipeline, df: pd.DataFrame, spec: DatasetSpec) -> Pipeline:
    """Fit on the spec's features and label; returns the same (fitted) pipeline.

    OpenMP threads are pinned (HistGradientBoosting has no n_jobs): like XGBoost's N_JOBS, a
    model must not depend on how many cores the worker that fitted it had.

    A Pipeline's own fit keeps its input (the features frame) alive while the estimator fits; this does
    what it does, step by step (each transformer's fit_transform in order, then the estimator's fit: the
    same objects and calls, so the same model to the bit), and lets the frame go first: one copy of the
    training rows fewer at the peak (issue 15: about 0.45 GB per 2.8M demo rows).
    """
    y = labels(df, spec)
    with threadpool_limits(limits=N_JOBS, user_api="openmp"):
        if not isinstance(model, Pipeline):
            return model.fit(features_frame(df, spec), y)
        matrix = features_frame(df, spec)
        for _, step in model.steps[:-1]:
            matrix = step.fit_transform(matrix, y)
        model.steps[-1][1].fit(matrix, y)
        return model


def predict_scores(model: Pipeline, df: pd.DataFrame, spec: DatasetSpec) -> np.ndarray:
    """Probability of the positive class (label 1) as float64, one per row; task regression: the predicted
    value; task multiclass: one row of probabilities per row, one column per class of label.classes."""
    return scores_of_features(model, features_frame(df, spec), spec)


def scores_of_features(model: Pipeline, features: pd.DataFrame, spec: DatasetSpec) -> np.ndarray:
    """predict_scores of a frame features_frame already built (the serving path keeps it for its skew watch)."""
    if spec.task == "regression":
        return np.asarray(model.predict(features), dtype=np.float64).ravel()
    proba = model.predict_proba(features)
    if spec.task == "multiclass":  # (rows, classes), columns in label.classes order
        out = np.zeros((len(proba), _class_count(spec)), dtype=np.float64)
        out[:, np.asarray(model.classes_, dtype=int)] = proba
        return out / out.sum(axis=1, keepdims=True)  # XGBoost's float32 rows sum to 1 only within 1e-7
    positive = list(model.classes_).index(1)
    return proba[:, positive].astype(np.float64)


# --- candidates, calibration, the choice --------------------------------------------------


@dataclass
class CandidateFit:
    """One fitted candidate and its numbers on the holdout (metric None: undefined there)."""

    family: str
    model: Any
    holdout_scores: np.ndarray
    metric: float | None
    fit_seconds: float
    params: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """JSON-safe, for the training step, the verdict and the evaluation report."""
        return {"metric": self.metric, "fit_seconds": round(self.fit_seconds, 3), "params": dict(self.params)}


def calibration_split(train_df: pd.DataFrame, spec: DatasetSpec) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(fit on, calibrate on): the last training.calibration_days days (source.timezone) of the training rows
    calibrate, the days before them fit. Time-ordered like the holdout: a calibrator fitted on
    rows its model was trained on learns the model's overconfidence, not its error."""
    days = spec.training.calibration_days
    ts = _local(train_df[spec.timestamp], spec)
    cut = pd.Timestamp(ts.max().date() - dt.timedelta(days=days - 1), tz=spec.source.timezone)
    fit_part, cal_part = train_df[ts < cut].reset_index(drop=True), train_df[ts >= cut].reset_index(drop=True)
    if len(fit_part) == 0 or len(np.unique(labels(cal_part, spec))) < 2:
        raise ValueError(f"training.calibration_days {days}: the split leaves {len(fit_part)} rows to fit on and "
                         f"{len(cal_part)} to calibrate on (both classes needed there): use fewer calibration days")
    return fit_part, cal_part


def fit_candidate(spec: DatasetSpec, candidate: Candidate, train_df: pd.DataFrame) -> Any:
    """The candidate fitted on the training rows; with calibration, fitted on the earlier days and
    calibrated (FrozenEstimator + CalibratedClassifierCV, one object) on the last ones."""
    if spec.training.calibration == "none":
        return fit(build_candidate(spec, candidate), train_df, spec)
    fit_part, cal_part = calibration_split(train_df, spec)
    fitted = fit(build_candidate(spec, candidate), fit_part, spec)
    calibrated = CalibratedClassifierCV(FrozenEstimator(fitted), method=spec.training.calibration)
    with threadpool_limits(limits=N_JOBS, user_api="openmp"):
        return calibrated.fit(features_frame(cal_part, spec), labels(cal_part, spec))


def fit_candidates(spec: DatasetSpec, train_df: pd.DataFrame, holdout_df: pd.DataFrame) -> list[CandidateFit]:
    """Every candidate of the spec fitted on the same rows (a linear family on at most LINEAR_MAX_ROWS of them:
    linear_rows) and scored on the same holdout, in spec order."""
    y = labels(holdout_df, spec)
    fits = []
    linear: pd.DataFrame | None = None
    for candidate in spec.candidates:
        rows = train_df
        if candidate.family in LINEAR_FAMILY.values():
            linear = rows = linear_rows(train_df, spec) if linear is None else linear
        started = time.perf_counter()
        model = fit_candidate(spec, candidate, rows)
        seconds = time.perf_counter() - started
        scores = predict_scores(model, holdout_df, spec)
        value = metric_value(spec.promotion.metric, y, scores, spec.scoring.decision_threshold)
        fits.append(CandidateFit(candidate.family, model, scores, None if math.isnan(value) else value, seconds,
                                 dict(candidate.params)))
    return fits


def day_quotas(rows_per_day: dict[Any, int], max_rows: int | None) -> dict[Any, int]:
    """How many rows each day keeps when the days together hold more than `max_rows` ({} when they do not: no
    sampling): each day its share of max_rows, rounded by largest remainder (ties to the earlier day), so the
    quotas add up to max_rows exactly and the sample keeps the window's mix of days."""
    total = sum(rows_per_day.values())
    if max_rows is None or total <= max_rows:
        return {}
    days = sorted(rows_per_day)
    exact = {d: rows_per_day[d] * max_rows / total for d in days}
    quotas = {d: math.floor(exact[d]) for d in days}
    by_remainder = sorted(days, key=lambda d: (-(exact[d] - quotas[d]), days.index(d)))
    for d in by_remainder[: max_rows - sum(quotas.values())]:
        quotas[d] += 1
    return quotas


def sample_positions(rows: int, keep: int, seed: int, day: dt.date) -> np.ndarray:
    """`keep` of a day's `rows` positions, in their original (time) order: seeded by (seed, day), so the same day
    keeps the same rows whichever other days are read, in any order, in any process."""
    rng = np.random.default_rng([seed % (1 << 63), day.toordinal()])
    return np.sort(rng.choice(rows, size=keep, replace=False))


def stratified_sample(df: pd.DataFrame, spec: DatasetSpec, max_rows: int | None) -> pd.DataFrame:
    """At most `max_rows` rows of a time-ordered frame, each day (source.timezone) keeping its share (day_quotas),
    seeded by training.seed; the frame itself when it is not larger."""
    if max_rows is None or len(df) <= max_rows:
        return df
    days = _local(df[spec.timestamp], spec).dt.tz_localize(None).to_numpy().astype("datetime64[D]")
    values, counts = np.unique(days, return_counts=True)
    quotas = day_quotas(dict(zip(values, counts.tolist())), max_rows)
    keep = [np.flatnonzero(days == d)[sample_positions(n, quotas[d], spec.training.seed, d.astype(dt.date))]
            for d, n in zip(values, counts.tolist())]
    return df.iloc[np.sort(np.concatenate(keep))].reset_index(drop=True)


def linear_rows(train_df: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """The training rows a linear family (candidate or baseline) fits on: all of them up to LINEAR_MAX_ROWS, else
    a seeded, time-stratified sample of that many (see LINEAR_MAX_ROWS for why)."""
    return stratified_sample(train_df, spec, LINEAR_MAX_ROWS)


def choose(fits: Sequence[CandidateFit], spec: DatasetSpec) -> CandidateFit:
    """The best candidate on the holdout metric, in its direction; a candidate whose metric is
    undefined never wins over one whose metric is defined; ties go to the one listed first."""
    if not fits:
        raise ValueError("training.candidates: no candidate to choose from")
    sign = 1.0 if METRICS[spec.promotion.metric] else -1.0
    defined = [f for f in fits if f.metric is not None]
    if not defined:
        return fits[0]  # the gate then rejects it: its metric is undefined
    return max(defined, key=lambda f: (sign * f.metric, -fits.index(f)))


# --- the training key --------------------------------------------------------------------


def training_key(spec: DatasetSpec, snapshot_hashes: Sequence[str]) -> str:
    """sha256 of everything that makes a challenger what it is: the snapshots it was trained and held
    out on (their content hashes), the spec's training-relevant part, the library versions and the
    training code. Equal keys mean a retrain would reproduce the same model, so the registry reuses
    the version that carries the key instead of registering a duplicate."""
    content = {
        "snapshots": sorted(snapshot_hashes),
        "spec": {"features": [dataclasses.asdict(f) for f in spec.features], "label": spec.label.key_fields(),
                 "timestamp": spec.timestamp, "entity_key": dataclasses.asdict(spec.entity_key),
                 "training": dataclasses.asdict(spec.training), "metric": spec.promotion.metric,
                 "decision_threshold": spec.scoring.decision_threshold},
        "libraries": {name: installed_version(name) for name in KEY_LIBRARIES},
        "code": [hashlib.sha256(path.read_bytes()).hexdigest() for path in KEY_CODE],
    }
    if spec.task != "binary":  # a binary spec's key stays what it was before tasks existed
        content["spec"]["task"] = spec.task
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


def one_class_problem(train_df: pd.DataFrame, spec: DatasetSpec, days: Sequence[dt.date]) -> str | None:
    """Why the training rows cannot train a classifier (their label has fewer than two classes), naming the
    label column, the training window's days and the rows per class; None when both classes are there.
    `days`: the window's and holdout's days, as training_days gives them (the oldest window_days train)."""
    counts = train_df[spec.label.name].value_counts(dropna=True).sort_index()
    if spec.task == "multiclass":
        return _missing_classes(counts, spec, days, len(train_df))
    if len(counts) >= 2 or (spec.task == "regression" and len(train_df)):
        return None
    window = sorted(days)[: spec.training.window_days]
    per_class = ", ".join(f"{label:g}: {n} rows" if isinstance(label, float) else f"{label}: {n} rows"
                          for label, n in counts.items()) or "no labelled rows"
    return (f"label {spec.label.name!r} has a single class in the training window {window[0]}..{window[-1]} "
            f"({len(window)} days, {len(train_df)} rows; per class: {per_class}): a classifier needs both classes, "
            "so more labelled days with the other class, not a retry, will change this")


def _missing_classes(counts: pd.Series, spec: DatasetSpec, days: Sequence[dt.date], rows: int) -> str | None:
    """Task multiclass: why the training rows cannot train (a class of label.classes has no row: every model
    must know every class it may be asked about), naming the classes and the window; None when all are there."""
    seen = {str(v) for v in counts.index}
    missing = [c for c in spec.label.classes if c not in seen]
    if not missing:
        return None
    window = sorted(days)[: spec.training.window_days]
    return (f"label {spec.label.name!r} has no row of class {', '.join(map(repr, missing))} in the training window "
            f"{window[0]}..{window[-1]} ({len(window)} days, {rows} rows): every class of label.classes must be "
            "in the window, so more labelled days (or a longer training.window_days), not a retry, will change this")


def drift_scores(model: Any, df: pd.DataFrame, spec: DatasetSpec) -> np.ndarray:
    """One number per row for the prediction-drift test: the score (binary, regression), or the predicted
    class's position in label.classes (multiclass: the drift of the predicted classes' distribution)."""
    scores = predict_scores(model, df, spec)
    return scores.argmax(axis=1).astype(np.float64) if scores.ndim == 2 else scores
