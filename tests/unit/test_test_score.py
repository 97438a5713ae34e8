"""The ML Test Score (test_score.py): the rubric's table, the honest scoring rules, and the warehouse rows."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest

from include.nightshift import test_score as ts
from include.nightshift import warehouse
from include.nightshift.artifacts import ArtifactStore
from include.nightshift.decide import decide
from include.nightshift.nightly import record_night
from include.nightshift.run_record import build_run_record
from include.nightshift.snapshot import SnapshotRef
from include.nightshift.spec import load_spec
from include.nightshift.steps import (DriftStep, MonitorStep, PublishStep, ScoringStep, SnapshotStep, TrainingStep,
                                      ValidationStep, VerdictStep)

SPEC = load_spec(Path(__file__).resolve().parents[2] / "include" / "specs" / "churn.yaml")
DAY = dt.date(2026, 2, 5)
NOW = dt.datetime(2026, 2, 6, 1, 0, tzinfo=dt.timezone.utc)
REF = SnapshotRef(url="/s.parquet", sha256="c" * 64, rows=1000, day=DAY.isoformat(), labelled=False)
SNAP = SnapshotStep(day=DAY, current=REF, labelled=REF)
STALENESS = {"day": "2026-02-04", "setting": None, "tonight": [{"version": 2, "age_days": 3.0, "metric": 0.8},
                                                                 {"version": 1, "age_days": 9.0, "metric": 0.77}],
             "cadence": {"pairs": 6, "days": 6, "slope": 0.004, "recommended_max_age": 12.5, "interval": [8.0, None],
                         "max_age_seen": 9.0, "reason": None}}
MONITOR = MonitorStep(realised_metric=0.79, rows=800, champion_version=2, champion_holdout_metric=0.80,
                      interval=[0.77, 0.81], confidence=0.9, days=["2026-02-04"], staleness=STALENESS)
TRAINED = TrainingStep(version=3, run_id="r", train_rows=9000, holdout_rows=3000, holdout_end=DAY,
                       holdout_scores_url="/h", snapshots_url="/s", training_key="k" * 16)
SLICES = [{"column": "segment", "value": "smb", "rows": 900, "challenger": 0.8, "champion": 0.79, "regression": -0.01,
           "tolerance": 0.02, "outcome": "passed", "passed": True}]
CHECKS = [{"name": "thresholds", "passed": True, "detail": "roc_auc"},
          {"name": "finite", "passed": True, "detail": "3000 challenger scores finite"},
          {"name": "floor", "passed": True, "detail": "0.81 >= 0.6"},
          {"name": "champion", "passed": True, "detail": "gain +0.01"},
          {"name": "slices", "passed": True, "detail": "worst slice segment=smb", "slices": SLICES},
          {"name": "baseline", "passed": False, "detail": "challenger 0.81 vs baseline 0.80: gain +0.01 fails >= 0.02"},
          {"name": "roundtrip", "passed": True, "detail": "equal"}]
SERVING = {"environment": {"recorded": True, "changes": [], "now": {"python": "3.11"}, "summary": "v2: unchanged"},
           "round_trip": {"passed": True, "rows": 64, "max_difference": 0.0, "tolerance": 1e-9, "summary": "ok"},
           "skew": {"passed": True, "findings": [], "rows": 500, "tolerance": 1e-9, "against_training": {"x": {}}}}
STATES = {"snapshot": "success", "validate": "success", "score": "success", "publish": "success"}


def verdict(checks=CHECKS, promoted=False) -> VerdictStep:
    return VerdictStep(promote=all(c["passed"] for c in checks), metric="roc_auc", challenger=0.81, champion=0.8,
                       baseline=0.8, message="m", checks=checks, policy="auto", dag_run_id="run", champion_version=2,
                       challenger_version=3, promoted=promoted, policy_note="gate failed")


def night(*, trained=None, judged=None, serving=None, dry_run=False, states=STATES, run="run", monitor=MONITOR):
    """A run record as record_run builds it: tonight's decision from the real rules (decide.decide)."""
    decision = decide(has_champion=True, drift=DriftStep(share=0.1, champion_version=2), monitor=monitor,
                      champion_age_days=3.0, force=trained is not None, spec=SPEC)
    record = build_run_record(SPEC, day=DAY, dag_run_id=run, states={**states, "train": "success" if trained
                                                                     else "skipped"},
                              snapshot=SNAP, validation=ValidationStep(passed=True, rows=1000),
                              drift=DriftStep(share=0.1, champion_version=2), decision=decision, trained=trained,
                              verdict=judged, published=PublishStep(rows=1000, day=DAY, model_version=2),
                              scored=ScoringStep(url="/p", rows=1000, model_version=2, day=DAY),
                              started_at=None, finished_at=NOW, params={"dry_run": dry_run})
    if serving is not None:
        record.details["serving"] = serving
    return record


