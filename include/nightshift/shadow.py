"""Shadow scoring: a challenger scores the nights beside the champion, unserved, until realised labels decide.

A holdout is one sample of the past. A challenger that missed the gate by a hair (it did not beat the champion
by promotion.min_improvement, and fell short by at most shadow.max_gap), or any version named in the trigger
form (shadow_version), becomes the *shadow*: the MLflow alias `shadow`. Every night it scores the same snapshot
as the champion into <schema>.predictions_shadow, never into predictions (score and publish steps). When the
labels of those days arrive, the monitor step scores the same labelled rows with both (measure_shadow): a
*paired* comparison per labelled day, so a hard day moves both and cancels out.

Once the shadow beat the champion on shadow.min_nights consecutive newest labelled days, each by
shadow.min_improvement, the same gate that judges a holdout (evaluation.gate: floor, champion, slices,
baseline, registry round trip) judges the pooled rows of those days. If it passes, decide says
`shadow_wins`, the train step hands the shadow on instead of fitting (shadow_challenger), and evaluate
promotes it through the same audited path as any promotion (promotion.promote), the realised evidence in the
verdict and the audit row. Any promotion retires the shadow (its comparison was with the old champion).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from include.nightshift.spec import DatasetSpec

if TYPE_CHECKING:
    from include.nightshift.registry import ModelVersionInfo, Registry
    from include.nightshift.steps import TrainingStep, VerdictStep

log = logging.getLogger(__name__)

REASON = "shadow_wins"
BASIS = "realised labels"  # VerdictStep.evaluation["basis"] of a shadow's verdict (a holdout's has none)


def narrow_miss(verdict: VerdictStep, spec: DatasetSpec) -> str | None:
    """Why a challenger the gate rejected becomes the shadow, or None: only the champion check failed, and it
    fell short of the champion's holdout metric by at most shadow.max_gap (negative: it was better, by less
    than min_improvement). A version that failed any other check (floor, slices, baseline, sanity) never shadows."""
    if verdict.promoted or verdict.challenger_version is None or spec.shadow.max_gap is None:
        return None
    if verdict.evaluation.get("basis") == BASIS:  # a shadow judged on its labels is already the shadow
        return None
    failed = [c.get("name") for c in verdict.checks if not c.get("passed")]
    if failed != ["champion"] or verdict.champion is None or verdict.challenger is None:
        return None
    gap = verdict.champion - verdict.challenger if spec.promotion.greater_is_better else \
        verdict.challenger - verdict.champion
    if gap > spec.shadow.max_gap:
        return None
    return (f"v{verdict.challenger_version} missed promotion.min_improvement on the holdout by a narrow margin "
            f"({spec.promotion.metric} {verdict.challenger:.4f} vs champion v{verdict.champion_version} "
            f"{verdict.champion:.4f}: short by {gap:+.4f} <= shadow.max_gap {spec.shadow.max_gap:g})")


def name_shadow(registry: Registry, spec: DatasetSpec, requested: int | None, *, dry_run: bool) -> ModelVersionInfo | None:
    """The shadow tonight: the version named by the trigger form (shadow_version), which the alias then points
    at (a dry run only measures it: the alias stays), else the alias's. A named version that does not exist, or
    is the champion, is refused with the parameter's name. A shadow that is the champion shadows nothing."""
    champion = registry.champion(spec.model_name)
    if requested is not None:
        try:
            found = registry.version(spec.model_name, int(requested))
        except Exception as exc:  # MLflow's RESOURCE_DOES_NOT_EXIST, or an unreachable registry: say which param
            raise ValueError(f"shadow_version {requested}: no version {requested} of {spec.model_name} in the "
                             f"registry ({exc})") from exc
        if champion is not None and champion.version == found.version:
            raise ValueError(f"shadow_version {requested}: v{requested} is the champion of {spec.model_name}; "
                             "name another version to score beside it")
        if not dry_run:
            registry.set_shadow(spec.model_name, found.version)
            log.info("%s v%s is the shadow (named by the trigger form)", spec.model_name, found.version)
        return found
    shadow = registry.shadow(spec.model_name)
    if shadow is not None and champion is not None and shadow.version == champion.version:
        return None
    return shadow


