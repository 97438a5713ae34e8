"""Fault: the champion version is deleted in MLflow between two nights (issue 11 item 4).

Real DAG runs: night 1 starts cold and makes v1 champion; then v1 is deleted from the registry (its
alias goes with it), as a person cleaning up the registry might; night 2 retrains. The registry now
has no champion, but champion_changes says v1 served: that is a vanished champion, not a cold start.
The new challenger must not be promoted on the floor alone: the gate's champion check fails naming
v1, an alert names it, and the night is not recorded as promoted.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
from mlflow import MlflowClient

from faultkit import Nights, OwnPostgres, cold_start, database_uri, history, next_night, query

pytestmark = pytest.mark.integration

N1 = dt.date(2026, 4, 1)
N2 = N1 + dt.timedelta(days=1)
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
        first = Nights(root / "home_a", pg.uri, cold_start(N1), env)
        try:
            first.finish()
        finally:
            first.stop()
        assert str(registry.get_registered_model(MODEL).aliases["champion"]) == "1"
        registry.delete_model_version(MODEL, "1")
        second = Nights(root / "home_b", pg.uri, [*next_night(N2), {"run": {"day": N2.isoformat(),
                                                                            "conf": {"force_retrain": True}}}], env)
        try:
            runs = second.finish()
        finally:
            second.stop()
        warehouse = database_uri(pg.uri, "warehouse")
        yield {"runs": runs, "history": history(warehouse), "registry": registry, "log": second.log(N2.isoformat()),
               "changes": query(warehouse, "SELECT event, to_version, state FROM churn.champion_changes "
                                           "ORDER BY changed_at")}
    finally:
        pg.stop()


def test_the_new_challenger_is_not_promoted_on_the_floor_alone(vanished):
    night = vanished["history"][N2.isoformat()]
    assert night["decision"] != "promoted"
    assert night["challenger"] is not None and night["challenger"] != 1
    assert "champion" not in vanished["registry"].get_registered_model(MODEL).aliases
    assert vanished["changes"] == [("promote", 1, "done")]


def test_the_champion_check_fails_naming_the_vanished_version(vanished):
    night = vanished["history"][N2.isoformat()]
    details = night["details"] if isinstance(night["details"], dict) else json.loads(night["details"])
    checks = {c["name"]: c for c in details.get("verdict") or []}
    assert checks["champion"]["passed"] is False
    assert "v1 served" in checks["champion"]["detail"]


def test_an_alert_names_the_vanished_champion(vanished):
    assert "nightshift no_model" in vanished["log"] and "the champion v1 served" in vanished["log"]
