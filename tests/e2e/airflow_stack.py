"""The real Airflow for end-to-end tests: api-server, scheduler and dag-processor on loopback.

Each component is its own subprocess in its own process group (the LocalExecutor forks
workers that outlive a signal to their parent), logging to a file that is kept as a test
artifact. The metadata database is a database on the test PostgreSQL server; connections
and variables come from airflow_settings.yaml through scripts/local_stack.py, as in the
demo, pointed at this stack's own databases and state folder. Login is real: the simple
auth manager's one admin user gets a password written here before the api-server starts.

    stack = AirflowStack.start(server_uri, home)   # blocks until the DAGs are parsed
    api = stack.api()                              # REST client with a bearer token
    ...
    stack.stop()
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import psycopg
import requests
from psycopg import sql

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "scripts"))
import local_stack  # noqa: E402

# Databases of this stack on the test server: their own names, so that other tests sharing
# the server (the integration tests drop `source` / `warehouse`) never touch them.
DATABASES = {"airflow": "e2e_airflow", "source": "e2e_source", "warehouse": "e2e_warehouse"}
USERNAME = "nightshift"
TERMINAL = {"success", "failed"}
COMPONENTS = ("api-server", "scheduler", "dag-processor")
# What every task of a night imports (about 4 s for the package and the operators, 8 s more for GX and Evidently,
# per task process on 2 cores). With the LocalExecutor the scheduler forks the executor's workers and each
# worker forks a task's process (Airflow's supervisor, os.fork on Linux): imported once in the scheduler,
# they are inherited instead of imported again by every task. Imports only (no thread, no connection is
# opened by them), so every task still runs its own code, its own DAG parse and its own connections.
PRELOADED_SCHEDULER = ("import include.nightshift.nightly, nightshift_airflow.operators, great_expectations, "
                       "evidently.presets\nfrom airflow.__main__ import main\nmain()")


class StackError(RuntimeError):
    """The stack did not come up, or a run did not finish; the message says where the logs are."""


def recreate_databases(server_uri: str, databases: dict[str, str] = DATABASES) -> None:
    conn = psycopg.connect(server_uri, autocommit=True)
    with conn.cursor() as cur:
        for name in databases.values():
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    conn.close()


def sqlalchemy_uri(server_uri: str, dbname: str) -> str:
    """The server URI for one database, with the psycopg2 driver named (Airflow derives asyncpg from it)."""
    uri = local_stack.database_uri(server_uri, dbname)
    scheme, _, rest = uri.partition("://")
    return f"postgresql+psycopg2://{rest}" if scheme in ("postgres", "postgresql") else uri


def stack_env(server_uri: str, home: Path, port: int, databases: dict[str, str] = DATABASES) -> dict[str, str]:
    """Airflow's environment: the demo's settings (local_stack.airflow_env), with this stack's own
    databases and state folder (whatever this process's environment says), plus what a multi-process
    Airflow needs: the metadata DB, LocalExecutor, a loopback API, secrets shared by the components."""
    env = local_stack.airflow_env(server_uri)
    base_url = f"http://127.0.0.1:{port}"
    env.update({
        "AIRFLOW_HOME": str(home / "airflow"),
        "AIRFLOW_CONN_NIGHTSHIFT_SOURCE": local_stack.connection_json(server_uri, databases["source"]),
        "AIRFLOW_CONN_NIGHTSHIFT_WAREHOUSE": local_stack.connection_json(server_uri, databases["warehouse"]),
        "AIRFLOW_VAR_NIGHTSHIFT_ARTIFACT_ROOT": str(home / "artifacts"),
        "AIRFLOW_VAR_NIGHTSHIFT_MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow' / 'mlflow.db'}",
        "AIRFLOW_VAR_NIGHTSHIFT_MLFLOW_ARTIFACT_ROOT": str(home / "mlflow" / "artifacts"),
        "AIRFLOW_VAR_NIGHTSHIFT_NOTIFIERS": "log",  # alerts go to the task log, never over the network
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sqlalchemy_uri(server_uri, databases["airflow"]),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "2",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url}/execution/",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": base_url,
        "AIRFLOW__API__WORKERS": "1",
        # Every component must sign and check the same tokens; a generated default differs per process.
        "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USERNAME}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        # No cron runs: only what a test triggers or backfills runs, so the tables hold only those.
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600",
        "NIGHTSHIFT_RETRY_DELAY_SECONDS": "1",
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    })
    return env


@dataclass
class AirflowStack:
    home: Path
    env: dict[str, str]
    base_url: str
    password: str
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    # What a subclass changes (tests/celery: Celery workers beside these, databases of its own).
    components: ClassVar[tuple[str, ...]] = COMPONENTS
    databases: ClassVar[dict[str, str]] = DATABASES

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @classmethod
    def start(cls, server_uri: str, home: Path, dag_ids: tuple[str, ...], timeout: float = 180,
              extra_env: dict[str, str] | None = None) -> "AirflowStack":
        home = home.resolve()  # the components run in `home`: a relative path would name another folder there
        home.mkdir(parents=True, exist_ok=True)
        recreate_databases(server_uri, cls.databases)
        port = local_stack.free_port()
        env = {**stack_env(server_uri, home, port, cls.databases), **(extra_env or {})}
        password = secrets.token_urlsafe(12)
        (home / "passwords.json").write_text(json.dumps({USERNAME: password}))
        stack = cls(home=home, env=env, base_url=env["AIRFLOW__API__BASE_URL"], password=password)
        for folder in ("airflow", "artifacts", "mlflow", "logs"):
            (home / folder).mkdir(exist_ok=True)
        stack.airflow("db", "migrate")
        # Create the MLflow SQLite store now: the first night's drift and monitor tasks open it at the
        # same moment, and two processes migrating a fresh store race ("Online migration expected ...").
        stack.python("import os; from mlflow import MlflowClient; "
                     "MlflowClient(os.environ['AIRFLOW_VAR_NIGHTSHIFT_MLFLOW_TRACKING_URI']).search_experiments()")
        try:
            for component in cls.components:
                stack._spawn(component)
            stack._wait_until_ready(dag_ids, timeout)
        except BaseException:
            stack.stop()
            raise
        return stack

    def airflow(self, *args: str) -> str:
        """Run an airflow CLI command against this stack (output kept in logs/cli.log)."""
        out = subprocess.run([str(VENV_BIN / "airflow"), *args], env={**os.environ, **self.env},
                             capture_output=True, text=True, timeout=300)
        with open(self.logs / "cli.log", "a") as log:
            log.write(f"$ airflow {' '.join(args)}\n{out.stdout}{out.stderr}\n")
        if out.returncode:
            raise StackError(f"airflow {' '.join(args)} failed ({out.returncode}); see {self.logs / 'cli.log'}")
        return out.stdout

    def python(self, code: str) -> str:
        """Run Python in this stack's environment (Airflow configured as its components see it)."""
        out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **self.env}, cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
        if out.returncode:
            raise StackError(f"python -c failed: {out.stderr[-3000:]}")
        return out.stdout

    def command(self, component: str) -> list[str]:
        """The airflow CLI arguments that start a component."""
        return component.split()

    def component_env(self, component: str) -> dict[str, str]:
        """Environment of one component only, on top of the stack's."""
        return {}

    def _spawn(self, component: str) -> None:
        log = open(self.logs / f"{component}.log", "ab")
        airflow = [str(VENV_BIN / "airflow")]
        if component == "scheduler" and self.env.get("AIRFLOW__CORE__EXECUTOR") == "LocalExecutor":
            airflow = [sys.executable, "-c", PRELOADED_SCHEDULER]  # `airflow scheduler`, the task imports done
        self.processes[component] = subprocess.Popen(
            [*airflow, *self.command(component)],
            env={**os.environ, **self.env, **self.component_env(component)}, cwd=self.home,
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()

    def _check_alive(self) -> None:
        for name, proc in self.processes.items():
            if proc.poll() is not None:
                raise StackError(f"airflow {name} exited with {proc.returncode}; see {self.logs / (name + '.log')}")

    def _wait_until_ready(self, dag_ids: tuple[str, ...], timeout: float) -> None:
        """Up means: the API answers with a token and the DAGs named are parsed; then every DAG is
        unpaused (new DAGs start paused, and a paused DAG's triggered runs never start)."""
        deadline = time.monotonic() + timeout
        api = None
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                api = api or self.api()
                found = {d["dag_id"] for d in api.get("/dags", params={"limit": 100})["dags"]}
                if set(dag_ids) <= found:
                    for dag_id in sorted(found):
                        api.unpause(dag_id)
                    return
            except (requests.ConnectionError, ApiError):
                pass
            time.sleep(1)
        errors = api.get("/importErrors") if api else "(no API)"
        raise StackError(f"Airflow not ready in {timeout:.0f} s (wanted DAGs {dag_ids}; import errors: {errors}); "
                         f"logs in {self.logs}")

    def api(self) -> "Api":
        return Api.login(self.base_url, USERNAME, self.password)

    def stop(self, grace: float = 20) -> None:
        """SIGTERM every component's process group (and any child that left it), then SIGKILL what is left."""
        local_stack.stop_processes(self.processes.values(), grace)
        self.processes.clear()


class ApiError(RuntimeError):
    def __init__(self, response: requests.Response) -> None:
        super().__init__(f"{response.request.method} {response.url} -> {response.status_code}: {response.text[:2000]}")
        self.status = response.status_code
        self.body = response.text


class Api:
    """The Airflow 3 REST API (/api/v2) with a bearer token from POST /auth/token."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    @classmethod
    def login(cls, base_url: str, username: str, password: str) -> "Api":
        response = requests.post(f"{base_url}/auth/token", json={"username": username, "password": password},
                                 timeout=30)
        if not response.ok:
            raise ApiError(response)
        return cls(base_url, response.json()["access_token"])

    def request(self, method: str, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
        return self.session.request(method, f"{self.base_url}/api/v2{path}", json=body, timeout=60, **kwargs)

    def _ok(self, response: requests.Response) -> Any:
        if not response.ok:
            raise ApiError(response)
        return response.json() if response.content else None

    def get(self, path: str, **kwargs: Any) -> Any:
        return self._ok(self.request("GET", path, **kwargs))

    def post(self, path: str, body: Any, **kwargs: Any) -> Any:
        return self._ok(self.request("POST", path, body, **kwargs))

    def patch(self, path: str, body: Any, **kwargs: Any) -> Any:
        return self._ok(self.request("PATCH", path, body, **kwargs))

    def unpause(self, dag_id: str) -> None:
        self.patch(f"/dags/{dag_id}", {"is_paused": False}, params={"update_mask": "is_paused"})

    # --- DAG runs -------------------------------------------------------------------------

    def trigger(self, dag_id: str, conf: dict, *, run_id: str | None = None, logical_date: dt.datetime | None = None,
                data_interval: tuple[dt.datetime, dt.datetime] | None = None) -> dict:
        """POST a DAG run; `logical_date` must be present in the body even when null."""
        return self._ok(self.trigger_response(dag_id, conf, run_id=run_id, logical_date=logical_date,
                                              data_interval=data_interval))

    def trigger_response(self, dag_id: str, conf: dict, *, run_id: str | None = None,
                         logical_date: dt.datetime | None = None,
                         data_interval: tuple[dt.datetime, dt.datetime] | None = None) -> requests.Response:
        body: dict[str, Any] = {"conf": conf, "logical_date": logical_date.isoformat() if logical_date else None}
        if run_id:
            body["dag_run_id"] = run_id
        if data_interval:
            body["data_interval_start"], body["data_interval_end"] = (t.isoformat() for t in data_interval)
        return self.request("POST", f"/dags/{dag_id}/dagRuns", body)

    def run(self, dag_id: str, run_id: str) -> dict:
        return self.get(f"/dags/{dag_id}/dagRuns/{requests.utils.quote(run_id, safe='')}")

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        found = self.get(f"/dags/{dag_id}/dagRuns/{requests.utils.quote(run_id, safe='')}/taskInstances")
        return {ti["task_id"]: ti["state"] for ti in found["task_instances"]}

    def wait(self, dag_id: str, run_ids: list[str], timeout: float = 600) -> list[dict]:
        """Poll runs until each ends (success or failed); a timeout names the unfinished tasks."""
        deadline = time.monotonic() + timeout
        while True:
            runs = [self.run(dag_id, run_id) for run_id in run_ids]
            if all(r["state"] in TERMINAL for r in runs):
                return runs
            if time.monotonic() > deadline:
                states = {r["dag_run_id"]: (r["state"], self.task_states(dag_id, r["dag_run_id"])) for r in runs}
                raise StackError(f"runs of {dag_id} not finished in {timeout:.0f} s: {states}")
            time.sleep(2)

    def runs(self, dag_id: str, **params: Any) -> list[dict]:
        return self.get(f"/dags/{dag_id}/dagRuns", params={"limit": 100, **params})["dag_runs"]

    # --- backfills ------------------------------------------------------------------------

    def backfill(self, dag_id: str, first: dt.date, last: dt.date, *, reprocess: str, conf: dict | None = None,
                 timeout: float = 90) -> dict:
        """Create a backfill over [first, last], one run at a time like the nightly schedule.

        Airflow allows one active backfill per DAG and marks a finished one complete on a 30 s
        timer: until then a new one is refused with 409, so that answer is waited out."""
        body = {"dag_id": dag_id, "from_date": _midnight(first), "to_date": _midnight(last),
                "reprocess_behavior": reprocess, "max_active_runs": 1, "dag_run_conf": conf or {}}
        deadline = time.monotonic() + timeout
        while (response := self.request("POST", "/backfills", body)).status_code == 409 and time.monotonic() < deadline:
            time.sleep(2)
        return self._ok(response)

    def wait_backfill(self, dag_id: str, backfill: dict, timeout: float = 900) -> list[dict]:
        """The runs of the backfill's range, once each has ended. Creating the backfill queued
        (or cleared) every run it will make, so ended runs mean a finished backfill."""
        deadline = time.monotonic() + timeout
        while True:
            runs = self.runs(dag_id, logical_date_gte=backfill["from_date"], logical_date_lte=backfill["to_date"],
                             order_by="logical_date")
            if runs and all(r["state"] in TERMINAL for r in runs):
                return runs
            if time.monotonic() > deadline:
                raise StackError(f"backfill {backfill['id']} of {dag_id} not finished in {timeout:.0f} s: "
                                 f"{[(r['dag_run_id'], r['state']) for r in runs]}")
            time.sleep(2)


def _midnight(day: dt.date) -> str:
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.timezone.utc).isoformat()
