"""How fast does the snapshot step read a day of the source, against the previous reader and the floor?

On demand only (never a timed test):

    .venv/bin/python benchmarks/bench_snapshot.py --rows 1000000

Starts a throwaway PostgreSQL the way the tests do (pgserver), loads one day of the demo's
churn source (include/nightshift/demo_data.py, 24 columns) with N rows, and times reading
that day, side by side in one run:

- ours: snapshot.read_day (ADBC ``fetch_arrow_table``, a binary COPY into Arrow, then
  snapshot.normalise);
- the previous reader: psycopg2 ``copy_expert`` of a CSV COPY into a temporary file, parsed
  by pyarrow's CSV reader with a hand-written OID -> Arrow type map (kept here verbatim, to
  compare against);
- the floor: psql ``\\copy (the same query) TO '/dev/null'``, in CSV and in binary format;
  the faster of the two is the floor ours is held to.

Every method reads the same query. Ours and the previous reader must give equal tables. Each
method runs --repeat times, in turn, and the median counts. Seconds move with the machine;
the ratios are what to compare. Also printed: take_snapshot as a whole (read, Parquet, hash).

Measured here (2026-11-29, 1M rows, --repeat 5, 2 cores, quiet: load average about 1): ours
4.71 s, 1.03x the fastest psql \\copy (csv 4.59 s, binary 4.70 s); the previous reader 5.09 s,
1.11x; take_snapshot as a whole 4.97 s. Under load (load average about 3.4) ours was 1.34x the
binary floor. Most of every method's time is the server sorting the day (ORDER BY timestamp,
key): without the ORDER BY psql binary took 1.3-1.7 s and ADBC 2.2 s, so ADBC's own cost
(binary rows into Arrow) is about 0.6 s per 1M rows.
"""

from __future__ import annotations

import argparse
import datetime as dt
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


def previous_read_day(uri: str, spec, day: dt.date):
    """The reader snapshot.py had before ADBC (psycopg2, CSV COPY, OID type map), for comparison only."""
    import psycopg2
    import pyarrow as pa
    import pyarrow.csv as pacsv
    from psycopg2 import sql

    from include.nightshift.snapshot import day_bounds

    types = {16: pa.bool_(), 20: pa.int64(), 21: pa.int64(), 23: pa.int64(), 700: pa.float64(), 701: pa.float64(),
             1700: pa.float64(), 1082: pa.date32(), 1114: pa.timestamp("us"), 1184: pa.timestamp("us", tz="UTC")}
    start, end = day_bounds(day)
    schema, name = spec.source.schema_and_name
    query = sql.SQL("SELECT * FROM {table} WHERE {ts} >= %(start)s AND {ts} < %(end)s ORDER BY {ts}, {key}").format(
        table=sql.Identifier(schema, name), ts=sql.Identifier(spec.timestamp), key=sql.Identifier(spec.entity_key.name))
    conn = psycopg2.connect(uri)
    try:
        with conn.cursor() as cur:
            cur.execute("SET TIME ZONE 'UTC'")
            cur.execute(sql.SQL("SELECT * FROM ({q}) AS w LIMIT 0").format(q=query), {"start": start, "end": end})
            columns = [(d.name, types.get(d.type_code, pa.string())) for d in cur.description]
            copy = sql.SQL("COPY ({q}) TO STDOUT WITH (FORMAT csv, HEADER true)").format(q=query)
            with tempfile.TemporaryFile() as buf:
                cur.copy_expert(cur.mogrify(copy, {"start": start, "end": end}).decode(), buf)
                buf.seek(0)
                return pacsv.read_csv(buf, convert_options=pacsv.ConvertOptions(
                    column_types=dict(columns), strings_can_be_null=True, quoted_strings_can_be_null=False))
    finally:
        conn.close()


def ours(uri: str, spec, day: dt.date):
    import psycopg

    from include.nightshift.snapshot import read_day

    with psycopg.connect(uri) as conn:
        return read_day(conn, spec, day)