def scores_of(record, rollback=None) -> dict[str, dict]:
    return {r["test"]: r for r in ts.score_night(ts.night_evidence(record, rollback=rollback))}


def test_the_table_has_the_rubrics_28_tests_seven_per_section_each_with_a_meaning_and_a_judge_or_reason():
    assert len(ts.TESTS) == 28
    assert [t.section for t in ts.TESTS] == [s for s in ts.SECTIONS for _ in range(7)]
    assert [t.number for t in ts.TESTS] == list(range(1, 8)) * 4
    assert len({t.id for t in ts.TESTS}) == 28
    for t in ts.TESTS:
        assert t.title and t.passing.strip(), t.id
        assert (t.judge is not None) + bool(t.manual) + bool(t.missing) == 1, f"{t.id}: exactly one way to score"
    # the judges are real functions of the evidence, and every automated priority has one
    judged = {t.id for t in ts.TESTS if t.judge}
    assert {"model.5", "model.6", "model.4", "monitoring.5", "infrastructure.1", "monitoring.3"} <= judged


def test_a_night_with_a_challenger_scores_its_gate_checks_and_one_without_says_why_not():
    with_challenger = scores_of(night(trained=TRAINED, judged=verdict()))
    without = scores_of(night())

    simpler = with_challenger["model.5"]
    assert (simpler["score"], simpler["passed"]) == (1.0, False)  # ran: the baseline check failed tonight
    assert "gain +0.01 fails" in simpler["evidence"]["holdout"]
    assert (without["model.5"]["score"], without["model.5"]["passed"]) == (0.0, None)
    assert without["model.5"]["evidence"]["not_run"].endswith(ts.NO_CHALLENGER)
    slices = with_challenger["model.6"]
    assert (slices["score"], slices["passed"], slices["evidence"]["worst"]) == (1.0, True, "segment=smb")
    assert with_challenger["model.1"]["evidence"]["training_key"] == "k" * 16
    assert with_challenger["infrastructure.4"]["passed"] is True  # judged, and nothing that failed was promoted
    # a new challenger is not a reproducibility test; a reused version is
    assert with_challenger["infrastructure.1"]["score"] == 0.0
    reused = scores_of(night(trained=dataclasses.replace(TRAINED, reused=True), judged=verdict()))
    assert (reused["infrastructure.1"]["score"], reused["infrastructure.1"]["passed"]) == (1.0, True)

    s_with, s_without = (ts.section_sums(list(r.values())) for r in (with_challenger, without))
    assert s_with["model"] == s_without["model"] + 3  # model 1 (training key), 5 (baseline), 6 (slices)
    assert s_with["infrastructure"] == s_without["infrastructure"] + 2  # the gate (4) and its round trip (6)


