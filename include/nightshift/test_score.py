"""The ML Test Score of Breck et al. (2017), computed by the night about itself.

"The ML Test Score: A Rubric for ML Production Readiness and Technical Debt Reduction" lists 28
tests in four sections of seven (features and data, model development, ML infrastructure,
monitoring). A test scores 1 when the system runs it automatically and repeatedly, 0.5 when it is
done by hand and documented, 0 otherwise; a section's score is the sum of its tests, and the final
score is the minimum over the four sections.

Nightshift scores itself honestly, every run: a test scores 1 only when its check ran tonight and
left its evidence in the run's record (a night that trained no challenger scores 0 on the tests
that judge a challenger, and says so). TESTS is the one table of the mapping: for each test what
"passing" means here and the function that judges it from tonight's evidence (None: no check in
Nightshift performs it; `manual` names the document of a test done by hand).

Pure: the evidence is a plain dict (night_evidence builds it from the run record); score_night
turns it into the 28 rows of ``<schema>.ml_test_score``, and summarise into the section sums and
final score kept in ``pipeline_runs.details['ml_test_score']``.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

SECTIONS = ("data", "model", "infrastructure", "monitoring")
SHORT = {"data": "data", "model": "model", "infrastructure": "infra", "monitoring": "monitoring"}
NOT_MEASURED = "not measured tonight"
NO_CHALLENGER = "no challenger trained tonight"
BULKY = ("against_training", "now")  # evidence kept in pipeline_runs.details, not repeated in ml_test_score

Evidence = Mapping[str, Any]
Judgement = tuple[float, bool | None, dict[str, Any]]  # score, passed (None: no pass/fail), evidence


@dataclass(frozen=True)
class RubricTest:
    """One test of the rubric as Nightshift performs it."""

    section: str
    number: int
    title: str
    passing: str  # what "passing" means here, in one sentence
    judge: Callable[[Evidence], Judgement] | None = None
    manual: str | None = None  # the document of a test done by hand (0.5)
    missing: str | None = None  # why no check performs it (judge and manual None)

    @property
    def id(self) -> str:
        return f"{self.section}.{self.number}"


# ---------------------------------------------------------------- reading the evidence


def _details(ev: Evidence) -> dict[str, Any]:
    return dict(ev.get("details") or {})


def _decided(ev: Evidence) -> dict[str, Any]:
    """The decide step's evidence (decide._evidence: realised metric, staleness, age, ...)."""
    return dict((_details(ev).get("decision") or {}).get("details") or {})


def _checks(ev: Evidence) -> dict[str, dict[str, Any]]:
    """The gate's checks tonight, by name ({} when no challenger was judged)."""
    return {c.get("name"): c for c in _details(ev).get("verdict") or [] if isinstance(c, Mapping)}


def _ran(passed: bool | None, **evidence: Any) -> Judgement:
    return 1.0, None if passed is None else bool(passed), evidence


def _not_run(why: str, **evidence: Any) -> Judgement:
    return 0.0, None, {"not_run": why, **evidence}


def _kept(found: dict | None, what: str, absent: str) -> Judgement | None:
    """A check that keeps its own record: not run tonight (`absent` says why), ran but could not measure (its
    record says why), or None: it measured, and the caller reads its verdict."""
    if not found:
        return _not_run(absent)
    if found.get("not_measured"):
        return _not_run(f"{what} {NOT_MEASURED}: {found['not_measured']}")
    return None


def _verdict(found: dict) -> Judgement:
    return _ran(found.get("passed"), **{k: v for k, v in found.items() if k != "passed"})


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _gate_check(ev: Evidence, name: str) -> Judgement:
    """A test judged by one of the gate's checks (evaluation.gate): it ran when a challenger was judged."""
    check = _checks(ev).get(name)
    if check is None:
        return _not_run(NO_CHALLENGER if not _checks(ev) else f"the gate has no {name} check tonight")
    return _ran(check.get("passed"), check=name, detail=check.get("detail"))


def _recorded(ev: Evidence, key: str) -> Any:
    """The score step's evidence under `key` (skew.before_scoring's checks: environment, round_trip, skew), kept
    by run_record in details.serving; details[key] for a record that keeps it at the top."""
    details = _details(ev)
    serving = details.get("serving")
    found = serving.get(key) if isinstance(serving, Mapping) else None
    return found if found is not None else details.get(key)


