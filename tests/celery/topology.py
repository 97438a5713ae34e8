"""The deployed topology, said once: what docker-compose.yaml runs, and how the Celery test runs it natively.

Both the stack that the Celery test starts (celery_stack.py) and the test that reads the compose file
(test_celery_topology.py) use these names, commands and settings, so the compose file cannot drift
from what is tested without one of them failing. Every compose service and every Airflow setting of
the compose file is either run/set by the test stack or listed here with the reason it is not.
"""

from __future__ import annotations

import json

# The artifact root of the deployed stack (compose: AIRFLOW_VAR_NIGHTSHIFT_ARTIFACT_ROOT); the test uses
# the same bucket on its own S3-compatible endpoint.
BUCKET = "nightshift-artifacts"
ARTIFACT_ROOT = f"s3://{BUCKET}"
# The Celery app that the workers run and the compose file's worker healthcheck asks (`celery --app ...`).
CELERY_APP = "airflow.providers.celery.executors.celery_executor.app"

# Compose service -> the airflow CLI arguments of the process the test starts for it.
AIRFLOW_COMMANDS = {
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-worker": "celery worker",
}
# Compose services the test replaces with a native process of the same kind.
BACKING = {
    "postgres": "the tests' PostgreSQL server (tests/conftest.py pg_server_uri): metadata DB, source, warehouse",
    "redis": "Debian's redis-server on a free loopback port (scripts/install_redis.sh)",
    "minio": "moto's S3 server (ThreadedMotoServer) on a free loopback port, bucket " + BUCKET,
}
# Compose service -> the `dask` CLI arguments of its process: the cluster that training.engine dask trains on
# (the train task's client finds the scheduler through the connection DASK_CONNECTION names). The compose file's
# scheduler address; the test gives its own (dask_command).
DASK_COMMANDS = {
    "dask-scheduler": "scheduler --port 8786",
    "dask-worker": "worker tcp://dask-scheduler:8786",
}
DASK_SCHEDULER_ADDRESS = "tcp://dask-scheduler:8786"
DASK_CONNECTION = "AIRFLOW_CONN_NIGHTSHIFT_DASK"  # training.dask_connection_id's default, nightshift_dask
# Two Dask workers: the training window's days are read and trained on both.
DASK_WORKERS = ("dask-worker-a", "dask-worker-b")
# A Dask worker's settings: the S3 ones of celery_env (the workers read the snapshots) and these.
DASK_S3_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL_S3",
                "FSSPEC_S3_ENDPOINT_URL")
DASK_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}
# Keys the test sets on a Dask worker that the compose file's dask-worker does not, and why.
DASK_TEST_ONLY = {"PYTHONPATH": "the image's ENV PYTHONPATH (Dockerfile): the code the tasks' functions are pickled "
                                "by reference to"}
# Flags the test adds to the compose file's `dask` commands, and why: on one machine...
DASK_TEST_FLAGS = {
    "--host": "...every process listens on loopback only",
    "--no-dashboard": "...a dashboard per process would need ports of its own (and bokeh)",
    "--name": "...the workers are told apart by name, not by container",
    "--nthreads": "...one thread each: two workers on two cores",
}
# Compose services the test does not start, and why that does not weaken what it shows.
NOT_STARTED = {
    "airflow-triggerer": "no task of the Nightshift DAGs defers (nothing for a triggerer to run)",
    "airflow-init": "the test stack migrates the database itself (AirflowStack.start) and reads airflow_settings.yaml "
                    "through scripts/local_stack.py; tests/unit/test_compose.py runs the init script for real",
    "minio-init": "the test creates the bucket on its S3 endpoint",
    "mlflow": "the registry is an MLflow SQLite store on the one machine both workers share; the tracking server is "
              "the deployed stack's (tests/unit/test_compose.py checks its command)",
}

# Two workers, one task at a time each: tasks of one run that are queued together go to both.
WORKERS = ("worker-a", "worker-b")
WORKER_CONCURRENCY = 1
# Worker flags the test adds to the compose file's `celery worker`, and why: on one machine...
WORKER_TEST_FLAGS = {
    "--celery-hostname": "...processes share the host's name, which containers each have their own of",
    "--skip-serve-logs": "...both workers would bind the one log-server port (task logs are files on the shared disk)",
}

