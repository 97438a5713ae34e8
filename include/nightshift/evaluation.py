"""Evaluate champion, challenger and baseline on one holdout, then gate the promotion.

The gate follows the TFX Evaluator's rule: fail closed. A missing threshold, a metric that
cannot be computed, a champion that cannot be compared or a registry round trip that was
not checked all mean "do not promote". Every check is recorded with its numbers, passed or
not, so that a rejected (or blessed) model can be explained from the record alone.

Plain Python with numpy, pandas and scikit-learn metrics: no MLflow, no Airflow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from include.nightshift.spec import LINEAR_FAMILY, METRICS, DatasetSpec, Promotion

# Floating-point slack for ">= threshold" comparisons: 0.812 - 0.810 must count as an
# improvement of 0.002, not 0.0019999999999999.
EPS = 1e-12
THRESHOLDS = ("floor", "min_improvement", "slice_tolerance", "baseline_margin")


# --------------------------------------------------------------------------- metrics


def _ranking(fn: Callable[..., float]) -> Callable[[np.ndarray, np.ndarray, float], float]:
    """A ranking metric needs both classes; with one class it is undefined (NaN), not 0 or 1."""

    def metric(y: np.ndarray, s: np.ndarray, threshold: float) -> float:
        return float(fn(y, s)) if len(np.unique(y)) == 2 else math.nan

    return metric


def _f1(y: np.ndarray, s: np.ndarray, threshold: float) -> float:
    return float(skm.f1_score(y, (s >= threshold).astype(int), zero_division=np.nan))


def _accuracy(y: np.ndarray, s: np.ndarray, threshold: float) -> float:
    return float(skm.accuracy_score(y, (s >= threshold).astype(int)))


def _log_loss(y: np.ndarray, s: np.ndarray, threshold: float) -> float:
    return float(skm.log_loss(y, s, labels=[0, 1]))


def _rmse(y: np.ndarray, s: np.ndarray, threshold: float) -> float:
    return float(np.sqrt(np.mean((y - s) ** 2)))


def _mae(y: np.ndarray, s: np.ndarray, threshold: float) -> float:
    return float(np.mean(np.abs(y - s)))


def _r2(y: np.ndarray, s: np.ndarray, threshold: float) -> float:
    """R²; undefined (NaN) when the labels do not vary (nothing to explain) or on fewer than two rows."""
    return float(skm.r2_score(y, s)) if len(y) >= 2 and np.ptp(y) > 0 else math.nan


# Metrics of a predicted value against a numeric label (task regression): the labels stay floats.
REGRESSION_METRICS = ("rmse", "mae", "r2")


def _macro_f1(y: np.ndarray, s: np.ndarray, threshold: float) -> float:
    predicted = s.argmax(axis=1) if s.ndim == 2 else (s >= threshold).astype(int)
    return float(skm.f1_score(y, predicted, average="macro", zero_division=0.0))


# Task multiclass: scores are (rows, classes) probabilities, labels the class positions.
_MULTICLASS_FUNCTIONS: dict[str, Callable[[np.ndarray, np.ndarray, float], float]] = {
    "log_loss": lambda y, s, t: float(skm.log_loss(y, s, labels=list(range(s.shape[1])))),
    "macro_f1": _macro_f1,
    "accuracy": lambda y, s, t: float(skm.accuracy_score(y, s.argmax(axis=1))),
}

_METRIC_FUNCTIONS: dict[str, Callable[[np.ndarray, np.ndarray, float], float]] = {
    "roc_auc": _ranking(skm.roc_auc_score),
    "average_precision": _ranking(skm.average_precision_score),
    "accuracy": _accuracy,
    "f1": _f1,
    "log_loss": _log_loss,
    "rmse": _rmse,
    "mae": _mae,
    "r2": _r2,
    "macro_f1": _macro_f1,
}
assert set(_METRIC_FUNCTIONS) == set(METRICS), "every spec metric needs an implementation"


def label_array(name: str, y_true: Any) -> np.ndarray:
    """The labels as the metric reads them: 0/1 ints, or floats for a regression metric."""
    y = np.asarray(y_true)
    return (y.astype(float) if name in REGRESSION_METRICS else y.astype(int)).ravel()


def metric_value(name: str, y_true: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> float:
    """One metric of positive-class scores against 0/1 labels (a regression metric: of predicted values
    against numeric labels).

    NaN (never an exception) when the metric is undefined: no rows, a ranking metric on one
    class only, f1 with no positive label nor prediction, or scores that are not finite.
    NaN then fails every gate check that uses it, which is the safe outcome.
    """
    if name not in _METRIC_FUNCTIONS:
        raise ValueError(f"unknown metric {name!r}; known: {sorted(_METRIC_FUNCTIONS)}")
    y = label_array(name, y_true)
    s = _score_array(scores)
    if len(y) != len(s):
        raise ValueError(f"{len(y)} labels but {len(s)} scores")
    if len(y) == 0 or not np.isfinite(s).all():
        return math.nan
    if s.ndim == 2:
        if name not in _MULTICLASS_FUNCTIONS:
            raise ValueError(f"metric {name!r} does not judge class probabilities; known: {sorted(_MULTICLASS_FUNCTIONS)}")
        return _MULTICLASS_FUNCTIONS[name](y, s, threshold)
    return _METRIC_FUNCTIONS[name](y, s, threshold)


def _score_array(scores: Any) -> np.ndarray:
    """Scores as floats: one per row, or (task multiclass) one row of class probabilities per row."""
    s = np.asarray(scores, dtype=float)
    return s if s.ndim == 2 else s.ravel()


def per_class_recall(y_true: np.ndarray, probabilities: np.ndarray, classes: list[str]) -> dict[str, float | None]:
    """Task multiclass: each class's recall (its rows predicted as it); None for a class with no row."""
    y, predicted = np.asarray(y_true).astype(int), np.asarray(probabilities).argmax(axis=1)
    return {c: (float((predicted[y == i] == i).mean()) if (y == i).any() else None) for i, c in enumerate(classes)}


