"""The compose file against the topology the Celery test runs (topology.py), so neither drifts alone.

docker-compose.yaml is read as YAML (no Docker engine here); the test stack's commands and environment
are built exactly as CeleryStack builds them, without starting anything. Every compose service, Airflow
command and Airflow setting is either what the test runs/sets or listed in topology.py with the reason
it is not; a service or setting added to one side only fails here, naming it.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.celery import topology
from tests.celery.celery_stack import DATABASES, CeleryStack
from tests.e2e.airflow_stack import ROOT, stack_env

COMPOSE = ROOT / "docker-compose.yaml"
# What CeleryStack names its components -> the compose service each stands for.
SERVICE_OF = {"api-server": "airflow-apiserver", "scheduler": "airflow-scheduler",
              "dag-processor": "airflow-dag-processor", **{name: "airflow-worker" for name in topology.WORKERS}}


def services() -> dict[str, dict]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def env_of(component: str) -> dict[str, str]:
    """One component's environment as CeleryStack.launch gives it (addresses made up: nothing starts)."""
    stack = CeleryStack(home=Path("/nonexistent"), env={}, base_url="", password="")
    env = stack_env("postgresql://postgres@127.0.0.1:5432/postgres", Path("/nonexistent"), 8080, DATABASES)
    env.update(topology.celery_env(broker_url="redis://127.0.0.1:6379/0", s3_endpoint="http://127.0.0.1:9000",
                                   result_backend="db+postgresql+psycopg2://postgres@127.0.0.1:5432/celery_airflow"))
    return {**env, **stack.component_env(component)}


def without_test_flags(command: list[str], flags: dict[str, str] = topology.WORKER_TEST_FLAGS) -> list[str]:
    """A command minus the test's `flags` and the value a flag takes."""
    kept, skip = [], False
    for i, word in enumerate(command):
        if skip:
            skip = False
        elif word in flags:
            skip = i + 1 < len(command) and not command[i + 1].startswith("--")
        else:
            kept.append(word)
    return kept


@pytest.mark.pure
def test_every_compose_service_is_run_natively_or_left_out_with_a_reason():
    run = set(topology.AIRFLOW_COMMANDS) | set(topology.BACKING) | set(topology.DASK_COMMANDS)
    left_out = set(topology.NOT_STARTED)
    assert not run & left_out
    assert set(services()) == run | left_out, "a compose service the Celery test neither runs nor explains"
    assert set(SERVICE_OF.values()) == set(topology.AIRFLOW_COMMANDS)
    assert len(topology.WORKERS) == 2


@pytest.mark.pure
def test_each_component_runs_the_compose_command():
    stack = CeleryStack(home=Path("/nonexistent"), env={}, base_url="", password="")
    assert set(CeleryStack.components) == set(SERVICE_OF)
    for component in CeleryStack.components:
        compose = services()[SERVICE_OF[component]]["command"]
        compose = compose.split() if isinstance(compose, str) else compose
        assert without_test_flags(stack.command(component)) == compose, component
    worker = stack.command(topology.WORKERS[0])
    assert [w for w in worker if w.startswith("--")] == list(topology.WORKER_TEST_FLAGS)


@pytest.mark.pure
@pytest.mark.parametrize("component", sorted(SERVICE_OF))
def test_the_compose_settings_are_the_tested_ones(component: str):
    compose = services()[SERVICE_OF[component]]["environment"]
    tested = env_of(component)
    missing = sorted(set(compose) - set(tested) - set(topology.DEPLOYMENT_ONLY))
    assert missing == [], f"set in docker-compose.yaml for {SERVICE_OF[component]} but not by the Celery test"
    celery_keys = set(topology.celery_env(broker_url="", result_backend="", s3_endpoint="")) | set(
        topology.worker_env("w") if component in topology.WORKERS else {})
    untested = sorted(celery_keys - set(compose) - set(topology.TEST_ONLY))
    assert untested == [], f"the Celery test sets these, docker-compose.yaml's {SERVICE_OF[component]} does not"
    assert {key: tested[key] for key in topology.SAME_VALUE} == {key: compose[key] for key in topology.SAME_VALUE}, \
        f"topology.SAME_VALUE: docker-compose.yaml's {SERVICE_OF[component]} and the Celery test differ"
    for env in (compose, tested):
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql")
        assert env["AWS_ENDPOINT_URL_S3"] == env["FSSPEC_S3_ENDPOINT_URL"]  # boto and s3fs reach one store
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].endswith("/execution/")


