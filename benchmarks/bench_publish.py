"""How fast does publish write a night of predictions, against the previous writer, the usual idioms and the floor?

On demand only (never a timed test):

    .venv/bin/python benchmarks/bench_publish.py --rows 1000000

Starts a throwaway PostgreSQL the way the tests do (pgserver), makes N prediction rows for
the churn spec, and times writing them into the warehouse's `predictions` table, side by side
in one run, with:

- DataFrame.to_sql (the naive way; above --naive-cap rows it is timed on the cap and scaled);
- psycopg2.extras.execute_values (row inserts, default page size);
- ours: warehouse.replace_partition from the Parquet file (psycopg 3, each batch's CSV buffer
  handed to Copy.write), in a fresh process, to measure its peak RSS;
- the previous writer: the same CSV batches through psycopg2 ``copy_expert`` and a file-like
  adapter (kept here verbatim, to compare against), in a fresh process too;
- the floor: psql `\\copy` of a CSV already on disk, the very bytes ours sends, so the gap to
  the floor is the cost of reading Parquet and making CSV.

Each method starts from an empty table with the same primary key; the methods run in turn,
--repeat times, and the median counts. Prints seconds and ratios versus the floor. Seconds
move with the machine; the ratios are what to compare. Needs psql on PATH.

Measured here (2026-11-29, 1M rows, --repeat 5 --skip to_sql execute_values, 2 cores, quiet:
load average about 1): ours 3.25 s, 1.15x psql \\copy (2.82 s); the previous psycopg2 writer
1.25x; peak RSS of the publish +215 MB (previous +187 MB). The same run without the worker
thread that makes the next CSV batch while the server parses this one: ours 1.32x (+181 MB).
Under load (other test suites on the same 2 cores) the ratios spread from 1.0x to 1.6x.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DAY = dt.date(2026, 3, 1)


def make_predictions(rows: int, key: str):
    """N prediction rows shaped like the scorer's output (the Parquet contract of replace_partition)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    score = rng.random(rows)
    return pd.DataFrame({
        key: np.arange(1, rows + 1, dtype="int64"),
        "score": score,
        "predicted_label": (score >= 0.5).astype("int16"),
        "model_name": "nightshift_churn",
        "model_version": np.int32(7),
        "snapshot_sha256": "3f" * 32,
        "dag_run_id": "scheduled__2026-03-01T00:00:00+00:00",
        "scored_at": pd.Timestamp("2026-03-02 01:02:03.123456", tz="UTC"),
    })


def write_csv(spec, parquet: Path, path: Path) -> None:
    """The floor's input, written before timing: the very bytes replace_partition streams to COPY."""
    import pyarrow.parquet as pq

    from include.nightshift import warehouse as wh

    columns = (spec.entity_key.name, *wh.PREDICTION_INPUT_COLUMNS)
    with open(path, "wb") as f:
        for data, _ in wh._csv_chunks(pq.ParquetFile(parquet), columns, wh._csv_schema(spec), DAY):
            f.write(data)


# ------------------------------------------------------------------ the methods


