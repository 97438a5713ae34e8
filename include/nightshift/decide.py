"""Decide whether tonight's run retrains, and record why.

Retraining costs compute and risks churn in production, so it happens only for a reason,
and the reason is a short stable string ("forced", "no_champion", "shadow_wins", "drift",
"quality_decay", "model_age") that a SQL user can group by in the run-history table. The first matching
reason wins, in that order. An input that was not measured (None or NaN) cannot trigger
its reason; `details` records it as null next to the threshold it would have met.

The rules act on evidence, not on one noisy number:

- **drift**: a night is drifted when the share of drifted features reaches
  drift.share_threshold (drift.py says which features, methods and windows). A drifted night
  retrains only when the drift *persisted* (drifted on drift.persist_nights consecutive
  nights against the same champion, tonight included) or comes with a *measured quality
  drop* (the realised metric's whole interval worse than the champion's holdout metric).
  Otherwise it is recorded and shown, and nobody is alerted.
- **quality_decay**: the realised metric's interval (a pooled window of labelled days the
  champion never saw, bootstrapped: quality.py) is entirely worse than the champion's
  holdout metric minus promotion.realised_tolerance, or entirely beyond the floor. A point
  estimate that dips inside its own noise triggers nothing. For log_loss (lower is better)
  every comparison is mirrored.

- **shadow_wins**: the shadow (shadow.py) beat the champion on shadow.min_nights consecutive labelled
  days and passed the gate on their pooled rows (monitor measured it). No model is fitted: the shadow
  is tonight's challenger, and evaluate promotes it through the audited path.

Plain Python: no Airflow, no MLflow.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any

from include.nightshift.spec import DatasetSpec
from include.nightshift.steps import DriftStep, MonitorStep, StepOutput

REASONS = ("forced", "no_champion", "shadow_wins", "drift", "quality_decay", "model_age")


@dataclass
class Decision(StepOutput):
    retrain: bool
    reason: str | None
    details: dict

    def to_dict(self) -> dict:
        return {"retrain": bool(self.retrain), "reason": self.reason, "details": dict(self.details)}


def model_age_days(trained_for: dt.date | None, run_date: dt.date) -> float | None:
    """How many days of data the champion is behind tonight's run: the max-age rule's clock.

    Measured from the night the champion was trained for to the night being processed, never
    against the wall clock: a replay or a backfill of old nights must see the age those nights
    saw, and a model trained for yesterday is one day old whenever the run happens.
    """
    return None if trained_for is None else float((run_date - trained_for).days)


def _measured(value: float | None) -> float | None:
    """A finite float, or None when the input was not measured (None, NaN, inf)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


@dataclass(frozen=True)
class Quality:
    """The realised metric as the rules read it: the point, the interval, the holdout metric to beat."""

    value: float | None
    low: float | None
    high: float | None
    holdout: float | None
    greater_is_better: bool

    @classmethod
    def of(cls, monitor: MonitorStep | None, greater_is_better: bool) -> Quality:
        interval = (monitor.interval if monitor else None) or [None, None]
        return cls(value=_measured(monitor.realised_metric) if monitor else None, low=_measured(interval[0]),
                   high=_measured(interval[1]), holdout=_measured(monitor.champion_holdout_metric) if monitor else None,
                   greater_is_better=greater_is_better)

    @property
    def best(self) -> float | None:
        """The interval's bound nearest to good: the whole interval is worse than a limit when this is."""
        return self.high if self.greater_is_better else self.low

    def worse_than(self, limit: float | None) -> bool:
        """The whole interval is worse than `limit` (below it; above it for a lower-is-better metric)."""
        if self.best is None or limit is None:
            return False
        return self.best < limit if self.greater_is_better else self.best > limit

    def text(self) -> str:
        return f"[{_fmt(self.low)}, {_fmt(self.high)}]"

    @property
    def decay(self) -> float | None:
        """How much worse the point estimate is than the holdout metric (positive: worse)."""
        if self.value is None or self.holdout is None:
            return None
        return self.holdout - self.value if self.greater_is_better else self.value - self.holdout

    @property
    def drop(self) -> bool | None:
        """A measured quality drop: the whole interval worse than the holdout metric (None: not measurable)."""
        if self.best is None or self.holdout is None:
            return None
        return self.worse_than(self.holdout)


def _drift(drift: DriftStep | None, threshold: float, persist: int, quality: Quality) -> tuple[bool, str]:
    """Drift acts when it persisted `persist` nights or comes with a measured quality drop."""
    share = _measured(drift.share) if drift else None
    if share is None:
        return False, "drift not measured"
    if share < threshold:
        return False, f"drift share {share:.4g} < threshold {threshold:.4g}"
    nights = max(int(drift.persisted_nights), 1)
    seen = f"drift share {share:.4g} >= threshold {threshold:.4g} on {nights} of {persist} consecutive night(s)"
    if nights >= persist:
        return True, seen
    if quality.drop:
        return True, (f"{seen}, with a measured quality drop (realised interval {quality.text()} below holdout "
                      f"{_fmt(quality.holdout)})")
    return False, f"{seen} and no measured quality drop: recorded, not acted on"


