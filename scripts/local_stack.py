"""The local stack: where the demo's state lives and how Airflow is pointed at it.

Everything the demo creates lives under one git-ignored folder (.nightshift/ by default,
NIGHTSHIFT_HOME to move it): the embedded PostgreSQL (source and warehouse databases),
the MLflow SQLite store and artifacts, the Airflow home and the artifact store. Set
NIGHTSHIFT_PG_URI to a superuser URI to use a real PostgreSQL server instead.

Airflow's connections and variables come from airflow_settings.yaml (the same file the
deployed stack uses), with hosts and paths replaced by the local ones.

This is the one harness: `make demo`, the tests' plan runner (tests/integration/run_nights.py),
the fault kit and the end-to-end stack all start PostgreSQL, name databases, pick ports and run
nights through the functions here, so a fix to any of them reaches every caller.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import yaml

ROOT = Path(__file__).resolve().parent.parent
HOME = Path(os.environ.get("NIGHTSHIFT_HOME", ROOT / ".nightshift")).resolve()
PG_DIR = HOME / "pg"
DATABASES = ("source", "warehouse")
QUIET_WARNINGS = "ignore:Could not import graphviz:UserWarning"  # PYTHONWARNINGS form
UI_COMPONENTS = ("api-server", "scheduler --skip-serve-logs", "dag-processor", "triggerer --skip-serve-logs")


def start_postgres() -> str:
    """Superuser URI of the server to use: NIGHTSHIFT_PG_URI, or the embedded one (started if needed)."""
    if os.environ.get("NIGHTSHIFT_PG_URI"):
        return os.environ["NIGHTSHIFT_PG_URI"]
    import pgserver

    PG_DIR.mkdir(parents=True, exist_ok=True)
    return pgserver.get_server(PG_DIR, cleanup_mode=None).get_uri()


class PostgresStillRunning(RuntimeError):
    """The embedded PostgreSQL could not be stopped: the message names its pid and data folder."""


def stop_postgres(data_dir: Path | None = None, timeout: float = 15) -> bool:
    """Stop the embedded PostgreSQL for real: True when a running server was stopped, False when none ran.

    The server is found from its own postmaster.pid (or, that file gone, a `postgres -D <dir>` process),
    never from pgserver's handle file: a client killed hard leaves its pid there, and pgserver then
    "stops" by leaving the server running for that dead client. `pg_ctl stop -m fast` with the server's
    own binaries first, then SIGINT (fast shutdown) and SIGQUIT (immediate) to the postmaster; the
    process is checked to be gone, else PostgresStillRunning names its pid and folder.
    """
    data_dir = (data_dir or PG_DIR).resolve()
    postmaster = _postmaster(data_dir)
    if postmaster is None:
        _forget_handles(data_dir)
        return False
    said = _pg_ctl_stop(postmaster, data_dir, timeout)
    for sig in (None, signal.SIGINT, signal.SIGQUIT):
        if sig is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(postmaster.pid, sig)
        if _gone(postmaster, timeout if sig is None else timeout / 3):
            _forget_handles(data_dir)
            return True
    raise PostgresStillRunning(f"PostgreSQL (postmaster pid {postmaster.pid}, data {data_dir}) is still running "
                               f"after pg_ctl stop and SIGINT/SIGQUIT; pg_ctl said: {said or 'nothing'}")


def _postmaster(data_dir: Path) -> Any:
    """The running postmaster of data_dir as a psutil.Process, or None: the pid in postmaster.pid when that
    process is a postgres on this folder (a stale file's pid may belong to anything now), else a scan."""
    import psutil

    with contextlib.suppress(OSError, ValueError, IndexError, psutil.Error):
        pid = int((data_dir / "postmaster.pid").read_text().splitlines()[0])
        proc = psutil.Process(pid)
        if _serves(proc, data_dir):
            return proc
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if _serves(proc, data_dir):
                return proc
    return None


def _serves(proc: Any, data_dir: Path) -> bool:
    """A live (not zombie) process started as `postgres ... -D data_dir` (its children rename themselves)."""
    import psutil

    if proc.status() == psutil.STATUS_ZOMBIE:
        return False
    cmdline = proc.cmdline()
    return bool(cmdline) and Path(cmdline[0]).name == "postgres" and "-D" in cmdline and \
        str(data_dir) in cmdline[cmdline.index("-D") + 1:cmdline.index("-D") + 2]


def _pg_ctl_stop(postmaster: Any, data_dir: Path, timeout: float) -> str:
    """`pg_ctl stop -m fast -w` with the binaries the server runs from, as the folder's owner (pg_ctl
    refuses root; pgserver run as root serves as its own OS user); what pg_ctl printed."""
    import pwd

    with contextlib.suppress(Exception):
        pg_ctl = Path(postmaster.exe()).with_name("pg_ctl")
        owner = data_dir.stat().st_uid
        user = pwd.getpwuid(owner).pw_name if os.geteuid() == 0 and owner != 0 else None
        done = subprocess.run([str(pg_ctl), "stop", "-D", str(data_dir), "-m", "fast", "-w", "-t", str(int(timeout))],
                              capture_output=True, text=True, timeout=timeout + 5, user=user, check=False)
        return (done.stdout + done.stderr).strip()
    return ""


def _gone(proc: Any, timeout: float) -> bool:
    """Whether the process ends (or is a zombie: its parent may be an init that does not reap) in time."""
    import psutil

    deadline = time.monotonic() + timeout
    while True:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def _forget_handles(data_dir: Path) -> None:
    """Empty pgserver's list of client pids: the server they shared is stopped, and a dead client's pid
    left there would stop the next `cleanup_mode="stop"` handle from stopping it."""
    with contextlib.suppress(FileNotFoundError):
        (data_dir / ".handle_pids.json").unlink()


def create_databases(server_uri: str) -> None:
    """The source and warehouse databases, and the specs' reader roles (safe to run again)."""
    import psycopg
    from psycopg import sql

    conn = psycopg.connect(server_uri, autocommit=True)
    with conn.cursor() as cur:
        for name in DATABASES:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if not cur.fetchone():
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    conn.close()
    create_reader_roles(server_uri)


def create_reader_roles(server_uri: str, specs: Path | None = None) -> list[str]:
    """Create the consumers' read-only login role each spec names (warehouse.reader_role).

    Locally only: the deployed stack's docker/postgres-init.sql creates its reader with a
    password from the environment. Here the embedded server trusts local connections, so the
    role has no password. NOSUPERUSER NOCREATEDB NOCREATEROLE: the pipeline grants it SELECT.
    """
    import psycopg
    from psycopg import sql

    folder = specs or Path(os.environ.get("NIGHTSHIFT_SPECS_DIR") or ROOT / "include" / "specs")
    roles = sorted({role for path in folder.glob("*.y*ml") if (role := _reader_role(path))})
    conn = psycopg.connect(server_uri, autocommit=True)
    with conn.cursor() as cur:
        for role in roles:
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
            if cur.fetchone():
                continue
            try:
                cur.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE").format(
                    sql.Identifier(role)))
            except psycopg.Error as error:  # e.g. a reserved name: the spec's own check names the key
                print(f"reader role {role!r} not created: {error}".strip(), file=sys.stderr)
    conn.close()
    return roles


