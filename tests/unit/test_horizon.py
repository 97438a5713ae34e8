"""The prediction horizon: a night scores rows whose outcome is still unknown (README "Time: what a night knows")."""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path

import pytest
import yaml

from include.nightshift.spec import SpecError, load_spec
from include.nightshift.training import training_days

ROOT = Path(__file__).resolve().parents[2]
CHURN = yaml.safe_load((ROOT / "include" / "specs" / "churn.yaml").read_text())


def load(tmp_path: Path, delay: int, horizon: int | None):
    data = copy.deepcopy(CHURN)
    data["label"]["delay_days"] = delay
    if horizon is not None:
        data["scoring"]["horizon_days"] = horizon
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_spec(path)


def test_same_day_labels_without_a_horizon_are_refused_naming_the_key(tmp_path):
    with pytest.raises(SpecError) as caught:
        load(tmp_path, delay=0, horizon=None)
    assert "scoring.horizon_days: must be at least 1 when label.delay_days is 0" in str(caught.value)


@pytest.mark.parametrize("delay, horizon", [(0, 1), (1, 0), (2, 3)])
def test_the_scored_day_is_never_a_day_the_night_learned_from(tmp_path, delay, horizon):
    spec = load(tmp_path, delay=delay, horizon=horizon)
    night = dt.date(2026, 3, 10)
    scored = night + spec.scored_day_offset
    end, days = training_days(spec, night)
    assert scored == night + dt.timedelta(days=horizon)
    assert max(days) == end < scored


def test_the_flights_example_scores_the_day_ahead():
    spec = load_spec(ROOT / "examples" / "flights" / "flights.yaml")
    assert (spec.label.delay_days, spec.scoring.horizon_days) == (0, 1)
