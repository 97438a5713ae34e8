"""The evaluation report's plots: champion, challenger and baseline on the same holdout, as PNGs.

What the gate's numbers do not show: where on the score range two models differ. For task binary:
ROC and precision-recall curves, calibration, the score histograms of champion and challenger,
the confusion matrix at scoring.decision_threshold and the lift; task multiclass: each class's
recall and the confusion matrix; task regression: predicted against actual and the residuals.

Each plot is drawn once, on a `matplotlib.figure.Figure` (no pyplot: no global figure registry to
leak into, nothing to close but the figure itself, which is cleared after its PNG is taken), and
kept as PNG bytes: the evaluation page embeds them as ``data:`` URIs (it stays one offline file)
and the registry logs the same bytes on the challenger's MLflow run under ``evaluation/``.
Drawing stays bounded in time: above MAX_POINTS rows one seeded sample of rows (the same rows for
every model) is plotted, and scatter plots use at most SCATTER_POINTS of those.
Heavy imports (matplotlib, scikit-learn) happen inside the functions: DAG files never pay for them.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from include.nightshift.spec import DatasetSpec

log = logging.getLogger(__name__)

MAX_POINTS = 50_000  # rows plotted at most (a seeded sample above this)
SCATTER_POINTS = 5_000  # points in a scatter plot at most (more only hide each other)
ROLES = ("challenger", "champion", "baseline")
COLORS = {"challenger": "#2563eb", "champion": "#d97706", "baseline": "#6b7280"}
SIZE = (6.4, 4.0)
WIDE = (9.6, 4.0)


@dataclass(frozen=True)
class Plot:
    """One plot: `id` names its file (<id>.png) and its <figure>; `alt` says in words what it shows."""

    id: str
    title: str
    alt: str
    png: bytes

    @property
    def file_name(self) -> str:
        return f"{self.id}.png"

    @property
    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


@dataclass(frozen=True)
class _Holdout:
    """The (sampled) labels and each role's scores, and how many rows the holdout had."""

    y: np.ndarray
    scores: dict[str, np.ndarray]
    rows: int
    spec: DatasetSpec
    evaluation: dict[str, Any]

    @property
    def roles(self) -> list[str]:
        return [r for r in ROLES if r in self.scores]

    @property
    def sampled(self) -> str:
        """What the alt texts say about the rows plotted."""
        if len(self.y) == self.rows:
            return f"{self.rows} holdout rows"
        return f"a seeded sample of {len(self.y)} of {self.rows} holdout rows"


def evaluation_plots(y_true: Any, scores: dict[str, Any], spec: DatasetSpec, *,
                     evaluation: dict[str, Any] | None = None) -> list[Plot]:
    """Every plot of the spec's task for the roles in `scores` (challenger, champion, baseline), row-aligned
    with `y_true` as evaluation.evaluate takes them; `evaluation` (its output) supplies what it already
    computed (task multiclass: per-class recall)."""
    holdout = _sample(np.asarray(y_true), {r: np.asarray(s, dtype=float) for r, s in scores.items() if s is not None},
                      spec, evaluation or {})
    drawers = {"binary": _BINARY, "multiclass": _MULTICLASS, "regression": _REGRESSION}[spec.task]
    plots = []
    for plot_id, title, draw in drawers:
        try:
            plots.append(_draw(plot_id, title, draw, holdout))
        except Exception:  # a plot that cannot be drawn never fails the evaluation: the gate does not read it
            log.exception("the %s plot of %s could not be drawn: left out of the report", plot_id, spec.name)
    return plots


def _sample(y: np.ndarray, scores: dict[str, np.ndarray], spec: DatasetSpec, evaluation: dict) -> _Holdout:
    """At most MAX_POINTS rows, the same seeded rows for every role (in their original order)."""
    rows = len(y)
    for role, s in scores.items():
        if len(s) != rows:
            raise ValueError(f"evaluation_plots: {role} has {len(s)} scores for {rows} labels")
    if rows > MAX_POINTS:
        keep = np.sort(np.random.default_rng(spec.training.seed).choice(rows, MAX_POINTS, replace=False))
        y, scores = y[keep], {r: s[keep] for r, s in scores.items()}
    return _Holdout(y=y, scores=scores, rows=rows, spec=spec, evaluation=evaluation)