def _reader_role(path: Path) -> str | None:
    """warehouse.reader_role of a spec file, or None (a broken spec is the DAG processor's to report)."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    warehouse = data.get("warehouse") if isinstance(data, dict) else None
    role = warehouse.get("reader_role") if isinstance(warehouse, dict) else None
    return role if isinstance(role, str) and role.strip() else None


def init_mlflow_store() -> None:
    """Create the MLflow SQLite store once, before parallel tasks could race to migrate it."""
    from mlflow.tracking import MlflowClient

    (HOME / "mlflow").mkdir(parents=True, exist_ok=True)
    MlflowClient(tracking_uri=f"sqlite:///{HOME / 'mlflow' / 'mlflow.db'}").search_experiments()


def database_uri(server_uri: str, dbname: str) -> str:
    """The same server and login, another database; the query (pgserver's unix-socket `host=`) is kept."""
    base, _, query = server_uri.partition("?")
    head, _, _ = base.rpartition("/")
    return f"{head}/{dbname}" + (f"?{query}" if query else "")


def as_user(uri: str, user: str) -> str:
    """The same server and database, logged in as another role (no password: the local server trusts it)."""
    url = urlparse(uri)
    host = url.netloc.rpartition("@")[2]
    return url._replace(netloc=f"{user}@{host}").geturl()


def connection_json(server_uri: str, dbname: str) -> str:
    """An Airflow connection (JSON form) for one database of the server."""
    url = urlparse(server_uri)
    host = url.hostname or (parse_qs(url.query).get("host") or [""])[0]
    return json.dumps({"conn_type": "postgres", "host": host, "port": url.port, "login": url.username or "postgres",
                       "password": url.password or None, "schema": dbname})


def airflow_env(server_uri: str, settings: Path = ROOT / "airflow_settings.yaml") -> dict[str, str]:
    """Environment for a local Airflow: its home, the project on its path, and airflow_settings.yaml
    turned into AIRFLOW_CONN_* / AIRFLOW_VAR_* with the local stack's hosts and paths."""
    env = {
        "AIRFLOW_HOME": str(HOME / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        # The DAG file builds one DAG per spec in include/specs each time it is parsed: re-parse it every
        # 10 s (Airflow's default: 30 s) so a new or edited spec shows up in the UI without `airflow dags
        # reserialize`; list the dags folder for new DAG files every 30 s (default 300 s).
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins")]),
        "NO_PROXY": "*",
        # MLflow 3.17 refuses to unpickle models unless told to; our registry holds only models we trained.
        "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true",
        # OpenMP threads sleep when idle instead of spinning: on 2 shared cores the spinning default made
        # XGBoost 5-8x and HistGradientBoosting ~10x slower (training.py sets it too, if nothing loaded OpenMP first).
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
        # Airflow's CLI logs warnings to stdout: the graphviz one (an optional package for `airflow dags
        # show`) came before the JSON of `airflow dags list-runs -o json` and made it unreadable.
        "PYTHONWARNINGS": _warning_filters(),
    }
    config = (yaml.safe_load(settings.read_text()) or {}).get("airflow", {})
    local = {
        "nightshift_artifact_root": str(HOME / "artifacts"),
        "nightshift_mlflow_tracking_uri": f"sqlite:///{HOME / 'mlflow' / 'mlflow.db'}",
        "nightshift_mlflow_artifact_root": str(HOME / "mlflow" / "artifacts"),
        "nightshift_mlflow_ui_url": "http://127.0.0.1:5000",  # make mlflow-ui
    }
    for var in config.get("variables") or []:
        name = var["variable_name"]
        env[f"AIRFLOW_VAR_{name.upper()}"] = str(local.get(name, var.get("variable_value", "")))
    for name, value in local.items():
        env.setdefault(f"AIRFLOW_VAR_{name.upper()}", value)
    for key in [k for k in env if k.startswith("AIRFLOW_VAR_")]:
        env[key] = os.environ.get(key) or env[key]  # a Variable set in the environment wins
    for conn in config.get("connections") or []:
        env[f"AIRFLOW_CONN_{conn['conn_id'].upper()}"] = (
            connection_json(server_uri, conn.get("conn_schema") or conn["conn_id"])
            if conn.get("conn_type", "postgres") == "postgres" else as_is_json(conn))
    return env


def _warning_filters() -> str:
    """PYTHONWARNINGS: the environment's own filters, then QUIET_WARNINGS."""
    return ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"), QUIET_WARNINGS]))


def as_is_json(conn: dict) -> str:
    """A non-database connection (e.g. the alerts webhook) exactly as airflow_settings.yaml has it."""
    fields = {"conn_type": conn.get("conn_type"), "host": conn.get("conn_host"), "port": conn.get("conn_port"),
              "login": conn.get("conn_login"), "password": conn.get("conn_password"),
              "schema": conn.get("conn_schema"), "extra": conn.get("conn_extra")}
    return json.dumps({k: v for k, v in fields.items() if v not in (None, "")})


def apply_env(server_uri: str) -> dict[str, str]:
    env = airflow_env(server_uri)
    os.environ.update(env)
    for path in reversed(env["PYTHONPATH"].split(os.pathsep)):
        if path not in sys.path:
            sys.path.insert(0, path)
    for folder in ("airflow", "artifacts", "mlflow"):
        (HOME / folder).mkdir(parents=True, exist_ok=True)
    return env


def free_port() -> int:
    """A loopback TCP port that nothing listens on now, for a server the demo or a test starts next."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_processes(procs: Iterable[subprocess.Popen], grace: float = 20) -> None:
    """Stop processes started with start_new_session=True: SIGTERM to each one's process group and to
    every descendant (one that left the group too), then SIGKILL to whatever is left after `grace` s.

    Airflow's api-server and the LocalExecutor fork workers that outlive a signal to their parent alone."""
    import psutil

    procs = list(procs)
    victims: list[psutil.Process] = []
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            parent = psutil.Process(proc.pid)
            victims += [parent, *parent.children(recursive=True)]

    def send(sig: signal.Signals, targets: list[psutil.Process]) -> None:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)  # start_new_session made pid the group leader
        for victim in targets:
            with contextlib.suppress(psutil.NoSuchProcess):
                victim.send_signal(sig)

    send(signal.SIGTERM, victims)
    _, alive = psutil.wait_procs(victims, timeout=grace)
    send(signal.SIGKILL, alive)
    for proc in procs:
        proc.wait(timeout=10)


def start() -> tuple[str, dict[str, str]]:
    """Start (or reuse) PostgreSQL, create its databases, point this process's Airflow at the stack
    and migrate Airflow's metadata DB: (the server's superuser URI, Airflow's environment).

    Airflow reads its configuration when it is first imported, so this runs before any Airflow import."""
    server = start_postgres()
    create_databases(server)
    env = apply_env(server)
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, env={**os.environ, **env},
                   stdout=subprocess.DEVNULL)
    return server, env


