"""Realised quality: a seeded bootstrap interval that narrows with rows, and calibration recorded alongside."""

from __future__ import annotations

import math

import numpy as np
import pytest

from include.nightshift.quality import (bootstrap_interval, brier_score, expected_calibration_error,
                                        realised_quality)


def sample(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.uniform(size=n) < 0.25).astype(int)
    return y, np.clip(0.25 + 0.3 * (y - 0.25) + rng.normal(0, 0.2, n), 0, 1)


def test_interval_contains_the_point_is_seeded_and_narrows_with_rows():
    y, s = sample(1000)
    q = realised_quality("roc_auc", y, s, threshold=0.5, confidence=0.95, resamples=200, seed=42)
    assert q.low < q.value < q.high and q.rows == 1000 and q.resamples == 200
    again = realised_quality("roc_auc", y, s, threshold=0.5, confidence=0.95, resamples=200, seed=42)
    assert (again.low, again.high) == (q.low, q.high)  # same rows, same seed: same interval
    other = realised_quality("roc_auc", y, s, threshold=0.5, confidence=0.95, resamples=200, seed=7)
    assert (other.low, other.high) != (q.low, q.high)
    y7, s7 = sample(7000)
    wide, narrow = q.high - q.low, (lambda r: r.high - r.low)(
        realised_quality("roc_auc", y7, s7, threshold=0.5, confidence=0.95, resamples=200, seed=42))
    assert narrow < wide * 0.6  # seven times the rows: about 1/sqrt(7) the width
    ninety = realised_quality("roc_auc", y, s, threshold=0.5, confidence=0.90, resamples=200, seed=42)
    assert ninety.high - ninety.low < wide


def test_interval_covers_the_true_metric_at_about_its_confidence():
    """Over fresh samples of one population, the 90% interval holds the population's AUC most of the time."""
    big_y, big_s = sample(200_000, seed=99)
    from sklearn.metrics import roc_auc_score

    truth = roc_auc_score(big_y, big_s)
    hits = 0
    for seed in range(30):
        y, s = sample(800, seed=seed + 1)
        low, high, _ = bootstrap_interval("roc_auc", y, s, threshold=0.5, confidence=0.90, resamples=100, seed=seed)
        hits += low <= truth <= high
    assert hits >= 23  # 27 expected; far fewer would mean an interval too narrow to act on


def test_large_windows_draw_capped_resamples_with_the_same_width():
    y, s = sample(10_000)
    full = bootstrap_interval("roc_auc", y, s, threshold=0.5, confidence=0.95, resamples=100, seed=1)
    capped = bootstrap_interval("roc_auc", y, s, threshold=0.5, confidence=0.95, resamples=100, seed=1, max_rows=2500)
    assert (capped[1] - capped[0]) == pytest.approx(full[1] - full[0], rel=0.3)


def test_undefined_metric_is_not_measured():
    y, s = np.zeros(50, dtype=int), np.linspace(0, 1, 50)  # one class: no ROC AUC
    q = realised_quality("roc_auc", y, s, threshold=0.5, confidence=0.95, resamples=50, seed=0)
    assert q.value is None and (q.low, q.high, q.resamples) == (None, None, 0)
    assert q.brier == pytest.approx(float(np.mean(s ** 2)))  # calibration is still defined
    empty = realised_quality("roc_auc", np.array([], dtype=int), np.array([]), threshold=0.5, confidence=0.95,
                             resamples=50, seed=0)
    assert empty.value is None and empty.brier is None and empty.ece is None and empty.rows == 0


def test_log_loss_interval():
    y, s = sample(2000)
    q = realised_quality("log_loss", y, s, threshold=0.5, confidence=0.95, resamples=100, seed=3)
    assert 0 < q.low < q.value < q.high


def test_calibration_brier_and_ece():
    y = np.array([0, 0, 1, 1])
    assert brier_score(y, np.array([0.0, 0.0, 1.0, 1.0])) == 0.0
    assert brier_score(y, np.array([0.5] * 4)) == 0.25
    assert expected_calibration_error(y, np.array([0.5] * 4)) == 0.0  # 0.5 said, half positive: calibrated
    # 4.6% said where 22% happen (issue 10): an ECE of about 0.17
    rng = np.random.default_rng(0)
    said = np.full(10_000, 0.046)
    happened = (rng.uniform(size=10_000) < 0.22).astype(int)
    assert expected_calibration_error(happened, said) == pytest.approx(0.174, abs=0.01)
    assert math.isclose(expected_calibration_error(y, np.array([0.05, 0.15, 0.85, 0.95])), 0.1)