def _draw(plot_id: str, title: str, draw: Callable[[Any, _Holdout], str], holdout: _Holdout) -> Plot:
    """One figure drawn, turned into PNG bytes, then cleared (its memory freed at once)."""
    from matplotlib.figure import Figure

    from include.nightshift.reports import png_bytes

    fig = Figure(figsize=WIDE if plot_id in _WIDE_PLOTS else SIZE)
    try:
        alt = draw(fig, holdout)
        fig.suptitle(title, x=0.01, ha="left", fontsize=11)
        return Plot(id=plot_id, title=title, alt=f"{title}: {alt}", png=png_bytes(fig))
    finally:
        fig.clear()


def _axes(fig: Any, xlabel: str, ylabel: str, ax: Any = None) -> Any:
    ax = ax if ax is not None else fig.add_subplot()
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, color="#e5e7eb", linewidth=0.6)
    ax.set_axisbelow(True)
    return ax


def _legend(ax: Any, loc: str = "best") -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc=loc, fontsize=8, frameon=False)


def _note(ax: Any, text: str) -> None:
    """A plot that cannot be drawn says why, in the plot itself."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=9, color="#b91c1c")


def _both_classes(y: np.ndarray) -> bool:
    return len(np.unique(y)) == 2


def _listing(values: dict[str, str]) -> str:
    return ", ".join(f"{role} {value}" for role, value in values.items())


# --------------------------------------------------------------------------- task binary


def _roc(fig: Any, h: _Holdout) -> str:
    from sklearn.metrics import roc_auc_score, roc_curve

    ax = _axes(fig, "false positive rate", "true positive rate")
    ax.plot([0, 1], [0, 1], linestyle=":", color="#9ca3af", linewidth=0.8)
    if not _both_classes(h.y):
        _note(ax, "undefined: the holdout has one class only")
        return f"undefined, {h.sampled} of one class only."
    aucs = {}
    for role in h.roles:
        fpr, tpr, _ = roc_curve(h.y, h.scores[role])
        aucs[role] = f"AUC {roc_auc_score(h.y, h.scores[role]):.4f}"
        ax.plot(fpr, tpr, color=COLORS[role], label=f"{role} ({aucs[role]})")
    _legend(ax, "lower right")
    return f"{_listing(aucs)}, on {h.sampled}."


def _precision_recall(fig: Any, h: _Holdout) -> str:
    from sklearn.metrics import average_precision_score, precision_recall_curve

    ax = _axes(fig, "recall", "precision")
    if not _both_classes(h.y):
        _note(ax, "undefined: the holdout has one class only")
        return f"undefined, {h.sampled} of one class only."
    rate = float(np.mean(h.y))
    ax.axhline(rate, linestyle=":", color="#9ca3af", linewidth=0.8, label=f"positive rate {rate:.3f}")
    aps = {}
    for role in h.roles:
        precision, recall, _ = precision_recall_curve(h.y, h.scores[role])
        aps[role] = f"average precision {average_precision_score(h.y, h.scores[role]):.4f}"
        ax.plot(recall, precision, color=COLORS[role], label=f"{role} ({aps[role]})")
    ax.set_ylim(0, 1.02)
    _legend(ax, "upper right")
    return f"{_listing(aps)}; positive rate {rate:.3f}, on {h.sampled}."


def _calibration(fig: Any, h: _Holdout) -> str:
    from sklearn.calibration import calibration_curve

    ax = _axes(fig, "mean predicted probability (10 quantile bins)", "observed share of positives")
    ax.plot([0, 1], [0, 1], linestyle=":", color="#9ca3af", linewidth=0.8, label="perfectly calibrated")
    briers = {}
    for role in h.roles:
        s = np.clip(h.scores[role], 0.0, 1.0)
        observed, predicted = calibration_curve(h.y, s, n_bins=10, strategy="quantile")
        briers[role] = f"Brier {np.mean((s - h.y) ** 2):.4f}"
        ax.plot(predicted, observed, marker="o", markersize=3, color=COLORS[role], label=f"{role} ({briers[role]})")
    _legend(ax, "upper left")
    return f"observed share of positives against the predicted probability; {_listing(briers)}, on {h.sampled}."


def _score_histograms(fig: Any, h: _Holdout) -> str:
    """Champion and challenger (the baseline only without a champion) per true label, side by side."""
    roles = [r for r in ("challenger", "champion") if r in h.scores] or h.roles
    bins = np.linspace(0.0, 1.0, 41)
    means = {}
    for i, label in enumerate((0, 1)):
        ax = _axes(fig, "score", "share of rows" if i == 0 else "", fig.add_subplot(1, 2, i + 1))
        ax.set_title(f"true label {label} ({int((h.y == label).sum())} rows)", fontsize=9)
        for role in roles:
            s = h.scores[role][h.y == label]
            if len(s):
                ax.hist(np.clip(s, 0, 1), bins=bins, weights=np.full(len(s), 1 / len(s)), histtype="step",
                        color=COLORS[role], linewidth=1.4, label=role)
                means[f"{role} label {label}"] = f"mean score {s.mean():.3f}"
        _legend(ax, "upper center")
    return f"{' and '.join(roles)} scores, for true label 0 and 1: {_listing(means)}, on {h.sampled}."


def _confusion(ax: Any, matrix: np.ndarray, names: list[str], title: str) -> None:
    """Counts in each cell, shaded by the share of its true class (row)."""
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ticks = range(len(names))
    ax.set_xticks(ticks, names, rotation=30 if len(names) > 2 else 0, fontsize=8)
    ax.set_yticks(ticks, names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, f"{count}", ha="center", va="center", fontsize=8,
                color="white" if shares[i, j] > 0.6 else "black")


def _matrix_roles(h: _Holdout) -> list[str]:
    return [r for r in ("challenger", "champion") if r in h.scores]


def _confusion_binary(fig: Any, h: _Holdout) -> str:
    from sklearn.metrics import confusion_matrix

    threshold = float(h.spec.scoring.decision_threshold)
    roles, said = _matrix_roles(h), {}
    for i, role in enumerate(roles):
        matrix = confusion_matrix(h.y, (h.scores[role] >= threshold).astype(int), labels=[0, 1])
        _confusion(fig.add_subplot(1, len(roles), i + 1), matrix, ["0", "1"], role)
        (tn, fp), (fn, tp) = matrix
        said[role] = f"{tp} true positives, {fp} false positives, {fn} false negatives, {tn} true negatives"
    return (f"at scoring.decision_threshold {threshold:g}: {'; '.join(f'{r}: {t}' for r, t in said.items())}, "
            f"on {h.sampled}.")


def _lift(fig: Any, h: _Holdout) -> str:
    """Positive rate among the top-scored share of rows, over the positive rate of all rows."""
    ax = _axes(fig, "share of rows targeted (highest scores first)", "lift")
    rate = float(np.mean(h.y))
    if rate == 0:
        _note(ax, "undefined: the holdout has no positive row")
        return f"undefined, {h.sampled} without a positive row."
    ax.axhline(1.0, linestyle=":", color="#9ca3af", linewidth=0.8, label="random targeting")
    shares = np.linspace(0.01, 1.0, 100)
    top = {}
    for role in h.roles:
        ordered = h.y[np.argsort(-h.scores[role], kind="stable")]
        counts = np.maximum(1, np.round(shares * len(ordered)).astype(int))
        lift = np.cumsum(ordered)[counts - 1] / counts / rate
        top[role] = f"lift {lift[9]:.2f} in the top 10%"
        ax.plot(shares, lift, color=COLORS[role], label=f"{role} ({top[role]})")
    ax.set_ylim(bottom=0)
    _legend(ax, "upper right")
    return f"{_listing(top)}, on {h.sampled}."


_BINARY = (("roc", "ROC curve", _roc), ("precision_recall", "Precision-recall curve", _precision_recall),
           ("calibration", "Calibration curve", _calibration),
           ("score_histogram", "Score histograms, champion vs challenger", _score_histograms),
           ("confusion_matrix", "Confusion matrix at the decision threshold", _confusion_binary),
           ("lift", "Lift", _lift))


# --------------------------------------------------------------------------- task multiclass


def _per_class_recall(fig: Any, h: _Holdout) -> str:
    """Grouped bars: each class's recall for every role (as evaluation.evaluate recorded it)."""
    from include.nightshift.evaluation import per_class_recall

    classes = list(h.spec.label.classes)
    recorded = h.evaluation.get("per_class_recall") or {}
    ax = _axes(fig, "class", "recall (its rows predicted as it)")
    width = 0.8 / max(len(h.roles), 1)
    said = {}
    for i, role in enumerate(h.roles):
        recall = recorded.get(role) or per_class_recall(h.y, h.scores[role], classes)
        values = [np.nan if recall.get(c) is None else recall[c] for c in classes]
        ax.bar(np.arange(len(classes)) + (i - (len(h.roles) - 1) / 2) * width, values, width=width,
               color=COLORS[role], label=role)
        said[role] = ", ".join(f"{c} {v:.2f}" for c, v in zip(classes, values) if v == v)
    ax.set_xticks(range(len(classes)), classes, rotation=30 if len(classes) > 4 else 0, fontsize=8)
    ax.set_ylim(0, 1.05)
    _legend(ax, "upper right")
    return f"{'; '.join(f'{r}: {t}' for r, t in said.items())}, on {h.rows} holdout rows."


