"""The staleness fit on points whose decay is known: paired by day, so a day's difficulty cancels out."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from include.nightshift.staleness import AgePoint, judge_setting, paired_losses, recommend, serving_age

pytestmark = pytest.mark.pure

FIRST = dt.date(2026, 3, 1)


def points(days: int, decay: float, *, day_effect: float = 0.05, noise: float = 0.001, seed: int = 0,
           ages: tuple[int, ...] = (1, 4, 8, 12, 20)) -> list[AgePoint]:
    """AUC-like metric per (day, version): 0.8 - decay x age, plus a large shared day effect and small noise."""
    rng = np.random.default_rng(seed)
    out = []
    for d in range(days):
        shared = rng.normal(0, day_effect)
        for version, age in enumerate(ages, start=1):
            out.append(AgePoint(FIRST + dt.timedelta(days=d), version, float(age),
                                0.8 - decay * age + shared + rng.normal(0, noise), 1000))
    return out


def test_the_decay_is_found_through_day_effects_ten_times_larger_and_sets_the_cadence():
    cadence = recommend(points(20, decay=0.002), greater_is_better=True, tolerance=0.01)

    assert cadence.slope == pytest.approx(0.002, rel=0.1)
    assert cadence.recommended_max_age == pytest.approx(5, rel=0.1)  # 0.01 of AUC lost after 5 nights
    low, high = cadence.interval
    assert low < cadence.recommended_max_age < high and high - low < 2
    assert (cadence.days, cadence.pairs, cadence.max_age_seen) == (20, 80, 20)


def test_a_lower_is_better_metric_decays_upwards():
    flipped = [AgePoint(p.day, p.version, p.age_days, 1 - p.metric, p.rows) for p in points(10, decay=0.004)]

    cadence = recommend(flipped, greater_is_better=False, tolerance=0.02)
    assert cadence.recommended_max_age == pytest.approx(5, rel=0.15)


def test_no_decay_and_too_few_days_give_no_recommendation_and_say_why():
    flat = recommend(points(10, decay=-0.001), greater_is_better=True, tolerance=0.01)
    few = recommend(points(3, decay=0.002), greater_is_better=True, tolerance=0.01)

    assert flat.recommended_max_age is None and flat.reason.startswith("no decay seen up to 20 nights of age")
    assert few.recommended_max_age is None and few.reason == ("3 labelled day(s) scored by two versions of "
                                                              "different ages; 7 needed")


def test_a_day_scored_by_one_version_or_versions_of_one_age_gives_no_pair():
    day = FIRST
    alone = [AgePoint(day, 1, 3.0, 0.7, 10), AgePoint(day + dt.timedelta(days=1), 1, 4.0, 0.7, 10),
             AgePoint(day + dt.timedelta(days=1), 2, 4.0, 0.6, 10)]
    assert paired_losses(alone, greater_is_better=True) == {}


def test_the_setting_is_judged_against_the_interval():
    cadence = recommend(points(20, decay=0.002), greater_is_better=True, tolerance=0.01)

    assert "looser than the recommended 5.0 nights" in judge_setting(cadence, 14)
    assert "much tighter than" in judge_setting(cadence, 1)
    assert judge_setting(cadence, 5) is None


def test_age_is_counted_in_nights_from_training_to_the_night_that_served_the_rows():
    assert serving_age(dt.date(2026, 3, 10), trained_for=dt.date(2026, 3, 1), horizon_days=1) == 8.0


def test_an_interval_without_an_upper_end_is_recorded_as_null():
    """Resampled days that show no decay give an unbounded age: JSON (XCom, jsonb) stores it as null."""
    import json

    noisy = recommend(points(7, decay=0.0005, day_effect=0.0, noise=0.01, seed=3), greater_is_better=True,
                      tolerance=0.01, min_days=7)
    assert noisy.interval is not None and noisy.interval[1] == float("inf"), noisy
    assert json.loads(json.dumps(noisy.to_dict(), allow_nan=False))["interval"][1] is None