def days_that_differ(per_day: int, shifts: list[float], seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of several days; each day's scores carry a day-wide shift of how well they rank (a storm day)."""
    rng = np.random.default_rng(seed)
    ys, ss, ds = [], [], []
    for day, strength in enumerate(shifts):
        y = (rng.uniform(size=per_day) < 0.25).astype(int)
        ys.append(y), ds.append(np.full(per_day, day))
        ss.append(np.clip(0.25 + strength * (y - 0.25) + rng.normal(0, 0.2, per_day), 0, 1))
    return np.concatenate(ys), np.concatenate(ss), np.concatenate(ds)


def test_days_that_differ_widen_the_interval_beyond_the_rows_alone():
    """Two days of 1,000 rows, one good and one bad: the rows alone claim certainty the days do not give."""
    y, s, days = days_that_differ(1000, [0.45, 0.1])
    rows = bootstrap_interval("roc_auc", y, s, threshold=0.5, confidence=0.95, resamples=200, seed=3)
    by_day = bootstrap_interval("roc_auc", y, s, threshold=0.5, confidence=0.95, resamples=200, seed=3, days=days)
    assert by_day[1] - by_day[0] > 2 * (rows[1] - rows[0])
    same_y, same_s, same_days = days_that_differ(1000, [0.3, 0.3])  # alike days: about the row bootstrap's width
    alike = bootstrap_interval("roc_auc", same_y, same_s, threshold=0.5, confidence=0.95, resamples=200, seed=3,
                               days=same_days)
    plain = bootstrap_interval("roc_auc", same_y, same_s, threshold=0.5, confidence=0.95, resamples=200, seed=3)
    assert alike[1] - alike[0] == pytest.approx(plain[1] - plain[0], rel=0.5)


def test_one_day_is_the_row_bootstrap():
    y, s = sample(1000)
    one = np.zeros(len(y), dtype=int)
    assert bootstrap_interval("roc_auc", y, s, threshold=0.5, confidence=0.95, resamples=100, seed=5, days=one) == \
        bootstrap_interval("roc_auc", y, s, threshold=0.5, confidence=0.95, resamples=100, seed=5)


def test_a_resample_s_roc_auc_by_counts_is_sklearn_s_with_ties_and_repeats():
    """The bootstrap's count-based ROC AUC is the number sklearn gives for the resampled rows, ties (rounded
    scores) and repeated rows included, and NaN when a resample holds one class only."""
    from sklearn.metrics import roc_auc_score

    from include.nightshift.quality import _ResampledAuc

    rng = np.random.default_rng(3)
    y, s = sample(5000, seed=3)
    s = np.round(s, 2)  # about 100 distinct scores: most rows tie with others
    auc = _ResampledAuc(y, s)
    for _ in range(20):
        idx = rng.integers(0, len(y), 3000)
        assert auc(idx) == pytest.approx(roc_auc_score(y[idx], s[idx]), abs=1e-12)
    negatives = np.flatnonzero(y == 0)[:50]
    assert math.isnan(auc(negatives))


def test_the_interval_by_counts_equals_the_interval_through_sklearn(monkeypatch):
    """Same rows, days and seed: the fast path gives the interval the per-resample sklearn metric gave."""
    from include.nightshift import quality
    from include.nightshift.evaluation import metric_value

    y, s = sample(30_000, seed=5)
    days = np.array(["2026-03-02", "2026-03-01", "2026-03-03"], dtype=object)[np.arange(30_000) % 3]
    kwargs = dict(threshold=0.5, confidence=0.9, resamples=60, seed=11, max_rows=12_000)
    fast = [bootstrap_interval("roc_auc", y, s, **kwargs), bootstrap_interval("roc_auc", y, s, days=days, **kwargs)]
    monkeypatch.setattr(quality, "_resample_metric",
                        lambda metric, y, scores, threshold: lambda idx: metric_value(metric, y[idx], scores[idx]))
    slow = [bootstrap_interval("roc_auc", y, s, **kwargs), bootstrap_interval("roc_auc", y, s, days=days, **kwargs)]
    for (lo, hi, n), (slo, shi, sn) in zip(fast, slow):
        assert n == sn == 60 and lo == pytest.approx(slo, abs=1e-12) and hi == pytest.approx(shi, abs=1e-12)
    assert fast[0] != fast[1]  # the day-grouped draws really differ from the row draws