@contextlib.contextmanager
def output_to(path: Path) -> Iterator[None]:
    """Send everything written to stdout/stderr (Airflow's task logs included) to a file.

    File descriptors 1 and 2, not sys.stdout: logging handlers created earlier and child processes
    write there, and a night's log belongs in its own file, not in the demo's summary."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush(), sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "ab") as handle:
        os.dup2(handle.fileno(), 1), os.dup2(handle.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush(), sys.stderr.flush()
            os.dup2(saved[0], 1), os.dup2(saved[1], 2)
            os.close(saved[0]), os.close(saved[1])


@dataclass(frozen=True)
class Night:
    """One finished DAG run of the night runner: the DagRun, its log file and how long it took."""

    day: dt.date
    dag_run: Any
    log: Path
    seconds: float


class NightRunner:
    """Runs one DAG for simulated nights in this process, through `dag.test` (the code path of
    `airflow dags test`): the demo and the tests' plan runner drive Airflow through this one class.

    Call start() first: the DAG is read from the DAG bag of the Airflow configured there."""

    def __init__(self, dag_id: str) -> None:
        from airflow.utils.cli import get_bagged_dag

        with output_to(HOME / "logs" / "airflow-setup.log"):
            self.dag = get_bagged_dag(bundle_names=None, dag_id=dag_id)
        # Every run gets every param: in one process dag.test() would carry one run's conf into the next.
        self.defaults = dict(self.dag.params.dump())

    def _run_date(self, day: dt.date) -> dict[str, str]:
        """The run_date param for a DAG that has one (the nightly DAG; not the rollback DAG)."""
        return {"run_date": day.isoformat()} if "run_date" in self.defaults else {}

    def run(self, day: dt.date, conf: dict[str, Any] | None = None) -> Night:
        """Run the DAG for `day` (logical date at midnight UTC, param run_date = day) with `conf` on top
        of every param's default; its output goes to logs/<dag_id>-<day>.log under HOME, and each task's
        also to its log in Airflow's log folder (task_logs_for_the_ui), where the UI reads it."""
        log_file = HOME / "logs" / f"{self.dag.dag_id}-{day}.log"
        started, began = time.monotonic(), dt.datetime.now(dt.timezone.utc)
        with output_to(log_file), task_logs_for_the_ui():
            dag_run = self.dag.test(logical_date=dt.datetime.combine(day, dt.time(), tzinfo=dt.timezone.utc),
                                    run_conf={**self.defaults, **self._run_date(day), **(conf or {})})
        record_as_run(dag_run, began, self.defaults)
        return Night(day, dag_run, log_file, time.monotonic() - started)


