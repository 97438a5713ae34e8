"""The retrain decision: every reason, the no-retrain case, precedence and direction, and the evidence
rules: drift acts only when it persisted or comes with a measured quality drop; quality decay acts on
the realised interval, never on a point inside its own noise."""

from __future__ import annotations

import datetime as dt
import dataclasses
import json
import math
from dataclasses import replace

import pytest

from include.nightshift.decide import REASONS, decide, model_age_days
from include.nightshift.steps import DriftStep, MonitorStep

# Under the churn spec: drift share 0.25, persist_nights 2, floor 0.70, tolerance 0.05, age 30 days.


def drift_step(share: float | None = 0.1, persisted: int | None = None, **more) -> DriftStep:
    """A drift step as measure_night_drift makes it: detected when share >= 0.25; persisted defaults to 1
    night when detected (tonight only)."""
    detected = None if share is None or share != share else share >= 0.25
    nights = persisted if persisted is not None else int(bool(detected))
    return DriftStep(share=share, champion_version=1, drifted=["age"] if detected else [], detected=detected,
                     persisted_nights=nights, **more)


def monitor_step(value: float | None = 0.80, interval: tuple[float, float] | None = (0.78, 0.82),
                 holdout: float | None = 0.82) -> MonitorStep:
    return MonitorStep(realised_metric=value, rows=7000, champion_version=1, champion_holdout_metric=holdout,
                       interval=None if interval is None else list(interval), confidence=0.95,
                       days=["2026-03-01", "2026-03-02"], brier=0.12, ece=0.03)


QUIET = dict(has_champion=True, drift=drift_step(), monitor=monitor_step(), champion_age_days=3.0, force=False)


def run(spec, **changes):
    return decide(**{**QUIET, **changes}, spec=spec)


def test_quiet_night_does_not_retrain_and_records_everything(churn_spec):
    d = run(churn_spec, drift=drift_step(0.1, prediction_drift={"method": "Wasserstein distance (normed)",
                                                              "score": 0.02, "threshold": 0.1, "drifted": False}))
    assert d.retrain is False and d.reason is None
    record = d.to_dict()
    json.dumps(record, allow_nan=False)
    details = record["details"]
    assert details["drift_share"] == 0.1 and details["drift_share_threshold"] == 0.25
    assert details["persist_nights"] == 2 and details["drift_persisted_nights"] == 0
    assert details["prediction_drift"]["score"] == 0.02 and details["drift_acted"] is False
    assert details["realised_metric"] == 0.80 and details["champion_holdout_metric"] == 0.82
    assert details["realised_interval"] == [0.78, 0.82] and details["realised_confidence"] == 0.95
    assert details["realised_rows"] == 7000 and details["realised_days"] == ["2026-03-01", "2026-03-02"]
    assert (details["realised_brier"], details["realised_ece"]) == (0.12, 0.03)
    assert details["quality_drop"] is False  # the interval reaches the holdout metric
    assert details["floor"] == 0.70 and details["realised_tolerance"] == 0.05
    assert details["champion_age_days"] == 3.0 and details["max_model_age_days"] == 30
    assert details["force"] is False and details["has_champion"] is True and details["triggered"] == []
    assert details["realised_decay"] == pytest.approx(0.02)
    assert details["summary"].startswith("no retrain:") and "drift share 0.1 < threshold 0.25" in details["summary"]


def test_forced(churn_spec):
    d = run(churn_spec, force=True)
    assert (d.retrain, d.reason) == (True, "forced")


def test_no_champion(churn_spec):
    d = run(churn_spec, has_champion=False, drift=DriftStep(share=None, champion_version=None),
            monitor=MonitorStep(realised_metric=None, rows=0, champion_version=None), champion_age_days=None)
    assert (d.retrain, d.reason) == (True, "no_champion")
    json.dumps(d.to_dict(), allow_nan=False)


# --- drift: persisted, or with a measured quality drop ----------------------------------------------


def test_drift_on_one_night_only_is_recorded_not_acted_on(churn_spec):
    d = run(churn_spec, drift=drift_step(0.4, persisted=1))
    assert d.retrain is False and d.reason is None
    assert d.details["drift_detected"] is True and d.details["drift_acted"] is False
    assert "on 1 of 2 consecutive night(s) and no measured quality drop: recorded, not acted on" \
        in d.details["summary"]