@pytest.mark.pure
def test_the_dask_cluster_runs_the_compose_commands_and_settings():
    """dask-scheduler and dask-worker as the test starts them (celery_stack.start_dask), against the compose file."""
    for name, service in (("dask-scheduler", "dask-scheduler"), *((w, "dask-worker") for w in topology.DASK_WORKERS)):
        compose = services()[service]
        tested = [topology.DASK_SCHEDULER_ADDRESS if word == "tcp://127.0.0.1:8786" else word
                  for word in topology.dask_command(name, 8786)]  # the compose file's address: the rest is flags
        assert compose["entrypoint"][-1] == "dask"
        assert without_test_flags(tested, topology.DASK_TEST_FLAGS) == compose["command"], name
    assert services()["dask-worker"]["command"][1] == topology.DASK_SCHEDULER_ADDRESS
    compose_env = services()["dask-worker"]["environment"]
    tested_env = topology.dask_env(env_of(topology.WORKERS[0]))
    assert set(compose_env) - set(topology.DEPLOYMENT_ONLY) == set(tested_env) - set(topology.DASK_TEST_ONLY)
    assert all(compose_env[key] == tested_env[key] for key in ("AWS_DEFAULT_REGION", *topology.DASK_ENV))


@pytest.mark.pure
def test_the_airflow_components_find_the_dask_scheduler_through_the_specs_default_connection():
    from include.nightshift.spec import load_spec

    default = load_spec(ROOT / "include" / "specs" / "churn.yaml").training.dask_connection_id  # not set there
    assert topology.DASK_CONNECTION == f"AIRFLOW_CONN_{default.upper()}"
    for component in SERVICE_OF.values():
        conn = json.loads(services()[component]["environment"][topology.DASK_CONNECTION])
        assert f"tcp://{conn['host']}:{conn['port']}" == topology.DASK_SCHEDULER_ADDRESS, component
    tested = json.loads(env_of(topology.WORKERS[0])[topology.DASK_CONNECTION])
    assert tested["host"] == "127.0.0.1"


@pytest.mark.pure
def test_the_exceptions_listed_are_real():
    """No stale entry: a setting listed as deployment-only is in the compose file, a test-only one is not."""
    compose = set().union(*(set(services()[name]["environment"]) for name in topology.AIRFLOW_COMMANDS))
    assert set(topology.DEPLOYMENT_ONLY) <= compose
    assert not set(topology.TEST_ONLY) & compose
    assert set(topology.TEST_ONLY) <= set(env_of(topology.WORKERS[0]))


@pytest.mark.pure
def test_the_worker_healthcheck_asks_the_app_the_workers_run_and_the_pins_are_installed():
    healthcheck = " ".join(services()["airflow-worker"]["healthcheck"]["test"])
    assert f"--app {topology.CELERY_APP} inspect ping" in healthcheck
    pins = dict(line.split("==") for line in (ROOT / "requirements.txt").read_text().split() if "==" in line)
    for package in ("apache-airflow-providers-celery", "celery", "kombu", "redis", "s3fs", "moto[s3]"):
        assert importlib.metadata.version(package.split("[")[0]) == pins[package], package


@pytest.mark.dagrun
def test_the_celery_app_imports_with_the_pinned_celery():
    """celery 5.7 removed what provider 3.26.0 imports (celery.backends.database.retry): every worker died."""
    out = subprocess.run([sys.executable, "-c", f"import {topology.CELERY_APP.rpartition('.')[0]}"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
