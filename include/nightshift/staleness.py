"""Staleness: how fast a model's quality decays with age, and the retraining cadence that follows.

The seed is the ML Test Score's "the impact of model staleness is known": score the same labelled
rows with older models and draw quality against age. Here each labelled day is scored by several
registered versions at once (the champion and the last blessed ones), so every comparison is
*paired*: on one day, the freshest version is the reference and each older one's loss is how much
worse it does on the very same rows. A hard day (a storm, a holiday) then moves every version
together and cancels out, which a curve of raw metrics against age would mistake for decay.

Age is counted on the clock of ``promotion.max_model_age_days``: the nights between the night a
version was trained for and the night that served the day's rows (the labelled day minus
``scoring.horizon_days``), so the recommendation reads directly as a value for that setting.

The decay is a line through the origin, loss = slope x (age - age of the day's freshest version),
fitted by least squares over every pair; the recommended maximum age is the age at which the
expected loss reaches ``promotion.realised_tolerance`` (tolerance / slope), with a bootstrap
interval over whole days (the same reason as quality.py: rows of one day are not independent). No
positive slope means no decay was seen over the ages measured: no recommendation, and it says so.

Plain Python and numpy: the monitor step computes the points, this module only fits them.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class AgePoint:
    """One version's metric on one labelled day's rows, and how old it was when it served them."""

    day: dt.date
    version: int
    age_days: float
    metric: float
    rows: int


@dataclass(frozen=True)
class Cadence:
    """The fitted decay and what it recommends; `reason` says why there is no recommendation."""

    pairs: int
    days: int
    slope: float | None  # loss per night of age (positive: older is worse)
    recommended_max_age: float | None
    interval: tuple[float, float] | None
    max_age_seen: float | None
    reason: str | None = None

    def to_dict(self) -> dict:
        """JSON-safe: an unbounded end of the interval (some resampled days show no decay) is null."""
        data = asdict(self)
        if self.interval is not None:
            data["interval"] = [b if math.isfinite(b) else None for b in self.interval]
        return data


def serving_age(day: dt.date, trained_for: dt.date, horizon_days: int) -> float:
    """Nights between the night a version was trained for and the night that scored `day`'s rows."""
    return float((day - dt.timedelta(days=horizon_days) - trained_for).days)


def paired_losses(points: Sequence[AgePoint], greater_is_better: bool) -> dict[dt.date, list[tuple[float, float]]]:
    """Per day, (age beyond the freshest version's, loss against it) of every other version that scored it."""
    by_day: dict[dt.date, list[AgePoint]] = defaultdict(list)
    for p in points:
        if math.isfinite(p.metric):
            by_day[p.day].append(p)
    out: dict[dt.date, list[tuple[float, float]]] = {}
    for day, found in sorted(by_day.items()):
        fresh = min(found, key=lambda p: (p.age_days, -p.version))
        sign = 1.0 if greater_is_better else -1.0
        pairs = [(p.age_days - fresh.age_days, sign * (fresh.metric - p.metric)) for p in found
                 if p is not fresh and p.age_days > fresh.age_days]
        if pairs:
            out[day] = pairs
    return out


def _slope(pairs: list[tuple[float, float]]) -> float | None:
    ages = np.array([a for a, _ in pairs], dtype="float64")
    losses = np.array([loss for _, loss in pairs], dtype="float64")
    denominator = float(np.dot(ages, ages))
    return None if denominator == 0 else float(np.dot(ages, losses) / denominator)


def _age_for(slope: float | None, tolerance: float) -> float:
    return math.inf if slope is None or slope <= 0 else tolerance / slope


def recommend(points: Sequence[AgePoint], *, greater_is_better: bool, tolerance: float, min_days: int = 7,
              resamples: int = 500, confidence: float = 0.9, seed: int = 0) -> Cadence:
    """The decay of quality with age over `points`, and the maximum age before it costs `tolerance`."""
    by_day = paired_losses(points, greater_is_better)
    pairs = [pair for day_pairs in by_day.values() for pair in day_pairs]
    seen = max((p.age_days for p in points), default=None)
    if len(by_day) < min_days:
        return Cadence(len(pairs), len(by_day), None, None, None, seen,
                       reason=f"{len(by_day)} labelled day(s) scored by two versions of different ages; "
                              f"{min_days} needed")
    slope = _slope(pairs)
    if slope is None or slope <= 0:
        return Cadence(len(pairs), len(by_day), slope, None, None, seen,
                       reason=f"no decay seen up to {seen:g} nights of age (slope {slope})")
    days = list(by_day.values())
    rng = np.random.default_rng(seed)
    ages = []
    for _ in range(resamples):
        drawn = [pair for i in rng.integers(0, len(days), len(days)) for pair in days[i]]
        ages.append(_age_for(_slope(drawn), tolerance))
    tail = (1 - confidence) / 2
    # inverted_cdf picks resampled values themselves: an infinite one (no decay in that draw) stays infinite
    low, high = (float(np.quantile(ages, q, method="inverted_cdf")) for q in (tail, 1 - tail))
    return Cadence(len(pairs), len(by_day), slope, tolerance / slope, (low, high), seen)


def recommend_for(spec: Any, points: Sequence[AgePoint]) -> Cadence:
    """recommend() with the spec's promotion metric direction and realised_tolerance, staleness.min_days and
    seed: the nightly record and the Model health page fit the same curve."""
    pro = spec.promotion
    return recommend([p for p in points if math.isfinite(p.metric)], greater_is_better=bool(pro.greater_is_better),
                     tolerance=float(pro.realised_tolerance), min_days=spec.staleness.min_days, seed=spec.training.seed)


def judge_setting(cadence: Cadence, max_model_age_days: float, much: float = 2.0) -> str | None:
    """A sentence for the run's summary when promotion.max_model_age_days disagrees with the
    recommendation: looser than its interval's upper end, or tighter than `much` times below its lower."""
    if cadence.recommended_max_age is None or cadence.interval is None:
        return None
    low, high = cadence.interval
    text = (f"promotion.max_model_age_days {max_model_age_days:g} is {{}} the recommended {cadence.recommended_max_age:.1f}"
            f" nights (interval {low:.1f}-{high:.1f}, from {cadence.days} labelled days)")
    if max_model_age_days > high:
        return text.format("looser than")
    if max_model_age_days * much < low:
        return text.format("much tighter than")
    return None
