"""Evaluation and the promotion gate, on the demo data with constructed scores.

Scores are built from the real labels with a chosen separation, so each test knows which
model is better overall and on which slice, and asserts the gate's verdict and numbers.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, f1_score, log_loss, roc_auc_score

from include.nightshift.demo_data import generate_day
from include.nightshift.evaluation import Check, Verdict, evaluate, gate, metric_value


@pytest.fixture(scope="module")
def holdout() -> pd.DataFrame:
    return generate_day(dt.date(2026, 2, 3), 3000, seed=11)


@pytest.fixture(scope="module")
def y(holdout: pd.DataFrame) -> np.ndarray:
    return holdout["churned"].to_numpy()


def scores_for(y: np.ndarray, strength: float, seed: int) -> np.ndarray:
    """Probabilities whose separation of the classes grows with `strength` (0: random)."""
    noise = np.random.default_rng(seed).normal(size=len(y))
    return 1.0 / (1.0 + np.exp(-(strength * (2 * y - 1) + noise - 1.5)))


def roles(y: np.ndarray, challenger: float = 0.8, champion: float | None = 0.6, baseline: float = 0.4) -> dict:
    out = {"challenger": scores_for(y, challenger, 1), "baseline": scores_for(y, baseline, 3)}
    if champion is not None:
        out["champion"] = scores_for(y, champion, 2)
    return out


def check(verdict: Verdict, name: str) -> Check:
    return next(c for c in verdict.checks if c.name == name)


def failed(verdict: Verdict) -> list[str]:
    return [c.name for c in verdict.checks if not c.passed]


def run_gate(holdout, y, scores, spec, roundtrip: bool | None = True) -> tuple[dict, Verdict]:
    ev = evaluate(holdout, y, scores, spec)
    return ev, gate(ev, spec.promotion, challenger_scores=scores["challenger"], roundtrip_equal=roundtrip)


def with_promotion(spec, **changes):
    return replace(spec, promotion=replace(spec.promotion, **changes))


# --------------------------------------------------------------------------- metric_value


def test_metric_value_matches_sklearn(y):
    s = scores_for(y, 0.7, 5)
    assert metric_value("roc_auc", y, s) == pytest.approx(roc_auc_score(y, s))
    assert metric_value("average_precision", y, s) == pytest.approx(average_precision_score(y, s))
    assert metric_value("log_loss", y, s) == pytest.approx(log_loss(y, s))
    assert metric_value("f1", y, s, threshold=0.3) == pytest.approx(f1_score(y, s >= 0.3))
    assert metric_value("accuracy", y, s, threshold=0.3) == pytest.approx(np.mean((s >= 0.3) == y))


def test_metric_value_is_nan_when_undefined():
    zeros, s = np.zeros(10, dtype=int), np.linspace(0.1, 0.4, 10)
    assert math.isnan(metric_value("roc_auc", zeros, s))
    assert math.isnan(metric_value("average_precision", zeros, s))
    assert math.isnan(metric_value("f1", zeros, s))  # no positive label nor prediction
    assert metric_value("accuracy", zeros, s) == 1.0  # still defined on one class
    assert math.isnan(metric_value("roc_auc", np.array([], dtype=int), np.array([])))
    assert math.isnan(metric_value("roc_auc", np.array([0, 1]), np.array([0.2, np.nan])))


def test_metric_value_rejects_unknown_metric_and_misaligned_input():
    with pytest.raises(ValueError, match="unknown metric"):
        metric_value("precision_at_k", np.array([0, 1]), np.array([0.1, 0.9]))
    with pytest.raises(ValueError, match="2 labels but 3 scores"):
        metric_value("roc_auc", np.array([0, 1]), np.array([0.1, 0.9, 0.5]))


# --------------------------------------------------------------------------- evaluate


def test_evaluate_reports_overall_and_every_slice_json_safe(holdout, y, churn_spec):
    scores = roles(y)
    ev = evaluate(holdout, y, scores, churn_spec)
    json.dumps(ev, allow_nan=False)
    assert ev["metric"] == "roc_auc" and ev["greater_is_better"] is True and ev["rows"] == len(y)
    assert ev["overall"]["challenger"] == pytest.approx(roc_auc_score(y, scores["challenger"]))
    assert ev["overall"]["challenger"] > ev["overall"]["champion"] > ev["overall"]["baseline"]
    for column in churn_spec.promotion.slice_columns:
        entries = [s for s in ev["slices"] if s["column"] == column]
        assert {s["value"] for s in entries} == set(holdout[column].unique())
        assert sum(s["rows"] for s in entries) == len(holdout)
    basic = next(s for s in ev["slices"] if s["column"] == "plan" and s["value"] == "basic")
    mask = (holdout["plan"] == "basic").to_numpy()
    assert basic["champion"] == pytest.approx(roc_auc_score(y[mask], scores["champion"][mask]))


def test_evaluate_skips_small_slices_and_keeps_missing_values(holdout, y, churn_spec):
    frame = holdout.copy()
    frame.loc[frame.index[:400], "region"] = None
    counts = frame["plan"].value_counts()
    spec = with_promotion(churn_spec, min_slice_rows=int(counts.min()) + 1)
    ev = evaluate(frame, y, roles(y), spec)
    json.dumps(ev, allow_nan=False)
    smallest = next(s for s in ev["slices"] if s["column"] == "plan" and s["value"] == counts.idxmin())
    assert smallest["skipped"] is True and "challenger" not in smallest
    missing = next(s for s in ev["slices"] if s["column"] == "region" and s["value"] is None)
    assert missing["rows"] == 400 and missing["skipped"] is False and missing["challenger"] is not None


def test_evaluate_records_undefined_metric_as_null(holdout, y, churn_spec):
    y_one_class = np.zeros_like(y)
    ev = evaluate(holdout, y_one_class, roles(y), churn_spec)
    json.dumps(ev, allow_nan=False)
    assert ev["overall"] == {"challenger": None, "baseline": None, "champion": None}


def test_evaluate_refuses_misaligned_scores(holdout, y, churn_spec):
    with pytest.raises(ValueError, match="challenger"):
        evaluate(holdout, y, {"challenger": np.zeros(len(y) - 1)}, churn_spec)


# --------------------------------------------------------------------------- gate


def test_better_challenger_is_promoted_with_every_check_recorded(holdout, y, churn_spec):
    ev, verdict = run_gate(holdout, y, roles(y), churn_spec)
    assert verdict.promote, verdict.message()
    assert [c.name for c in verdict.checks] == ["thresholds", "finite", "floor", "champion", "slices", "baseline",
                                                "roundtrip"]
    assert all(c.passed for c in verdict.checks)
    assert verdict.challenger == pytest.approx(ev["overall"]["challenger"])
    assert f"{verdict.challenger:.4f} >= floor 0.7000" in check(verdict, "floor").detail
    assert f"champion {verdict.champion:.4f}" in check(verdict, "champion").detail
    assert "regression" in check(verdict, "slices").detail
    assert verdict.message().startswith("PROMOTE")
    record = verdict.to_dict()
    json.dumps(record, allow_nan=False)
    assert record["promote"] is True and len(record["checks"]) == 7


def test_nan_in_challenger_scores_rejects(holdout, y, churn_spec):
    scores = roles(y)
    scores["challenger"] = scores["challenger"].copy()
    scores["challenger"][7] = np.nan
    ev, verdict = run_gate(holdout, y, scores, churn_spec)
    assert not verdict.promote
    assert "1 of 3000 challenger scores are NaN" in check(verdict, "finite").detail
    # the metric itself is undefined, so floor, champion and baseline fail closed too
    assert ev["overall"]["challenger"] is None and verdict.challenger is None
    assert {"finite", "floor", "champion", "baseline"} <= set(failed(verdict))
    json.dumps(verdict.to_dict(), allow_nan=False)


def test_scores_outside_unit_interval_reject(holdout, y, churn_spec):
    scores = roles(y)
    ev = evaluate(holdout, y, scores, churn_spec)
    verdict = gate(ev, churn_spec.promotion, challenger_scores=scores["challenger"] * 2, roundtrip_equal=True)
    assert failed(verdict) == ["finite"]
    assert "outside [0, 1]" in check(verdict, "finite").detail


def test_challenger_below_floor_rejects(holdout, y, churn_spec):
    spec = with_promotion(churn_spec, floor=0.99)
    _, verdict = run_gate(holdout, y, roles(y), spec)
    assert failed(verdict) == ["floor"]
    assert "< floor 0.9900" in check(verdict, "floor").detail


def test_challenger_not_enough_better_than_champion_rejects(holdout, y, churn_spec):
    scores = roles(y)
    scores["champion"] = scores["challenger"].copy()  # identical: gain 0 < min_improvement
    _, verdict = run_gate(holdout, y, scores, churn_spec)
    assert failed(verdict) == ["champion"]
    assert "gain +0.0000 fails >= min_improvement 0.0020" in check(verdict, "champion").detail


def test_first_model_is_judged_on_floor_only(holdout, y, churn_spec):
    _, verdict = run_gate(holdout, y, roles(y, champion=None), churn_spec)
    assert verdict.promote and verdict.champion is None
    assert check(verdict, "champion").detail == "no champion: floor only"
    assert check(verdict, "slices").detail == "no champion: floor only"
    _, low = run_gate(holdout, y, roles(y, challenger=0.3, champion=None, baseline=0.0),
                      with_promotion(churn_spec, floor=0.9))
    assert failed(low) == ["floor"]


def test_challenger_worse_on_one_slice_only_rejects(holdout, y, churn_spec):
    scores = roles(y, challenger=1.0, champion=0.6)
    family = (holdout["plan"] == "family").to_numpy()
    scores["challenger"][family] = scores_for(y, 0.0, 9)[family]  # random on one plan only
    ev, verdict = run_gate(holdout, y, scores, churn_spec)
    assert ev["overall"]["challenger"] > ev["overall"]["champion"] + 0.002  # better overall ...
    assert failed(verdict) == ["slices"]  # ... but not on plan=family
    detail = check(verdict, "slices").detail
    assert "plan=family" in detail and "> slice_tolerance 0.0300" in detail
    assert "region=" not in detail.split("[")[0]  # the other slices are fine


def test_slices_both_undefined_are_noted_not_failed(churn_spec):
    ev = {"metric": "roc_auc", "greater_is_better": True, "rows": 4,
          "overall": {"challenger": 0.9, "champion": 0.8, "baseline": 0.6},
          "slices": [{"column": "plan", "value": "basic", "rows": 60, "skipped": False,
                      "challenger": None, "champion": None, "baseline": None},
                     {"column": "plan", "value": "family", "rows": 60, "skipped": False,
                      "challenger": None, "champion": 0.7, "baseline": 0.6}]}
    verdict = gate(ev, churn_spec.promotion, challenger_scores=np.array([0.1, 0.2, 0.8, 0.9]), roundtrip_equal=True)
    detail = check(verdict, "slices").detail
    assert failed(verdict) == ["slices"] and "plan=family" in detail and "cannot compare" in detail
    assert "1 undefined (plan=basic)" in detail
    basic, family = check(verdict, "slices").slices  # the record: neither judged nor failed, and failed
    assert (basic["outcome"], basic["passed"]) == ("undefined", None)
    assert (family["outcome"], family["passed"], family["challenger"], family["champion"]) == (
        "cannot_compare", False, None, 0.7)


def test_baseline_must_be_strictly_beaten_at_zero_margin(holdout, y, churn_spec):
    scores = roles(y)
    scores["baseline"] = scores["challenger"].copy()
    _, verdict = run_gate(holdout, y, scores, churn_spec)
    assert failed(verdict) == ["baseline"]
    assert "> 0 (strictly better)" in check(verdict, "baseline").detail
    _, margin = run_gate(holdout, y, roles(y), with_promotion(churn_spec, baseline_margin=0.5))
    assert failed(margin) == ["baseline"] and "baseline_margin 0.5000" in check(margin, "baseline").detail
    no_baseline = {k: v for k, v in roles(y).items() if k != "baseline"}
    _, missing = run_gate(holdout, y, no_baseline, churn_spec)
    assert failed(missing) == ["baseline"]


def _gate_as(holdout, y, scores, spec, family):
    ev = evaluate(holdout, y, scores, spec)
    return gate(ev, spec.promotion, challenger_scores=scores["challenger"], roundtrip_equal=True,
                challenger_family=family)


def test_a_logistic_challenger_equal_to_the_baseline_passes_the_baseline_check(holdout, y, churn_spec):
    """The holdout chose the baseline's own family: gain 0 passes (the margin is for complex models to earn
    their complexity), at margin 0 and above; any other family still has to be strictly better."""
    scores = roles(y)
    scores["baseline"] = scores["challenger"].copy()
    for spec in (churn_spec, with_promotion(churn_spec, baseline_margin=0.05)):
        verdict = _gate_as(holdout, y, scores, spec, "logistic_regression")
        assert verdict.promote and check(verdict, "baseline").passed
        assert "gain +0.0000 meets >= 0" in check(verdict, "baseline").detail
        assert "logistic_regression" in check(verdict, "baseline").detail
    for family in ("xgboost", "hist_gradient_boosting", None):
        assert failed(_gate_as(holdout, y, scores, churn_spec, family)) == ["baseline"]


def test_a_logistic_challenger_worse_than_the_baseline_still_fails(holdout, y, churn_spec):
    scores = roles(y, challenger=0.8, baseline=1.2)  # the default baseline beats a worse-tuned logistic one
    verdict = _gate_as(holdout, y, scores, churn_spec, "logistic_regression")
    assert failed(verdict) == ["baseline"]
    assert "fails >= 0" in check(verdict, "baseline").detail
    flat_baseline = {**roles(y), "baseline": np.full(len(y), 0.5)}  # one score for all: roc_auc 0.5
    assert _gate_as(holdout, y, flat_baseline, churn_spec, "logistic_regression").promote


@pytest.mark.parametrize("roundtrip, text", [(False, "differ"), (None, "not checked"), (np.False_, "differ"),
                                             ("yes", "not a boolean")])
def test_roundtrip_must_be_confirmed(holdout, y, churn_spec, roundtrip, text):
    _, verdict = run_gate(holdout, y, roles(y), churn_spec, roundtrip=roundtrip)
    assert failed(verdict) == ["roundtrip"] and text in check(verdict, "roundtrip").detail
    assert "roundtrip" in verdict.message() and verdict.message().startswith("REJECT")


def test_roundtrip_accepts_numpy_true(holdout, y, churn_spec):
    assert run_gate(holdout, y, roles(y), churn_spec, roundtrip=np.True_)[1].promote


def test_log_loss_lower_is_better(holdout, y, churn_spec):
    good, weak = scores_for(y, 1.0, 1), scores_for(y, 0.5, 2)
    spec = with_promotion(churn_spec, metric="log_loss", floor=0.6, min_improvement=0.01, slice_tolerance=0.05)
    scores = {"challenger": good, "champion": weak, "baseline": scores_for(y, 0.2, 3)}
    ev, verdict = run_gate(holdout, y, scores, spec)
    assert ev["greater_is_better"] is False
    assert ev["overall"]["challenger"] < ev["overall"]["champion"]
    assert verdict.promote, verdict.message()
    assert "<= ceiling 0.6000" in check(verdict, "floor").detail
    swapped = {"challenger": weak, "champion": good, "baseline": scores["baseline"]}
    _, reverse = run_gate(holdout, y, swapped, spec)
    assert "champion" in failed(reverse) and "slices" in failed(reverse)
    _, ceiling = run_gate(holdout, y, scores, with_promotion(spec, floor=0.05))
    assert failed(ceiling) == ["floor"] and "> ceiling 0.0500" in check(ceiling, "floor").detail


@pytest.mark.parametrize("setting", ["floor", "min_improvement", "slice_tolerance", "baseline_margin"])
@pytest.mark.parametrize("missing", [None, math.nan])
def test_missing_threshold_fails_closed(holdout, y, churn_spec, setting, missing):
    _, verdict = run_gate(holdout, y, roles(y), with_promotion(churn_spec, **{setting: missing}))
    assert not verdict.promote
    assert f"promotion.{setting}" in check(verdict, "thresholds").detail
    assert not check(verdict, "thresholds").passed


def test_missing_threshold_fails_closed_even_for_first_model(holdout, y, churn_spec):
    spec = with_promotion(churn_spec, min_improvement=None)
    _, verdict = run_gate(holdout, y, roles(y, champion=None), spec)
    assert failed(verdict) == ["thresholds"]


def test_evaluation_of_another_metric_fails_closed(holdout, y, churn_spec):
    ev = evaluate(holdout, y, roles(y), churn_spec)
    spec = with_promotion(churn_spec, metric="average_precision")
    verdict = gate(ev, spec.promotion, challenger_scores=roles(y)["challenger"], roundtrip_equal=True)
    assert not verdict.promote and "does not match" in check(verdict, "thresholds").detail


# --------------------------------------------------------------------------- non-finite challengers


@pytest.mark.parametrize("bad", [np.inf, -np.inf], ids=["inf", "-inf"])
def test_infinite_challenger_scores_reject(holdout, y, churn_spec, bad):
    scores = roles(y)
    scores["challenger"] = scores["challenger"].copy()
    scores["challenger"][[3, 11]] = bad
    ev, verdict = run_gate(holdout, y, scores, churn_spec)
    assert not verdict.promote
    assert not check(verdict, "finite").passed
    assert "2 of 3000 challenger scores are NaN or infinite" in check(verdict, "finite").detail
    assert "finite: 2 of 3000" in verdict.message()
    assert ev["overall"]["challenger"] is None  # the metric of non-finite scores is undefined, recorded as null
    json.dumps(verdict.to_dict(), allow_nan=False)


def _nan_every_tenth_row(features: np.ndarray) -> np.ndarray:
    """The fault: a broken feature step that loses every tenth row's values."""
    out = np.array(features, dtype=float, copy=True)
    out[::10] = np.nan
    return out


