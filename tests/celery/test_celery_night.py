"""The nightly DAG on the deployed topology, natively: CeleryExecutor, Redis, two Celery workers, S3 artifacts.

One night (the cold start: train, promote, publish) of the demo's churn data runs on the stack in
celery_stack.py, triggered through the REST API like tests/e2e's first night, its 1000 rows scored by
three score_shard tasks (scoring.shard_rows 400). The tests show that the
run succeeded, that its tasks ran on both workers (one task at a time each), that the published
predictions are bit for bit what the serving path gives here in the test process for the same snapshot
and model version, and that the night's artifacts live in the S3 bucket, not on the local disk.

Starts Airflow: run it alone and, like tests/e2e, one at a time on a machine:
    flock /tmp/nightshift-e2e.lock .venv/bin/python -m pytest tests/celery/test_celery_night.py
Logs (Redis, every component, the task logs) are kept under test-artifacts/e2e-celery/ (or
$NIGHTSHIFT_E2E_ARTIFACTS-celery) and printed at the end.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import shutil
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests.celery import topology
from tests.celery.celery_stack import DATABASES, CeleryStack
from tests.e2e.airflow_stack import Api, local_stack
from tests.e2e.scenario import ARTIFACTS as E2E_ARTIFACTS
from tests.e2e.scenario import D1, D2, HISTORY_DAYS, NIGHTLY, ROLLBACK, ROWS, midnight

ARTIFACTS = Path(f"{E2E_ARTIFACTS}-celery")
RUN_ID = "celery_first_night"
SHARD_ROWS = 400  # the night's 1000 rows are scored by three score_shard tasks


@dataclass
class Night:
    stack: CeleryStack
    api: Api
    run: dict
    task_instances: list[dict]
    seconds: dict[str, float]


def sharded_specs(folder: Path) -> Path:
    """The demo's specs, churn.yaml scoring its night in shards of SHARD_ROWS rows (score_shard, on any worker)
    and training its XGBoost candidate on the Dask cluster (training.engine dask, the default connection)."""
    folder.mkdir(parents=True)
    for path in (local_stack.ROOT / "include" / "specs").glob("*.yaml"):
        (folder / path.name).write_text(path.read_text())
    churn = folder / "churn.yaml"
    text = churn.read_text()
    for old, new in (("  chunk_rows: 100000\n", f"  shard_rows: {SHARD_ROWS}\n"), ("  seed: 42\n", "  engine: dask\n")):
        assert text.count(old) == 1, old
        text = text.replace(old, old + new)
    churn.write_text(text)
    return folder


@pytest.fixture(scope="module")
def celery_stack(pg_server_uri: str) -> Iterator[CeleryStack]:
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    began = time.monotonic()
    with pytest.MonkeyPatch.context() as env:  # every component reads the specs folder from its environment
        env.setenv("NIGHTSHIFT_SPECS_DIR", str(sharded_specs(ARTIFACTS / "specs")))
        stack = CeleryStack.launch(pg_server_uri, ARTIFACTS / "stack", dag_ids=(NIGHTLY, ROLLBACK))
        stack.started_in = time.monotonic() - began  # type: ignore[attr-defined]
        print(f"\nCelery stack artifacts (logs): {ARTIFACTS}")
        try:
            yield stack
        finally:
            stack.stop()


def load_source(server_uri: str) -> None:
    """The e2e story's data (tests/e2e/conftest.py `source`): labelled history, then night D1 unlabelled."""
    from include.nightshift import demo_data

    conn = psycopg.connect(local_stack.database_uri(server_uri, DATABASES["source"]))
    try:
        demo_data.create_source_table(conn)
        for back in range(HISTORY_DAYS, 0, -1):
            demo_data.load_day(conn, D1 - dt.timedelta(days=back), ROWS, with_labels=True)
        demo_data.load_day(conn, D1, ROWS, with_labels=False)
    finally:
        conn.close()