def bench_to_sql(uri: str, schema: str, df) -> None:
    from sqlalchemy import create_engine

    engine = create_engine(uri.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        df.assign(score_date=DAY).to_sql("predictions", engine, schema=schema, if_exists="append", index=False)
    finally:
        engine.dispose()


def bench_execute_values(uri: str, schema: str, df) -> None:
    import psycopg2
    from psycopg2 import sql
    from psycopg2.extras import execute_values

    frame = df.assign(score_date=DAY)
    query = sql.SQL("INSERT INTO {}.predictions ({}) VALUES %s").format(
        sql.Identifier(schema), sql.SQL(", ").join(sql.Identifier(c) for c in frame.columns))
    conn = psycopg2.connect(uri)
    try:
        with conn, conn.cursor() as cur:
            execute_values(cur, query.as_string(conn), frame.itertuples(index=False, name=None))
    finally:
        conn.close()


def in_child(which: str, uri: str, spec_path: str, parquet: Path) -> dict:
    """A writer in a fresh process: its own peak RSS is the memory a publish task needs."""
    out = subprocess.run(
        [sys.executable, __file__, "--child", which, str(parquet), "--uri", uri, "--spec", spec_path],
        check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def child(which: str, uri: str, spec_path: str, parquet: str) -> None:
    from include.nightshift.spec import load_spec
    from include.nightshift.warehouse import replace_partition

    spec = load_spec(spec_path)
    if which == "ours":
        import psycopg

        conn, write = psycopg.connect(uri), replace_partition
    else:
        import psycopg2

        conn, write = psycopg2.connect(uri), previous_replace_partition
    rss_before = reset_peak_rss()
    start = time.perf_counter()
    rows = write(conn, spec, DAY, parquet)
    seconds = time.perf_counter() - start
    conn.close()
    print(json.dumps({"seconds": seconds, "rows": rows, "rss_before_mb": rss_before, "rss_peak_mb": peak_rss()}))


def previous_replace_partition(conn, spec, score_date: dt.date, path: str) -> int:
    """The writer warehouse.py had before psycopg 3 (psycopg2 copy_expert reading a file-like
    adapter over the same CSV batches), for comparison only."""
    import io

    import pyarrow.parquet as pq
    from psycopg2 import sql

    from include.nightshift import warehouse as wh

    class CsvStream(io.RawIOBase):
        def __init__(self, chunks) -> None:
            super().__init__()
            self._chunks, self._current, self._pos, self.rows = chunks, memoryview(b""), 0, 0

        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            while self._pos >= len(self._current):
                try:
                    data, rows = next(self._chunks)
                except StopIteration:
                    return b""
                self._current, self._pos = memoryview(data), 0
                self.rows += rows
            end = len(self._current) if size is None or size < 0 else self._pos + size
            out = bytes(self._current[self._pos:end])
            self._pos += len(out)
            return out

    key = spec.entity_key.name
    columns = (key, *wh.PREDICTION_INPUT_COLUMNS)
    table = sql.SQL("{}.{}").format(sql.Identifier(spec.warehouse.schema), sql.Identifier(wh.PREDICTIONS))
    copy = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv)").format(
        table, sql.SQL(", ").join(sql.Identifier(c) for c in ("score_date", *columns)))
    stream = CsvStream(wh._csv_chunks(pq.ParquetFile(path, pre_buffer=False), columns, wh._csv_schema(spec), score_date))
    with conn, conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", (wh._schema_lock_id(spec.warehouse.schema),
                                                              score_date.toordinal()))
        cur.execute("SET LOCAL TimeZone = 'UTC'")
        cur.execute(sql.SQL("DELETE FROM {} WHERE score_date = %s").format(table), (score_date,))
        cur.copy_expert(copy, stream, size=1 << 20)
    return stream.rows


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def reset_peak_rss() -> float:
    """Current RSS in MB, and the peak reset to it (Linux), so the peak measures the publish alone.

    ru_maxrss is no use here: a child started from a big parent inherits the parent's peak.
    """
    Path("/proc/self/clear_refs").write_text("5")
    return _status_mb("VmRSS")


def peak_rss() -> float:
    return _status_mb("VmHWM")