def test_model_whose_predict_proba_returns_nan_is_refused(holdout, y, churn_spec):
    """A real fitted pipeline (the baseline's preprocessing and logistic regression) with a NaN-injecting
    step before the estimator. scikit-learn would refuse NaN input, unless finiteness checks are switched off
    for speed (assume_finite): then predict_proba really returns NaN, and the gate must catch it."""
    import sklearn
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    from include.nightshift import training

    fitted = training.fit(training.build_baseline(churn_spec), generate_day(dt.date(2026, 2, 1), 3000, seed=5),
                          churn_spec)
    broken = Pipeline([("prep", fitted.named_steps["prep"]), ("inject", FunctionTransformer(_nan_every_tenth_row)),
                       ("model", fitted.named_steps["model"])])
    with sklearn.config_context(assume_finite=True):
        challenger = training.predict_scores(broken, holdout, churn_spec)
    assert int(np.isnan(challenger).sum()) == 300 and np.isfinite(challenger[1::10]).all()

    scores = {**roles(y), "challenger": challenger}
    ev, verdict = run_gate(holdout, y, scores, churn_spec)
    assert not verdict.promote
    assert "300 of 3000 challenger scores are NaN or infinite" in check(verdict, "finite").detail
    assert {"finite", "floor", "champion", "baseline"} <= set(failed(verdict))
    assert verdict.message().startswith("REJECT") and "finite: 300 of 3000" in verdict.message()
    json.dumps(verdict.to_dict(), allow_nan=False)