def _quality(quality: Quality, metric: str, floor: float, tolerance: float) -> tuple[bool, str]:
    """The whole realised interval beyond the floor, or worse than the holdout metric by more than `tolerance`."""
    if quality.value is None or quality.best is None:
        return False, f"realised {metric} not measured"
    gib = quality.greater_is_better
    beyond_floor = quality.worse_than(floor)
    limit = None if quality.holdout is None else quality.holdout - tolerance if gib else quality.holdout + tolerance
    decayed = quality.worse_than(limit)
    word = "floor" if gib else "ceiling"
    parts = [f"realised {metric} {quality.value:.4g} {quality.text()} "
             f"{'entirely beyond' if beyond_floor else 'not entirely beyond'} {word} {floor:.4g}"]
    if limit is None:
        parts.append("no champion holdout metric to compare")
    else:
        parts.append(f"interval {'entirely worse than' if decayed else 'reaches'} holdout {quality.holdout:.4g} "
                     f"{'-' if gib else '+'} tolerance {tolerance:.4g} = {limit:.4g}")
    return beyond_floor or decayed, ", ".join(parts)


def _age(age: float | None, max_days: float) -> tuple[bool, str]:
    if age is None:
        return False, "model age unknown"
    hit = age > max_days
    return hit, f"model age {age:.4g} days {'>' if hit else '<='} max {max_days:g}"


def _evidence(spec: DatasetSpec, drift: DriftStep | None, monitor: MonitorStep | None,
              quality: Quality) -> dict[str, Any]:
    """Every input and threshold of the drift and quality rules, JSON-safe, for `details`."""
    drift = drift or DriftStep(share=None, champion_version=None)  # not measured
    monitor = monitor or MonitorStep(realised_metric=None, rows=0, champion_version=None)
    pro = spec.promotion
    return {
        "drift_share": _measured(drift.share),
        "drift_share_threshold": float(spec.drift.share_threshold),
        "drift_detected": drift.detected,
        "drift_persisted_nights": int(drift.persisted_nights),
        "persist_nights": spec.drift.persist_nights,
        "drifted": list(drift.drifted or []),
        "prediction_drift": drift.prediction_drift,
        "drift_windows": drift.details.get("windows"),
        "drift_report": drift.report_url,
        "metric": pro.metric,
        "greater_is_better": bool(pro.greater_is_better),
        "realised_metric": quality.value,
        "realised_interval": None if quality.best is None else [quality.low, quality.high],
        "realised_confidence": monitor.confidence,
        "realised_rows": monitor.rows,
        "realised_days": list(monitor.days),
        "realised_brier": _measured(monitor.brier),
        "realised_ece": _measured(monitor.ece),
        "target_drift": dict(monitor.target_drift),
        "staleness": dict(monitor.staleness),
        "prediction_bias": dict(monitor.prediction_bias),  # the ML Test Score's inclusion test (test_score.py)
        "shadow": dict(monitor.shadow),  # shadow.measure_shadow: the shadow against the champion on realised labels
        "served_baseline": dict(monitor.served_baseline),  # the champion vs its simple baseline on served rows
        "champion_holdout_metric": quality.holdout,
        "realised_decay": quality.decay,
        "quality_drop": quality.drop,
        "floor": float(pro.floor),
        "realised_tolerance": float(pro.realised_tolerance),
    }


def decide(*, has_champion: bool, drift: DriftStep | None, monitor: MonitorStep | None,
           champion_age_days: float | None, force: bool, spec: DatasetSpec) -> Decision:
    """Retrain or not, with the first matching reason and every input and threshold recorded."""
    pro = spec.promotion
    quality = Quality.of(monitor, bool(pro.greater_is_better))
    age = _measured(champion_age_days)
    drift_hit, drift_text = _drift(drift, float(spec.drift.share_threshold), spec.drift.persist_nights, quality)
    quality_hit, quality_text = _quality(quality, pro.metric, float(pro.floor), float(pro.realised_tolerance))
    age_hit, age_text = _age(age, pro.max_model_age_days)

    candidates = [
        ("forced", bool(force), "forced by the trigger"),
        ("no_champion", not has_champion, "no champion model yet"),
        ("shadow_wins", bool(monitor and monitor.shadow.get("wins")), (monitor.shadow.get("summary") if monitor else "")
         or "no shadow"),
        ("drift", drift_hit, drift_text),
        ("quality_decay", quality_hit, quality_text),
        ("model_age", age_hit, age_text),
    ]
    reason = next((name for name, hit, _ in candidates if hit), None)
    if reason is None:
        summary = "no retrain: " + "; ".join([drift_text, quality_text, age_text])
    else:
        summary = f"retrain ({reason}): " + next(text for name, _, text in candidates if name == reason)

    details: dict[str, Any] = {
        "force": bool(force),
        "has_champion": bool(has_champion),
        **_evidence(spec, drift, monitor, quality),
        "champion_age_days": age,
        "max_model_age_days": pro.max_model_age_days,
        "drift_acted": drift_hit,
        "triggered": [name for name, hit, _ in candidates if hit],
        "summary": summary,
    }
    return Decision(retrain=reason is not None, reason=reason, details=details)