def test_drift_that_persisted_retrains(churn_spec):
    d = run(churn_spec, drift=drift_step(0.4, persisted=2))
    assert (d.retrain, d.reason) == (True, "drift")
    assert d.details["summary"] == "retrain (drift): drift share 0.4 >= threshold 0.25 on 2 of 2 consecutive night(s)"
    assert d.details["drift_acted"] is True


def test_drift_at_threshold_counts_and_below_does_not(churn_spec):
    assert run(churn_spec, drift=drift_step(0.25, persisted=2)).reason == "drift"
    assert run(churn_spec, drift=drift_step(0.2499, persisted=0)).reason is None


def test_persist_nights_one_acts_on_the_first_night(churn_spec):
    spec = replace(churn_spec, drift=replace(churn_spec.drift, persist_nights=1))
    assert run(spec, drift=drift_step(0.4, persisted=1)).reason == "drift"


def test_drift_with_a_measured_quality_drop_retrains_on_the_first_night(churn_spec):
    # the interval's upper bound 0.815 is below the holdout metric 0.82: a drop beyond noise (not yet a decay)
    d = run(churn_spec, drift=drift_step(0.4, persisted=1), monitor=monitor_step(0.80, (0.785, 0.815), 0.82))
    assert (d.retrain, d.reason) == (True, "drift")
    assert d.details["quality_drop"] is True and "with a measured quality drop" in d.details["summary"]
    # an interval that reaches the holdout metric is no measured drop: the drift waits for a second night
    d = run(churn_spec, drift=drift_step(0.4, persisted=1), monitor=monitor_step(0.80, (0.78, 0.82), 0.82))
    assert d.reason is None and d.details["quality_drop"] is False


def test_drift_without_a_measured_realised_metric_needs_persistence(churn_spec):
    unmeasured = MonitorStep(realised_metric=None, rows=0, champion_version=1, champion_holdout_metric=0.82)
    d = run(churn_spec, drift=drift_step(0.4, persisted=1), monitor=unmeasured)
    assert d.reason is None and d.details["quality_drop"] is None


# --- quality: the interval, not the point ------------------------------------------------------------


def test_quality_decay_fires_when_the_whole_interval_is_below_holdout_minus_tolerance(churn_spec):
    limit = 0.82 - 0.05
    d = run(churn_spec, monitor=monitor_step(0.74, (0.72, limit - 1e-6), 0.82))
    assert d.reason == "quality_decay" and "entirely worse than holdout 0.82 - tolerance 0.05" in d.details["summary"]
    # the upper bound at the limit: not beyond noise
    assert run(churn_spec, monitor=monitor_step(0.74, (0.72, limit), 0.82)).reason is None
    # a point far below, but an interval that reaches the limit: noise, no retrain
    assert run(churn_spec, monitor=monitor_step(0.70, (0.60, 0.80), 0.82)).reason is None
    assert run(churn_spec, monitor=monitor_step(0.90, (0.88, 0.92), 0.82)).reason is None  # better is fine


def test_floor_fires_only_when_the_whole_interval_is_below_it(churn_spec):
    d = run(churn_spec, monitor=monitor_step(0.66, (0.64, 0.69), None))
    assert d.reason == "quality_decay" and "entirely beyond floor 0.7" in d.details["summary"]
    assert run(churn_spec, monitor=monitor_step(0.66, (0.60, 0.71), None)).reason is None


def test_quality_decay_lower_is_better(churn_spec):
    spec = replace(churn_spec, promotion=replace(churn_spec.promotion, metric="log_loss", floor=0.5))
    assert run(spec, monitor=monitor_step(0.30, (0.29, 0.31), 0.28)).reason is None
    d = run(spec, monitor=monitor_step(0.40, (0.34, 0.46), 0.28))  # lower bound 0.34 > 0.28 + 0.05
    assert d.reason == "quality_decay" and d.details["realised_decay"] == pytest.approx(0.12)
    assert run(spec, monitor=monitor_step(0.40, (0.33, 0.46), 0.28)).reason is None  # 0.33 = the limit
    assert run(spec, monitor=monitor_step(0.55, (0.51, 0.60), None)).reason == "quality_decay"  # past ceiling
    assert run(spec, monitor=monitor_step(0.55, (0.45, 0.60), None)).reason is None
    # a measured drop for drift is mirrored too: the whole interval above the holdout loss
    drop = run(spec, drift=drift_step(0.4, persisted=1), monitor=monitor_step(0.30, (0.285, 0.31), 0.28))
    assert drop.reason == "drift" and drop.details["quality_drop"] is True


