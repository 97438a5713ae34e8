"""Fault: the publish process is killed (SIGKILL) in the middle of its COPY.

A real publish (ensure_warehouse + replace_partition, as PublishOperator runs them) of two
million prediction rows runs in its own process. The test waits until PostgreSQL's
pg_stat_progress_copy shows that backend's COPY has inserted a quarter of its rows, kills the process,
and then checks what replace_partition promises: the night's previous rows (or their absence)
are exactly as before, no lock outlives the dead process, and publishing again completes.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from include.nightshift import warehouse

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
PUBLISH = HERE / "publish_partition.py"
APPLICATION = "nightshift-fault-publish"  # publish_partition.APPLICATION
DAY = dt.date(2026, 3, 5)
BIG_ROWS = 1_000_000  # a COPY of a few seconds here: long enough to be caught for real
CATCH_AFTER = BIG_ROWS // 4  # rows the doomed COPY must have inserted before the kill
PREVIOUS_ROWS = 1_000


def predictions_file(path: Path, rows: int, run_id: str, seed: int) -> Path:
    """A predictions Parquet file as ScoreOperator writes it (same columns and types)."""
    score = np.random.default_rng(seed).random(rows)
    table = pa.table({
        "customer_id": pa.array(np.arange(1, rows + 1, dtype=np.int64)),
        "score": pa.array(score),
        "predicted_label": pa.array((score >= 0.5).astype(np.int16)),
        "model_name": pa.repeat(pa.scalar("nightshift_churn"), rows),
        "model_version": pa.repeat(pa.scalar(7, pa.int32()), rows),
        "snapshot_sha256": pa.repeat(pa.scalar("ab" * 32), rows),
        "dag_run_id": pa.repeat(pa.scalar(run_id), rows),
        "scored_at": pa.repeat(pa.scalar(dt.datetime(2026, 3, 6, 1, 2, 3, tzinfo=dt.timezone.utc),
                                         pa.timestamp("us", tz="UTC")), rows),
    })
    pq.write_table(table, path)
    return path


@pytest.fixture(scope="module")
def big_file(tmp_path_factory) -> Path:
    return predictions_file(tmp_path_factory.mktemp("publish") / "big.parquet", BIG_ROWS, "run_killed", seed=1)


def partition(conn, day: dt.date) -> tuple[int, str]:
    """Row count and a digest of every column of every row of one night (exact comparison)."""
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SELECT count(*), md5(coalesce(string_agg(p::text, '|' ORDER BY customer_id), '')) "
                    "FROM churn.predictions p WHERE score_date = %s", (day,))
        return cur.fetchone()


def copy_progress(conn) -> tuple[int, int] | None:
    """(backend pid, rows its COPY has inserted so far) of the publish process, once its COPY runs."""
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SELECT a.pid, p.tuples_processed FROM pg_stat_activity a "
                    "JOIN pg_stat_progress_copy p ON p.pid = a.pid "
                    "WHERE a.application_name = %s AND a.query LIKE 'COPY%%'", (APPLICATION,))
        return cur.fetchone()


def kill_mid_copy(uri: str, path: Path, watcher) -> int:
    """Start a publish, SIGKILL it once its COPY has inserted CATCH_AFTER rows; return how many it had."""
    proc = subprocess.Popen([sys.executable, str(PUBLISH), uri, DAY.isoformat(), str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while proc.poll() is None:
            progress = copy_progress(watcher)
            if progress and progress[1] >= CATCH_AFTER:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return progress[1]
            time.sleep(0.01)
        pytest.fail(f"the publish ended (exit {proc.returncode}) before its COPY was caught: {proc.stderr.read()}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def publish_again(uri: str, path: Path) -> subprocess.CompletedProcess:
    # lock_timeout: a lock left behind by the killed backend makes this fail instead of hang
    env = {**os.environ, "PGOPTIONS": "-c lock_timeout=20s"}
    return subprocess.run([sys.executable, str(PUBLISH), uri, DAY.isoformat(), str(path)], env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("previously_published", [True, False], ids=["night-published-before", "night-never-published"])
def test_killed_publish_leaves_the_night_as_it_was_and_the_retry_completes(
        pg_uri, churn_spec, big_file, tmp_path, previously_published):
    watcher = psycopg.connect(pg_uri)
    try:
        if previously_published:
            conn = psycopg.connect(pg_uri)
            warehouse.ensure_warehouse(conn, churn_spec)
            small = predictions_file(tmp_path / "previous.parquet", PREVIOUS_ROWS, "run_previous", seed=2)
            assert warehouse.replace_partition(conn, churn_spec, DAY, small) == PREVIOUS_ROWS
            conn.close()
            before = partition(watcher, DAY)
            assert before[0] == PREVIOUS_ROWS
        else:
            before = (0, "d41d8cd98f00b204e9800998ecf8427e")  # md5 of '': no rows at all

        inserted = kill_mid_copy(pg_uri, big_file, watcher)
        assert CATCH_AFTER <= inserted < BIG_ROWS, "the process must die in the middle of its COPY"

        assert partition(watcher, DAY) == before

        retry = publish_again(pg_uri, big_file)
        assert retry.returncode == 0, retry.stderr[-3000:]
        assert retry.stdout.strip() == str(BIG_ROWS)
        with watcher.transaction(), watcher.cursor() as cur:
            cur.execute("SELECT count(*), count(DISTINCT customer_id), min(customer_id), max(customer_id), "
                        "array_agg(DISTINCT dag_run_id) FROM churn.predictions WHERE score_date = %s", (DAY,))
            assert cur.fetchone() == (BIG_ROWS, BIG_ROWS, 1, BIG_ROWS, ["run_killed"])
            cur.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
            assert cur.fetchone() == (0,)
    finally:
        watcher.close()
