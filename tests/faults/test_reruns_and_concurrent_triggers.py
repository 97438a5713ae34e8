"""Faults: the same night rerun three times, then triggered twice at the same moment.

One PostgreSQL server of this module's own holds the source and the warehouse; one MLflow
store (SQLite) and one artifact store are shared by everything, as they are in a deployment.

1. One Airflow home runs night 1 cold, then reruns it three times (two of the reruns force a
   retrain, the last one included). A retrain on the same snapshots, spec and code has the
   same training key: it reuses the cold start's version instead of registering a duplicate,
   and the night is still published.
2. Two more processes, each with its own Airflow home (its own SQLite metadata DB, as two
   schedulers would have), run night 1 again at the same moment, both forcing a retrain and
   a promotion. They wait at a barrier (an advisory lock the test holds) so that they start
   together; Airflow's max_active_runs cannot serialise runs of two different metadata DBs.
   Both reuse the champion's version: nothing is registered, nothing is re-promoted.

Afterwards: one row per entity, written by one run only; exactly one champion; one
pipeline_runs row for the night, from one of the last runs; one registry version.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import psycopg
import pytest
from mlflow import MlflowClient

from faultkit import ROWS, Nights, OwnPostgres, cold_start, database_uri, history, partition, query, wait_for

pytestmark = pytest.mark.integration

N1 = dt.date(2026, 3, 1)
MODEL = "nightshift_churn"
ASKED = {"rerun_published": True}  # a published night is processed again only when the run says so
RERUNS = [{"note": "rerun 1", **ASKED}, {"note": "rerun 2", "force_retrain": True, **ASKED},
          {"note": "rerun 3", "force_retrain": True, **ASKED}]
BARRIER = 7_460_001  # advisory lock key the two concurrent processes wait on


def aliases(registry: MlflowClient) -> dict[str, str]:
    """The model's aliases with their versions as text (a SQLite store returns numbers, a server text)."""
    return {name: str(version) for name, version in registry.get_registered_model(MODEL).aliases.items()}


def waiting_at_barrier(source_uri: str) -> int:
    rows = query(source_uri, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = %s AND NOT granted",
                 (BARRIER,))
    return rows[0][0]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("reruns")
    pg = OwnPostgres(root / "pg")
    shared = {"AIRFLOW_VAR_NIGHTSHIFT_MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow' / 'mlflow.db'}",
              "AIRFLOW_VAR_NIGHTSHIFT_MLFLOW_ARTIFACT_ROOT": str(root / "mlflow" / "artifacts"),
              "AIRFLOW_VAR_NIGHTSHIFT_ARTIFACT_ROOT": str(root / "artifacts")}
    (root / "mlflow").mkdir()
    yield {"root": root, "pg": pg, "env": shared, "warehouse": database_uri(pg.uri, "warehouse"),
           "source": database_uri(pg.uri, "source"),
           "registry": MlflowClient(tracking_uri=shared["AIRFLOW_VAR_NIGHTSHIFT_MLFLOW_TRACKING_URI"],
                                    registry_uri=shared["AIRFLOW_VAR_NIGHTSHIFT_MLFLOW_TRACKING_URI"])}
    pg.stop()


@pytest.fixture(scope="module")
def reruns(stack):
    steps = [*cold_start(N1), *({"run": {"day": N1.isoformat(), "conf": conf}} for conf in RERUNS)]
    nights = Nights(stack["root"] / "home_a", stack["pg"].uri, steps, stack["env"])
    try:
        runs = nights.finish()
    finally:
        nights.stop()
    return {"runs": runs, "partition": partition(stack["warehouse"], N1), "history": history(stack["warehouse"]),
            "aliases": aliases(stack["registry"]),
            "versions": sorted(int(v.version) for v in stack["registry"].search_model_versions(f"name='{MODEL}'"))}