def record_as_run(dag_run: Any, began: dt.datetime, defaults: dict[str, Any]) -> None:
    """Make a `dag.test` run look in the UI like the run it was: `dag.test` sets its start date to the
    logical date (months before it ran: "Total: 293d 14h" in the grid), and no scheduler wrote its note
    (the night it processed and its conf: nightshift_airflow.run_note)."""
    from airflow import settings
    from airflow.models.dagrun import DagRun
    from nightshift_airflow.run_note import note_for
    from sqlalchemy.orm import Session

    # A session of its own: Airflow's scoped session is the one dag.test used, and closing it would
    # detach the DagRun handed back to the caller.
    with Session(bind=settings.engine, expire_on_commit=False) as session, session.begin():
        run = session.query(DagRun).filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id).one()
        run.start_date = began
        if run.end_date is not None and run.end_date < began:  # a clock step back: keep the duration >= 0
            run.end_date = began
        run.note = note_for(run, defaults)


# structlog's console line: `2026-02-01T23:09:26.409491Z [info     ] event   [logger] key=value`
_CONSOLE = re.compile(r"^(?P<timestamp>\d{4}-\d\d-\d\dT[\d:.]+Z) \[(?P<level>[a-z]+) *\] (?P<event>.*)$")
_LOGGER = re.compile(r"^(?P<event>.*) +\[(?P<logger>[\w.]+)\](?P<rest>( \w+=.*)?)$")  # the last [name]
_LOC = re.compile(r" loc=\S+")  # the source line of the log call: noise for an operator
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def airflow_log_records(text: str) -> list[dict[str, str]]:
    """Console output turned into the JSON records of Airflow 3's task logs (timestamp, level, event,
    logger), so that the UI shows levels and times as for a task a worker ran. A line that is not a log
    line (a traceback, a print) is a record of its own, with the time and level of the line before."""
    records: list[dict[str, str]] = []
    for raw in text.splitlines():
        line = _ANSI.sub("", raw)
        head = _CONSOLE.match(line)
        if head is None:
            last = records[-1] if records else {}
            records.append({**{k: last[k] for k in ("timestamp", "level") if k in last}, "event": line})
            continue
        record = head.groupdict()
        tail = _LOGGER.match(record["event"])
        if tail is not None:
            record["event"], record["logger"] = tail["event"].rstrip() + _LOC.sub("", tail["rest"]), tail["logger"]
        records.append(record)
    return records