def test_what_the_monitor_recorded_is_judged_every_night_whether_or_not_a_challenger_was_trained():
    got = scores_of(night())
    offline = got["model.2"]
    assert (offline["score"], offline["passed"]) == (1.0, True)
    assert offline["evidence"]["gap"] == pytest.approx(-0.01)
    assert offline["evidence"]["threshold"] == SPEC.promotion.realised_tolerance
    stale = got["model.4"]
    assert (stale["score"], stale["passed"], stale["evidence"]["recommended_max_age"]) == (1.0, True, 12.5)
    assert (got["monitoring.4"]["score"], got["monitoring.4"]["passed"]) == (1.0, True)
    alone = night()  # only the champion scored the day, and no recommendation yet: no curve to know staleness by
    alone.details["decision"]["details"]["staleness"] = {**STALENESS, "tonight": STALENESS["tonight"][:1],
                                                         "cadence": {"recommended_max_age": None, "reason": "few"}}
    assert scores_of(alone)["model.4"]["score"] == 0.0
    assert got["monitoring.4"]["evidence"]["threshold"] == SPEC.promotion.max_model_age_days
    assert (got["monitoring.7"]["score"], got["monitoring.7"]["passed"]) == (1.0, True)
    assert (got["monitoring.5"]["score"], got["monitoring.5"]["passed"]) == (1.0, True)  # scored, finite
    assert got["data.1"]["score"] == got["monitoring.2"]["score"] == 1.0


def test_other_steps_evidence_scores_when_recorded_and_not_measured_when_absent():
    absent = scores_of(night())
    for test in ("monitoring.1", "monitoring.3", "monitoring.6"):
        assert absent[test]["score"] == 0.0 and "not measured tonight" in absent[test]["evidence"]["not_run"], test
    present = scores_of(night(serving=SERVING))
    assert (present["monitoring.1"]["score"], present["monitoring.1"]["passed"]) == (1.0, True)
    assert (present["monitoring.3"]["score"], present["monitoring.3"]["passed"]) == (1.0, True)
    assert "against_training" not in present["monitoring.3"]["evidence"]  # kept in details, not repeated
    assert present["infrastructure.6"]["evidence"]["max_difference"] == 0.0
    changed = {**SERVING, "environment": {**SERVING["environment"], "changes": [{"package": "xgboost"}]}}
    assert scores_of(night(serving=changed))["monitoring.1"]["passed"] is False
    unrecorded = {**SERVING, "environment": {"recorded": False, "changes": [], "summary": "not recorded for v2"}}
    assert scores_of(night(serving=unrecorded))["monitoring.1"]["score"] == 0.0


def test_task_costs_score_once_a_step_has_the_specs_nights_of_history():
    def costs(baseline, findings=()):
        record = night()
        record.details["costs"] = {"tasks": {"score": {"wall_seconds": 2.0, "outcome": "success"}},
                                   "findings": list(findings), "baseline_nights": {"score": baseline}}
        return ts.score_night(ts.night_evidence(record, spec=SPEC))[26]

    assert costs(SPEC.costs.min_nights - 1)["score"] == 0.0  # too little history: not compared tonight
    steady = costs(SPEC.costs.min_nights)
    assert (steady["test"], steady["score"], steady["passed"]) == ("monitoring.6", 1.0, True)
    slower = costs(SPEC.costs.min_nights, [{"task": "score", "measure": "wall_seconds", "kind": "jump"}])
    assert slower["passed"] is False and slower["evidence"]["findings"][0]["task"] == "score"


