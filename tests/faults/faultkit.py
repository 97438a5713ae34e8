"""Real things to break, for the fault tests: a PostgreSQL server of the test's own, an MLflow
tracking server, a TCP relay in front of it, and nightly DAG runs driven by
tests/integration/run_nights.py in a subprocess.

Nothing here imitates a component: the faults are real processes stopped, killed or restarted.
The relay only decides when: it sits where a load balancer would, and lets a test stop the
tracking server at the exact moment a given task first calls it, which polling from outside
could only hit by luck.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import psycopg

from local_stack import database_uri, free_port  # noqa: F401  scripts/, on the path by tests/conftest.py; re-exported

ROOT = Path(__file__).resolve().parents[2]
RUN_PLAN = Path(__file__).resolve().parents[1] / "integration" / "run_nights.py"
DAG_ID = "nightshift_churn"
ROWS = 1000  # rows per simulated day: enough to train (training.min_rows 2000 over 14 days), fast to run
HISTORY_DAYS = 18  # training window 14 + holdout 3 + label delay 1


def wait_for(what: str, condition: Callable[[], object], timeout: float = 300, every: float = 0.05):
    """Poll until condition() is truthy and return it; a hang becomes a failure naming what was awaited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"gave up waiting for {what} after {timeout:.0f} s")


# ---------------------------------------------------------------- PostgreSQL


class OwnPostgres:
    """An embedded PostgreSQL (pgserver) in its own folder, so restarting it touches no other test."""

    def __init__(self, folder: Path) -> None:
        import pgserver

        self.server = pgserver.get_server(folder, cleanup_mode=None)  # stopped by stop(): restart changes the pid
        self.pgdata = Path(folder)
        self.uri = self.server.get_uri()

    def _pg_ctl(self, *args: str) -> None:
        from pgserver._commands import pg_ctl

        pg_ctl(list(args), pgdata=self.pgdata, user=self.server.system_user, timeout=60)

    def restart(self, mode: str = "immediate") -> None:
        """Stop (immediate: every backend killed, crash recovery on start) and start again, same socket."""
        self._pg_ctl("-w", "-m", mode, "-l", str(self.pgdata / "log"), "restart")

    def stop(self) -> None:
        try:
            self._pg_ctl("-w", "-m", "fast", "stop")
        except subprocess.CalledProcessError:
            pass  # already stopped


# ---------------------------------------------------------------- MLflow


