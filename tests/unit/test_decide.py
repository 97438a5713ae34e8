"""The retrain decision: every reason, the no-retrain case, precedence and direction."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest

from include.nightshift.decide import REASONS, decide

# A healthy champion under the churn spec: drift 0.25, floor 0.70, tolerance 0.05, age 30 days.
QUIET = dict(has_champion=True, drift_share=0.1, realised_metric=0.80, champion_holdout_metric=0.82,
             champion_age_days=3.0, force=False)


def run(spec, **changes):
    return decide(**{**QUIET, **changes}, spec=spec)


def test_quiet_night_does_not_retrain_and_records_everything(churn_spec):
    d = run(churn_spec)
    assert d.retrain is False and d.reason is None
    record = d.to_dict()
    json.dumps(record, allow_nan=False)
    details = record["details"]
    assert details["drift_share"] == 0.1 and details["drift_share_threshold"] == 0.25
    assert details["realised_metric"] == 0.80 and details["champion_holdout_metric"] == 0.82
    assert details["floor"] == 0.70 and details["realised_tolerance"] == 0.05
    assert details["champion_age_days"] == 3.0 and details["max_model_age_days"] == 30
    assert details["force"] is False and details["has_champion"] is True and details["triggered"] == []
    assert details["realised_decay"] == pytest.approx(0.02)
    assert details["summary"].startswith("no retrain:") and "drift share 0.1 < threshold 0.25" in details["summary"]


def test_forced(churn_spec):
    d = run(churn_spec, force=True)
    assert (d.retrain, d.reason) == (True, "forced")


def test_no_champion(churn_spec):
    d = run(churn_spec, has_champion=False, drift_share=None, realised_metric=None, champion_holdout_metric=None,
            champion_age_days=None)
    assert (d.retrain, d.reason) == (True, "no_champion")
    json.dumps(d.to_dict(), allow_nan=False)


def test_drift_at_threshold_retrains(churn_spec):
    assert run(churn_spec, drift_share=0.25).reason == "drift"
    assert run(churn_spec, drift_share=0.2499).reason is None
    d = run(churn_spec, drift_share=0.4)
    assert d.details["summary"] == "retrain (drift): drift share 0.4 >= threshold 0.25"


def test_quality_decay_below_floor(churn_spec):
    d = run(churn_spec, realised_metric=0.69, champion_holdout_metric=0.70)
    assert d.reason == "quality_decay" and "beyond floor 0.7" in d.details["summary"]


def test_quality_decay_against_holdout(churn_spec):
    assert run(churn_spec, realised_metric=0.76, champion_holdout_metric=0.82).reason == "quality_decay"
    assert run(churn_spec, realised_metric=0.78, champion_holdout_metric=0.82).reason is None
    assert run(churn_spec, realised_metric=0.90, champion_holdout_metric=0.82).reason is None  # better is fine


def test_quality_decay_lower_is_better(churn_spec):
    spec = replace(churn_spec, promotion=replace(churn_spec.promotion, metric="log_loss", floor=0.5))
    assert run(spec, realised_metric=0.30, champion_holdout_metric=0.28).reason is None
    d = run(spec, realised_metric=0.40, champion_holdout_metric=0.28)  # loss rose by 0.12 > 0.05
    assert d.reason == "quality_decay" and d.details["realised_decay"] == pytest.approx(0.12)
    assert run(spec, realised_metric=0.55, champion_holdout_metric=None).reason == "quality_decay"  # past ceiling
    assert run(spec, realised_metric=0.10, champion_holdout_metric=0.28).reason is None


def test_model_age(churn_spec):
    assert run(churn_spec, champion_age_days=30.5).reason == "model_age"
    assert run(churn_spec, champion_age_days=30).reason is None


@pytest.mark.parametrize("unmeasured", [None, math.nan])
def test_unmeasured_inputs_trigger_nothing_and_stay_json_safe(churn_spec, unmeasured):
    d = run(churn_spec, drift_share=unmeasured, realised_metric=unmeasured, champion_holdout_metric=unmeasured,
            champion_age_days=unmeasured)
    assert d.retrain is False
    json.dumps(d.to_dict(), allow_nan=False)
    assert d.details["drift_share"] is None and "drift not measured" in d.details["summary"]


def test_precedence_first_matching_reason_wins(churn_spec):
    everything = dict(force=True, has_champion=False, drift_share=0.9, realised_metric=0.5,
                      champion_holdout_metric=0.82, champion_age_days=99)
    expected = list(REASONS)
    order = ["force", "has_champion", "drift_share", "realised_metric", "champion_age_days"]
    calm = dict(force=False, has_champion=True, drift_share=0.1, realised_metric=0.80, champion_age_days=3.0)
    for i, reason in enumerate(expected):
        inputs = {**everything, **{k: calm[k] for k in order[:i]}}
        d = run(churn_spec, **inputs)
        assert d.reason == reason
        assert d.details["triggered"] == expected[i:]


def test_model_age_is_counted_in_nights_up_to_the_run_date_not_the_wall_clock(churn_spec):
    import datetime as dt

    from include.nightshift.decide import model_age_days

    trained_for = dt.date(2026, 1, 1)
    assert model_age_days(trained_for, dt.date(2026, 1, 31)) == 30.0
    assert model_age_days(None, dt.date(2026, 1, 31)) is None
    # a backfill of a night long ago sees the age that night saw: no model_age retrain
    backfill = run(churn_spec, champion_age_days=model_age_days(trained_for, dt.date(2026, 1, 10)))
    assert backfill.reason is None
    late = run(churn_spec, champion_age_days=model_age_days(trained_for, dt.date(2026, 2, 1)))
    assert late.reason == "model_age"  # 31 nights > max_model_age_days 30
