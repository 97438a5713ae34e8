"""Drift: how far tonight's features moved from the data the champion was trained on.

Evidently (0.7, new API) does the statistics and draws the HTML report; this module only
decides what it sees and reads its verdict back. Three choices matter:

- Only the spec's features are compared, typed by the spec (numeric as numerical,
  categorical as categorical): Evidently's own type guessing would treat a numeric code
  with few values as a category, and a key or timestamp column would always "drift".
- Both sides are cut to a seeded sample of at most ``spec.drift.sample_rows`` rows.
  Evidently holds everything in memory and its cost grows with rows (1M rows took 104 s
  and 2.8 GB); a 50k sample gives the same drifted columns (see benchmarks/bench_drift.py).
- Each column's drifted/not-drifted verdict is Evidently's own (its per-column test),
  never re-derived from ``score >= threshold``: below about 1,000 reference rows Evidently
  switches to p-value tests (K-S, chi-square), where drift means a score *below* the
  threshold.

A feature with no value at all on one side (all null or infinite) cannot be tested by
Evidently (it raises); it is recorded as drifted, since its whole distribution changed,
with the method named for what happened. Evidently is imported inside ``measure_drift``
because importing it takes seconds and ``reference_sample`` (used when training) needs
none of it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from include.nightshift.spec import DatasetSpec

import numpy as np
import pandas as pd

ALL_NULL_CURRENT = "all null in current"
ALL_NULL_REFERENCE = "all null in reference"
ALL_NULL_BOTH = "all null in both"


@dataclass
class DriftResult:
    """What the drift step found; ``to_dict`` goes to XCom, the run history and MLflow."""

    share: float  # share of the spec's features that drifted
    drifted: list[str]  # their names, in spec order
    columns: dict[str, dict]  # feature -> {"method", "score", "threshold", "drifted"}
    n_current: int  # rows given on each side; Evidently saw min(n, spec.drift.sample_rows)
    n_reference: int
    sampled: bool  # True when either side was cut to spec.drift.sample_rows
    report_path: str | None = None

    def to_dict(self) -> dict:
        """Plain JSON types only: non-finite scores (NaN, inf) become None."""
        data = asdict(self)
        data["share"] = float(self.share)
        data["columns"] = {
            name: {
                "method": str(col["method"]),
                "score": _finite_or_none(col["score"]),
                "threshold": _finite_or_none(col["threshold"]),
                "drifted": bool(col["drifted"]),
            }
            for name, col in self.columns.items()
        }
        return data


def _finite_or_none(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


# --- sampling ------------------------------------------------------------------------


def _feature_frame(df: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """The spec's feature columns, in spec order, with types Evidently reads correctly.

    Numeric features become float64 (nullable Int64 or pd.NA from a database driver would
    otherwise reach Evidently as objects); categorical ones become object with None for
    missing (pandas ``category`` dtype or pd.NA confuse its value counts).
    """
    missing = [name for name in spec.feature_names if name not in df.columns]
    if missing:
        raise KeyError(f"drift: feature columns missing from the data: {missing}")
    out = {}
    for name in spec.numeric_features:
        out[name] = df[name].astype("float64")
    for name in spec.categorical_features:
        col = df[name].astype("object")
        out[name] = col.where(col.notna(), None)
    return pd.DataFrame(out, index=df.index)[spec.feature_names]


def _sample(df: pd.DataFrame, rows: int, seed: int) -> tuple[pd.DataFrame, bool]:
    """At most ``rows`` rows, the same ones for the same input and seed."""
    if len(df) <= rows:
        return df.reset_index(drop=True), False
    return df.sample(n=rows, random_state=seed).reset_index(drop=True), True


def reference_sample(df: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """The drift reference stored with a model: a seeded sample of its training features.

    Capped at ``spec.drift.sample_rows`` so the stored artifact and every later drift run
    stay small; deterministic for the same input so a retrained-from-the-same-data model
    carries the same reference.
    """
    sample, _ = _sample(_feature_frame(df, spec), spec.drift.sample_rows, spec.drift.seed)
    return sample


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


def _run_evidently(current: pd.DataFrame, reference: pd.DataFrame, spec: DatasetSpec, columns: list[str]):
    """Evidently's DataDriftPreset on ``columns``; returns its snapshot."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(
        numerical_columns=[c for c in spec.numeric_features if c in columns],
        categorical_columns=[c for c in spec.categorical_features if c in columns],
    )
    report = Report([DataDriftPreset(columns=columns, drift_share=spec.drift.share_threshold)], include_tests=True)
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


def measure_drift(current: pd.DataFrame, reference: pd.DataFrame, spec: DatasetSpec, *,
                  html_path: str | Path | None = None) -> DriftResult:
    """Compare tonight's features with the champion's reference, feature by feature.

    Both sides are sampled to at most ``spec.drift.sample_rows`` rows with
    ``spec.drift.seed``. ``share`` is drifted features / all spec features (features with
    no values on a side count, as drifted). The Evidently HTML report is written to
    ``html_path`` when given (a plain page listing why, when no feature could be tested).
    """
    rows, seed = spec.drift.sample_rows, spec.drift.seed
    cur, cur_sampled = _sample(_feature_frame(current, spec), rows, seed)
    ref, ref_sampled = _sample(_feature_frame(reference, spec), rows, seed)
    if cur.empty or ref.empty:
        raise ValueError(f"drift: no rows to compare (current {len(cur)}, reference {len(ref)})")

    columns: dict[str, dict] = {}
    testable = []
    for name in spec.feature_names:
        record = _empty_column(name, cur, ref)
        if record is None:
            testable.append(name)
        else:
            columns[name] = record

    snapshot = None
    if testable:
        snapshot = _run_evidently(cur, ref, spec, testable)
        columns.update(_read_columns(snapshot.dict(), testable))
    report_path = None if html_path is None else _save_html(snapshot, Path(html_path), columns)

    columns = {name: columns[name] for name in spec.feature_names}
    drifted = [name for name, col in columns.items() if col["drifted"]]
    return DriftResult(
        share=len(drifted) / len(columns),
        drifted=drifted,
        columns=columns,
        n_current=len(current),
        n_reference=len(reference),
        sampled=cur_sampled or ref_sampled,
        report_path=report_path,
    )