def psql_copy(uri: str, query: str, fmt: str) -> None:
    command = f"\\copy ({query}) TO '/dev/null' WITH (FORMAT {fmt})"
    subprocess.run([shutil.which("psql"), uri, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", command],
                   check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="median of this many runs per method")
    parser.add_argument("--spec", default=str(ROOT / "include" / "specs" / "churn.yaml"))
    args = parser.parse_args()
    if not shutil.which("psql"):
        sys.exit("psql is not on PATH: it is the floor this benchmark compares against")

    import pgserver
    import psycopg

    from include.nightshift import demo_data
    from include.nightshift.artifacts import ArtifactStore
    from include.nightshift.snapshot import source_columns, take_snapshot, window_query
    from include.nightshift.spec import load_spec

    spec = load_spec(args.spec)
    with tempfile.TemporaryDirectory(prefix="bench_snapshot_") as tmp:
        tmp_path = Path(tmp)
        server = pgserver.get_server(tmp_path / "pg", cleanup_mode="stop")
        try:
            uri = server.get_uri()
            with psycopg.connect(uri) as conn:
                t0 = time.perf_counter()
                demo_data.create_source_table(conn, spec.source.table)
                demo_data.load_day(conn, DAY, args.rows, table=spec.source.table, with_labels=True)
                conn.autocommit = True  # VACUUM runs outside a transaction
                conn.execute("VACUUM ANALYZE")  # the visibility map set: every method reads the same clean table
                query = window_query(spec, DAY, False, source_columns(conn, spec)).as_string(conn)
            print(f"{args.rows:,} source rows of {DAY} ({len(spec.columns)} columns) loaded in "
                  f"{time.perf_counter() - t0:.1f} s", flush=True)

            methods: dict[str, Callable[[], object]] = {
                "ours: snapshot.read_day (ADBC -> Arrow)": lambda: ours(uri, spec, DAY),
                "previous: psycopg2 CSV COPY + pyarrow CSV": lambda: previous_read_day(uri, spec, DAY),
                "floor: psql \\copy TO /dev/null (csv)": lambda: psql_copy(uri, query, "csv"),
                "floor: psql \\copy TO /dev/null (binary)": lambda: psql_copy(uri, query, "binary"),
            }
            for fn in methods.values():  # warm the server's cache and the imports once
                fn()
            new, old = methods["ours: snapshot.read_day (ADBC -> Arrow)"](), \
                methods["previous: psycopg2 CSV COPY + pyarrow CSV"]()
            assert new.num_rows == old.num_rows == args.rows and new.equals(old), "ours and the previous reader differ"

            times: dict[str, list[float]] = {name: [] for name in methods}
            for _ in range(args.repeat):  # in turn, so that a slow moment of the machine hits every method
                for name, fn in methods.items():
                    start = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - start)

            with psycopg.connect(uri) as conn:
                start = time.perf_counter()
                ref = take_snapshot(conn, ArtifactStore(tmp_path / "store"), spec, DAY)
                whole = time.perf_counter() - start
        finally:
            server.cleanup()

    medians = {name: statistics.median(t) for name, t in times.items()}
    floor = min(s for name, s in medians.items() if name.startswith("floor"))
    print(f"\nreading {args.rows:,} rows (median of {args.repeat}); ratio = seconds / fastest psql \\copy")
    width = max(map(len, medians))
    for name, seconds in medians.items():
        print(f"  {name:<{width}}  {seconds:7.2f} s  {seconds / floor:5.2f}x   runs: "
              + ", ".join(f"{t:.2f}" for t in times[name]))
    print(f"\ntake_snapshot as a whole (read, normalise, Parquet zstd, SHA-256): {whole:.2f} s, "
          f"{ref.rows:,} rows, sha256 {ref.sha256[:16]}...")


if __name__ == "__main__":
    main()
