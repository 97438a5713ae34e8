"""How fast does publish write a night of predictions, against the usual idioms and the floor?

On demand only (never a timed test):

    .venv/bin/python benchmarks/bench_publish.py --rows 1000000

Starts a throwaway PostgreSQL the way the tests do (pgserver), makes N prediction rows for
the churn spec, and times writing them into the warehouse's `predictions` table with:

- DataFrame.to_sql (the naive way; above --naive-cap rows it is timed on the cap and scaled);
- psycopg2.extras.execute_values (row inserts, default page size);
- ours: warehouse.replace_partition from the Parquet file (in a fresh process, to measure its peak RSS);
- the floor: psql `\\copy` of a CSV already on disk (or, without psql, copy_expert of that file),
  the very bytes ours sends, so the gap to the floor is the cost of reading Parquet and making CSV.

Each method starts from an empty table with the same primary key. Prints seconds and ratios
versus ours. Seconds move with the machine; the ratios are what to compare.
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
        for data, _ in wh._csv_chunks(pq.ParquetFile(parquet), columns, wh._arrow_schema(spec), DAY):
            f.write(data)


def timed(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ------------------------------------------------------------------ the methods


def bench_to_sql(uri: str, schema: str, df) -> None:
    from sqlalchemy import create_engine

    engine = create_engine(uri.replace("postgresql://", "postgresql+psycopg2://", 1))
    try:
        df.assign(score_date=DAY).to_sql("predictions", engine, schema=schema, if_exists="append", index=False)
    finally:
        engine.dispose()


def bench_execute_values(conn, schema: str, df) -> None:
    from psycopg2 import sql
    from psycopg2.extras import execute_values

    frame = df.assign(score_date=DAY)
    query = sql.SQL("INSERT INTO {}.predictions ({}) VALUES %s").format(
        sql.Identifier(schema), sql.SQL(", ").join(sql.Identifier(c) for c in frame.columns))
    with conn, conn.cursor() as cur:
        execute_values(cur, query.as_string(conn), frame.itertuples(index=False, name=None))


def bench_ours(uri: str, spec_path: str, parquet: Path) -> dict:
    """replace_partition in a fresh process: its own peak RSS is the memory a publish task needs."""
    out = subprocess.run(
        [sys.executable, __file__, "--child-ours", str(parquet), "--uri", uri, "--spec", spec_path],
        check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def child_ours(uri: str, spec_path: str, parquet: str) -> None:
    import psycopg2

    from include.nightshift.spec import load_spec
    from include.nightshift.warehouse import replace_partition

    spec = load_spec(spec_path)
    conn = psycopg2.connect(uri)
    rss_before = reset_peak_rss()
    start = time.perf_counter()
    rows = replace_partition(conn, spec, DAY, parquet)
    seconds = time.perf_counter() - start
    conn.close()
    print(json.dumps({"seconds": seconds, "rows": rows, "rss_before_mb": rss_before, "rss_peak_mb": peak_rss()}))


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


def bench_floor(uri: str, conn, schema: str, columns: list[str], csv_path: Path) -> str:
    from psycopg2 import sql

    cols = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    target = sql.SQL("{}.predictions ({})").format(sql.Identifier(schema), cols).as_string(conn)
    psql = shutil.which("psql")
    if psql:
        command = f"\\copy {target} FROM '{csv_path}' WITH (FORMAT csv)"
        subprocess.run([psql, uri, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", command], check=True,
                       capture_output=True, env={**os.environ, "PGTZ": "UTC"})  # the CSV's timestamps are UTC
        return "psql \\copy of a CSV on disk"
    with conn, conn.cursor() as cur, open(csv_path, "rb") as f:
        cur.execute("SET LOCAL TimeZone = 'UTC'")
        cur.copy_expert(f"COPY {target} FROM STDIN WITH (FORMAT csv)", f, size=1 << 20)
    return "copy_expert of a CSV on disk (no psql on PATH)"


# ------------------------------------------------------------------ the run


def count(conn, schema: str) -> int:
    from psycopg2 import sql

    with conn, conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT count(*) FROM {}.predictions").format(sql.Identifier(schema)))
        return cur.fetchone()[0]


def truncate(conn, schema: str) -> None:
    from psycopg2 import sql

    with conn, conn.cursor() as cur:
        cur.execute(sql.SQL("TRUNCATE {}.predictions").format(sql.Identifier(schema)))
        cur.execute("CHECKPOINT")  # each method starts from the same clean state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--naive-cap", type=int, default=200_000, help="to_sql runs on at most this many rows, then scales")
    parser.add_argument("--repeat", type=int, default=1, help="median of this many runs per method")
    parser.add_argument("--skip", nargs="*", default=[], choices=["to_sql", "execute_values"])
    parser.add_argument("--child-ours", help=argparse.SUPPRESS)
    parser.add_argument("--uri", help=argparse.SUPPRESS)
    parser.add_argument("--spec", default=str(ROOT / "include" / "specs" / "churn.yaml"))
    args = parser.parse_args()
    if args.child_ours:
        child_ours(args.uri, args.spec, args.child_ours)
        return

    import pgserver
    import psycopg2

    from include.nightshift.spec import load_spec
    from include.nightshift.warehouse import PREDICTION_INPUT_COLUMNS, ensure_warehouse

    spec = load_spec(args.spec)
    schema, key, n = spec.warehouse.schema, spec.entity_key.name, args.rows
    with tempfile.TemporaryDirectory(prefix="bench_publish_") as tmp:
        tmp_path = Path(tmp)
        server = pgserver.get_server(tmp_path / "pg", cleanup_mode="stop")
        try:
            uri = server.get_uri()
            conn = psycopg2.connect(uri)
            ensure_warehouse(conn, spec)

            t0 = time.perf_counter()
            df = make_predictions(n, key)
            parquet, csv_path = tmp_path / "predictions.parquet", tmp_path / "predictions.csv"
            df.to_parquet(parquet, index=False)
            write_csv(spec, parquet, csv_path)
            print(f"{n:,} prediction rows; Parquet {parquet.stat().st_size / 1e6:.0f} MB, "
                  f"CSV {csv_path.stat().st_size / 1e6:.0f} MB (made in {time.perf_counter() - t0:.1f} s)")

            results: list[tuple[str, float, str]] = []

            def run(name: str, fn: Callable[[], object], rows: int, note: str = "") -> None:
                def once() -> None:
                    truncate(conn, schema)
                    fn()
                seconds = timed(once, args.repeat)
                assert count(conn, schema) == rows, f"{name}: wrote {count(conn, schema)} rows, expected {rows}"
                scaled = seconds * n / rows
                results.append((name, scaled, note or ("" if rows == n else f"timed on {rows:,} rows x {n / rows:g}")))
                print(f"  {name}: {seconds:.2f} s for {rows:,} rows", flush=True)

            if "to_sql" not in args.skip:
                m = min(n, args.naive_cap)
                run("DataFrame.to_sql", lambda: bench_to_sql(uri, schema, df.head(m)), m)
            if "execute_values" not in args.skip:
                run("psycopg2 execute_values", lambda: bench_execute_values(conn, schema, df), n)
            ours_runs = []
            for _ in range(args.repeat):
                truncate(conn, schema)
                ours_runs.append(bench_ours(uri, args.spec, parquet))
            assert count(conn, schema) == n and all(r["rows"] == n for r in ours_runs)
            ours = ours_runs[-1]
            ours_seconds = statistics.median(r["seconds"] for r in ours_runs)
            results.append(("ours: replace_partition (Parquet)", ours_seconds, "in a fresh process"))
            print(f"  ours: {ours_seconds:.2f} s", flush=True)
            floor_note: list[str] = []
            run("floor", lambda: floor_note.append(
                bench_floor(uri, conn, schema, ["score_date", key, *PREDICTION_INPUT_COLUMNS], csv_path)), n)
            results[-1] = ("floor: " + floor_note[-1], results[-1][1], results[-1][2])
            conn.close()
        finally:
            server.cleanup()

    ours_s = next(s for name, s, _ in results if name.startswith("ours"))
    print(f"\nwriting {n:,} rows (median of {args.repeat}); ratio = seconds / ours")
    width = max(len(name) for name, _, _ in results)
    for name, seconds, note in results:
        print(f"  {name:<{width}}  {seconds:8.2f} s  {seconds / ours_s:6.2f}x  {note}")
    print(f"\nours, peak RSS of the publishing process: {ours['rss_peak_mb']:.0f} MB "
          f"({ours['rss_before_mb']:.0f} MB after imports and connect, so +{ours['rss_peak_mb'] - ours['rss_before_mb']:.0f} MB "
          f"for the publish itself)")


if __name__ == "__main__":
    main()
