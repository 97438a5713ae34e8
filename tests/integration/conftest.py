"""Driving a plan of nights (run_nights.py) in its own process, shared by the integration modules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

import local_stack  # scripts/, put on the path by tests/conftest.py

RUN_NIGHTS = Path(__file__).resolve().parent / "run_nights.py"


@pytest.fixture(scope="module")
def run_plan(pg_server_uri: str) -> Iterator[Callable[[dict, Path], tuple[list[dict], psycopg.Connection]]]:
    """run_plan(plan, home) -> (one dict per DAG run, in order; a connection to the warehouse).

    The source and warehouse databases are dropped first: each module's plan starts from nothing.
    Retries wait 1 s (a validation failure is never retried; a transient one is, quickly).
    """
    opened: list = []

    def run(plan: dict, home: Path) -> tuple[list[dict], psycopg.Connection]:
        admin = psycopg.connect(pg_server_uri, autocommit=True)
        with admin.cursor() as cur:
            for name in ("source", "warehouse"):
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.close()
        plan_file = home / "plan.json"
        plan_file.write_text(json.dumps(plan))
        env = {**os.environ, "NIGHTSHIFT_HOME": str(home), "NIGHTSHIFT_PG_URI": pg_server_uri,
               "NIGHTSHIFT_RETRY_DELAY_SECONDS": "1"}
        started = time.monotonic()
        out = subprocess.run([sys.executable, str(RUN_NIGHTS), str(plan_file)],
                             env=env, capture_output=True, text=True, timeout=1500)
        assert out.returncode == 0, out.stderr[-5000:]
        runs = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
        print(f"\n{len(runs)} nights in {time.monotonic() - started:.0f} s: "
              + ", ".join(f"{r['day']} {r['state']} {r.get('seconds')} s" for r in runs))
        opened.append(psycopg.connect(local_stack.database_uri(pg_server_uri, "warehouse")))
        return runs, opened[-1]

    yield run
    for conn in opened:
        conn.close()