def _gain(a: float, b: float, greater_is_better: bool) -> float:
    return a - b if greater_is_better else b - a


def beats(gain: float, margin: float) -> bool:
    """Better by `margin` (strictly better at margin 0: a tie is not a win); NaN never wins."""
    if not math.isfinite(gain):
        return False
    return gain > 0 if margin == 0 else gain >= margin


def daily_comparison(days: np.ndarray, y: np.ndarray, champion: np.ndarray, shadow: np.ndarray,
                     spec: DatasetSpec) -> list[dict[str, Any]]:
    """Per labelled day (oldest first): rows, both metrics on those same rows, the shadow's gain, and whether
    it beat the champion by shadow.min_improvement. An undefined metric (e.g. AUC on one class) is null and
    does not win."""
    from include.nightshift.evaluation import metric_value

    pro, margin = spec.promotion, spec.shadow_min_improvement
    out = []
    for day in sorted(set(days)):
        mask = days == day
        values = [metric_value(pro.metric, y[mask], s[mask], spec.scoring.decision_threshold) for s in (champion, shadow)]
        gain = _gain(values[1], values[0], bool(pro.greater_is_better))
        out.append({"day": day.isoformat(), "rows": int(mask.sum()), "champion": _finite(values[0]),
                    "shadow": _finite(values[1]), "gain": _finite(gain), "beats": beats(gain, margin)})
    return out


def nights_won(days: list[dict[str, Any]]) -> int:
    """Consecutive newest labelled days on which the shadow beat the champion."""
    won = 0
    for day in reversed(days):
        if not day["beats"]:
            break
        won += 1
    return won