def _reported(ev: Evidence, key: str, what: str) -> Judgement:
    """A test judged by the score step's record (_recorded): {"passed": bool, ...}, any other keys the evidence;
    0 and NOT_MEASURED when the run did not record it, or recorded that it could not measure it (passed None,
    or not_measured)."""
    found = _recorded(ev, key)
    if not isinstance(found, Mapping) or not found:
        return _not_run(f"{what} {NOT_MEASURED} (details.serving.{key} absent)")
    passed = found.get("passed")
    if found.get("not_measured") or passed is None:
        return _not_run(f"{what} {NOT_MEASURED}: {found.get('not_measured') or found.get('summary') or 'no outcome'}")
    return _ran(passed, **{k: v for k, v in found.items() if k not in ("passed", *BULKY)})


# ---------------------------------------------------------------- the judges


def feature_schema(ev: Evidence) -> Judgement:
    """Data 1: the spec's suite (schema, types, ranges, categories) ran on tonight's snapshots."""
    passed = ev.get("validation_passed")
    if passed is None:
        return _not_run("validation did not run tonight")
    failure = _details(ev).get("validation_failure") or {}
    return _ran(passed, rows=ev.get("rows_in"), failed=failure.get("message"))


def features_beneficial(ev: Evidence) -> Judgement:
    """Data 2: shuffling each feature on the challenger's holdout costs the metric something (benefit.py)."""
    found = _details(ev).get("feature_benefit")
    absent = NO_CHALLENGER if not _checks(ev) else f"feature benefit {NOT_MEASURED}"
    return _kept(found, "feature benefit", absent) or _verdict(found)


def spec_versioned(ev: Evidence) -> Judgement:
    """Model 1: tonight's challenger carries its training key (snapshots, spec, libraries, code)."""
    trained = _details(ev).get("training") or {}
    if not trained:
        return _not_run(NO_CHALLENGER)
    return _ran(bool(trained.get("training_key")), training_key=trained.get("training_key"),
                version=trained.get("version"), family=trained.get("family"))


def offline_online(ev: Evidence) -> Judgement:
    """Model 2: the champion's realised metric on labelled days it never saw is within realised_tolerance of its
    holdout metric (either side)."""
    d = _decided(ev)
    realised, holdout = _number(d.get("realised_metric")), _number(d.get("champion_holdout_metric"))
    if realised is None or holdout is None:
        return _not_run("no labelled day after the champion's holdout yet" if holdout is not None
                        else "no champion with a holdout metric")
    gap, tolerance = realised - holdout, float(d.get("realised_tolerance") or 0.0)
    return _ran(abs(gap) <= tolerance, metric=d.get("metric"), realised=realised, holdout=holdout,
                gap=gap, threshold=tolerance, interval=d.get("realised_interval"), rows=d.get("realised_rows"))


def staleness_known(ev: Evidence) -> Judgement:
    """Model 4: tonight's labelled day was scored by versions of several ages (staleness.py) and the cadence fit."""
    staleness = _decided(ev).get("staleness") or {}
    points = staleness.get("tonight") or []
    if not points:
        return _not_run("no labelled day scored by the champion and older versions tonight")
    cadence = staleness.get("cadence") or {}
    recommended = _number(cadence.get("recommended_max_age"))
    if len(points) < 2 and recommended is None:
        return _not_run("only the champion scored tonight's labelled day: no older version to draw the curve with",
                        reason=cadence.get("reason"))
    age = _number(_decided(ev).get("champion_age_days"))
    passed = None if recommended is None or age is None else age <= recommended
    return _ran(passed, versions=len(points), recommended_max_age=recommended, interval=cadence.get("interval"),
                champion_age_days=age, reason=cadence.get("reason"), setting=staleness.get("setting"))


def simpler_not_better(ev: Evidence) -> Judgement:
    """Model 5: the champion beat its simple baseline on the labelled days it served (monitor: served_baseline),
    and tonight's challenger beat its own on the holdout (the gate's baseline check); either that ran tonight
    runs the test, and every one that ran must pass."""
    served, why = _served_baseline(ev)
    gate = _checks(ev).get("baseline")
    if gate is None and served is None:
        return _not_run(f"served rows: {why}; holdout: {NO_CHALLENGER}")
    verdicts = [c.get("passed") for c in (served, gate) if c is not None]
    evidence = {"served": {k: served.get(k) for k in ("champion", "baseline", "gain", "margin", "rows")}} if served \
        else {}
    if gate:
        evidence["holdout"] = gate.get("detail")
    known = [v for v in verdicts if v is not None]
    return _ran(all(known) if known else None, **evidence)