def airflow_log_path(ti: Any) -> Path:
    """Where Airflow's UI looks for a task instance's log: the base log folder and the run's log
    filename template (dag_id=.../run_id=.../task_id=.../attempt=N.log), as Airflow renders them."""
    from airflow import settings
    from airflow.configuration import conf
    from airflow.utils.log.file_task_handler import FileTaskHandler
    from sqlalchemy.orm import Session

    folder = conf.get("logging", "base_log_folder")
    # A session of its own: Airflow's default one is the scoped session dag.test runs in, closed at the end.
    # The run's DAG is put back: rendering sets it from the task, which dag.test replaced by one without.
    dag_run = ti.dag_run
    kept = dag_run.dag
    try:
        with Session(bind=settings.engine, expire_on_commit=False) as session:
            name = FileTaskHandler(base_log_folder=folder)._render_filename(ti, ti.try_number, session=session)
    finally:
        dag_run.dag = kept
    return Path(folder) / name


@contextlib.contextmanager
def task_logs_for_the_ui() -> Iterator[None]:
    """While `dag.test` runs, write each task's output to its log in Airflow's log folder too.

    `dag.test` runs every task in this process and its output goes to stdout: the UI, which reads a
    task's log from the log folder, showed nothing. Airflow runs the tasks of `dag.test` one at a time
    through `airflow.sdk.definitions.dag._run_task`; it is wrapped here so that each try's output is
    caught, written to the night's log as before, and to the task's own log as Airflow's JSON lines.
    A change of that private function's name fails here, loudly, rather than leaving the UI empty."""
    from airflow.sdk.definitions import dag as dag_module

    original = dag_module._run_task
    scratch = HOME / "logs" / f".task-output-{os.getpid()}"  # night runners may share HOME
    failed: list[str] = []

    def run_task(*, ti: Any, task: Any, **kwargs: Any) -> Any:
        scratch.unlink(missing_ok=True)
        try:
            with output_to(scratch):
                return original(ti=ti, task=task, **kwargs)
        finally:
            caught = scratch.read_bytes() if scratch.exists() else b""
            sys.stdout.buffer.write(caught), sys.stdout.flush()  # the night's log keeps everything
            try:
                write_task_log(airflow_log_path(ti), caught.decode(errors="replace"))
            except Exception as exc:  # noqa: BLE001 - dag.test would swallow it: raised after the run
                failed.append(f"{ti.task_id} try {ti.try_number}: {type(exc).__name__}: {exc}")

    dag_module._run_task = run_task
    try:
        yield
    finally:
        dag_module._run_task = original
        scratch.unlink(missing_ok=True)
    if failed:
        raise RuntimeError("task logs not written to Airflow's log folder (the UI shows none): " + "; ".join(failed))


