"""Fault: the MLflow tracking server dies between train and evaluate.

The pipeline talks to a real `mlflow server` (SQLite store) through a TCP relay, the address
it is given in the Airflow Variable nightshift_mlflow_tracking_uri. Night 1 makes v1 the
champion. Night 2 is forced to retrain: train registers v2, and the first request the
pipeline sends once train has succeeded (evaluate's) makes the relay SIGKILL the server and
drop the connection. MLflow's client is told not to retry (MLFLOW_HTTP_REQUEST_MAX_RETRIES=0).
When evaluate has failed, the server is started again on the same store, and the registry
must show what fail-closed promises: v1 still champion, v2 never blessed. The champion serves
whatever else failed: score and publish still run, and the night is published by v1.
"""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from mlflow import MlflowClient

from faultkit import (MlflowServer, Nights, OwnPostgres, Relay, cold_start, database_uri, history, next_night,
                      partition, wait_for)

pytestmark = pytest.mark.integration

N1, N2 = dt.date(2026, 3, 1), dt.date(2026, 3, 2)
MODEL = "nightshift_churn"
FINISHED = ("success", "failed", "upstream_failed", "skipped")


@pytest.fixture(scope="module")
def outage(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow_down")
    pg = OwnPostgres(root / "pg")
    server = MlflowServer(root / "mlflow").start()
    nights: Nights | None = None
    killing = threading.Lock()

    def policy() -> bool:
        """Pass everything until night 2's train has succeeded; then kill the server and refuse, until
        night 2's evaluate has finished (after that, clients wait for the restarted server)."""
        evaluate = nights.task(N2, "evaluate") if nights else None
        if evaluate and evaluate[0] in FINISHED:
            return True
        train = nights.task(N2, "train") if nights else None
        if train and train[0] == "success":
            with killing:
                server.kill()
            return False
        return True

    relay = Relay(server.port, policy)
    env = {"AIRFLOW_VAR_NIGHTSHIFT_MLFLOW_TRACKING_URI": relay.url,
           "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
           # long enough for a request held by the relay while the server (re)starts
           "MLFLOW_HTTP_REQUEST_TIMEOUT": "120"}
    nights = Nights(root / "home", pg.uri, [
        *cold_start(N1),
        *next_night(N2),
        {"run": {"day": N2.isoformat(), "conf": {"force_retrain": True, "note": "mlflow down after train"}}},
    ], env)
    try:
        first = nights.next_run()
        assert (first["state"], first["champion"]) == ("success", 1), nights.log(N1)[-3000:]
        wait_for("night 2's evaluate to finish", lambda: (nights.task(N2, "evaluate") or (None,))[0] in FINISHED)
        assert server.proc.poll() is not None, "the server should have been killed by now"
        server.start()
        second = nights.next_run()
        nights.finish()
        server.wait_ready()
        yield {"nights": nights, "relay": relay, "server": server, "second": second,
               "warehouse": database_uri(pg.uri, "warehouse")}
    finally:
        nights.stop()
        server.kill()
        relay.close()
        pg.stop()


def test_evaluate_fails_with_an_error_naming_mlflow(outage):
    nights = outage["nights"]
    assert outage["relay"].refused >= 1, "the outage must have hit the pipeline"
    assert outage["second"]["state"] == "failed"
    assert nights.task(N2, "train")[0] == "success"
    assert nights.task(N2, "evaluate")[0] == "failed"
    assert nights.task(N2, "score")[0] == "success" and nights.task(N2, "publish")[0] == "success"
    # The error names MLflow and the tracking URI the pipeline was given (the relay's address).
    expected = f"mlflow.exceptions.MlflowException: API request to {outage['relay'].url}/api/2.0/mlflow/"
    errors = [line for line in nights.log(N2).splitlines() if line.startswith(expected)]
    assert errors and "failed with exception" in errors[0], nights.log(N2)[-3000:]


def test_champion_is_unchanged_and_the_challenger_not_blessed(outage):
    client = MlflowClient(tracking_uri=outage["server"].url, registry_uri=outage["server"].url)
    assert {k: str(v) for k, v in client.get_registered_model(MODEL).aliases.items()} == {"champion": "1"}
    assert outage["second"]["champion"] == 1
    challenger = client.get_model_version(MODEL, "2")
    assert challenger.tags.get("nightshift.blessed") != "true"
    assert "nightshift.promoted_at" not in challenger.tags
    assert challenger.tags.get("nightshift.judged") == "false"  # its evaluate never finished: it says so
    assert client.get_model_version(MODEL, "1").tags.get("nightshift.blessed") == "true"


def test_the_champion_publishes_the_night_and_the_failure_is_recorded(outage):
    warehouse = outage["warehouse"]
    rows, _, _, versions = partition(warehouse, N2)
    assert rows > 0 and versions == [1]
    night2 = history(warehouse)[N2.isoformat()]
    assert night2["decision"] == "failed" and night2["published"] == rows
    assert night2["challenger"] == 2 and night2["champion"] == 1
    assert "evaluate" in night2["details"]["failed_tasks"]