# --------------------------------------------------------------------------- evaluate


def _json_number(value: float | None) -> float | None:
    """NaN and inf are not JSON (PostgreSQL jsonb refuses them): record them as null."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _json_value(value: Any) -> Any:
    """A slice value as plain JSON: numpy scalars unwrapped, missing values as null."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return value.item() if isinstance(value, np.generic) else value


def _role_values(name: str, y: np.ndarray, scores: dict[str, np.ndarray], mask: np.ndarray | None,
                 threshold: float) -> dict[str, float | None]:
    return {
        role: _json_number(metric_value(name, y if mask is None else y[mask], s if mask is None else s[mask],
                                        threshold))
        for role, s in scores.items()
    }


def _slices(holdout: pd.DataFrame, y: np.ndarray, scores: dict[str, np.ndarray], spec: DatasetSpec) -> list[dict[str, Any]]:
    """Every value of every slice column, in a stable order; small slices listed but skipped."""
    out: list[dict[str, Any]] = []
    name, threshold = spec.promotion.metric, spec.scoring.decision_threshold
    for column in spec.promotion.slice_columns:
        if column not in holdout.columns:
            raise ValueError(f"slice column {column!r} is not in the holdout")
        codes, uniques = pd.factorize(holdout[column], use_na_sentinel=False, sort=True)
        for code, value in enumerate(uniques):
            mask = codes == code
            entry: dict[str, Any] = {"column": column, "value": _json_value(value), "rows": int(mask.sum())}
            if entry["rows"] < spec.promotion.min_slice_rows:
                entry["skipped"] = True
            else:
                entry["skipped"] = False
                entry.update(_role_values(name, y, scores, mask, threshold))
            out.append(entry)
    return out