def write_task_log(path: Path, output: str) -> None:
    """Append a task try's console output to its Airflow log file as Airflow's JSON lines."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        handle.writelines(json.dumps(record) + "\n" for record in airflow_log_records(output))


def ui_env(server_uri: str, port: int) -> dict[str, str]:
    """Airflow's environment for `make ui`: the demo's, every server on loopback, login disabled (local use
    only), LocalExecutor; the components share one API secret and one JWT secret, made for this start."""
    import secrets

    env = airflow_env(server_uri)
    env.update({
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "2",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    })
    return env


def serve_ui(port: int = 8080, ready_timeout: float = 180) -> int:
    """`make ui`: Airflow's api-server, scheduler, dag-processor and triggerer on the demo's state, until
    Ctrl-C. Not `airflow standalone`: its scheduler and triggerer start log servers on every interface
    (0.0.0.0:8793 and :8794, not configurable); here they are skipped (--skip-serve-logs: the tasks run
    on this machine and the api-server reads their logs from the log folder) and the api-server listens
    on 127.0.0.1 only. Each component logs to logs/ui-<component>.log under HOME."""
    import requests

    server = start_postgres()
    create_databases(server)
    init_mlflow_store()
    env = {**os.environ, **ui_env(server, port)}
    for folder in ("airflow", "artifacts", "mlflow", "logs"):
        (HOME / folder).mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, env=env, stdout=subprocess.DEVNULL)
    procs = []
    for component in UI_COMPONENTS:
        with open(HOME / "logs" / f"ui-{component.split()[0]}.log", "ab") as log:
            procs.append(subprocess.Popen([sys.executable, "-m", "airflow", *component.split()], env=env, stdout=log,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True))
    url = f"http://127.0.0.1:{port}"
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C, even when started in the background
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops the components too, not this process alone
    try:
        deadline = time.monotonic() + ready_timeout
        while not _answers(requests, f"{url}/api/v2/version"):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                print(f"Airflow did not come up; see {HOME / 'logs'}/ui-*.log", file=sys.stderr)
                return 1
            time.sleep(1)
        print(f"Airflow UI: {url}  (login disabled: local use only; Ctrl-C stops it; logs: {HOME / 'logs'}/ui-*.log)",
              flush=True)
        while all(p.poll() is None for p in procs):
            time.sleep(1)
        print("an Airflow component stopped; stopping the others", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stop_processes(procs)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _answers(requests: Any, url: str) -> bool:
    session = requests.Session()
    session.trust_env = False  # loopback: never through a proxy from the environment
    try:
        return session.get(url, timeout=2).ok
    except requests.RequestException:
        return False
