"""Fault: the champion version is deleted in MLflow between two nights (issue 11 item 4), and the
rollback DAG is the way back (issue 11: a rollback when the alias is gone).

Real DAG runs: night 1 starts cold and makes v1 champion; night 2 forces a retrain and a promotion
(v2 champion). Then v2 is deleted from the registry (its alias goes with it), as a person cleaning up
the registry might; night 3 retrains. The registry now has no champion, but champion_changes says v2
served: that is a vanished champion, not a cold start. The new challenger must not be promoted on the
floor alone: the gate's champion check fails naming v2, an alert names it, and the night is not
recorded as promoted.

Then the rollback DAG, for real: without a version it is refused at once (there is no champion to
step back from) and says to name one; naming v1 restores it (it loads and scores its reference
sample first), records the rollback from no champion, and re-publishes the latest published night
(night 2) with v1.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
from mlflow import MlflowClient

from faultkit import Nights, OwnPostgres, cold_start, database_uri, history, next_night, partition, query

pytestmark = pytest.mark.integration

N1 = dt.date(2026, 4, 1)
N2, N3 = N1 + dt.timedelta(days=1), N1 + dt.timedelta(days=2)
R1, R2 = N1 + dt.timedelta(days=3), N1 + dt.timedelta(days=4)  # the rollback runs' logical dates
MODEL = "nightshift_churn"


@pytest.fixture(scope="module")
def vanished(tmp_path_factory):
    root = tmp_path_factory.mktemp("vanished")
    pg = OwnPostgres(root / "pg")
    tracking = f"sqlite:///{root / 'mlflow' / 'mlflow.db'}"
    env = {"AIRFLOW_VAR_NIGHTSHIFT_MLFLOW_TRACKING_URI": tracking,
           "AIRFLOW_VAR_NIGHTSHIFT_MLFLOW_ARTIFACT_ROOT": str(root / "mlflow" / "artifacts"),
           "AIRFLOW_VAR_NIGHTSHIFT_ARTIFACT_ROOT": str(root / "artifacts")}
    (root / "mlflow").mkdir()
    registry = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    try:
        first = Nights(root / "home_a", pg.uri, [
            *cold_start(N1), *next_night(N2),
            {"run": {"day": N2.isoformat(), "conf": {"force_retrain": True, "promotion_policy": "force"}}}], env)
        try:
            first.finish()
        finally:
            first.stop()
        assert str(registry.get_registered_model(MODEL).aliases["champion"]) == "2"
        registry.delete_model_version(MODEL, "2")
        second = Nights(root / "home_b", pg.uri, [
            *next_night(N3), {"run": {"day": N3.isoformat(), "conf": {"force_retrain": True}}},
            {"run": {"day": R1.isoformat(), "dag": "rollback", "conf": {"reason": "v2 was deleted"}}},
            {"run": {"day": R2.isoformat(), "dag": "rollback", "conf": {"version": 1, "reason": "v2 was deleted"}}},
        ], env)
        try:
            runs = second.finish()
        finally:
            second.stop()
        warehouse = database_uri(pg.uri, "warehouse")
        logs = second.home / "logs"
        yield {"runs": runs, "history": history(warehouse), "registry": registry, "log": second.log(N3.isoformat()),
               "rollback_logs": [(logs / f"{MODEL}_rollback-{day}.log").read_text(errors="replace") for day in (R1, R2)],
               "partition": partition(warehouse, N2),
               "changes": query(warehouse, "SELECT event, from_version, to_version, state FROM churn.champion_changes "
                                           "ORDER BY changed_at")}
    finally:
        pg.stop()


def test_the_new_challenger_is_not_promoted_on_the_floor_alone(vanished):
    night = vanished["history"][N3.isoformat()]
    assert night["decision"] != "promoted"
    assert night["challenger"] not in (None, 1, 2)
    assert vanished["changes"][:2] == [("promote", None, 1, "done"), ("promote", 1, 2, "done")]


def test_the_champion_check_fails_naming_the_vanished_version(vanished):
    night = vanished["history"][N3.isoformat()]
    details = night["details"] if isinstance(night["details"], dict) else json.loads(night["details"])
    checks = {c["name"]: c for c in details.get("verdict") or []}
    assert checks["champion"]["passed"] is False
    assert "v2 served" in checks["champion"]["detail"]


def test_an_alert_names_the_vanished_champion(vanished):
    assert "nightshift no_model" in vanished["log"] and "the champion v2 served" in vanished["log"]


def test_a_rollback_without_a_version_is_refused_and_says_to_name_one(vanished):
    refused = vanished["runs"][1]
    assert (refused["state"], refused["champion"]) == ("failed", None), refused
    assert "name the version to restore" in vanished["rollback_logs"][0]


def test_a_rollback_to_a_named_version_restores_it_and_republishes_the_latest_night(vanished):
    restored = vanished["runs"][2]
    assert (restored["state"], restored["champion"]) == ("success", 1), restored
    assert str(vanished["registry"].get_registered_model(MODEL).aliases["champion"]) == "1"
    assert vanished["changes"][2:] == [("rollback", None, 1, "done")]
    rows, _, run_ids, versions = vanished["partition"]  # night 2: the latest night with predictions
    assert (run_ids, versions) == ([restored["run_id"]], [1]) and rows > 0
