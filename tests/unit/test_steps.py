"""The steps' typed outputs: they survive XCom's JSON, and a renamed field fails loudly."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from include.nightshift.decide import Decision
from include.nightshift.snapshot import SnapshotRef
from include.nightshift.steps import (DriftStep, MonitorStep, PublishStep, ScoringStep, SnapshotStep,
                                      TrainingStep, ValidationStep, VerdictStep)

REF = SnapshotRef(url="/s/a.parquet", sha256="ab" * 32, rows=10, day="2026-02-01", labelled=False)

EXAMPLES = [
    SnapshotStep(day=dt.date(2026, 2, 2), current=REF, labelled=REF),
    ValidationStep(passed=False, rows=10, results={"current": {"success": False}}, report_urls={"current": "/r"},
                   failure={"snapshot": "current", "message": "age out of range"}),
    DriftStep(share=0.25, champion_version=3, drifted=["age"], report_url="/d.html", details={"n_current": 10}),
    DriftStep(share=None, champion_version=None),
    MonitorStep(realised_metric=0.71, rows=10, champion_version=3, champion_holdout_metric=0.8,
                day=dt.date(2026, 2, 1)),
    Decision(retrain=True, reason="drift", details={"summary": "retrain (drift)"}),
    TrainingStep(version=4, run_id="r1", train_rows=100, holdout_rows=20, holdout_end=dt.date(2026, 2, 1),
                 holdout_scores_url="/h.npz", snapshots_url="/s.json"),
    VerdictStep(promote=True, metric="roc_auc", challenger=0.8, champion=None, baseline=0.7, message="PROMOTE",
                checks=[{"name": "floor", "passed": True, "detail": "ok"},
                        {"name": "slices", "passed": True, "detail": "ok", "slices": [{"column": "plan"}]}],
                policy="auto", dag_run_id="run1",
                champion_version=None, challenger_version=4, promoted=True, policy_note="gate passed",
                evaluation={"overall": {}}, report_url="/e.html"),
    ScoringStep(url="/p.parquet", rows=10, model_version=4, day=dt.date(2026, 2, 2)),
    PublishStep(rows=10, day=dt.date(2026, 2, 2), model_version=4),
]


@pytest.mark.parametrize("output", EXAMPLES, ids=lambda o: type(o).__name__)
def test_an_output_survives_xcom_json(output):
    sent = json.loads(json.dumps(output.to_xcom()))  # what XCom stores: plain JSON
    assert type(output).from_xcom(sent) == output


def test_dates_travel_as_iso_strings_and_come_back_as_dates():
    sent = SnapshotStep(day=dt.date(2026, 2, 2), current=REF, labelled=REF).to_xcom()
    assert sent["day"] == "2026-02-02" and sent["current"]["sha256"] == REF.sha256
    back = SnapshotStep.from_xcom(sent)
    assert back.day == dt.date(2026, 2, 2) and isinstance(back.current, SnapshotRef)


def test_a_step_that_did_not_run_is_none():
    assert TrainingStep.from_xcom(None) is None


def test_an_unknown_key_is_refused_naming_it():
    sent = {**PublishStep(rows=1, day=dt.date(2026, 2, 2), model_version=1).to_xcom(), "row": 1}
    with pytest.raises(ValueError, match="PublishStep.from_xcom: unknown key 'row'"):
        PublishStep.from_xcom(sent)


def test_verdict_tags_are_the_flat_record_without_the_evaluation():
    verdict = next(o for o in EXAMPLES if isinstance(o, VerdictStep))
    tags = verdict.tags()
    assert "evaluation" not in tags and "report_url" not in tags
    assert tags["challenger"] == 0.8 and tags["promote"] is True and tags["policy_note"] == "gate passed"
    assert tags["checks"][1] == {"name": "slices", "passed": True, "detail": "ok"}  # per-slice rows stay in the report
    assert verdict.checks[1]["slices"] == [{"column": "plan"}]  # and in the step's output
    assert verdict.record()["checks"][1]["slices"] == [{"column": "plan"}]  # and in what the report shows
    assert "evaluation" not in verdict.record()
