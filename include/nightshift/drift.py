"""Drift: how far the current window's features (and the champion's scores) moved from a reference.

Evidently (0.7, new API) does the statistics and draws the HTML report; this module only
decides what it sees and reads its verdict back. What the spec's ``drift`` section sets:

- **Which features.** The spec's features minus ``drift.exclude`` are compared, typed by the
  spec (numeric as numerical, categorical as categorical): Evidently's own type guessing
  would treat a numeric code with few values as a category, and a key or timestamp column
  would always "drift". The share is drifted / compared features. Leave out what always
  moves between one night and a multi-week sample without meaning anything (a day-of-week or
  a weather-of-the-day column is constant within a night) rather than raising the threshold
  for everything.
- **How each is tested.** ``drift.columns.<feature>`` sets a method and/or threshold for one
  feature; ``drift.numeric`` / ``drift.categorical`` for every feature of a type without its
  own entry. They reach Evidently as its per-column / per-type options, so its report shows
  the same tests. Unset, the default is Evidently's, by type, cardinality and rows (of the
  reference side, after sampling): above 1,000 rows normed Wasserstein distance for numeric
  features with more than 5 distinct values, Jensen-Shannon distance for categorical ones and
  for numeric ones with at most 5 values (threshold 0.1, drift when the distance is at or above
  it: at 50k rows a p-value test would flag differences too small to matter); at or below
  1,000 rows the K-S test (numeric), chi-square (categorical, more than 2 values) or the
  Z-test (2 values), where drift is a p-value *below* 0.05 (distances are too noisy on small
  samples). So each column's drifted/not-drifted verdict is Evidently's own (its per-column
  test), never re-derived from ``score >= threshold``.
- **Over which rows.** Both sides are cut to a seeded sample of at most ``drift.sample_rows``
  rows. Evidently holds everything in memory and its cost grows with rows (1M rows took 104 s
  and 2.8 GB); a 50k sample gives the same drifted columns (see benchmarks/bench_drift.py).
  Which nights form each side (``current_nights``, ``reference``, ``reference_nights``) is
  chosen by ``current_days`` / ``reference_days`` and read by the nightly step.
- **The model's output.** Given the champion's scores on both sides, the score is tested like
  a numeric feature (Evidently's default method, or ``drift.numeric``) and reported apart
  (``prediction``): evidence recorded with the night, never part of the share.

A feature with no value at all on one side (all null or infinite) cannot be tested by
Evidently (it raises); it is recorded as drifted, since its whole distribution changed,
with the method named for what happened. Evidently is imported inside ``measure_drift``
because importing it takes seconds and ``reference_sample`` (used when training) needs
none of it.
"""

from __future__ import annotations

import math
import datetime as dt
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from include.nightshift.spec import DatasetSpec, DriftTest

import numpy as np
import pandas as pd

ALL_NULL_CURRENT = "all null in current"
ALL_NULL_REFERENCE = "all null in reference"
ALL_NULL_BOTH = "all null in both"
PREDICTION = "champion score"  # the output's column in Evidently's frames: a space, so never a feature's name


@dataclass
class DriftResult:
    """What the drift step found; ``to_dict`` goes to XCom, the run history and MLflow."""

    share: float  # share of the compared features (the spec's, minus drift.exclude) that drifted
    drifted: list[str]  # their names, in spec order
    columns: dict[str, dict]  # feature -> {"method", "score", "threshold", "drifted"}
    n_current: int  # rows given on each side; Evidently saw min(n, spec.drift.sample_rows)
    n_reference: int
    sampled: bool  # True when either side was cut to spec.drift.sample_rows
    report_path: str | None = None
    excluded: list[str] = field(default_factory=list)  # drift.exclude: not compared
    prediction: dict | None = None  # the champion's score, tested like a feature; not in the share

    def to_dict(self) -> dict:
        """Plain JSON types only: non-finite scores (NaN, inf) become None."""
        data = asdict(self)
        data["share"] = float(self.share)
        data["columns"] = {name: _column_record(col) for name, col in self.columns.items()}
        data["prediction"] = None if self.prediction is None else _column_record(self.prediction)
        return data