def test_prediction_bias_per_slice_flags_a_slice_whose_mean_score_misses_its_label_rate():
    import numpy as np
    import pandas as pd

    from include.nightshift.bias import prediction_bias

    rng = np.random.default_rng(7)
    plan = np.array(["basic"] * 2000 + ["pro"] * 2000 + ["team"] * 20)
    y = (rng.random(len(plan)) < 0.2).astype(int)
    scores = np.where(plan == "pro", 0.45, 0.2)  # pro over-predicted by 0.25; basic calibrated
    found = prediction_bias(pd.DataFrame({"plan": plan}), y, scores, columns=["plan", "absent"], min_rows=50,
                            tolerance=0.03, task="binary")
    assert (found["passed"], found["slices"], found["worst"]) == (False, 2, "plan=pro")  # team: too few rows
    assert [f["value"] for f in found["flagged"]] == ["pro"] and found["worst_bias"] == pytest.approx(0.25, abs=0.03)
    fair = prediction_bias(pd.DataFrame({"plan": plan}), y, np.full(len(y), 0.2), columns=["plan"], min_rows=50,
                           tolerance=0.03, task="binary")
    assert fair["passed"] is True and fair["flagged"] == []
    assert "not_measured" in prediction_bias(pd.DataFrame({"plan": plan}), y, scores, columns=["plan"],
                                             min_rows=5000, tolerance=0.03, task="binary")
    assert "multiclass" in prediction_bias(pd.DataFrame(), y, scores, columns=[], min_rows=1, tolerance=0.03,
                                           task="multiclass")["not_measured"]
    record = night()  # as the monitor hands it to decide, which keeps it in the decision's evidence
    record.details["decision"]["details"]["prediction_bias"] = found
    row = scores_of(record)["model.7"]
    assert (row["score"], row["passed"], row["evidence"]["worst"]) == (1.0, False, "plan=pro")


def test_feature_benefit_shuffles_each_feature_on_the_holdout_and_flags_one_the_model_cannot_use():
    import numpy as np

    from include.nightshift.benefit import feature_benefit
    from include.nightshift.demo_data import generate_day
    from include.nightshift.training import build_baseline, fit, labels

    train = generate_day(dt.date(2026, 2, 1), 3000, seed=3)
    holdout = generate_day(dt.date(2026, 2, 2), 2000, seed=4)
    noise = SPEC.feature_names[0]  # made pure noise in training: the model can learn nothing from it
    train[noise] = train[noise].to_numpy()[np.random.default_rng(1).permutation(len(train))]
    model = fit(build_baseline(SPEC), train, SPEC)
    found = feature_benefit(model, holdout, labels(holdout, SPEC), SPEC)
    assert found["features"] == len(SPEC.feature_names) and found["rows"] == 2000
    assert max(found["benefit"].values()) > 0.01  # some feature carries the signal
    assert found["benefit"][noise] < 0.005 and found["passed"] is (not found["adds_nothing"])
    assert found == feature_benefit(model, holdout, labels(holdout, SPEC), SPEC) | {"seconds": found["seconds"]}
    capped = feature_benefit(model, holdout, labels(holdout, SPEC), SPEC, max_rows=500)  # a seeded sample above it
    assert capped["rows"] == 500 and capped["benefit"] == feature_benefit(model, holdout, labels(holdout, SPEC), SPEC,
                                                                          max_rows=500)["benefit"]
    record = night(trained=TRAINED, judged=verdict())
    record.details["feature_benefit"] = found
    row = scores_of(record)["data.2"]
    assert (row["score"], row["passed"], row["evidence"]["adds_nothing"]) == (1.0, found["passed"],
                                                                              found["adds_nothing"])
    assert scores_of(night())["data.2"]["evidence"]["not_run"] == ts.NO_CHALLENGER


def test_one_example_is_traced_through_every_stage_of_the_model_and_adds_up_to_its_score():
    from include.nightshift.demo_data import generate_day
    from include.nightshift.trace import trace_example
    from include.nightshift.training import build_baseline, fit, predict_scores

    train, holdout = generate_day(dt.date(2026, 2, 1), 2000, seed=3), generate_day(dt.date(2026, 2, 2), 50, seed=4)
    model = fit(build_baseline(SPEC), train, SPEC)
    found = trace_example(model, holdout, SPEC)
    assert [s["stage"] for s in found["stages"]] == ["input", "prep", "model"]
    assert found["passed"] is True and found["score"] == pytest.approx(predict_scores(model, holdout, SPEC)[0], abs=0)
    assert found["stages"][0]["values"]["plan"] == holdout["plan"].iloc[0]  # the raw row, then what prep made of it
    assert any(k.startswith("categorical__plan_") for k in found["stages"][1]["values"])
    assert "not_measured" in trace_example(object(), holdout, SPEC)
    record = night(trained=TRAINED, judged=verdict())
    record.details["example_trace"] = found
    row = scores_of(record)["infrastructure.5"]
    assert (row["score"], row["passed"], row["evidence"]["stages"]) == (1.0, True, ["input", "prep", "model"])