def evaluate(holdout: pd.DataFrame, y_true: np.ndarray, scores: dict[str, np.ndarray], spec: DatasetSpec) -> dict:
    """Score every model role on the same holdout, overall and per slice.

    `scores` maps a role ("challenger", "champion", "baseline") to its positive-class scores,
    row-aligned with `holdout` and `y_true`. The result is JSON-safe (undefined metrics are
    null) so that it can go to XCom, MLflow and the run-history table unchanged.
    """
    y = label_array(spec.promotion.metric, y_true)
    arrays = {role: _score_array(s) for role, s in scores.items()}
    for role, s in arrays.items():
        if len(s) != len(y):
            raise ValueError(f"{role}: {len(s)} scores for {len(y)} labels")
    if len(holdout) != len(y):
        raise ValueError(f"holdout has {len(holdout)} rows but {len(y)} labels")
    name = spec.promotion.metric
    out = {
        "metric": name,
        "greater_is_better": bool(METRICS[name]),
        "rows": int(len(y)),
        "overall": _role_values(name, y, arrays, None, spec.scoring.decision_threshold),
        "slices": _slices(holdout.reset_index(drop=True), y, arrays, spec),
    }
    if spec.task == "multiclass":  # recorded with the verdict, not a gate rule
        out["per_class_recall"] = {role: per_class_recall(y, s, list(spec.label.classes)) for role, s in arrays.items()}
    return out


# --------------------------------------------------------------------------- gate


# What the gate concluded about one slice (the "outcome" of each record in the slices check).
# "failed" and "cannot_compare" fail the check; an unset tolerance fails it as a whole (fail
# closed), its compared slices recorded as "no_tolerance"; the others are not judged.
SLICE_OUTCOMES = ("passed", "failed", "cannot_compare", "undefined", "too_small", "no_champion", "no_tolerance")


