"""One example, step by step through the model: what the ML Test Score calls debugging on a single example.

On every night that trains, the evaluate step takes the first row of the challenger's holdout and records
what each stage of the model made of it: the raw feature values, the values after each preprocessing step of
the pipeline (named as the step names its outputs), the final estimator's score, and, for a calibrated model,
the calibrated score. Recomputed this way, the score must equal what the model as a whole gives the row
(within 1e-9): a model whose stages cannot be observed, or do not add up to its output, fails the check.

The trace is evidence (pipeline_runs.details.example_trace, evaluation.json); nothing is refused on it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from include.nightshift.spec import DatasetSpec

TOLERANCE = 1e-9
SHOWN = 40  # values of a stage's output kept at most


def trace_example(model: Any, holdout: pd.DataFrame, spec: DatasetSpec) -> dict[str, Any]:
    """The first holdout row through `model` stage by stage; "passed": the stages reproduce the model's score.
    {"not_measured": why} for a model that is not an sklearn Pipeline (or a calibrated one) or a multiclass task."""
    from include.nightshift.training import features_frame, predict_scores

    pipeline, calibrated = _pipeline(model)
    if pipeline is None or spec.task == "multiclass" or not len(holdout):
        return {"not_measured": f"no stages to observe in a {type(model).__name__} (task {spec.task}, "
                                f"{len(holdout)} rows)"}
    row = holdout.iloc[:1]
    values: Any = features_frame(row, spec)
    stages = [{"stage": "input", "values": _shown(values.iloc[0].to_dict())}]
    for name, step in pipeline.steps[:-1]:
        values = step.transform(values)
        stages.append({"stage": name, "values": _shown(_named(step, values))})
    estimator = pipeline.steps[-1][1]
    raw = float(estimator.predict(values)[0] if spec.task == "regression" else
                estimator.predict_proba(values)[0][list(estimator.classes_).index(1)])
    final = float(calibrated.predict_proba(features_frame(row, spec))[0][list(calibrated.classes_).index(1)]
                  if calibrated is not None else raw)
    stages.append({"stage": pipeline.steps[-1][0], "score": raw})
    if calibrated is not None:
        stages.append({"stage": "calibration", "score": final})
    whole = float(predict_scores(model, row, spec)[0])
    key = spec.entity_key.name
    return {"passed": abs(whole - final) <= TOLERANCE, "row": _plain(row[key].iloc[0]) if key in row else 0,
            "score": whole, "traced": final, "difference": abs(whole - final), "tolerance": TOLERANCE,
            "stages": stages}


def _pipeline(model: Any) -> tuple[Any, Any]:
    """(the sklearn Pipeline inside, the calibrated wrapper or None); (None, None) when there is none."""
    from sklearn.pipeline import Pipeline

    if isinstance(model, Pipeline):
        return model, None
    inner = getattr(getattr(model, "estimator", None), "estimator", None)  # CalibratedClassifierCV(FrozenEstimator)
    return (inner, model) if isinstance(inner, Pipeline) else (None, None)


def _named(step: Any, values: Any) -> dict[str, Any]:
    array = values.toarray() if hasattr(values, "toarray") else np.asarray(values)
    try:
        names = [str(n) for n in step.get_feature_names_out()]
    except Exception:  # a step that cannot name its outputs: numbered
        names = [f"x{i}" for i in range(array.shape[1])]
    return dict(zip(names, array[0].tolist()))


def _shown(values: dict[str, Any]) -> dict[str, Any]:
    return {str(k): _plain(v) for k, v in list(values.items())[:SHOWN]}


def _plain(value: Any) -> Any:
    value = value.item() if hasattr(value, "item") else value
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value if isinstance(value, (bool, int, float, str)) or value is None else str(value)