# Keys of the compose file's Airflow environment the test stack does not set, and why.
DEPLOYMENT_ONLY = {
    "AIRFLOW__CORE__AUTH_MANAGER": "the test logs in through the simple auth manager (AirflowStack); "
                                   "tests/unit/test_compose.py tests FAB",
    "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "the compose healthcheck's port; the test waits on the API and the "
                                               "DAGs being parsed instead",
    "MLFLOW_S3_ENDPOINT_URL": "MLflow's artifacts are local here (see NOT_STARTED['mlflow'])",
    "DUMB_INIT_SETSID": "the image's init process (a worker's warm shutdown); the test stops each process group "
                        "itself",
}
# Keys the test stack sets that the compose file does not, and why.
TEST_ONLY = {
    "AIRFLOW__CORE__HOSTNAME_CALLABLE": "a worker's own name as the task instances' hostname (a container's "
                                        "hostname does this in the deployed stack)",
    "NIGHTSHIFT_WORKER_NAME": "read by that callable (worker_host.py)",
}
# The compose environment's keys whose values must be the same in the test stack, word for word.
SAME_VALUE = ("AIRFLOW__CORE__EXECUTOR", "AIRFLOW_VAR_NIGHTSHIFT_ARTIFACT_ROOT", "AWS_DEFAULT_REGION")


def celery_env(*, broker_url: str, result_backend: str, s3_endpoint: str, dask_port: int = 8786) -> dict[str, str]:
    """What the test stack sets on top of the e2e stack's environment: the compose file's Celery, S3, Dask and
    shared-secret settings with this machine's addresses. The S3 endpoint reaches each client the way the
    compose file gives it: botocore (AWS_ENDPOINT_URL_S3) and fsspec/s3fs (FSSPEC_S3_ENDPOINT_URL, read
    into fsspec.config at import), so include/nightshift/artifacts.py needs no change for it."""
    from cryptography.fernet import Fernet

    return {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CELERY__BROKER_URL": broker_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": result_backend,
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(WORKER_CONCURRENCY),
        "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
        "AIRFLOW_VAR_NIGHTSHIFT_ARTIFACT_ROOT": ARTIFACT_ROOT,
        # moto accepts any key; no secret of anyone's
        "AWS_ACCESS_KEY_ID": "nightshift-test",
        "AWS_SECRET_ACCESS_KEY": "nightshift-test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": s3_endpoint,
        "FSSPEC_S3_ENDPOINT_URL": s3_endpoint,
        DASK_CONNECTION: json.dumps({"conn_type": "generic", "host": "127.0.0.1", "port": dask_port}),
    }


def worker_command(name: str) -> list[str]:
    """The compose file's worker command, plus the flags that one machine needs (WORKER_TEST_FLAGS)."""
    return [*AIRFLOW_COMMANDS["airflow-worker"].split(), "--celery-hostname", f"{name}@%h", "--skip-serve-logs"]


def dask_command(name: str, port: int) -> list[str]:
    """The compose file's `dask` command for a test process (a DASK_WORKERS name runs `dask-worker`) with the
    scheduler on loopback port `port`, plus the flags that one machine needs (DASK_TEST_FLAGS)."""
    if name == "dask-scheduler":
        return [*DASK_COMMANDS[name].replace("8786", str(port)).split(), "--host", "127.0.0.1", "--no-dashboard"]
    words = DASK_COMMANDS["dask-worker"].replace(DASK_SCHEDULER_ADDRESS, f"tcp://127.0.0.1:{port}").split()
    return [*words, "--host", "127.0.0.1", "--no-dashboard", "--name", name, "--nthreads", "1"]


def dask_env(celery: dict[str, str]) -> dict[str, str]:
    """A Dask worker's settings, from the stack's celery_env, as the compose file's dask-worker has them."""
    from tests.e2e.airflow_stack import ROOT

    return {**{key: celery[key] for key in DASK_S3_KEYS}, **DASK_ENV, "PYTHONPATH": f"{ROOT}:{ROOT / 'plugins'}"}


def worker_env(name: str) -> dict[str, str]:
    return {"AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.celery.worker_host.hostname", "NIGHTSHIFT_WORKER_NAME": name}