def test_model_age(churn_spec):
    assert run(churn_spec, champion_age_days=30.5).reason == "model_age"
    assert run(churn_spec, champion_age_days=30).reason is None


@pytest.mark.parametrize("unmeasured", [None, math.nan])
def test_unmeasured_inputs_trigger_nothing_and_stay_json_safe(churn_spec, unmeasured):
    d = run(churn_spec, drift=DriftStep(share=unmeasured, champion_version=1),
            monitor=MonitorStep(realised_metric=unmeasured, rows=0, champion_version=1,
                                champion_holdout_metric=unmeasured, interval=None),
            champion_age_days=unmeasured)
    assert d.retrain is False
    json.dumps(d.to_dict(), allow_nan=False)
    assert d.details["drift_share"] is None and "drift not measured" in d.details["summary"]
    assert "realised roc_auc not measured" in d.details["summary"]
    assert run(churn_spec, drift=None, monitor=None).retrain is False  # steps that did not run


WON = {"version": 3, "champion_version": 1, "wins": True, "summary": "shadow v3 won the newest 3 of 3 days"}


def test_precedence_first_matching_reason_wins(churn_spec):
    decayed = monitor_step(0.5, (0.45, 0.55), 0.82)
    everything = dict(force=True, has_champion=False, drift=drift_step(0.9, persisted=2),
                      monitor=dataclasses.replace(decayed, shadow=WON), champion_age_days=99)
    expected = list(REASONS)
    # "shadow" calms the shadow only (the realised metric still decays); "monitor" calms both
    order = ["force", "has_champion", "shadow", "drift", "monitor", "champion_age_days"]
    calm = dict(force=False, has_champion=True, drift=drift_step(0.1), monitor=monitor_step(), champion_age_days=3.0)
    for i, reason in enumerate(expected):
        calmed = order[:i]
        inputs = {**everything, **{k: calm[k] for k in calmed if k != "shadow"}}
        if "shadow" in calmed and "monitor" not in calmed:
            inputs["monitor"] = decayed
        d = run(churn_spec, **inputs)
        assert d.reason == reason
        assert d.details["triggered"] == expected[i:]


def test_shadow_wins_only_on_its_own_evidence(churn_spec):
    """The shadow's record decides shadow_wins (and is kept in details); a shadow that has not won yet, or no
    shadow, adds nothing."""
    won = run(churn_spec, monitor=dataclasses.replace(monitor_step(), shadow=WON))
    assert won.retrain and won.reason == "shadow_wins" and won.details["shadow"] == WON
    assert WON["summary"] in won.details["summary"]
    waiting = run(churn_spec, monitor=dataclasses.replace(monitor_step(), shadow={**WON, "wins": False}))
    assert not waiting.retrain and waiting.details["shadow"]["version"] == 3
    assert run(churn_spec).details["shadow"] == {}


def test_model_age_is_counted_in_nights_up_to_the_run_date_not_the_wall_clock(churn_spec):
    trained_for = dt.date(2026, 1, 1)
    assert model_age_days(trained_for, dt.date(2026, 1, 31)) == 30.0
    assert model_age_days(None, dt.date(2026, 1, 31)) is None
    # a backfill of a night long ago sees the age that night saw: no model_age retrain
    backfill = run(churn_spec, champion_age_days=model_age_days(trained_for, dt.date(2026, 1, 10)))
    assert backfill.reason is None
    late = run(churn_spec, champion_age_days=model_age_days(trained_for, dt.date(2026, 2, 1)))
    assert late.reason == "model_age"  # 31 nights > max_model_age_days 30


def test_drift_alert_only_when_drift_is_acted_on(churn_spec):
    from include.nightshift.nightly import drift_alert

    day = dt.date(2026, 3, 5)
    assert drift_alert(churn_spec, day, run(churn_spec, drift=drift_step(0.4, persisted=1))) is None
    assert drift_alert(churn_spec, day, run(churn_spec)) is None
    text, facts = drift_alert(churn_spec, day, run(churn_spec, drift=drift_step(0.4, persisted=2)))
    assert text == "churn 2026-03-05: 40% of the features drifted (threshold 25%), 2 night(s) in a row"
    assert facts["drifted"] == ["age"] and facts["persisted_nights"] == 2
