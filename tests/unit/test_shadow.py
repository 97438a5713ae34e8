"""Shadow scoring's rules on known numbers: who becomes the shadow, and when it has won on realised labels."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pytest

from include.nightshift.shadow import BASIS, beats, daily_comparison, narrow_miss, nights_won
from include.nightshift.steps import VerdictStep

pytestmark = pytest.mark.pure


def verdict(challenger: float, champion: float, failed: tuple[str, ...] = ("champion",), **changes) -> VerdictStep:
    names = ("thresholds", "finite", "floor", "champion", "slices", "baseline", "roundtrip")
    checks = [{"name": n, "passed": n not in failed, "detail": "..."} for n in names]
    base = VerdictStep(promote=not failed, metric="roc_auc", challenger=challenger, champion=champion, baseline=0.7,
                       message="", checks=checks, policy="auto", dag_run_id="r", champion_version=1,
                       challenger_version=2, promoted=not failed, policy_note="")
    return dataclasses.replace(base, **changes)


def test_a_challenger_that_only_missed_the_improvement_by_a_narrow_margin_shadows(churn_spec):
    spec = dataclasses.replace(churn_spec, shadow=dataclasses.replace(churn_spec.shadow, max_gap=0.01))
    assert "short by +0.0050" in narrow_miss(verdict(0.815, 0.82), spec)
    assert narrow_miss(verdict(0.825, 0.82), spec)  # better, but by less than min_improvement
    assert narrow_miss(verdict(0.80, 0.82), spec) is None  # 0.02 short: beyond max_gap
    assert narrow_miss(verdict(0.819, 0.82, failed=("champion", "slices")), spec) is None  # another check failed
    assert narrow_miss(verdict(0.83, 0.82, failed=()), spec) is None  # promoted
    assert narrow_miss(verdict(0.819, 0.82, challenger_version=None), spec) is None  # a dry run's, unregistered
    assert narrow_miss(verdict(0.819, 0.82, evaluation={"basis": BASIS}), spec) is None  # the shadow itself
    off = dataclasses.replace(spec, shadow=dataclasses.replace(spec.shadow, max_gap=None))
    assert narrow_miss(verdict(0.8199, 0.82), off) is None


def test_the_default_gap_takes_only_a_challenger_at_least_as_good(churn_spec):
    assert churn_spec.shadow.max_gap == 0.0
    assert narrow_miss(verdict(0.821, 0.82), churn_spec)
    assert narrow_miss(verdict(0.8199, 0.82), churn_spec) is None


def test_a_win_is_strict_at_margin_zero_and_nan_never_wins():
    assert beats(0.01, 0.0) and not beats(0.0, 0.0) and not beats(float("nan"), 0.0)
    assert beats(0.02, 0.02) and not beats(0.019, 0.02)


def test_each_labelled_day_is_compared_on_its_own_rows_and_the_newest_streak_counts(churn_spec):
    """Three days; the shadow ranks day 1's rows worse, days 2 and 3 perfectly; the champion is noise."""
    rng = np.random.default_rng(0)
    days = np.array([dt.date(2026, 3, d) for d in (1, 2, 3) for _ in range(200)], dtype=object)
    y = np.tile(np.r_[np.zeros(100), np.ones(100)], 3).astype(int)
    champion = rng.uniform(size=600)
    shadow = np.where(y == 1, 0.9, 0.1).astype(float)
    shadow[:200] = 1 - shadow[:200]  # day 1: exactly wrong
    compared = daily_comparison(days, y, champion, shadow, churn_spec)
    assert [d["day"] for d in compared] == ["2026-03-01", "2026-03-02", "2026-03-03"]
    assert [d["beats"] for d in compared] == [False, True, True]
    assert compared[1]["shadow"] == 1.0 and compared[0]["shadow"] == 0.0 and compared[1]["rows"] == 200
    assert nights_won(compared) == 2
    assert nights_won(compared[:1]) == 0


def test_min_nights_beyond_the_realised_window_is_refused(churn_spec, tmp_path):
    from pathlib import Path

    from include.nightshift.spec import SpecError, load_spec

    path = tmp_path / "churn.yaml"
    path.write_text(Path(churn_spec.path).read_text() + "\nshadow:\n  min_nights: 30\n")
    with pytest.raises(SpecError, match=r"shadow.min_nights.*realised_window_days"):
        load_spec(path)
