"""The run's row of history, built from the steps' outputs: pure, so every outcome is reachable here."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from include.nightshift.decide import Decision
from include.nightshift.run_record import build_run_record, run_outcome
from include.nightshift.snapshot import SnapshotRef
from include.nightshift.spec import load_spec
from include.nightshift.steps import (DriftStep, PublishStep, ScoringStep, SnapshotStep, TrainingStep,
                                      ValidationStep, VerdictStep)
from include.nightshift.warehouse import ATTEMPT_COLUMNS, RUN_COLUMNS

SPEC = load_spec(Path(__file__).resolve().parents[2] / "include" / "specs" / "churn.yaml")
DAY = dt.date(2026, 2, 5)
NOW = dt.datetime(2026, 2, 6, 1, 0, tzinfo=dt.timezone.utc)
REF = SnapshotRef(url="/s.parquet", sha256="c" * 64, rows=1000, day=DAY.isoformat(), labelled=False)
SNAP = SnapshotStep(day=DAY, current=REF, labelled=REF)
OK = ValidationStep(passed=True, rows=1000)
DRIFT = DriftStep(share=0.3, champion_version=2, drifted=["age"])
TRAINED = TrainingStep(version=3, run_id="r", train_rows=9, holdout_rows=3, holdout_end=DAY, holdout_scores_url="/h",
                       snapshots_url="/s")


def verdict(promoted: bool) -> VerdictStep:
    return VerdictStep(promote=promoted, metric="roc_auc", challenger=0.81, champion=0.8, baseline=0.7, message="m",
                       checks=[{"name": "floor", "passed": True, "detail": "ok"}], policy="auto", dag_run_id="run",
                       champion_version=2, challenger_version=3, promoted=promoted,
                       policy_note="gate passed" if promoted else "gate failed")


NO_MODEL = ScoringStep(url=None, rows=0, model_version=None, day=DAY)


def record(states=None, params=None, **steps):
    given = dict(snapshot=SNAP, validation=OK, drift=DRIFT, decision=None, trained=None, verdict=None, published=None)
    return build_run_record(SPEC, day=DAY, dag_run_id="run", states=states or {}, **{**given, **steps},
                            started_at=None, finished_at=NOW, params=params or {"note": ""})


@pytest.mark.parametrize(("failed", "promoted", "expected"), [
    (["validate"], None, "failed"), ([], True, "promoted"), ([], False, "rejected"), ([], None, "skipped"),
    (["publish"], True, "failed"),  # a promotion does not make a night whose publish failed a success
])
def test_the_outcome(failed, promoted, expected):
    assert run_outcome(failed, None if promoted is None else verdict(promoted)) == expected


def test_a_retrain_that_gives_the_champion_back_is_reproduced_not_rejected():
    """A rerun on the champion's own snapshots, spec and code reuses its version (same training key)."""
    import dataclasses

    again = dataclasses.replace(verdict(False), reused=True, challenger_version=2, policy_note="already champion")
    assert run_outcome([], again) == "reproduced"
    assert run_outcome([], dataclasses.replace(again, challenger_version=3)) == "rejected"  # reused, not the champion
    assert run_outcome(["publish"], again) == "failed"


@pytest.mark.parametrize("failed", [["publish", "score"], []])  # the spec forbids it (fails) or allows it (green)
def test_no_champion_after_the_gate_is_no_model_whatever_failed_with_it(failed):
    assert run_outcome(failed, verdict(False), NO_MODEL) == "no_model"
    assert run_outcome(failed, None, ScoringStep(url="/p", rows=5, model_version=1, day=DAY)) == (
        "failed" if failed else "skipped")


