"""Does every feature earn its place? Permutation importance of the challenger on its holdout.

On every night that trains, the evaluate step scores the challenger's out-of-time holdout once as it is
and once per feature with that feature's values shuffled (a seeded permutation, the other columns kept):
the drop of the promotion metric is the feature's benefit, in the metric's direction (positive: the model
uses it to predict better). A feature whose benefit is not above zero adds nothing the model can use on
rows it never saw: it is flagged (evidence, not a rule: nothing is refused on it). The ML Test Score's
"all features are beneficial" test reads it (test_score.features_beneficial).

It costs one prediction per feature over at most MAX_ROWS holdout rows (a seeded sample above that, the
same rows for every feature; recorded in `seconds` and `rows`): at a million rows a night the holdout is
millions of rows, and shuffling one feature of all of them per feature would cost more than the training.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pandas as pd

from include.nightshift.spec import DatasetSpec

MAX_ROWS = 20_000


def feature_benefit(model: Any, holdout: pd.DataFrame, y: np.ndarray, spec: DatasetSpec, *,
                    max_rows: int = MAX_ROWS) -> dict[str, Any]:
    """Each feature's benefit (the metric lost when it is shuffled), the features that add nothing and the
    verdict ("passed": none); {"not_measured": why} when the holdout metric is undefined."""
    from include.nightshift.evaluation import metric_value
    from include.nightshift.training import predict_scores

    began = time.perf_counter()
    if len(holdout) > max_rows:
        picked = np.sort(np.random.default_rng(spec.training.seed).choice(len(holdout), max_rows, replace=False))
        holdout, y = holdout.iloc[picked], np.asarray(y)[picked]
    metric, threshold = spec.promotion.metric, spec.scoring.decision_threshold
    base = float(metric_value(metric, y, predict_scores(model, holdout, spec), threshold))
    if not math.isfinite(base) or not len(holdout):
        return {"not_measured": f"the challenger's holdout {metric} is undefined ({len(holdout)} rows)"}
    sign = 1.0 if spec.promotion.greater_is_better else -1.0
    rng = np.random.default_rng(spec.training.seed)
    benefits = {}
    for name in spec.feature_names:
        shuffled = holdout.copy()
        shuffled[name] = rng.permutation(shuffled[name].to_numpy())
        value = float(metric_value(metric, y, predict_scores(model, shuffled, spec), threshold))
        benefits[name] = round(sign * (base - value), 6) if math.isfinite(value) else None
    nothing = sorted(name for name, gain in benefits.items() if gain is None or gain <= 0)
    return {"passed": not nothing, "metric": metric, "holdout": round(base, 6), "features": len(benefits),
            "adds_nothing": nothing, "benefit": benefits, "rows": int(len(holdout)),
            "seconds": round(time.perf_counter() - began, 3)}