def _confusion_multiclass(fig: Any, h: _Holdout) -> str:
    from sklearn.metrics import confusion_matrix

    classes = list(h.spec.label.classes)
    roles, said = _matrix_roles(h), {}
    for i, role in enumerate(roles):
        predicted = h.scores[role].argmax(axis=1)
        matrix = confusion_matrix(h.y, predicted, labels=list(range(len(classes))))
        _confusion(fig.add_subplot(1, len(roles), i + 1), matrix, classes, role)
        said[role] = f"{int(np.trace(matrix))} of {int(matrix.sum())} rows predicted as their class"
    return f"true class against the most probable class: {'; '.join(f'{r}: {t}' for r, t in said.items())}."


_MULTICLASS = (("per_class_recall", "Recall per class", _per_class_recall),
               ("confusion_matrix", "Confusion matrix", _confusion_multiclass))


# --------------------------------------------------------------------------- task regression


def _predicted_vs_actual(fig: Any, h: _Holdout) -> str:
    roles = _matrix_roles(h)
    points = np.sort(np.random.default_rng(h.spec.training.seed).choice(
        len(h.y), min(len(h.y), SCATTER_POINTS), replace=False))
    low, high = float(np.min(h.y)), float(np.max(h.y))
    said = {}
    for i, role in enumerate(roles):
        ax = _axes(fig, "actual", "predicted" if i == 0 else "", fig.add_subplot(1, len(roles), i + 1))
        ax.scatter(h.y[points], h.scores[role][points], s=4, alpha=0.3, color=COLORS[role], linewidths=0)
        ax.plot([low, high], [low, high], linestyle=":", color="#374151", linewidth=0.8)
        varies = np.ptp(h.y) > 0 and np.ptp(h.scores[role]) > 0
        correlation = np.corrcoef(h.y, h.scores[role])[0, 1] if varies else np.nan
        said[role] = f"correlation {correlation:.3f}"
        ax.set_title(f"{role} ({said[role]})", fontsize=9)
    return f"{_listing(said)}; {len(points)} points drawn of {h.rows} holdout rows."