def bench_floor(uri: str, schema: str, columns: list[str], csv_path: Path) -> None:
    from psycopg import sql

    cols = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    target = sql.SQL("{}.predictions ({})").format(sql.Identifier(schema), cols).as_string()
    command = f"\\copy {target} FROM '{csv_path}' WITH (FORMAT csv)"
    subprocess.run([shutil.which("psql"), uri, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", command], check=True,
                   capture_output=True, env={**os.environ, "PGTZ": "UTC"})  # the CSV's timestamps are UTC


# ------------------------------------------------------------------ the run


def count(conn, schema: str) -> int:
    from psycopg import sql

    with conn.transaction(), conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT count(*) FROM {}.predictions").format(sql.Identifier(schema)))
        return cur.fetchone()[0]


def truncate(conn, schema: str) -> None:
    from psycopg import sql

    with conn.transaction(), conn.cursor() as cur:
        cur.execute(sql.SQL("TRUNCATE {}.predictions").format(sql.Identifier(schema)))
        cur.execute("CHECKPOINT")  # each method starts from the same clean state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--naive-cap", type=int, default=200_000, help="to_sql runs on at most this many rows, then scales")
    parser.add_argument("--repeat", type=int, default=3, help="median of this many runs per method")
    parser.add_argument("--skip", nargs="*", default=[], choices=["to_sql", "execute_values"])
    parser.add_argument("--child", nargs=2, metavar=("WHICH", "PARQUET"), help=argparse.SUPPRESS)
    parser.add_argument("--uri", help=argparse.SUPPRESS)
    parser.add_argument("--spec", default=str(ROOT / "include" / "specs" / "churn.yaml"))
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.uri, args.spec, args.child[1])
        return
    if not shutil.which("psql"):
        sys.exit("psql is not on PATH: it is the floor this benchmark compares against")

    import pgserver
    import psycopg
    from psycopg import sql

    from include.nightshift.spec import load_spec
    from include.nightshift.warehouse import PREDICTION_INPUT_COLUMNS, ensure_warehouse

    spec = load_spec(args.spec)
    schema, key, n = spec.warehouse.schema, spec.entity_key.name, args.rows
    with tempfile.TemporaryDirectory(prefix="bench_publish_") as tmp:
        tmp_path = Path(tmp)
        server = pgserver.get_server(tmp_path / "pg", cleanup_mode="stop")
        try:
            uri = server.get_uri()
            conn = psycopg.connect(uri, autocommit=True)  # CHECKPOINT between methods
            if spec.warehouse.reader_role:  # the spec's consumer role must exist, as on a real server
                conn.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(spec.warehouse.reader_role)))
            ensure_warehouse(conn, spec)

            t0 = time.perf_counter()
            df = make_predictions(n, key)
            parquet, csv_path = tmp_path / "predictions.parquet", tmp_path / "predictions.csv"
            df.to_parquet(parquet, index=False)
            write_csv(spec, parquet, csv_path)
            print(f"{n:,} prediction rows; Parquet {parquet.stat().st_size / 1e6:.0f} MB, "
                  f"CSV {csv_path.stat().st_size / 1e6:.0f} MB (made in {time.perf_counter() - t0:.1f} s)")

            columns = ["score_date", key, *PREDICTION_INPUT_COLUMNS]
            children: dict[str, list[dict]] = {"ours": [], "previous": []}
            methods: dict[str, tuple[Callable[[], object], int]] = {
                "ours: replace_partition (psycopg 3, Copy.write)": (
                    lambda: children["ours"].append(in_child("ours", uri, args.spec, parquet)), n),
                "previous: psycopg2 copy_expert + adapter": (
                    lambda: children["previous"].append(in_child("previous", uri, args.spec, parquet)), n),
                "floor: psql \\copy of the CSV on disk": (lambda: bench_floor(uri, schema, columns, csv_path), n),
            }
            if "to_sql" not in args.skip:
                m = min(n, args.naive_cap)
                methods["DataFrame.to_sql"] = (lambda: bench_to_sql(uri, schema, df.head(m)), m)
            if "execute_values" not in args.skip:
                methods["psycopg2 execute_values"] = (lambda: bench_execute_values(uri, schema, df), n)

            times: dict[str, list[float]] = {name: [] for name in methods}
            for _ in range(args.repeat):  # in turn, so that a slow moment of the machine hits every method
                for name, (fn, rows) in methods.items():
                    truncate(conn, schema)
                    start = time.perf_counter()
                    fn()
                    seconds = time.perf_counter() - start
                    written = count(conn, schema)
                    assert written == rows, f"{name}: wrote {written} rows, expected {rows}"
                    times[name].append(seconds * n / rows)
                    print(f"  {name}: {seconds:.2f} s for {rows:,} rows", flush=True)
            conn.close()
        finally:
            server.cleanup()

    # the children's own clocks (the publish alone, not the interpreter's start-up) for ours and the previous writer
    times["ours: replace_partition (psycopg 3, Copy.write)"] = [c["seconds"] for c in children["ours"]]
    times["previous: psycopg2 copy_expert + adapter"] = [c["seconds"] for c in children["previous"]]
    medians = {name: statistics.median(t) for name, t in times.items()}
    floor = medians["floor: psql \\copy of the CSV on disk"]
    print(f"\nwriting {n:,} rows (median of {args.repeat}); ratio = seconds / psql \\copy")
    width = max(map(len, medians))
    for name, seconds in medians.items():
        note = "" if methods[name][1] == n else f"  (timed on {methods[name][1]:,} rows x {n / methods[name][1]:g})"
        print(f"  {name:<{width}}  {seconds:8.2f} s  {seconds / floor:6.2f}x   runs: "
              + ", ".join(f"{t:.2f}" for t in times[name]) + note)
    for which in ("ours", "previous"):
        last = children[which][-1]
        print(f"{which}: peak RSS of the publishing process {last['rss_peak_mb']:.0f} MB "
              f"({last['rss_before_mb']:.0f} MB after imports and connect, so +{last['rss_peak_mb'] - last['rss_before_mb']:.0f} MB "
              f"for the publish itself)")


if __name__ == "__main__":
    main()