@dataclass
class Check:
    """One rule of the gate. `slices` is set on the "slices" check only: every slice as the gate
    judged it, so that a page or an audit reads the decision instead of re-deriving it."""

    name: str
    passed: bool
    detail: str
    slices: list[dict[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        """name, passed, detail as before; `slices` only where there is a record of them."""
        out = {"name": self.name, "passed": bool(self.passed), "detail": self.detail}
        if self.slices is not None:
            out["slices"] = [dict(s) for s in self.slices]
        return out


@dataclass
class Verdict:
    promote: bool
    checks: list[Check]
    metric: str
    challenger: float | None
    champion: float | None
    baseline: float | None

    def message(self) -> str:
        """One line for logs and the UI: the decision, the numbers, and what failed."""
        numbers = f"{self.metric} challenger {_fmt(self.challenger)}, champion {_fmt(self.champion)}, " \
                  f"baseline {_fmt(self.baseline)}"
        failed = [c for c in self.checks if not c.passed]
        if self.promote:
            return f"PROMOTE: {numbers}; all {len(self.checks)} checks passed"
        reasons = "; ".join(f"{c.name}: {c.detail}" for c in failed) or "no checks ran"
        return f"REJECT: {numbers}; failed {reasons}"

    def to_dict(self) -> dict:
        return {
            "promote": bool(self.promote),
            "metric": self.metric,
            "challenger": _json_number(self.challenger),
            "champion": _json_number(self.champion),
            "baseline": _json_number(self.baseline),
            "message": self.message(),
            "checks": [c.to_dict() for c in self.checks],
        }


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4f}"


def _number(value: Any) -> float:
    """A metric or threshold as a float, with None (not set / not computed) as NaN."""
    try:
        return math.nan if value is None else float(value)
    except (TypeError, ValueError):
        return math.nan


@dataclass
class _Context:
    """What every check needs: direction, overall metrics, thresholds (NaN when unset)."""

    metric: str
    gib: bool
    overall: dict[str, float]
    thresholds: dict[str, float]
    slices: list[dict[str, Any]] = field(default_factory=list)
    min_slice_rows: int | None = None
    challenger_family: str | None = None
    lost_champion: int | None = None  # a version that served (the audit table) and is gone from the registry

    def gain(self, a: float, b: float) -> float:
        """How much better a is than b, in the metric's direction (negative: worse)."""
        return a - b if self.gib else b - a

    @property
    def has_champion(self) -> bool:
        return "champion" in self.overall


def _unset(ctx: _Context, name: str) -> Check | None:
    if math.isnan(ctx.thresholds[name]):
        return Check(name, False, f"promotion.{name} is not set (fail closed)")
    return None


def _check_thresholds(ctx: _Context, evaluated_metric: Any) -> Check:
    if ctx.metric not in METRICS or evaluated_metric != ctx.metric:
        return Check("thresholds", False, f"evaluated metric {evaluated_metric!r} does not match promotion.metric "
                                          f"{ctx.metric!r} (fail closed)")
    missing = [f"promotion.{k}" for k, v in ctx.thresholds.items() if math.isnan(v)]
    if missing:
        return Check("thresholds", False, f"not set: {', '.join(missing)} (fail closed)")
    listed = ", ".join(f"{k} {v:g}" for k, v in ctx.thresholds.items())
    direction = "greater is better" if ctx.gib else "lower is better"
    return Check("thresholds", True, f"{ctx.metric} ({direction}): {listed}")


def _check_finite(scores: np.ndarray | None, rows: int | None, probabilities: bool = True) -> Check:
    if scores is None:
        return Check("finite", False, "no challenger scores given (fail closed)")
    s = _score_array(scores)
    if s.ndim == 2:  # class probabilities: judged as one row each, every probability in [0, 1]
        return _check_finite_rows(s, rows)
    if rows is not None and len(s) != rows:
        return Check("finite", False, f"{len(s)} challenger scores for {rows} holdout rows")
    if len(s) == 0:
        return Check("finite", False, "no challenger scores")
    bad = int((~np.isfinite(s)).sum())
    if bad:
        return Check("finite", False, f"{bad} of {len(s)} challenger scores are NaN or infinite")
    outside = int(((s < 0) | (s > 1)).sum()) if probabilities else 0  # a predicted value has no range here
    if outside:
        return Check("finite", False, f"{outside} of {len(s)} challenger scores outside [0, 1] "
                                      f"(min {s.min():.4g}, max {s.max():.4g})")
    return Check("finite", True, f"{len(s)} challenger scores finite, in [{s.min():.4f}, {s.max():.4f}]")


def _check_finite_rows(s: np.ndarray, rows: int | None) -> Check:
    if rows is not None and len(s) != rows or len(s) == 0:
        return Check("finite", False, f"{len(s)} challenger probability rows for {rows} holdout rows")
    bad = int((~np.isfinite(s).all(axis=1) | (s < 0).any(axis=1) | (s > 1).any(axis=1)).sum())
    if bad:
        return Check("finite", False, f"{bad} of {len(s)} challenger probability rows are NaN, infinite or outside [0, 1]")
    return Check("finite", True, f"{len(s)} challenger probability rows finite, in [0, 1], over {s.shape[1]} classes")


def _check_floor(ctx: _Context) -> Check:
    unset = _unset(ctx, "floor")
    if unset:
        return unset
    ch, floor = ctx.overall.get("challenger", math.nan), ctx.thresholds["floor"]
    op, word = (">=", "floor") if ctx.gib else ("<=", "ceiling")
    if math.isnan(ch):
        return Check("floor", False, f"challenger {ctx.metric} could not be computed; {word} {floor:.4f}")
    passed = ctx.gain(ch, floor) >= -EPS
    shown = op if passed else {">=": "<", "<=": ">"}[op]
    return Check("floor", passed, f"challenger {ctx.metric} {ch:.4f} {shown} {word} {floor:.4f}")


def _versus(ctx: _Context, name: str, other: str, setting: str, strict_at_zero: bool) -> Check:
    """Challenger must beat `other` by the margin in `setting`, in the metric's direction."""
    unset = _unset(ctx, setting)
    if unset:
        return Check(name, False, unset.detail)
    ch, ot, margin = ctx.overall.get("challenger", math.nan), ctx.overall[other], ctx.thresholds[setting]
    if math.isnan(ch) or math.isnan(ot):
        return Check(name, False, f"cannot compare: challenger {ctx.metric} {_fmt(ch)}, {other} {_fmt(ot)} "
                                  f"(fail closed)")
    gain = ctx.gain(ch, ot)
    passed = gain > 0 if strict_at_zero and margin == 0 else gain >= margin - EPS
    need = "> 0 (strictly better)" if strict_at_zero and margin == 0 else f">= {setting} {margin:.4f}"
    verb = "meets" if passed else "fails"
    return Check(name, passed, f"challenger {ctx.metric} {ch:.4f} vs {other} {ot:.4f}: gain {gain:+.4f} "
                               f"{verb} {need}")


def _check_champion(ctx: _Context) -> Check:
    if ctx.lost_champion is not None:
        return Check("champion", False, f"the champion v{ctx.lost_champion} served (champion_changes) but is gone "
                                        "from the MLflow registry: a vanished champion is not a cold start; restore "
                                        "it in MLflow, or force tonight's challenger (promotion_policy=force)")
    if not ctx.has_champion:
        return Check("champion", True, "no champion: floor only")
    return _versus(ctx, "champion", "champion", "min_improvement", strict_at_zero=False)


def _check_baseline(ctx: _Context) -> Check:
    """A challenger must beat the logistic-regression baseline by baseline_margin (strictly, at margin 0).

    The rule exists so that a complex model earns its complexity. A challenger that is itself a
    linear model (the holdout chose the simple family) has nothing to earn: it must be no
    worse than the baseline (gain >= 0, whatever the margin), so the same model as the baseline
    passes with gain 0, and a worse-tuned one (e.g. a stronger penalty) still fails. It is still
    compared with the baseline model as evaluated, never waved through.
    """
    if "baseline" not in ctx.overall:
        return Check("baseline", False, "no baseline was evaluated (fail closed)")
    if ctx.challenger_family not in LINEAR_FAMILY.values():  # the baseline's family is the task's linear model
        return _versus(ctx, "baseline", "baseline", "baseline_margin", strict_at_zero=True)
    ch, base = ctx.overall.get("challenger", math.nan), ctx.overall["baseline"]
    if math.isnan(ch) or math.isnan(base):
        return Check("baseline", False, f"cannot compare: challenger {ctx.metric} {_fmt(ch)}, baseline "
                                        f"{_fmt(base)} (fail closed)")
    gain = ctx.gain(ch, base)
    passed = gain >= -EPS
    return Check("baseline", passed, f"challenger ({ctx.challenger_family}, the baseline's family) {ctx.metric} {ch:.4f} "
                                     f"vs baseline {base:.4f}: gain {gain:+.4f} {'meets' if passed else 'fails'} "
                                     f">= 0 (no worse; baseline_margin applies to other families)")


def _slice_label(s: dict[str, Any]) -> str:
    return f"{s['column']}={s['value']}"


def _judge_slice(ctx: _Context, s: dict[str, Any], tolerance: float | None) -> dict[str, Any]:
    """One slice's record: its numbers as evaluated (a role absent when not evaluated, None when
    undefined), the rule's inputs and the outcome. The one place the slice rule is applied."""
    record: dict[str, Any] = {"column": s.get("column"), "value": s.get("value"), "rows": s.get("rows")}
    record.update({role: _json_number(s[role]) for role in ("challenger", "champion") if role in s})
    record.update(min_rows=ctx.min_slice_rows, tolerance=tolerance, regression=None)
    ch, champ = _number(s.get("challenger")), _number(s.get("champion"))
    if s.get("skipped"):
        outcome = "too_small"
    elif not ctx.has_champion:
        outcome = "no_champion"
    elif math.isnan(ch) and math.isnan(champ):
        outcome = "undefined"  # e.g. one class only: neither model can be judged here
    elif math.isnan(ch) or math.isnan(champ):
        outcome = "cannot_compare"
    else:
        record["regression"] = _json_number(-ctx.gain(ch, champ))
        if tolerance is None:
            outcome = "no_tolerance"
        else:
            outcome = "failed" if record["regression"] > tolerance + EPS else "passed"
    passed = {"passed": True, "failed": False, "cannot_compare": False}.get(outcome)
    return {**record, "outcome": outcome, "passed": passed}


def _slice_failures(records: list[dict[str, Any]], tol: float) -> list[str]:
    """One line per slice that fails the check, with its numbers."""
    out = []
    for r in records:
        if r["outcome"] == "cannot_compare":
            out.append(f"{_slice_label(r)}: challenger {_fmt(r.get('challenger'))} vs champion "
                       f"{_fmt(r.get('champion'))} (cannot compare)")
        elif r["outcome"] == "failed":
            out.append(f"{_slice_label(r)} ({r['rows']} rows): challenger {r['challenger']:.4f} vs champion "
                       f"{r['champion']:.4f}, regression {r['regression']:.4f} > slice_tolerance {tol:.4f}")
    return out


def _slices_tail(records: list[dict[str, Any]]) -> str:
    """How many slices were compared, too small, undefined (the bracketed end of the detail)."""
    compared = sum(r["outcome"] in ("passed", "failed") for r in records)
    tail = f"{compared} slices compared, {sum(r['outcome'] == 'too_small' for r in records)} too small"
    undefined = [_slice_label(r) for r in records if r["outcome"] == "undefined"]
    if undefined:
        tail += f", {len(undefined)} undefined ({', '.join(undefined)})"
    return tail


def _check_slices(ctx: _Context) -> Check:
    tol = None if math.isnan(ctx.thresholds["slice_tolerance"]) else ctx.thresholds["slice_tolerance"]
    records = [_judge_slice(ctx, s, tol) for s in ctx.slices]
    if not ctx.has_champion:
        return Check("slices", True, "no champion: floor only", records)
    unset = _unset(ctx, "slice_tolerance")
    if unset:
        return Check("slices", False, unset.detail, records)
    failures, tail = _slice_failures(records, tol), _slices_tail(records)
    if failures:
        return Check("slices", False, "; ".join(failures) + f" [{tail}]", records)
    compared = [r for r in records if r["outcome"] == "passed"]
    if not compared:
        return Check("slices", True, f"no slice to compare [{tail}]", records)
    worst = max(compared, key=lambda r: r["regression"])  # the first of equals, as before
    return Check("slices", True, f"worst slice {_slice_label(worst)}: regression {worst['regression']:.4f} "
                                 f"<= slice_tolerance {tol:.4f} [{tail}]", records)


def _check_roundtrip(roundtrip_equal: bool | None) -> Check:
    if roundtrip_equal is None:
        return Check("roundtrip", False, "registry round trip was not checked (fail closed)")
    if isinstance(roundtrip_equal, (bool, np.bool_)) and bool(roundtrip_equal):  # (a == b).all() is np.bool_
        return Check("roundtrip", True, "predictions after loading from the registry equal those in memory")
    if not isinstance(roundtrip_equal, (bool, np.bool_)):
        return Check("roundtrip", False, f"round trip result {roundtrip_equal!r} is not a boolean (fail closed)")
    return Check("roundtrip", False, "predictions after loading from the registry differ from those in memory")


def gate(evaluation: dict, promotion: Promotion, *, challenger_scores: np.ndarray, roundtrip_equal: bool | None,
         challenger_family: str | None = None, lost_champion: int | None = None) -> Verdict:
    """Decide whether the challenger may become champion; every rule must pass.

    `evaluation` is the output of `evaluate`; `promotion` is the spec's Promotion (thresholds
    and the metric's direction). Any missing threshold, undefined metric or unverified round
    trip rejects: a model is blessed only on positive evidence. `challenger_family` (the
    candidate the holdout chose) matters to the baseline check only (_check_baseline).
    For a version reused by training key, the round trip compares tonight's fresh fit with the
    reused version as loaded: a reproducibility check. `lost_champion`: the version that last
    served by the audit table when the registry has no champion (it vanished): the champion check
    fails naming it, so nothing is promoted on the floor alone.
    """
    metric = str(promotion.metric)
    overall = {role: _number(v) for role, v in (evaluation.get("overall") or {}).items()}
    ctx = _Context(
        metric=metric,
        gib=bool(promotion.greater_is_better) if metric in METRICS else True,
        overall=overall,
        thresholds={name: _number(getattr(promotion, name, None)) for name in THRESHOLDS},
        slices=list(evaluation.get("slices") or []),
        min_slice_rows=None if getattr(promotion, "min_slice_rows", None) is None else int(promotion.min_slice_rows),
        challenger_family=challenger_family,
        lost_champion=lost_champion,
    )
    checks = [
        _check_thresholds(ctx, evaluation.get("metric")),
        _check_finite(challenger_scores, evaluation.get("rows"), metric not in REGRESSION_METRICS),
        _check_floor(ctx),
        _check_champion(ctx),
        _check_slices(ctx),
        _check_baseline(ctx),
        _check_roundtrip(roundtrip_equal),
    ]
    return Verdict(
        promote=all(c.passed for c in checks),
        checks=checks,
        metric=metric,
        challenger=_json_number(overall.get("challenger")),
        champion=_json_number(overall.get("champion")),
        baseline=_json_number(overall.get("baseline")),
    )