def slice_records(verdict: Verdict) -> list[dict]:
    return check(verdict, "slices").slices


def test_gate_records_every_slice_with_its_numbers_tolerance_and_outcome(holdout, y, churn_spec):
    scores = roles(y, challenger=1.0, champion=0.6)
    family = (holdout["plan"] == "family").to_numpy()
    scores["challenger"][family] = scores_for(y, 0.0, 9)[family]  # worse than the champion on one plan only
    ev, verdict = run_gate(holdout, y, scores, churn_spec)
    records = slice_records(verdict)
    tolerance = churn_spec.promotion.slice_tolerance

    assert [(r["column"], r["value"], r["rows"]) for r in records] == [
        (s["column"], s["value"], s["rows"]) for s in ev["slices"]]  # every slice, in the evaluation's order
    for r, s in zip(records, ev["slices"]):
        assert r["tolerance"] == tolerance and r["min_rows"] == churn_spec.promotion.min_slice_rows
        if s["skipped"]:
            assert (r["outcome"], r["passed"], r["regression"]) == ("too_small", None, None)
            continue
        assert (r["challenger"], r["champion"]) == (s["challenger"], s["champion"])
        assert r["regression"] == pytest.approx(s["champion"] - s["challenger"])  # roc_auc: greater is better
        failed_here = s["champion"] - s["challenger"] > tolerance
        assert (r["outcome"], r["passed"]) == (("failed", False) if failed_here else ("passed", True))
    family_record = next(r for r in records if r["column"] == "plan" and r["value"] == "family")
    assert family_record["outcome"] == "failed"
    assert [r for r in records if r["outcome"] == "failed"] == [family_record]
    assert not check(verdict, "slices").passed  # the check's verdict is its records' verdict

    record = verdict.to_dict()
    json.dumps(record, allow_nan=False)
    as_recorded = next(c for c in record["checks"] if c["name"] == "slices")
    assert as_recorded["slices"] == records
    assert all("slices" not in c for c in record["checks"] if c["name"] != "slices")  # the other checks as before


def test_slice_records_without_champion_or_tolerance_judge_nothing(holdout, y, churn_spec):
    _, first = run_gate(holdout, y, roles(y, champion=None), churn_spec)
    assert {r["outcome"] for r in slice_records(first)} <= {"no_champion", "too_small"}
    assert all(r["passed"] is None and "champion" not in r for r in slice_records(first))

    _, unset = run_gate(holdout, y, roles(y), with_promotion(churn_spec, slice_tolerance=None))
    assert not check(unset, "slices").passed  # fail closed ...
    judged = [r for r in slice_records(unset) if r["outcome"] != "too_small"]
    assert judged and all(r["outcome"] == "no_tolerance" and r["passed"] is None and r["tolerance"] is None
                          and r["regression"] is not None for r in judged)  # ... with the numbers kept