def _residuals(fig: Any, h: _Holdout) -> str:
    ax = _axes(fig, "residual (predicted - actual)", "share of rows")
    residuals = {role: h.scores[role] - h.y for role in h.roles}
    spread = np.concatenate(list(residuals.values()))
    low, high = np.percentile(spread, [0.5, 99.5]) if len(spread) else (0.0, 1.0)
    bins = np.linspace(low, high if high > low else low + 1, 50)
    said = {}
    for role, r in residuals.items():
        ax.hist(np.clip(r, bins[0], bins[-1]), bins=bins, weights=np.full(len(r), 1 / max(len(r), 1)),
                histtype="step", color=COLORS[role], linewidth=1.4, label=role)
        said[role] = f"mean {np.mean(r):+.3f}, standard deviation {np.std(r):.3f}"
    ax.axvline(0, linestyle=":", color="#374151", linewidth=0.8)
    _legend(ax, "upper right")
    return f"{'; '.join(f'{r}: {t}' for r, t in said.items())}, on {h.sampled}."


_REGRESSION = (("predicted_vs_actual", "Predicted vs actual", _predicted_vs_actual),
               ("residuals", "Residual histogram", _residuals))

_WIDE_PLOTS = ("score_histogram", "confusion_matrix", "predicted_vs_actual")