def wait_for_workers(stack: CeleryStack, timeout: float = 120) -> dict[str, dict]:
    """Both workers answer `celery inspect stats` (they boot beside the other components)."""
    deadline = time.monotonic() + timeout
    while True:
        stats = stack.celery_stats()
        if {name.split("@")[0] for name in stats} >= set(topology.WORKERS) or time.monotonic() > deadline:
            return stats
        time.sleep(2)


@pytest.fixture(scope="module")
def night(celery_stack: CeleryStack, pg_server_uri: str) -> Night:
    """Night D1 triggered through the REST API, as tests/e2e's first night, once both workers are up."""
    load_source(pg_server_uri)
    celery_stack.stats = wait_for_workers(celery_stack)  # type: ignore[attr-defined]
    api = celery_stack.api()
    began = time.monotonic()
    api.trigger(NIGHTLY, {"note": "celery: first night on two workers", "run_date": D1.isoformat()}, run_id=RUN_ID,
                logical_date=midnight(D1), data_interval=(midnight(D1), midnight(D2)))
    (run,) = api.wait(NIGHTLY, [RUN_ID], timeout=900)
    seconds = {"stack_start": celery_stack.started_in, "night": time.monotonic() - began}  # type: ignore[attr-defined]
    found = api.get(f"/dags/{NIGHTLY}/dagRuns/{RUN_ID}/taskInstances", params={"limit": 100})["task_instances"]
    hosts = {ti["task_id"]: ti["hostname"] for ti in found}
    durations = {ti["task_id"]: ti["duration"] for ti in found}  # measured: each task is a fresh process on a worker
    (ARTIFACTS / "night.json").write_text(json.dumps({"seconds": seconds, "hostnames": hosts,
                                                      "task_seconds": durations}, indent=1))
    print(f"\nCelery night: {seconds}; task hostnames: {hosts}")
    return Night(celery_stack, api, run, found, seconds)


def test_both_workers_take_one_task_at_a_time(night: Night):
    stats = night.stack.stats  # type: ignore[attr-defined]
    by_worker = {name.split("@")[0]: s["pool"]["max-concurrency"] for name, s in stats.items()}
    assert by_worker == {name: topology.WORKER_CONCURRENCY for name in topology.WORKERS}


def test_the_night_succeeds_with_tasks_on_both_workers(night: Night):
    states = {ti["task_id"]: ti["state"] for ti in night.task_instances}
    assert night.run["state"] == "success", states
    ran = {ti["task_id"]: ti["hostname"] for ti in night.task_instances if ti["state"] in ("success", "failed")}
    assert {"snapshot", "train", "score", "publish"} <= set(ran), states
    assert set(ran.values()) == set(topology.WORKERS), ran


def test_the_champion_was_trained_on_the_dask_cluster_by_both_its_workers(night: Night):
    """training.engine dask through the connection the compose file sets: the registered version's run says
    engine dask, and both Dask workers executed tasks (each reads and trains on some of the window's days)."""
    from distributed import Client

    from include.nightshift.registry import Registry
    from include.nightshift.spec import load_spec

    registry = Registry(night.stack.env["AIRFLOW_VAR_NIGHTSHIFT_MLFLOW_TRACKING_URI"])
    champion = registry.champion(load_spec(ARTIFACTS / "specs" / "churn.yaml").model_name)
    assert champion is not None
    assert registry.client.get_run(champion.run_id).data.params["engine"] == "dask"
    port = json.loads(night.stack.env[topology.DASK_CONNECTION])["port"]
    with Client(f"tcp://127.0.0.1:{port}", timeout="30s") as client:
        executed = client.run(lambda dask_worker: (dask_worker.name, dask_worker.state.executed_count))
    assert {name: count > 0 for name, count in executed.values()} == {name: True for name in topology.DASK_WORKERS}