@pytest.fixture(scope="module")
def concurrent(stack, reruns):
    barrier = psycopg.connect(stack["source"], autocommit=True)
    with barrier.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s)", (BARRIER,))
    wait = {"sql": f"SELECT pg_advisory_xact_lock_shared({BARRIER})"}
    both = [Nights(stack["root"] / f"home_{name}", stack["pg"].uri,
                   [wait, {"run": {"day": N1.isoformat(), "conf": {"force_retrain": True, "promotion_policy": "force",
                                                                    "note": f"trigger {name}", **ASKED}}}], stack["env"])
            for name in ("b", "c")]
    try:
        wait_for("both triggers to reach the barrier", lambda: waiting_at_barrier(stack["source"]) == 2)
        with barrier.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(%s)", (BARRIER,))
        runs = [n.finish()[0] for n in both]
    finally:
        barrier.close()
        for n in both:
            n.stop()
    return {"runs": runs, "nights": both}


# ---------------------------------------------------------------- three reruns


def test_every_rerun_succeeds(reruns):
    assert [r["state"] for r in reruns["runs"]] == ["success"] * (1 + len(RERUNS))


def test_reruns_leave_one_row_per_entity_from_the_last_run(reruns):
    last = reruns["runs"][-1]
    assert reruns["partition"] == (ROWS, ROWS, [last["run_id"]], [last["champion"]])


def test_reruns_leave_one_history_row_the_last_runs(reruns):
    assert list(reruns["history"]) == [N1.isoformat()]
    night = reruns["history"][N1.isoformat()]
    assert (night["run_id"], night["note"], night["published"]) == (reruns["runs"][-1]["run_id"], "rerun 3", ROWS)


def test_reruns_keep_one_champion_and_register_each_retrain_once(reruns, stack):
    assert reruns["versions"] == [1]  # the cold start's; the forced retrains of the same night reuse it
    assert reruns["aliases"] == {"champion": "1"} and reruns["runs"][-1]["champion"] == 1


def test_forced_reruns_reuse_the_version_by_training_key_and_still_publish(reruns, stack):
    """Before the reruns the cold start registered v1; each forced rerun trained again, found v1 under
    the same training key, reproduced its holdout scores and registered nothing; the last one (forced)
    published the night with v1 as its challenger and champion."""
    log = Path(reruns["runs"][-1]["log"]).read_text(errors="replace")  # every run of the night, appended
    assert log.count("challenger registered v1 ") == 1
    assert log.count("challenger reused v1 ") == sum(bool(conf.get("force_retrain")) for conf in RERUNS) == 2
    version = stack["registry"].get_model_version(MODEL, "1")
    assert len(version.tags["nightshift.training_key"]) == 64 and version.tags["nightshift.family"]
    night = reruns["history"][N1.isoformat()]
    assert (night["challenger"], night["champion"], night["published"]) == (1, 1, ROWS)
    assert night["decision"] == "reproduced"  # neither a promotion nor a rejection: the champion came back
    assert reruns["partition"][3] == [1]


# ---------------------------------------------------------------- two triggers at once


def test_both_concurrent_runs_overlapped_and_ended(concurrent):
    b, c = concurrent["nights"]
    spans = []
    for n in (b, c):
        first, last = n.task_times(N1)
        spans.append((first, last))
    assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1], f"the two runs did not overlap: {spans}"
    assert [r["state"] for r in concurrent["runs"]] == ["success", "success"]


def test_concurrent_runs_leave_one_row_per_entity_from_one_run(concurrent, stack):
    rows, entities, run_ids, versions = partition(stack["warehouse"], N1)
    assert (rows, entities) == (ROWS, ROWS)
    assert len(run_ids) == 1 and run_ids[0] in {r["run_id"] for r in concurrent["runs"]}
    assert len(versions) == 1


def test_concurrent_runs_leave_one_history_row_from_one_of_them(concurrent, stack):
    runs = history(stack["warehouse"])
    assert list(runs) == [N1.isoformat()]
    assert runs[N1.isoformat()]["run_id"] in {r["run_id"] for r in concurrent["runs"]}
    assert runs[N1.isoformat()]["published"] == ROWS


def test_concurrent_runs_reuse_the_version_and_leave_one_champion(concurrent, stack):
    """Both forced a retrain and a promotion: both found the champion under the same training key, so
    neither registered a version, and a version that already is the champion is not promoted again."""
    registry = stack["registry"]
    versions = sorted(int(v.version) for v in registry.search_model_versions(f"name='{MODEL}'"))
    assert versions == [1]
    assert aliases(registry) == {"champion": "1"}
    assert registry.get_model_version(MODEL, "1").tags.get("nightshift.blessed") == "true"
