"""The evaluation plots on their edges: a big holdout is sampled, a one-class holdout still draws, a plot
that fails is left out without failing the evaluation, and every figure is released once drawn."""

from __future__ import annotations

import gc
import logging
import time
import weakref
from pathlib import Path

import numpy as np
import pytest

from include.nightshift import plots
from include.nightshift.plots import MAX_POINTS, evaluation_plots
from include.nightshift.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def spec():
    return load_spec(ROOT / "include" / "specs" / "churn.yaml")


def _binary(n: int, seed: int = 1) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return y, {role: np.clip(0.35 * y + rng.uniform(0, 0.65, n), 0, 1) for role in ("challenger", "champion")}


def test_a_big_holdout_is_drawn_from_one_seeded_sample_in_bounded_time(spec):
    y, scores = _binary(2 * MAX_POINTS)
    started = time.monotonic()
    first = evaluation_plots(y, scores, spec)
    seconds = time.monotonic() - started

    assert len(first) == 6
    assert all(f"a seeded sample of {MAX_POINTS} of {2 * MAX_POINTS} holdout rows" in p.alt for p in first)
    assert [p.png for p in evaluation_plots(y, scores, spec)] == [p.png for p in first]  # same sample, same bytes
    print(f"\n6 plots of {2 * MAX_POINTS} rows (sampled to {MAX_POINTS}): {seconds:.1f} s")
    assert seconds < 60  # bounded by the sample, not the holdout (about 3 s here; generous for a loaded CI)


def test_a_one_class_holdout_says_what_cannot_be_drawn(spec):
    y = np.zeros(500, dtype=int)
    drawn = {p.id: p.alt for p in evaluation_plots(y, {"challenger": np.linspace(0, 1, 500)}, spec)}

    assert drawn["roc"] == "ROC curve: undefined, 500 holdout rows of one class only."
    assert drawn["precision_recall"].startswith("Precision-recall curve: undefined")
    assert drawn["lift"] == "Lift: undefined, 500 holdout rows without a positive row."
    assert "challenger: 0 true positives, 250 false positives, 0 false negatives, 250 true negatives" in drawn[
        "confusion_matrix"]  # the first model alone: no champion panel


def test_a_plot_that_fails_is_left_out_and_logged_never_failing_the_evaluation(spec, monkeypatch, caplog):
    def broken(fig, holdout):
        raise RuntimeError("injected")

    monkeypatch.setattr(plots, "_BINARY", tuple((i, t, broken if i == "lift" else d) for i, t, d in plots._BINARY))
    y, scores = _binary(1000)
    with caplog.at_level(logging.ERROR, logger="include.nightshift.plots"):
        drawn = [p.id for p in evaluation_plots(y, scores, spec)]

    assert drawn == ["roc", "precision_recall", "calibration", "score_histogram", "confusion_matrix"]
    assert "the lift plot of churn could not be drawn" in caplog.text


def test_figures_are_released_once_their_png_is_taken(spec, monkeypatch):
    """No pyplot: nothing keeps a figure alive after its PNG is taken (a long-lived worker does not grow)."""
    from matplotlib.figure import Figure

    made = []

    class Tracked(Figure):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(weakref.ref(self))

    monkeypatch.setattr("matplotlib.figure.Figure", Tracked)
    y, scores = _binary(1000)
    evaluation_plots(y, scores, spec)
    gc.collect()
    assert len(made) == 6 and all(ref() is None for ref in made)


def test_scores_not_aligned_with_labels_are_refused_naming_the_role(spec):
    y, scores = _binary(100)
    with pytest.raises(ValueError, match="champion has 99 scores for 100 labels"):
        evaluation_plots(y, {**scores, "champion": scores["champion"][:99]}, spec)