def test_the_night_is_scored_by_three_shard_tasks_and_published_whole(night: Night, pg_server_uri: str):
    shards = sorted((ti["map_index"], ti["state"]) for ti in night.task_instances if ti["task_id"] == "score_shard")
    assert shards == [(0, "success"), (1, "success"), (2, "success")], night.task_instances
    assert all(ti["hostname"] in topology.WORKERS for ti in night.task_instances if ti["task_id"] == "score_shard")
    assert len(published(night.stack, pg_server_uri)) == ROWS  # the three shards' rows, swapped in at once


def published(stack: CeleryStack, pg_server_uri: str) -> list[tuple]:
    conn = psycopg.connect(local_stack.database_uri(pg_server_uri, DATABASES["warehouse"]))
    try:
        return conn.execute("SELECT customer_id, float8send(score), predicted_label, model_version, snapshot_sha256 "
                            "FROM churn.predictions WHERE score_date = %s ORDER BY customer_id", (D1,)).fetchall()
    finally:
        conn.close()


def snapshot_bytes(stack: CeleryStack, sha256: str) -> bytes:
    """The snapshot in the bucket whose bytes the published rows name."""
    s3 = stack.s3()
    for key in stack.bucket_keys("snapshots/"):
        body = s3.get_object(Bucket=topology.BUCKET, Key=key)["Body"].read()
        if hashlib.sha256(body).hexdigest() == sha256:
            return body
    raise AssertionError(f"no object under s3://{topology.BUCKET}/snapshots/ has the published sha256 {sha256}")


def test_published_predictions_equal_the_serving_path_here(night: Night, pg_server_uri: str):
    """The local path: this process reads the snapshot from S3 and scores it with the registered version
    through the same serving code; every published score must be the same float64, bit for bit."""
    from include.nightshift.registry import Registry
    from include.nightshift.scoring import serving_chunks, serving_scores
    from include.nightshift.spec import load_spec

    rows = published(night.stack, pg_server_uri)
    assert len(rows) == ROWS
    (version,), (sha256,) = {r[3] for r in rows}, {r[4] for r in rows}
    spec = load_spec(ARTIFACTS / "specs" / "churn.yaml")  # scored whole here; in three shards there
    model = Registry(night.stack.env["AIRFLOW_VAR_NIGHTSHIFT_MLFLOW_TRACKING_URI"]).load_model(spec.model_name, version)
    local = {}
    for chunk in serving_chunks(io.BytesIO(snapshot_bytes(night.stack, sha256)), spec):
        for key, score in zip(chunk[spec.entity_key.name], serving_scores(model, chunk, spec)):
            local[int(key)] = struct.pack(">d", float(score))
    assert {r[0]: bytes(r[1]) for r in rows} == local


def test_artifacts_are_in_the_bucket_not_on_local_disk(night: Night):
    keys = night.stack.bucket_keys()
    night_keys = [k for k in keys if D1.isoformat() in k]
    for prefix in ("snapshots/", "predictions/", "reports/"):
        assert any(k.startswith(prefix) for k in night_keys), (prefix, keys)
    local_root = night.stack.home / "artifacts"  # the e2e stack's local artifact root, unused here
    assert [p for p in local_root.rglob("*") if p.is_file()] == []


def test_the_api_server_serves_the_nights_reports_from_the_bucket(night: Night):
    """The reports app (plugins/nightshift_airflow/web.py) in the api-server reads the same s3:// root."""
    key = next(k for k in night.stack.bucket_keys("reports/") if D1.isoformat() in k and k.endswith(".html"))
    body = night.stack.s3().get_object(Bucket=topology.BUCKET, Key=key)["Body"].read()
    answer = night.api.session.get(f"{night.stack.base_url}/nightshift/{key}", timeout=60)
    assert (answer.status_code, answer.content) == (200, body), key
    folder = night.api.session.get(f"{night.stack.base_url}/nightshift/{key.rsplit('/', 1)[0]}/", timeout=60)
    assert folder.status_code == 200 and key.rsplit("/", 1)[1] in folder.text