def _served_baseline(ev: Evidence) -> tuple[dict | None, str | None]:
    """(the champion against its baseline on served rows, or None; why it was not measured)."""
    found = _decided(ev).get("served_baseline") or {}
    if not found or found.get("not_measured"):
        return None, found.get("not_measured") or "no labelled day after the champion's holdout yet"
    return found, None


def slice_quality(ev: Evidence) -> Judgement:
    """Model 6: the challenger regresses on no data slice beyond slice_tolerance (gate's slices check)."""
    check = _checks(ev).get("slices")
    if check is None:
        return _not_run(NO_CHALLENGER)
    compared = [s for s in check.get("slices") or [] if s.get("outcome") in ("passed", "failed")]
    if not compared:
        return _not_run(f"no slice compared tonight: {check.get('detail')}")
    worst = max(compared, key=lambda s: _number(s.get("regression")) or 0.0)
    return _ran(check.get("passed"), slices=len(compared), worst=f"{worst.get('column')}={worst.get('value')}",
                regression=worst.get("regression"), threshold=worst.get("tolerance"), detail=check.get("detail"))


def inclusion(ev: Evidence) -> Judgement:
    """Model 7: per slice value, the champion's mean score is near the realised label rate on the labelled days
    the monitor pooled (bias.py; the decision's evidence prediction_bias)."""
    found = _decided(ev).get("prediction_bias")
    absent = ("no labelled day after the champion's holdout to measure prediction bias on"
              if _decided(ev).get("has_champion") else "no champion")
    return _kept(found, "prediction bias per slice", absent) or _verdict(found)


def reproducible(ev: Evidence) -> Judgement:
    """Infrastructure 1: tonight's fit, on the same snapshots and spec as an existing version, gave its scores back."""
    trained = _details(ev).get("training") or {}
    if not trained:
        return _not_run(NO_CHALLENGER)
    if not trained.get("reused"):
        return _not_run("tonight's challenger is new: no earlier version with its training key to reproduce",
                        training_key=trained.get("training_key"))
    check = _checks(ev).get("roundtrip") or {}
    return _ran(check.get("passed"), version=trained.get("version"), detail=check.get("detail"))


def validated_before_serving(ev: Evidence) -> Judgement:
    """Infrastructure 4: the gate judged tonight's challenger, and nothing that failed it was promoted."""
    checks = _checks(ev)
    if not checks:
        return _not_run(NO_CHALLENGER)
    failed = sorted(name for name, c in checks.items() if not c.get("passed"))
    promoted = ev.get("decision") == "promoted"
    return _ran(not (promoted and failed), promoted=promoted, failed_checks=failed, checks=len(checks),
                policy=_details(ev).get("policy"))


def single_example(ev: Evidence) -> Judgement:
    """Infrastructure 5: one holdout row observed through each stage of tonight's challenger, the stages adding
    up to the model's score (trace.py; details.example_trace)."""
    found = _details(ev).get("example_trace")
    skipped = _kept(found, "single-example trace", NO_CHALLENGER if not _checks(ev) else
                    f"single-example trace {NOT_MEASURED}")
    if skipped:
        return skipped
    stages = [s.get("stage") for s in found.get("stages") or []]
    return _ran(found.get("passed"), row=found.get("row"), stages=stages, score=found.get("score"),
                difference=found.get("difference"), threshold=found.get("tolerance"))


def canaried(ev: Evidence) -> Judgement:
    """Infrastructure 6: the model about to serve scores a fixed training sample, loaded as scoring loads it,
    as it did in training (skew.verify_round_trip: details.serving.round_trip; else the gate's registry round
    trip of tonight's challenger)."""
    found = _recorded(ev, "round_trip")
    if isinstance(found, Mapping) and found.get("passed") is not None:
        return _reported(ev, "round_trip", "serving round trip")
    check = _checks(ev).get("roundtrip")
    if check is None:
        why = (found or {}).get("summary") or f"{NOT_MEASURED} (details.serving.round_trip absent)"
        return _not_run(f"serving round trip: {why}; and {NO_CHALLENGER}")
    return _ran(check.get("passed"), check="roundtrip", detail=check.get("detail"))