def _finite(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def measure_shadow(registry: Registry, spec: DatasetSpec, shadow: ModelVersionInfo, champion: ModelVersionInfo,
                   labelled: Any, champion_scores: np.ndarray) -> dict[str, Any]:
    """The shadow against the champion on the labelled rows the champion was measured on (`labelled`, with
    `champion_scores`), kept to the days the shadow never saw either: per day, and, once it won
    shadow.min_nights days in a row, the gate on those days' pooled rows. The record decide and the Model
    health page read (pipeline_runs.details -> decision -> details -> shadow)."""
    from include.nightshift.training import labels, predict_scores, row_days, training_days

    base = {"version": shadow.version, "champion_version": champion.version, "metric": spec.promotion.metric,
            "greater_is_better": bool(spec.promotion.greater_is_better), "min_nights": spec.shadow_min_nights,
            "min_improvement": spec.shadow_min_improvement}
    if shadow.trained_for is None:
        return {**base, "not_measured": f"v{shadow.version} has no training night (registered by hand?)"}
    holdout_end = training_days(spec, shadow.trained_for)[0]
    days = row_days(labelled, spec)
    keep = days > holdout_end
    if not keep.any():
        return {**base, "not_measured": f"no labelled day after v{shadow.version}'s holdout (ends {holdout_end}) "
                                        "in the realised window yet"}
    rows = labelled[keep].reset_index(drop=True)
    model = registry.load_model(spec.model_name, shadow.version)
    scores = {"challenger": predict_scores(model, rows, spec), "champion": champion_scores[keep]}
    y = labels(rows, spec)
    compared = daily_comparison(days[keep], y, scores["champion"], scores["challenger"], spec)
    won = nights_won(compared)
    record = {**base, "holdout_end": holdout_end.isoformat(), "days": compared, "nights_won": won,
              "wins": False, "verdict": None}
    if won >= spec.shadow_min_nights:
        newest = {dt.date.fromisoformat(d["day"]) for d in compared[-spec.shadow_min_nights:]}
        judged = np.array([d in newest for d in days[keep]], dtype=bool)
        verdict, evaluation = _gate(registry, spec, shadow, model, rows[judged].reset_index(drop=True), y[judged],
                                    {role: s[judged] for role, s in scores.items()})
        record.update(wins=bool(verdict.promote), verdict=verdict.to_dict(), evaluation=evaluation)
    record["summary"] = _summary(record, spec)
    log.info("shadow: %s", record["summary"])
    return record


def _gate(registry: Registry, spec: DatasetSpec, shadow: ModelVersionInfo, model: Any, rows: Any, y: np.ndarray,
          scores: dict[str, np.ndarray]) -> tuple[Any, dict]:
    """evaluation.gate on realised rows: the shadow as the challenger, its own baseline, shadow.min_improvement
    over the champion, and the round trip of its logged training scores through the serving path."""
    from include.nightshift.evaluation import evaluate, gate
    from include.nightshift.registry import FAMILY_TAG
    from include.nightshift.skew import load_serving_check, verify_round_trip
    from include.nightshift.training import predict_scores

    scores = {**scores, "baseline": predict_scores(registry.load_baseline(shadow.run_id), rows, spec)}
    evaluation = evaluate(rows, y, scores, spec)
    trip = verify_round_trip(model, load_serving_check(registry, shadow.run_id), spec, shadow.version)
    promotion = dataclasses.replace(spec.promotion, min_improvement=spec.shadow_min_improvement)
    verdict = gate(evaluation, promotion, challenger_scores=scores["challenger"], roundtrip_equal=trip["passed"],
                   challenger_family=shadow.tags.get(FAMILY_TAG))
    return verdict, {**evaluation, "basis": BASIS, "round_trip": trip}


def _summary(record: dict[str, Any], spec: DatasetSpec) -> str:
    days, need = record["days"], spec.shadow_min_nights
    head = (f"shadow v{record['version']} vs champion v{record['champion_version']} on {len(days)} labelled day(s): "
            f"won the newest {record['nights_won']} of {need} needed (by {spec.shadow_min_improvement:g} "
            f"{spec.promotion.metric} each)")
    if record["verdict"] is None:
        return head
    return f"{head}; gate on their pooled rows: {record['verdict']['message']}"


def shadow_challenger(registry: Registry, spec: DatasetSpec, evidence: dict[str, Any]) -> TrainingStep:
    """The train step's output on a shadow_wins night: nothing is fitted, the shadow is tonight's challenger,
    carrying the realised evidence monitor measured (evaluate judges it: shadow_verdict)."""
    from include.nightshift.registry import FAMILY_TAG
    from include.nightshift.steps import TrainingStep

    info = registry.version(spec.model_name, int(evidence["version"]))
    judged = (evidence.get("evaluation") or {}).get("rows", 0)
    log.info("shadow_wins: v%s is tonight's challenger (no fit): %s", info.version, evidence.get("summary"))
    return TrainingStep(version=info.version, run_id=info.run_id, train_rows=0, holdout_rows=int(judged),
                        holdout_end=dt.date.fromisoformat(evidence["holdout_end"]), holdout_scores_url="",
                        snapshots_url="", family=info.tags.get(FAMILY_TAG) or "unknown", shadow=dict(evidence))


def shadow_verdict(evidence: dict[str, Any]) -> Any:
    """The gate's Verdict as monitor recorded it on the realised rows (evaluation.Verdict, for apply_policy)."""
    from include.nightshift.evaluation import Check, Verdict

    found = evidence["verdict"]
    return Verdict(promote=bool(found["promote"]), metric=found["metric"], challenger=found["challenger"],
                   champion=found["champion"], baseline=found["baseline"],
                   checks=[Check(c["name"], bool(c["passed"]), c["detail"], c.get("slices")) for c in found["checks"]])