def test_rollback_needs_a_blessed_version_besides_the_serving_one():
    versions = [{"version": 3, "blessed": True, "champion_from": NOW, "champion_to": None},
                {"version": 2, "blessed": True, "champion_from": NOW, "champion_to": NOW},
                {"version": 1, "blessed": False, "champion_from": None, "champion_to": None}]
    found = ts.rollback_evidence(versions)
    assert found == {"serving": 3, "restorable": [2]}
    got = scores_of(night(), rollback=found)["infrastructure.7"]
    assert (got["score"], got["passed"]) == (1.0, True)
    assert scores_of(night(), rollback=ts.rollback_evidence(versions[:1]))["infrastructure.7"]["passed"] is False
    assert scores_of(night())["infrastructure.7"]["score"] == 0.0  # not read


def test_final_is_the_minimum_of_the_section_sums_and_the_summary_line_says_them():
    rows = ts.score_night(ts.night_evidence(night(trained=TRAINED, judged=verdict(), serving=SERVING)))
    summary = ts.summarise(rows)
    assert summary["final"] == min(summary["sections"].values())
    assert summary["sections"] == {s: sum(r["score"] for r in rows if r["section"] == s) for s in ts.SECTIONS}
    text = ts.summary_text(summary)
    sums = summary["sections"]
    assert text == (f"ML Test Score {summary['final']:g} (data {sums['data']:g}, model {sums['model']:g}, infra "
                    f"{sums['infrastructure']:g}, monitoring {sums['monitoring']:g})")
    record = night()
    record.details["ml_test_score"] = summary
    assert record.summary().endswith(text)


def test_a_judge_that_cannot_read_its_evidence_scores_zero_and_says_so():
    broken = night(trained=TRAINED, judged=verdict())
    broken.details["verdict"] = [{"name": "slices", "passed": True, "slices": [{"outcome": "passed",
                                                                                "regression": "x"}, 5]}]
    row = scores_of(broken)["model.6"]
    assert row["score"] == 0.0 and row["evidence"]["not_run"].startswith("could not judge")


def test_the_night_is_written_replaced_by_its_next_recorded_run_and_never_by_a_dry_run(pg_conn, tmp_path):
    store = ArtifactStore(tmp_path / "store")
    first = night(trained=TRAINED, judged=verdict(), run="run-1")
    record_night(pg_conn, store, SPEC, first, health_days=7)

    rows = warehouse.ml_test_scores(pg_conn, SPEC, DAY)
    assert len(rows) == 28 and [r["test"] for r in rows] == [t.id for t in ts.TESTS]
    assert {r["dag_run_id"] for r in rows} == {"run-1"}
    by_test = {r["test"]: r for r in rows}
    assert by_test["model.5"]["evidence"]["holdout"].startswith("challenger 0.81")  # jsonb, read back as a dict
    rollback = by_test["infrastructure.7"]  # read from model_versions: nothing there to restore
    assert (rollback["score"], rollback["passed"], rollback["evidence"]["restorable"]) == (1.0, False, [])
    kept = first.details["ml_test_score"]
    assert kept["final"] == min(kept["sections"].values()) == min(
        sum(r["score"] for r in rows if r["section"] == s) for s in ts.SECTIONS)
    stored = warehouse.runs(pg_conn, SPEC, 7)[-1]["details"]["ml_test_score"]
    assert stored == kept and "ML Test Score" in first.summary()

    record_night(pg_conn, store, SPEC, night(run="dry", dry_run=True), health_days=7)
    assert {r["dag_run_id"] for r in warehouse.ml_test_scores(pg_conn, SPEC, DAY)} == {"run-1"}

    record_night(pg_conn, store, SPEC, night(run="run-2"), health_days=7)
    again = warehouse.ml_test_scores(pg_conn, SPEC)
    assert len(again) == 28 and {r["dag_run_id"] for r in again} == {"run-2"}
    assert {r["test"]: r["score"] for r in again}["model.5"] == 0.0  # tonight's rerun trained nothing

    import re  # the README's example queries on ml_test_score run here, and find the night

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    statements = [s.strip() for b in re.findall(r"```sql\n(.*?)```", readme, re.S) for s in b.split(";")
                  if "ml_test_score" in s]
    assert len(statements) >= 3, statements
    for statement in statements:
        with pg_conn.transaction(), pg_conn.cursor() as cur:
            cur.execute(statement)
            assert cur.fetchall(), statement