def rollback_ready(ev: Evidence) -> Judgement:
    """Infrastructure 7: a blessed version other than the one serving exists to roll back to (model_versions)."""
    found = ev.get("rollback")
    if not isinstance(found, Mapping):
        return _not_run("model_versions not read tonight")
    return _ran(bool(found.get("restorable")), **dict(found))


def dependencies(ev: Evidence) -> Judgement:
    """Monitoring 1: tonight's Python and libraries compared with those recorded with the champion
    (environment.py, the score step's details.serving.environment); a change is alerted."""
    found = _recorded(ev, "environment")
    if not isinstance(found, Mapping) or not found:
        return _not_run(f"dependency change {NOT_MEASURED} (details.serving.environment absent)")
    if not found.get("recorded"):
        return _not_run(f"the champion's environment was not recorded: {found.get('summary')}")
    changes = list(found.get("changes") or [])
    return _ran(not changes, changes=changes, summary=found.get("summary"))


def invariants(ev: Evidence) -> Judgement:
    """Monitoring 2: the suite held on the serving rows (tonight) and the training rows (the labelled day)."""
    passed = ev.get("validation_passed")
    if passed is None:
        return _not_run("validation did not run tonight")
    failure = _details(ev).get("validation_failure") or {}
    return _ran(passed, rows=ev.get("rows_in"), failed_snapshot=failure.get("snapshot"),
                failures=failure.get("failures"))


def skew(ev: Evidence) -> Judgement:
    """Monitoring 3: on the same sample of tonight's rows, the serving path feeds the model the features the
    training path builds (skew.py; details.serving.skew)."""
    return _reported(ev, "skew", "training/serving skew")


def not_stale(ev: Evidence) -> Judgement:
    """Monitoring 4: the champion is no older than promotion.max_model_age_days."""
    d = _decided(ev)
    age = _number(d.get("champion_age_days"))
    if age is None:
        return _not_run("no champion tonight: no age to judge")
    limit = _number(d.get("max_model_age_days"))
    return _ran(limit is None or age <= limit, champion_age_days=age, threshold=limit,
                recommended_max_age=_number(((d.get("staleness") or {}).get("cadence") or {}).get(
                    "recommended_max_age")))


def numerically_stable(ev: Evidence) -> Judgement:
    """Monitoring 5: the night's scores were checked for NaN and infinity (scoring refuses them; the gate's
    finite check on the challenger's)."""
    states = _details(ev).get("task_states") or {}
    finite = _checks(ev).get("finite")
    scored = states.get("score") == "success" and ev.get("champion_version") is not None
    if not scored and finite is None:
        return _not_run("nothing scored tonight and no challenger judged")
    passed = (finite is None or bool(finite.get("passed"))) and states.get("score") != "failed"
    return _ran(passed, scored=states.get("score"), challenger=(finite or {}).get("detail"))


def performance(ev: Evidence) -> Judgement:
    """Monitoring 6: every step's wall time, CPU and memory against its recent nights (task_costs.judge_night:
    details.costs), once a step has the spec's costs.min_nights of history."""
    costs = _details(ev).get("costs") or {}
    measured = costs.get("tasks") or {}
    if not measured or "findings" not in costs:
        return _not_run(f"task costs {NOT_MEASURED} (details.costs absent or not judged)")
    least = int((ev.get("settings") or {}).get("costs_min_nights") or 1)
    compared = sorted(t for t, n in (costs.get("baseline_nights") or {}).items() if n >= least)
    if not compared:
        return _not_run(f"no step has {least} earlier nights of costs to compare with yet", tasks=len(measured))
    findings = list(costs.get("findings") or [])
    return _ran(not findings, tasks=len(measured), compared=compared, min_nights=least, findings=findings[:5])


def served_quality(ev: Evidence) -> Judgement:
    """Monitoring 7: the champion's realised interval on served, now labelled, rows is not wholly worse than its
    holdout metric minus realised_tolerance (decide's quality rule)."""
    d = _decided(ev)
    realised = _number(d.get("realised_metric"))
    if realised is None:
        return _not_run("no labelled day after the champion's holdout yet" if d.get("has_champion")
                        else "no champion")
    return _ran("quality_decay" not in (d.get("triggered") or []), metric=d.get("metric"), realised=realised,
                interval=d.get("realised_interval"), holdout=d.get("champion_holdout_metric"),
                threshold=d.get("realised_tolerance"), rows=d.get("realised_rows"))