def _column_record(col: dict) -> dict:
    return {"method": str(col["method"]), "score": _finite_or_none(col["score"]),
            "threshold": _finite_or_none(col["threshold"]), "drifted": bool(col["drifted"])}


def _finite_or_none(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


# --- windows ---------------------------------------------------------------------------


def compared_features(spec: DatasetSpec) -> list[str]:
    """The features drift compares: the spec's, in spec order, minus drift.exclude."""
    return [name for name in spec.feature_names if name not in spec.drift.exclude]


def current_days(spec: DatasetSpec, day: dt.date) -> list[dt.date]:
    """The days pooled as the current side, newest first: `day` and the drift.current_nights - 1 before it."""
    return [day - dt.timedelta(days=i) for i in range(spec.drift.current_nights)]


def reference_days(spec: DatasetSpec, day: dt.date) -> list[dt.date]:
    """The days pooled as the reference when drift.reference is `recent`, newest first: the
    drift.reference_nights days just before the current window (never overlapping it); [] otherwise."""
    if spec.drift.reference != "recent":
        return []
    first = spec.drift.current_nights
    return [day - dt.timedelta(days=first + i) for i in range(spec.drift.reference_nights)]


# --- sampling ------------------------------------------------------------------------


def _feature_frame(df: pd.DataFrame, spec: DatasetSpec, names: list[str] | None = None) -> pd.DataFrame:
    """The spec's feature columns (or `names` of them), in spec order, with types Evidently reads correctly.

    Numeric features become float64 (nullable Int64 or pd.NA from a database driver would
    otherwise reach Evidently as objects); categorical ones become object with None for
    missing (pandas ``category`` dtype or pd.NA confuse its value counts).
    """
    names = spec.feature_names if names is None else names
    missing = [name for name in names if name not in df.columns]
    if missing:
        raise KeyError(f"drift: feature columns missing from the data: {missing}")
    out = {}
    for name in (n for n in spec.numeric_features if n in names):
        out[name] = df[name].astype("float64")
    for name in (n for n in spec.categorical_features if n in names):
        col = df[name].astype("object")
        out[name] = col.where(col.notna(), None)
    return pd.DataFrame(out, index=df.index)[names]


def _sample(df: pd.DataFrame, rows: int, seed: int) -> tuple[pd.DataFrame, bool]:
    """At most ``rows`` rows, the same ones for the same input and seed."""
    if len(df) <= rows:
        return df.reset_index(drop=True), False
    return df.sample(n=rows, random_state=seed).reset_index(drop=True), True


def night_sample(store: Any, ref: Any, spec: DatasetSpec) -> pd.DataFrame:
    """reference_sample's rows of a night's snapshot (its feature columns), read before any row reaches pandas and
    a row group at a time: the positions a seeded df.sample picks depend on the row count alone, so these are the
    rows, in the order, that reading the whole night and sampling it gave; a night of any size holds at most
    drift.sample_rows rows and one row group in memory."""
    from include.nightshift.snapshot import read_snapshot_rows, read_snapshot_table

    rows = spec.drift.sample_rows
    if ref.rows <= rows:
        return read_snapshot_table(store, ref, columns=spec.feature_names).to_pandas()
    positions = pd.RangeIndex(ref.rows).to_series().sample(n=rows, random_state=spec.drift.seed).to_numpy()
    return read_snapshot_rows(store, ref, positions, columns=spec.feature_names).to_pandas()


def reference_sample(df: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """The drift reference stored with a model: a seeded sample of its training features, and of
    its labels when `df` has them (the target's drift is measured against those; feature drift
    reads only the features).

    Capped at ``spec.drift.sample_rows`` so the stored artifact and every later drift run
    stay small; deterministic for the same input so a retrained-from-the-same-data model
    carries the same reference. The rows are picked before any is converted (a seeded sample's
    positions depend on the row count alone), so a 14M-row window converts 50k rows, not 14M,
    and the sample is the one converting everything first gave.
    """
    rows = spec.drift.sample_rows
    picked = df if len(df) <= rows else df.sample(n=rows, random_state=spec.drift.seed)  # as _sample picks
    frame = _feature_frame(picked, spec)
    if spec.label.name in df.columns:
        frame[spec.label.name] = picked[spec.label.name].to_numpy()
    return frame.reset_index(drop=True)


# --- measuring -----------------------------------------------------------------------


def _value_share(col: pd.Series) -> float:
    """Share of rows Evidently can use (it drops nulls and infinities before testing)."""
    if col.empty:
        return 0.0
    if pd.api.types.is_numeric_dtype(col):
        return float(np.isfinite(col.to_numpy(dtype="float64", na_value=np.nan)).mean())
    return float(col.notna().mean())


def _empty_column(name: str, current: pd.DataFrame, reference: pd.DataFrame) -> dict | None:
    """The record for a feature with no value on a side, or None when Evidently can test it.

    The score is the change in the share of missing values (1.0 when one side is empty and
    the other full), so a feature that vanished reads as fully drifted and one missing on
    both sides as unchanged.
    """
    cur_share, ref_share = _value_share(current[name]), _value_share(reference[name])
    if cur_share > 0 and ref_share > 0:
        return None
    if cur_share == 0 and ref_share == 0:
        method = ALL_NULL_BOTH
    else:
        method = ALL_NULL_CURRENT if cur_share == 0 else ALL_NULL_REFERENCE
    return {"method": method, "score": abs(cur_share - ref_share), "threshold": 0.0,
            "drifted": method != ALL_NULL_BOTH}


def preset_options(spec: DatasetSpec, columns: list[str]) -> dict[str, Any]:
    """DataDriftPreset's method and threshold options from the spec (per column, then per type);
    what is not set stays None: Evidently's default for the column's type, cardinality and rows."""
    per_method = {n: t.method for n, t in spec.drift.columns.items() if n in columns and t.method}
    per_threshold = {n: float(t.threshold) for n, t in spec.drift.columns.items()
                     if n in columns and t.threshold is not None}
    options: dict[str, Any] = {"per_column_method": per_method or None, "per_column_threshold": per_threshold or None}
    for kind, prefix in (("numeric", "num"), ("categorical", "cat")):
        test = getattr(spec.drift, kind) or DriftTest()
        options[f"{prefix}_method"] = test.method
        options[f"{prefix}_threshold"] = _float_or_none(test.threshold)
    return options


def _float_or_none(value: float | None) -> float | None:
    return None if value is None else float(value)


def _run_evidently(current: pd.DataFrame, reference: pd.DataFrame, spec: DatasetSpec, columns: list[str]):
    """Evidently's DataDriftPreset on ``columns`` (the model's score among them when given); its snapshot."""
    numerical = [c for c in [*spec.numeric_features, PREDICTION] if c in columns]
    categorical = [c for c in spec.categorical_features if c in columns]
    return _evidently_drift(current, reference, numerical, categorical, spec.drift.share_threshold,
                            preset_options(spec, columns))


def _evidently_drift(current: pd.DataFrame, reference: pd.DataFrame, numerical: list[str], categorical: list[str],
                     share: float, options: dict[str, Any]):
    """DataDriftPreset's snapshot on the typed columns, with its tests (each column's verdict)."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    typed = {*numerical, *categorical}
    columns = [c for c in current.columns if c in typed]  # in the frame's order: the report's order
    definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)
    report = Report([DataDriftPreset(columns=columns, drift_share=share, **options)], include_tests=True)
    return report.run(  # current first, reference second
        Dataset.from_pandas(current[columns], data_definition=definition),
        Dataset.from_pandas(reference[columns], data_definition=definition),
    )


def _read_columns(snapshot_dict: dict, columns: list[str]) -> dict[str, dict]:
    """Per-column method, score and threshold from the metrics, verdict from the tests."""
    out: dict[str, dict] = {}
    for metric in snapshot_dict["metrics"]:
        config = metric["config"]
        if config.get("type", "").endswith(":ValueDrift") and config.get("column") in columns:
            out[config["column"]] = {"method": config["method"], "score": float(metric["value"]),
                                     "threshold": float(config["threshold"])}
    for test in snapshot_dict["tests"]:
        params = test.get("metric_config", {}).get("params", {})
        if params.get("type", "").endswith(":ValueDrift") and params.get("column") in out:
            out[params["column"]]["drifted"] = test["status"] == "FAIL"
    incomplete = [c for c in columns if "drifted" not in out.get(c, {})]
    if incomplete:
        raise RuntimeError(f"drift: Evidently returned no verdict for {incomplete}")
    return out


def _save_html(snapshot, path: Path, columns: dict[str, dict]) -> str:
    """Evidently's report; a plain page when no feature could be tested (so the file always exists).

    Evidently 0.7's ``save_html`` inlines its JavaScript, styles and data (about 5 MB): the
    page fetches nothing (checked in headless Chromium: no request beyond the file itself),
    so it opens offline and from any URL, like the other reports.
    """
    from include.nightshift.reports import message_page

    path.parent.mkdir(parents=True, exist_ok=True)
    if snapshot is not None:
        snapshot.save_html(str(path))  # a str: a file object is silently ignored
    else:
        items = [f"{name}: {col['method']}" for name, col in columns.items()]
        path.write_text(message_page("No feature could be tested for drift", items=items), encoding="utf-8")
    return str(path)


Scorer = Callable[[pd.DataFrame], Any]  # the spec's features -> one score per row


def _side(df: pd.DataFrame, spec: DatasetSpec, names: list[str], score: Scorer | None) -> tuple[pd.DataFrame, bool]:
    """One side as Evidently sees it: a seeded sample of the compared features, and the model's score
    of each sampled row when `score` is given (only the sample is scored: a window may be millions of rows)."""
    sample, sampled = _sample(_feature_frame(df, spec), spec.drift.sample_rows, spec.drift.seed)
    frame = sample[names]
    if score is None:
        return frame, sampled
    values = np.asarray(score(sample), dtype="float64")
    if len(values) != len(frame):
        raise ValueError(f"drift: {len(values)} scores for {len(frame)} rows")
    return frame.assign(**{PREDICTION: values}), sampled


def _test_columns(cur: pd.DataFrame, ref: pd.DataFrame, names: list[str]) -> tuple[list[str], dict[str, dict]]:
    """The columns Evidently can test, and the records of those it cannot (no value on a side)."""
    testable, records = [], {}
    for name in names:
        record = _empty_column(name, cur, ref)
        if record is None:
            testable.append(name)
        else:
            records[name] = record
    return testable, records


def measure_drift(current: pd.DataFrame, reference: pd.DataFrame, spec: DatasetSpec, *,
                  html_path: str | Path | None = None, score: Scorer | None = None) -> DriftResult:
    """Compare the current window's features with the reference, feature by feature.

    Both sides are sampled to at most ``spec.drift.sample_rows`` rows with
    ``spec.drift.seed``. ``share`` is drifted / compared features (the spec's minus
    drift.exclude; features with no values on a side count, as drifted). Given ``score`` (the
    champion's scores of a frame of the spec's features), its output on both samples is tested
    too (``prediction``).
    The Evidently HTML report is written to ``html_path`` when given (a plain page listing why,
    when nothing could be tested).
    """
    names = compared_features(spec)
    if current.empty or reference.empty:
        raise ValueError(f"drift: no rows to compare (current {len(current)}, reference {len(reference)})")
    cur, cur_sampled = _side(current, spec, names, score)
    ref, ref_sampled = _side(reference, spec, names, score)

    testable, columns = _test_columns(cur, ref, [*names, PREDICTION] if score else names)
    snapshot = None
    if testable:
        snapshot = _run_evidently(cur, ref, spec, testable)
        columns.update(_read_columns(snapshot.dict(), testable))
    report_path = None if html_path is None else _save_html(snapshot, Path(html_path), columns)

    prediction = columns.pop(PREDICTION, None)
    columns = {name: columns[name] for name in names}
    drifted = [name for name, col in columns.items() if col["drifted"]]
    return DriftResult(
        share=len(drifted) / len(columns),
        drifted=drifted,
        columns=columns,
        n_current=len(current),
        n_reference=len(reference),
        sampled=cur_sampled or ref_sampled,
        report_path=report_path,
        excluded=[name for name in spec.feature_names if name not in names],
        prediction=prediction,
    )


# --- the target ----------------------------------------------------------------------


def _label_frame(labels: pd.Series, name: str, numeric: bool) -> pd.DataFrame:
    """One label column as Evidently reads it: float64 for a number, text for a class (0/1 included, so a
    binary label is tested as two categories, not as a number)."""
    if numeric:
        return pd.DataFrame({name: pd.to_numeric(labels, errors="coerce").astype("float64")})
    values = labels.astype("object")
    return pd.DataFrame({name: values.where(values.isna(), values.astype(str))})


def label_summary(labels: pd.Series, numeric: bool) -> dict[str, float]:
    """What a person compares at a glance: mean and quartiles of a number, each class's share otherwise."""
    if numeric:
        values = pd.to_numeric(labels, errors="coerce").dropna()
        if values.empty:
            return {}
        return {"mean": float(values.mean()), "p25": float(values.quantile(0.25)),
                "p50": float(values.median()), "p75": float(values.quantile(0.75))}
    shares = labels.dropna().astype(str).value_counts(normalize=True).sort_index()
    return {str(k): float(v) for k, v in shares.items()}


def measure_target_drift(current: pd.Series, reference: pd.Series, spec: DatasetSpec) -> dict[str, Any]:
    """The label's drift: `current` (labels the champion never saw) against `reference` (its training labels).

    Tested like a feature (Evidently's per-column test; drift.target sets method and threshold, else
    Evidently's default for the label's type and rows), on seeded samples of at most drift.sample_rows.
    A shift in what is being predicted (more disruptions, higher demand) explains a realised metric's
    move and is worth seeing next to it; it is evidence only: the quality rules act on the metric itself.
    """
    name = spec.label.name
    numeric = spec.task == "regression"
    if current.empty or reference.empty:
        raise ValueError(f"target drift: no labels to compare (current {len(current)}, reference {len(reference)})")
    cur, _ = _sample(_label_frame(current, name, numeric), spec.drift.sample_rows, spec.drift.seed)
    ref, _ = _sample(_label_frame(reference, name, numeric), spec.drift.sample_rows, spec.drift.seed)
    record = _empty_column(name, cur, ref)
    if record is None:
        test = spec.drift.target or DriftTest()
        options = {"per_column_method": {name: test.method} if test.method else None,
                   "per_column_threshold": None if test.threshold is None else {name: float(test.threshold)}}
        snapshot = _evidently_drift(cur, ref, [name] if numeric else [], [] if numeric else [name],
                                    spec.drift.share_threshold, options)
        record = _read_columns(snapshot.dict(), [name])[name]
    return {**_column_record(record), "current_rows": int(len(current)), "reference_rows": int(len(reference)),
            "current": label_summary(current, numeric), "reference": label_summary(reference, numeric)}
