"""Decide whether tonight's run retrains, and record why.

Retraining costs compute and risks churn in production, so it happens only for a reason,
and the reason is a short stable string ("forced", "no_champion", "drift", "quality_decay",
"model_age") that a SQL user can group by in the run-history table. The first matching
reason wins, in that order. An input that was not measured (None or NaN) cannot trigger
its reason; `details` records it as null next to the threshold it would have met.

Plain Python: no Airflow, no MLflow.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any

from include.nightshift.spec import DatasetSpec
from include.nightshift.steps import StepOutput

REASONS = ("forced", "no_champion", "drift", "quality_decay", "model_age")


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


def _drift(share: float | None, threshold: float) -> tuple[bool, str]:
    if share is None:
        return False, "drift not measured"
    hit = share >= threshold
    return hit, f"drift share {share:.4g} {'>=' if hit else '<'} threshold {threshold:.4g}"


def _quality(realised: float | None, holdout: float | None, metric: str, gib: bool, floor: float,
             tolerance: float) -> tuple[bool, str, float | None]:
    """Realised metric below the floor, or fallen more than `tolerance` below the holdout metric.

    Returns (triggered, text, decay); decay is how much worse realised is than holdout, in the
    metric's direction (positive: worse).
    """
    if realised is None:
        return False, f"realised {metric} not measured", None
    below_floor = realised < floor if gib else realised > floor
    decay = None if holdout is None else (holdout - realised if gib else realised - holdout)
    decayed = decay is not None and decay > tolerance
    word = "floor" if gib else "ceiling"
    parts = [f"realised {metric} {realised:.4g} {'beyond' if below_floor else 'within'} {word} {floor:.4g}"]
    if decay is None:
        parts.append("no champion holdout metric to compare")
    else:
        parts.append(f"decay {decay:+.4g} vs holdout {holdout:.4g} {'>' if decayed else '<='} "
                     f"tolerance {tolerance:.4g}")
    return below_floor or decayed, ", ".join(parts), decay


def _age(age: float | None, max_days: float) -> tuple[bool, str]:
    if age is None:
        return False, "model age unknown"
    hit = age > max_days
    return hit, f"model age {age:.4g} days {'>' if hit else '<='} max {max_days:g}"


def decide(*, has_champion: bool, drift_share: float | None, realised_metric: float | None,
           champion_holdout_metric: float | None, champion_age_days: float | None, force: bool,
           spec: DatasetSpec) -> Decision:
    """Retrain or not, with the first matching reason and every input and threshold recorded."""
    pro = spec.promotion
    drift_share, realised = _measured(drift_share), _measured(realised_metric)
    holdout, age = _measured(champion_holdout_metric), _measured(champion_age_days)
    threshold = float(spec.drift.share_threshold)

    drift_hit, drift_text = _drift(drift_share, threshold)
    quality_hit, quality_text, decay = _quality(realised, holdout, pro.metric, pro.greater_is_better,
                                                float(pro.floor), float(pro.realised_tolerance))
    age_hit, age_text = _age(age, pro.max_model_age_days)

    candidates = [
        ("forced", bool(force), "forced by the trigger"),
        ("no_champion", not has_champion, "no champion model yet"),
        ("drift", drift_hit, drift_text),
        ("quality_decay", quality_hit, quality_text),
        ("model_age", age_hit, age_text),
    ]
    reason = next((name for name, hit, _ in candidates if hit), None)
    texts = [drift_text, quality_text, age_text]
    if reason is None:
        summary = "no retrain: " + "; ".join(texts)
    else:
        lead = next(text for name, hit, text in candidates if name == reason)
        summary = f"retrain ({reason}): {lead}"

    details: dict[str, Any] = {
        "force": bool(force),
        "has_champion": bool(has_champion),
        "drift_share": drift_share,
        "drift_share_threshold": threshold,
        "metric": pro.metric,
        "greater_is_better": bool(pro.greater_is_better),
        "realised_metric": realised,
        "champion_holdout_metric": holdout,
        "realised_decay": decay,
        "floor": float(pro.floor),
        "realised_tolerance": float(pro.realised_tolerance),
        "champion_age_days": age,
        "max_model_age_days": pro.max_model_age_days,
        "triggered": [name for name, hit, _ in candidates if hit],
        "summary": summary,
    }
    return Decision(retrain=reason is not None, reason=reason, details=details)