TESTS_DOC = "README, Tests (run by CI on every change, not by the night: counted as documented)"

TESTS: tuple[RubricTest, ...] = (
    RubricTest("data", 1, "Feature expectations are captured in a schema",
         "the night's snapshots pass the spec's Great Expectations suite (columns, types, nulls, ranges, categories, "
         "keys, row count)", feature_schema),
    RubricTest("data", 2, "All features are beneficial",
         "shuffling any one feature on tonight's challenger's holdout lowers its metric (permutation importance)",
         features_beneficial),
    RubricTest("data", 3, "No feature's cost is too much",
         "every feature's inference latency and memory are known and worth it",
         missing="no per-feature cost is measured (task costs are per task, not per feature)"),
    RubricTest("data", 4, "Features adhere to meta-level requirements",
         "no feature breaks a rule about features (a forbidden source, personal data)",
         missing="the spec has no meta-level rule on features to check"),
    RubricTest("data", 5, "The data pipeline has appropriate privacy controls",
         "consumers read the warehouse with a read-only role the pipeline grants",
         manual="README, The warehouse contract (warehouse.reader_role)"),
    RubricTest("data", 6, "New features can be added quickly",
         "a feature is added by editing the spec, checked by `spec check`", manual="README, Adding a data set"),
    RubricTest("data", 7, "All input feature code is tested",
         "the snapshot, validation and preprocessing code has unit tests", manual=TESTS_DOC),
    RubricTest("model", 1, "Model specs are reviewed and submitted",
         "tonight's challenger is registered with its training key (snapshots, spec, libraries, code)",
         spec_versioned),
    RubricTest("model", 2, "Offline and online metrics correlate",
         "the champion's realised metric on labelled days it never saw is within realised_tolerance of its "
         "holdout metric", offline_online),
    RubricTest("model", 3, "All hyperparameters have been tuned",
         "each family's hyperparameters are searched on the training window",
         missing="hyperparameters are fixed by the spec; the families compete on the holdout, none is searched"),
    RubricTest("model", 4, "The impact of model staleness is known",
         "older versions scored tonight's labelled day and the decay fit recommends a maximum age the champion "
         "is within", staleness_known),
    RubricTest("model", 5, "A simpler model is not better",
         "the champion beats its simple baseline on the labelled days it served, and tonight's challenger beats its "
         "own on the holdout, by baseline_margin", simpler_not_better),
    RubricTest("model", 6, "Model quality is sufficient on all important data slices",
         "no slice of the holdout regresses beyond slice_tolerance against the champion", slice_quality),
    RubricTest("model", 7, "The model is tested for considerations of inclusion",
         "on labelled days, each slice value's mean score is within the spec's tolerance of its realised label "
         "rate", inclusion),
    RubricTest("infrastructure", 1, "Training is reproducible",
         "a retrain on the same snapshots and spec gives the registered version's scores back bit for bit",
         reproducible),
    RubricTest("infrastructure", 2, "Model specs are unit tested",
         "the spec loader and the training code have unit tests", manual=TESTS_DOC),
    RubricTest("infrastructure", 3, "The full ML pipeline is integration tested",
         "whole DAG runs over simulated nights are tested", manual=TESTS_DOC),
    RubricTest("infrastructure", 4, "Model quality is validated before attempting to serve it",
         "the gate judged tonight's challenger and nothing that failed it was promoted", validated_before_serving),
    RubricTest("infrastructure", 5, "The model allows debugging by observing the step-by-step computation of a single "
         "example", "one holdout row's values after each stage of tonight's challenger are recorded, and the "
         "stages add up to the model's score", single_example),
    RubricTest("infrastructure", 6, "Models are canaried before serving",
         "the model about to serve gives, loaded as scoring loads it, the scores it gave in training",
         canaried),
    RubricTest("infrastructure", 7, "Serving models can be rolled back",
         "a blessed version other than the serving one exists for the rollback DAG", rollback_ready),
    RubricTest("monitoring", 1, "Dependency changes result in notification",
         "tonight's Python and library versions were compared with the champion's, a change alerted",
         dependencies),
    RubricTest("monitoring", 2, "Data invariants hold in training and serving inputs",
         "the suite holds on tonight's serving rows and on the newly labelled training rows", invariants),
    RubricTest("monitoring", 3, "Training and serving features compute the same values",
         "the features fed to the model at scoring have the training rows' statistics within tolerance", skew),
    RubricTest("monitoring", 4, "Models are not too stale",
         "the champion is no older than promotion.max_model_age_days", not_stale),
    RubricTest("monitoring", 5, "Models are numerically stable",
         "no NaN or infinite score was produced tonight (scoring and the gate refuse them)", numerically_stable),
    RubricTest("monitoring", 6, "Computing performance has not regressed",
         "no task is slower or bigger than the median of its recent nights by the spec's factor", performance),
    RubricTest("monitoring", 7, "Prediction quality has not regressed on served data",
         "the champion's realised interval is not wholly worse than its holdout metric minus realised_tolerance",
         served_quality),
)