def test_the_health_page_charts_the_sections_and_lists_the_newest_nights_28_tests(pg_conn, tmp_path):
    from include.nightshift import health

    store = ArtifactStore(tmp_path / "store")
    record_night(pg_conn, store, SPEC, night(run="run-0"), health_days=7)
    later = dataclasses.replace(night(trained=TRAINED, judged=verdict(), serving=SERVING, run="run-1"),
                                logical_date=DAY + dt.timedelta(days=1))
    record_night(pg_conn, store, SPEC, later, health_days=7)

    runs = health.read_history(pg_conn, SPEC, 7)
    fig = health.ml_test_score_chart(runs)
    lines = {line.get_gid(): list(line.get_ydata()) for line in fig.axes[0].get_lines()}
    assert lines["section-model"] == [runs[0]["details"]["ml_test_score"]["sections"]["model"],
                                      later.details["ml_test_score"]["sections"]["model"]]
    assert lines["final"][-1] == later.details["ml_test_score"]["final"]
    newest = health.read_test_score(pg_conn, SPEC)
    assert len(newest) == 28 and {r["night"] for r in newest} == {later.logical_date}
    page = health.health_page_html(SPEC, runs, health.read_events(pg_conn, SPEC), test_score=newest)
    assert 'id="ml-test-score"' in page and page.count("<tr class=") >= 28
    assert f"each test with tonight's evidence" in page and "gain +0.01 fails" in page


def test_a_quiet_night_judges_the_simpler_model_on_the_rows_the_champion_served():
    """Model 5 runs every night with labels: the champion against its own baseline on the served labelled rows
    (monitor's served_baseline); on a training night the gate's holdout check must pass too."""
    beaten = {"metric": "roc_auc", "champion": 0.70, "baseline": 0.72, "gain": -0.02, "margin": 0.0, "passed": False,
              "rows": 800}
    quiet = scores_of(night(monitor=dataclasses.replace(MONITOR, served_baseline=beaten)))["model.5"]
    assert (quiet["score"], quiet["passed"]) == (1.0, False)
    assert quiet["evidence"]["served"] == {k: beaten[k] for k in ("champion", "baseline", "gain", "margin", "rows")}
    ahead = dataclasses.replace(MONITOR, served_baseline={**beaten, "champion": 0.75, "gain": 0.03, "passed": True})
    assert scores_of(night(monitor=ahead))["model.5"]["passed"] is True
    both = scores_of(night(trained=TRAINED, judged=verdict(), monitor=ahead))["model.5"]  # the gate's check failed
    assert both["passed"] is False and both["evidence"]["served"]["gain"] == 0.03 and "holdout" in both["evidence"]
    unmeasured = dataclasses.replace(MONITOR, served_baseline={"not_measured": "v2 has no baseline to load"})
    row = scores_of(night(monitor=unmeasured))["model.5"]
    assert row["score"] == 0.0 and "no baseline to load" in row["evidence"]["not_run"]