def test_a_night_without_a_model_fails_the_run_naming_the_setting():
    row = record(states={"score": "failed", "publish": "upstream_failed", "record_run": "running"},
                 decision=Decision(retrain=True, reason="no_champion", details={}), trained=TRAINED,
                 verdict=verdict(False), scored=NO_MODEL)
    assert (row.decision, row.rows_published, row.challenger_version) == ("no_model", 0, 3)
    assert "no_model" in row.error(SPEC) and "scoring.allow_no_predictions is false" in row.error(SPEC)
    allowed = record(states={"score": "skipped", "publish": "skipped"}, verdict=verdict(False), scored=NO_MODEL)
    assert allowed.decision == "no_model" and allowed.error(SPEC) is None  # allowed: recorded, and green
    assert "run failed at validate" in record(states={"validate": "failed"}).error(SPEC)


def test_the_attempt_row_is_the_run_row_plus_what_only_an_attempt_has():
    params = {"note": "rerun after the fix", "dry_run": True, "force_retrain": False, "run_date": "2026-02-05"}
    row = record(states={"validate": "failed", "record_run": "running"}, params=params)
    attempt = row.attempt_row()
    assert set(attempt) <= set(ATTEMPT_COLUMNS) and set(row.row()) == set(RUN_COLUMNS)
    assert (attempt["dry_run"], attempt["conf"], attempt["failed_tasks"]) == (True, params, ["validate"])
    assert attempt["note"] == row.note == "rerun after the fix" and attempt["dag_run_id"] == "run"
    assert {k: attempt[k] for k in ("logical_date", "decision", "details")} == {
        k: row.row()[k] for k in ("logical_date", "decision", "details")}


def test_a_promoting_night():
    row = record(states={"snapshot": "success", "record_run": "running"},
                 decision=Decision(retrain=True, reason="drift", details={}), trained=TRAINED, verdict=verdict(True),
                 published=PublishStep(rows=990, day=DAY, model_version=3))
    assert (row.decision, row.retrain_reason, row.challenger_version, row.champion_version) == ("promoted", "drift", 3, 2)
    assert (row.champion_metric, row.challenger_metric, row.rows_in, row.rows_published) == (0.8, 0.81, 1000, 990)
    assert row.validation_passed is True and row.note is None and row.drift_share == 0.3
    assert row.details["failed_tasks"] == [] and row.details["policy"] == "gate passed"
    assert set(row.row()) >= {"logical_date", "decision", "details"}


def test_a_night_that_failed_validation_names_what_failed():
    failure = {"snapshot": "current", "message": "age: 300 rows above max 100"}
    row = record(states={"validate": "failed", "drift": "upstream_failed", "record_run": "running"},
                 validation=ValidationStep(passed=False, rows=1000, failure=failure), drift=None)
    assert row.decision == "failed" and row.validation_passed is False
    assert row.details["failed_tasks"] == ["drift", "validate"]  # sorted; the record task itself never counts
    assert row.details["validation_failure"] == failure
    assert row.rows_published == 0 and row.champion_version is None


def test_a_night_that_never_validated_says_unknown_not_failed():
    row = record(states={"snapshot": "failed"}, snapshot=None, validation=None, drift=None)
    assert row.validation_passed is None and row.rows_in is None and row.decision == "failed"


def test_a_green_night_that_published_nothing_fails_unless_a_dry_run():
    """Every night that leaves consumers without predictions is loud: with no failed step and no
    explanation (dry run, or a no_model the spec allows), the record task fails the run."""
    published = PublishStep(rows=990, day=DAY, model_version=2)
    assert record(states={"publish": "success"}, published=published).error(SPEC) is None
    silent = record(states={"publish": "skipped"})
    assert "nothing was published for 2026-02-05 although no step failed" in silent.error(SPEC)
    assert record(states={"publish": "skipped"}, params={"dry_run": True}).error(SPEC) is None


def test_a_night_whose_watch_steps_failed_names_the_champion_that_served_it():
    """drift and monitor failed, nothing was judged, and the champion still scored the night: the
    record names it (issue 13 item 8), not null."""
    row = record(states={"drift": "failed", "monitor": "failed", "record_run": "running"}, drift=None,
                 scored=ScoringStep(url="/p", rows=990, model_version=4, day=DAY),
                 published=PublishStep(rows=990, day=DAY, model_version=4))
    assert (row.decision, row.champion_version, row.rows_published) == ("failed", 4, 990)
