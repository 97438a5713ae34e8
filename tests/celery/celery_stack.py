"""The deployed topology as processes on this machine: the e2e stack (tests/e2e/airflow_stack.py) with
the CeleryExecutor, a Redis broker, two Celery workers and an S3-compatible artifact store.

    stack = CeleryStack.launch(server_uri, home, dag_ids)   # redis, moto, then Airflow; blocks until parsed
    ...
    stack.stop()

What runs, with which command and settings, is said once in topology.py (the compose file test reads
the same). Redis and the Airflow components are subprocesses in their own process groups; moto's
server is a thread of the test process. Logs go to <home>/logs, like the e2e stack's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from tests.celery import topology
from tests.e2e.airflow_stack import COMPONENTS, VENV_BIN, AirflowStack, StackError, local_stack, sqlalchemy_uri

DATABASES = {"airflow": "celery_airflow", "source": "celery_source", "warehouse": "celery_warehouse"}


def start_redis(home: Path, timeout: float = 20) -> tuple[subprocess.Popen, str]:
    """Debian's redis-server on a free loopback port, nothing persisted; (process, broker URL)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise StackError("no redis-server on PATH: run scripts/install_redis.sh (make test does)")
    port = local_stack.free_port()
    (home / "redis").mkdir(parents=True, exist_ok=True)
    log = open(home / "logs" / "redis.log", "ab")
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(home / "redis")], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    url = f"redis://127.0.0.1:{port}/0"
    import redis

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(f"redis-server exited with {proc.returncode}; see {home / 'logs' / 'redis.log'}")
        try:
            if redis.Redis.from_url(url, socket_timeout=1).ping():
                return proc, url
        except redis.ConnectionError:
            time.sleep(0.2)
    local_stack.stop_processes([proc])
    raise StackError(f"redis-server did not answer on {url} in {timeout:.0f} s")


def start_dask(home: Path, celery_env: dict[str, str], port: int, timeout: float = 90) -> list[subprocess.Popen]:
    """The compose file's Dask cluster (topology.DASK_COMMANDS): a scheduler on loopback `port` and the
    topology.DASK_WORKERS, with the S3 settings of `celery_env`; returns once both workers joined."""
    from distributed import Client

    env = {**os.environ, **topology.dask_env(celery_env)}
    procs = []
    try:
        for name in ("dask-scheduler", *topology.DASK_WORKERS):
            log = open(home / "logs" / f"{name}.log", "ab")
            procs.append(subprocess.Popen([str(VENV_BIN / "dask"), *topology.dask_command(name, port)], env=env,
                                          cwd=home, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          start_new_session=True))
            log.close()
        with Client(f"tcp://127.0.0.1:{port}", timeout=f"{timeout}s") as client:
            client.wait_for_workers(len(topology.DASK_WORKERS), timeout=timeout)
        return procs
    except BaseException as exc:
        local_stack.stop_processes(procs)
        raise StackError(f"the Dask cluster did not start ({exc}); see {home / 'logs'}/dask-*.log") from exc


def start_s3() -> tuple[Any, str]:
    """moto's S3 server on a free loopback port with the deployed stack's bucket; (server, endpoint URL)."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=local_stack.free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    s3_client(endpoint, boto3).create_bucket(Bucket=topology.BUCKET)
    return server, endpoint


def s3_client(endpoint: str, boto3: Any = None) -> Any:
    if boto3 is None:
        import boto3
    env = topology.celery_env(broker_url="", result_backend="", s3_endpoint=endpoint)
    return boto3.client("s3", endpoint_url=endpoint, region_name=env["AWS_DEFAULT_REGION"],
                        aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])


@dataclass
class CeleryStack(AirflowStack):
    s3_endpoint: str = ""
    s3_server: Any = None

    components: ClassVar[tuple[str, ...]] = COMPONENTS + topology.WORKERS
    databases: ClassVar[dict[str, str]] = DATABASES

    @classmethod
    def launch(cls, server_uri: str, home: Path, dag_ids: tuple[str, ...], timeout: float = 180) -> "CeleryStack":
        """Redis, the S3 endpoint and the Dask cluster first (the components' settings name them), then the
        Airflow stack."""
        home = home.resolve()
        (home / "logs").mkdir(parents=True, exist_ok=True)
        redis_proc, broker = start_redis(home)
        s3_server, dask_procs = None, []
        try:
            s3_server, endpoint = start_s3()
            backend = "db+" + sqlalchemy_uri(server_uri, DATABASES["airflow"])
            env = topology.celery_env(broker_url=broker, result_backend=backend, s3_endpoint=endpoint,
                                      dask_port=local_stack.free_port())
            dask_procs = start_dask(home, env, json.loads(env[topology.DASK_CONNECTION])["port"])
            stack = cls.start(server_uri, home, dag_ids, timeout, extra_env=env)
        except BaseException:
            local_stack.stop_processes([redis_proc, *dask_procs])
            if s3_server is not None:
                s3_server.stop()
            raise
        stack.processes["redis"] = redis_proc
        stack.processes.update(zip(("dask-scheduler", *topology.DASK_WORKERS), dask_procs))
        stack.s3_endpoint, stack.s3_server = endpoint, s3_server
        return stack

    def command(self, component: str) -> list[str]:
        return topology.worker_command(component) if component in topology.WORKERS else super().command(component)

    def component_env(self, component: str) -> dict[str, str]:
        return topology.worker_env(component) if component in topology.WORKERS else {}

    def s3(self) -> Any:
        return s3_client(self.s3_endpoint)

    def bucket_keys(self, prefix: str = "") -> list[str]:
        pages = self.s3().get_paginator("list_objects_v2").paginate(Bucket=topology.BUCKET, Prefix=prefix)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))

    def celery_stats(self) -> dict[str, dict]:
        """`celery inspect stats` of the workers, by node name (the compose healthcheck's app and CLI)."""
        out = subprocess.run([str(VENV_BIN / "celery"), "--app", topology.CELERY_APP, "inspect", "stats", "--json",
                              "--timeout", "10"], env={**os.environ, **self.env}, cwd=self.home,
                             capture_output=True, text=True, timeout=120)
        with open(self.logs / "cli.log", "a") as log:
            log.write(f"$ celery inspect stats\n{out.stdout}{out.stderr}\n")
        if out.returncode:
            raise StackError(f"celery inspect stats failed ({out.returncode}); see {self.logs / 'cli.log'}")
        return json.loads(out.stdout.strip().splitlines()[-1])

    def stop(self, grace: float = 20) -> None:
        try:
            super().stop(grace)
        finally:
            if self.s3_server is not None:
                self.s3_server.stop()
                self.s3_server = None