# ---------------------------------------------------------------- scoring


def judge(test: RubricTest, ev: Evidence) -> Judgement:
    """One test's score, outcome and evidence tonight; a judge that raises scores 0 and says why."""
    if test.judge is not None:
        try:
            return test.judge(ev)
        except Exception as exc:  # a malformed record must not cost the night its whole score
            return _not_run(f"could not judge: {type(exc).__name__}: {exc}")
    if test.manual:
        return 0.5, None, {"manual": test.manual}
    return _not_run(test.missing or "no check in Nightshift performs it")


def score_night(ev: Evidence) -> list[dict[str, Any]]:
    """The night's 28 rows of ml_test_score, in the rubric's order."""
    rows = []
    for test in TESTS:
        score, passed, evidence = judge(test, ev)
        rows.append({"night": ev.get("night"), "dag_run_id": ev.get("dag_run_id"), "test": test.id,
                     "section": test.section, "number": test.number, "title": test.title, "score": score,
                     "passed": passed, "evidence": _json_safe(evidence)})
    return rows


def section_sums(rows: list[Mapping[str, Any]]) -> dict[str, float]:
    """Each section's points (the sum of its tests' scores)."""
    return {s: float(sum(r["score"] for r in rows if r["section"] == s)) for s in SECTIONS}


def summarise(rows: list[Mapping[str, Any]]) -> dict[str, Any]:
    """What pipeline_runs.details['ml_test_score'] keeps: the section sums, the final score (their minimum)
    and each test's score by id."""
    sums = section_sums(rows)
    return {"sections": sums, "final": min(sums.values()), "tests": {r["test"]: r["score"] for r in rows}}


def summary_text(summary: Mapping[str, Any] | None) -> str | None:
    """"ML Test Score 2 (data 2.5, model 4, infra 3, monitoring 5)" for the run's summary line."""
    if not summary:
        return None
    sums = summary.get("sections") or {}
    parts = ", ".join(f"{SHORT[s]} {_g(sums.get(s))}" for s in SECTIONS)
    return f"ML Test Score {_g(summary.get('final'))} ({parts})"


def _g(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):g}"


def night_evidence(record: Any, *, rollback: Mapping[str, Any] | None = None,
                   spec: Any = None) -> dict[str, Any]:
    """The evidence the judges read: the run record's columns and details (run_record.RunRecord), what the
    warehouse says about rolling back (`rollback`: serving and restorable versions; None: not read), and the
    spec's settings a judge needs (`spec`: the DatasetSpec)."""
    row = record.row()
    costs = getattr(spec, "costs", None)
    settings = {"costs_min_nights": getattr(costs, "min_nights", None)}
    return {**row, "night": row.get("logical_date"), "rollback": rollback, "settings": settings}


def rollback_evidence(versions: list[Mapping[str, Any]]) -> dict[str, Any]:
    """From model_versions rows: the version serving now and the blessed ones the rollback DAG could restore."""
    serving = [v["version"] for v in versions if v.get("champion_from") is not None and v.get("champion_to") is None]
    restorable = sorted(v["version"] for v in versions if v.get("blessed") and v["version"] not in serving)
    return {"serving": serving[0] if serving else None, "restorable": restorable[-5:]}


def _json_safe(value: Any) -> Any:
    """Evidence as jsonb takes it: dates as ISO text, non-finite floats as null."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