class MlflowServer:
    """`mlflow server` on a SQLite store, as its own process group so that stopping it stops its workers."""

    def __init__(self, folder: Path, port: int | None = None) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self.log = self.folder / "server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "MlflowServer":
        cmd = [str(Path(sys.executable).with_name("mlflow")), "server",
               "--backend-store-uri", f"sqlite:///{self.folder / 'mlflow.db'}",
               "--artifacts-destination", str(self.folder / "mlartifacts"),
               "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=self.folder, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        return self

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def wait_ready(self, timeout: float = 120) -> None:
        wait_for(f"MLflow server on {self.url} (log {self.log})", self.ready, timeout, every=0.2)

    def kill(self) -> None:
        """SIGKILL the server's process group (the one this object started) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


class Relay:
    """A TCP relay at 127.0.0.1:port in front of an upstream port: the address the pipeline is given.

    Before passing on each chunk a client sends, it asks policy(); False closes the client's
    connection (the client sees the server gone). Connecting upstream is retried for up to
    `upstream_wait` seconds, so a client arriving while the server (re)starts waits for it.
    """

    def __init__(self, upstream_port: int, policy: Callable[[], bool] = lambda: True,
                 upstream_wait: float = 120) -> None:
        self.upstream_port, self.policy, self.upstream_wait = upstream_port, policy, upstream_wait
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.refused = 0
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _connect_upstream(self) -> socket.socket | None:
        deadline = time.monotonic() + self.upstream_wait
        while True:
            try:
                return socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                if time.monotonic() > deadline:
                    return None
                time.sleep(0.1)

    def _serve(self, client: socket.socket) -> None:
        upstream = None
        try:
            while chunk := client.recv(65536):
                if not self.policy():
                    self.refused += 1
                    return
                if upstream is None:
                    upstream = self._connect_upstream()
                    if upstream is None:
                        return
                    threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()
                upstream.sendall(chunk)
        except OSError:
            return
        finally:
            for s in (client, upstream):
                if s is not None:
                    s.close()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


# ---------------------------------------------------------------- nightly runs


def d(day: dt.date, offset: int = 0) -> str:
    return (day + dt.timedelta(days=offset)).isoformat()


def cold_start(first: dt.date, note: str = "cold start") -> list[dict]:
    """Plan steps: labelled history, the first night's rows, and a first run that makes a champion.

    promotion_policy=force on the cold start only: the fault tests need a champion to exist,
    whatever the gate thinks of a model trained on this little data (force still needs the floor).
    """
    return [
        {"load_days": {"from": d(first, -HISTORY_DAYS), "to": d(first, -1), "labels": True}},
        {"load_days": {"from": d(first), "to": d(first)}},
        {"run": {"day": d(first), "conf": {"promotion_policy": "force", "note": note}}},
    ]


def next_night(day: dt.date) -> list[dict]:
    """Plan steps: the night's rows arrive and the previous night's labels are revealed."""
    return [{"load_days": {"from": d(day), "to": d(day)}}, {"reveal": d(day, -1)}]


class Nights:
    """One run_nights.py process with its own NIGHTSHIFT_HOME (AIRFLOW_VAR_* in its environment win)."""

    def __init__(self, home: Path, pg_uri: str, steps: list[dict], env: dict[str, str] | None = None) -> None:
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        plan = self.home / "plan.json"
        plan.write_text(json.dumps({"rows": ROWS, "steps": steps}))
        self.stderr = self.home / "stderr.log"
        full_env = {**os.environ, "NIGHTSHIFT_HOME": str(self.home), "NIGHTSHIFT_PG_URI": pg_uri,
                    "NIGHTSHIFT_RETRY_DELAY_SECONDS": "1", **(env or {})}
        with open(self.stderr, "wb") as err:
            self.proc = subprocess.Popen([sys.executable, str(RUN_PLAN), str(plan)], env=full_env,
                                         stdout=subprocess.PIPE, stderr=err, text=True, cwd=self.home)
        self.runs: list[dict] = []

    def next_run(self) -> dict:
        """Block until the next run's JSON line (printed when a DAG run has ended)."""
        while line := self.proc.stdout.readline():
            if line.startswith("{"):
                self.runs.append(json.loads(line))
                return self.runs[-1]
        raise AssertionError(f"run_nights ended (exit {self.proc.wait()}) before the next run: {self.tail()}")

    def finish(self, timeout: float = 600) -> list[dict]:
        out, _ = self.proc.communicate(timeout=timeout)
        self.runs += [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        assert self.proc.returncode == 0, self.tail()
        return self.runs

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def tail(self, chars: int = 4000) -> str:
        return self.stderr.read_text(errors="replace")[-chars:] if self.stderr.exists() else ""

    def task(self, day: dt.date | str, task_id: str) -> tuple[str | None, int] | None:
        """(state, try_number) of one task of the run for `day`, read from the Airflow SQLite DB."""
        db = self.home / "airflow" / "airflow.db"
        if not db.exists():
            return None
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            return conn.execute(
                "SELECT ti.state, ti.try_number FROM task_instance ti JOIN dag_run dr "
                "ON dr.dag_id = ti.dag_id AND dr.run_id = ti.run_id "
                "WHERE ti.dag_id = ? AND ti.task_id = ? AND dr.logical_date LIKE ?",
                (DAG_ID, task_id, f"{day}%")).fetchone()
        except sqlite3.OperationalError:  # tables not created yet
            return None
        finally:
            conn.close()

    def task_times(self, day: dt.date | str) -> tuple[str, str]:
        """When the run for `day` started its first task and ended its last (UTC text, comparable)."""
        conn = sqlite3.connect(f"file:{self.home / 'airflow' / 'airflow.db'}?mode=ro", uri=True, timeout=10)
        try:
            return conn.execute(
                "SELECT min(ti.start_date), max(ti.end_date) FROM task_instance ti JOIN dag_run dr "
                "ON dr.dag_id = ti.dag_id AND dr.run_id = ti.run_id WHERE ti.dag_id = ? AND dr.logical_date LIKE ?",
                (DAG_ID, f"{day}%")).fetchone()
        finally:
            conn.close()

    def log(self, day: dt.date | str) -> str:
        return (self.home / "logs" / f"{DAG_ID}-{day}.log").read_text(errors="replace")


# ---------------------------------------------------------------- the warehouse afterwards


def query(uri: str, text: str, args: tuple = ()) -> list[tuple]:
    conn = psycopg.connect(uri)
    try:
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(text, args)
            return cur.fetchall()
    finally:
        conn.close()


def partition(warehouse_uri: str, day: dt.date | str) -> tuple[int, int, list[str], list[int]]:
    """(rows, distinct customers, the run ids that wrote them, the model versions) of one night."""
    return query(warehouse_uri, "SELECT count(*), count(DISTINCT customer_id), "
                                "coalesce(array_agg(DISTINCT dag_run_id), '{}'), "
                                "coalesce(array_agg(DISTINCT model_version), '{}') "
                                "FROM churn.predictions WHERE score_date = %s", (str(day),))[0]


def history(warehouse_uri: str) -> dict[str, dict]:
    rows = query(warehouse_uri, "SELECT logical_date, dag_run_id, decision, retrain_reason, champion_version, "
                                "challenger_version, rows_published, note, details "
                                "FROM churn.pipeline_runs ORDER BY logical_date")
    keys = ("run_id", "decision", "reason", "champion", "challenger", "published", "note", "details")
    return {r[0].isoformat(): dict(zip(keys, r[1:])) for r in rows}
