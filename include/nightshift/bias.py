"""Prediction bias per slice: does the champion's mean score match what actually happened, slice by slice?

On the labelled days the monitor step pools (rows the champion never saw), each value of each of the
spec's slice columns (promotion.slice_columns) with at least promotion.min_slice_rows rows gets its mean
score and its realised label rate (task binary) or mean label (task regression). Their difference is the
slice's prediction bias: a model calibrated overall can still over-predict churn for one plan and
under-predict it for another, which overall metrics hide (the ML Test Score's test of inclusion, and its
monitoring of prediction bias).

A slice is flagged when its bias is beyond the tolerance plus three standard errors of its label rate
(small slices are noisy; a flag should mean something). The tolerance is promotion.slice_tolerance, read
in probability points for a binary task and in label standard deviations for a regression. Evidence,
not a rule: nothing is retrained or stopped on it; the ML Test Score reads it (test_score.inclusion).
Pure: numpy and pandas.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

Z = 3.0  # standard errors of a slice's label rate beyond the tolerance before it is flagged
KEPT = 10  # flagged slices kept in the evidence at most (the worst first)


def prediction_bias(frame: pd.DataFrame, labels: np.ndarray, scores: np.ndarray, *, columns: list[str],
                    min_rows: int, tolerance: float, task: str) -> dict[str, Any]:
    """Per slice value: rows, mean score, realised label rate, bias and whether it is flagged; with the worst
    slice and the verdict ("passed": no slice flagged). {"not_measured": why} when nothing could be measured."""
    y, s = np.asarray(labels, dtype=float) if task != "multiclass" else None, np.asarray(scores)
    why = _unmeasurable(task, y, s)
    if why:
        return {"not_measured": why}
    scale = (float(np.std(y)) or 1.0) if task == "regression" else 1.0
    slices = [entry for column in columns if column in frame.columns
              for entry in _column(frame[column], y, s, column, min_rows, tolerance * scale, task)]
    if not slices:
        return {"not_measured": f"no value of {', '.join(columns) or 'no slice column'} has {min_rows} labelled rows"}
    flagged = sorted((e for e in slices if e["flagged"]), key=lambda e: -abs(e["bias"]))
    worst = max(slices, key=lambda e: abs(e["bias"]))
    return {"passed": not flagged, "slices": len(slices), "rows": int(len(y)), "tolerance": tolerance,
            "worst": f"{worst['column']}={worst['value']}", "worst_bias": worst["bias"],
            "flagged": flagged[:KEPT], "overall_bias": round(float(s.mean() - y.mean()), 6)}


def _unmeasurable(task: str, y: np.ndarray | None, s: np.ndarray) -> str | None:
    if task == "multiclass" or y is None:
        return "task multiclass: per-class prediction bias is not computed"
    if s.ndim != 1 or len(s) != len(y) or not len(y):
        return f"{len(s)} scores for {len(y)} labelled rows"
    return None


def _column(values: pd.Series, y: np.ndarray, s: np.ndarray, column: str, min_rows: int, tolerance: float,
            task: str) -> list[dict[str, Any]]:
    codes, uniques = pd.factorize(values, use_na_sentinel=False, sort=True)
    out = []
    for code, value in enumerate(uniques):
        mask = codes == code
        rows = int(mask.sum())
        if rows < min_rows:
            continue
        rate, mean = float(y[mask].mean()), float(s[mask].mean())
        spread = math.sqrt(rate * (1 - rate)) if task != "regression" else float(np.std(y[mask]))
        margin = tolerance + Z * spread / math.sqrt(rows)
        out.append({"column": column, "value": _plain(value),
                    "rows": rows, "mean_score": round(mean, 6), "label_rate": round(rate, 6),
                    "bias": round(mean - rate, 6), "margin": round(margin, 6), "flagged": abs(mean - rate) > margin})
    return out


def _plain(value: Any) -> Any:
    """A slice value as JSON takes it: numpy scalars as Python ones, a missing value as None."""
    value = value.item() if hasattr(value, "item") else value
    if value is None or isinstance(value, float) and math.isnan(value):
        return None
    return value if isinstance(value, (bool, int, float, str)) else str(value)
