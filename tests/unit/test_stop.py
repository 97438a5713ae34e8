"""`make stop` (scripts/demo.py stop -> local_stack.stop_postgres) stops the embedded PostgreSQL for real,
or says it could not (issue 11, item 16).

A client killed hard leaves its pid in pgserver's handle file; pgserver's own cleanup then leaves the
server running "for" that dead client, and stop used to report success anyway.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

import demo  # scripts/, on the path from tests/conftest.py
import local_stack

ROOT = Path(__file__).resolve().parents[2]


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # ended; its parent (init) reaps it
    except psutil.NoSuchProcess:
        return True


def _start_client(env: dict[str, str]) -> subprocess.Popen:
    """A demo-like client that starts the embedded server (cleanup_mode=None) and keeps running."""
    code = ("import sys, time; sys.path.insert(0, 'scripts'); import local_stack; "
            "print(local_stack.start_postgres(), flush=True); time.sleep(600)")
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, start_new_session=True)


@pytest.mark.postgres
def test_stop_after_a_killed_client_stops_the_server_for_real(tmp_path):
    env = {**os.environ, "NIGHTSHIFT_HOME": str(tmp_path / "home")}
    env.pop("NIGHTSHIFT_PG_URI", None)
    client = _start_client(env)
    pg = tmp_path / "home" / "pg"
    try:
        assert client.stdout.readline().startswith("postgresql://"), "the embedded server did not start"
        postmaster = int((pg / "postmaster.pid").read_text().splitlines()[0])
        assert psutil.pid_exists(postmaster)
        os.killpg(client.pid, signal.SIGKILL)  # the client dies without cleaning up: its pid stays in the handle file
        client.wait(timeout=10)
        assert str(client.pid) in (pg / ".handle_pids.json").read_text()

        started = time.monotonic()
        stop = subprocess.run([sys.executable, "scripts/demo.py", "stop"], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=60)
        assert stop.returncode == 0, stop.stderr
        assert "stopped the demo's PostgreSQL" in stop.stdout
        assert _gone(postmaster), f"postmaster {postmaster} still running after `stop` said it stopped"
        assert time.monotonic() - started < 15
        assert not (pg / ".handle_pids.json").exists()  # the dead client's pid is forgotten

        again = subprocess.run([sys.executable, "scripts/demo.py", "stop"], cwd=ROOT, env=env, capture_output=True,
                               text=True, timeout=60)
        assert (again.returncode, again.stdout.strip()) == (0, "nothing to stop")
    finally:
        if client.poll() is None:
            os.killpg(client.pid, signal.SIGKILL)
        if (pg / "postmaster.pid").exists():  # the test failed: do not leave a server behind
            local_stack.stop_postgres(pg)


def _fake_postmaster(tmp_path: Path, data_dir: Path) -> subprocess.Popen:
    """A process that looks like `postgres -D data_dir` and ignores every shutdown signal."""
    exe = tmp_path / "bin" / "postgres"
    exe.parent.mkdir()
    exe.symlink_to(sys.executable)
    code = ("import signal, sys, time\n"
            "for s in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT): signal.signal(s, signal.SIG_IGN)\n"
            "print('ready', flush=True); time.sleep(120)")
    proc = subprocess.Popen([str(exe), "-c", code, "-D", str(data_dir)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    (data_dir / "postmaster.pid").write_text(f"{proc.pid}\n{data_dir}\n")
    return proc


def test_a_server_that_does_not_stop_is_reported_and_stop_exits_non_zero(tmp_path, monkeypatch, capsys):
    data_dir = tmp_path / "pg"
    data_dir.mkdir()
    proc = _fake_postmaster(tmp_path, data_dir)
    try:
        with pytest.raises(local_stack.PostgresStillRunning, match=f"pid {proc.pid}, data {data_dir}"):
            local_stack.stop_postgres(data_dir, timeout=0.6)
        assert proc.poll() is None
        monkeypatch.setattr(local_stack, "stop_postgres",
                            functools.partial(local_stack.stop_postgres, data_dir, timeout=0.6))
        assert demo.stop() == 1
        out = capsys.readouterr()
        assert "could not stop the demo's PostgreSQL" in out.err and str(proc.pid) in out.err
        assert "stopped" not in out.out
    finally:
        proc.kill()
        proc.wait()


def test_a_stale_pid_file_naming_another_process_stops_nothing(tmp_path):
    """After a crash the pid in postmaster.pid may belong to an unrelated process now: it is left alone."""
    data_dir = tmp_path / "pg"
    data_dir.mkdir()
    (data_dir / "postmaster.pid").write_text(f"{os.getpid()}\n{data_dir}\n")
    (data_dir / ".handle_pids.json").write_text("[1234567]")
    assert local_stack.stop_postgres(data_dir, timeout=0.5) is False
    assert not (data_dir / ".handle_pids.json").exists()
