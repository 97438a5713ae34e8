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

Then the whole step, each method in a fresh process (its peak RSS is its own, VmHWM): take_snapshot
(streamed: ADBC batches, normalised per batch, one row group of ROW_GROUP_ROWS in memory), the one-shot
snapshot it replaced (the whole night read, normalised, combined and written; kept here verbatim), and the
floors: ADBC's read alone (fetch_arrow_table, the whole night in Arrow) and psql's binary \\copy to a file
(psql's own peak). The streamed and the one-shot snapshot must give the same SHA-256.

Measured here (2026-11-30, --take-only, 2 cores, shared with other work: load average 1-2.5), peak RSS
above the imports (about 140 MB):
- 1M rows (median of 3): streamed 5.36 s, 1.42x psql \\copy to a file (3.78 s), +417 MB; the one-shot
  snapshot 5.47 s, +512 MB; ADBC's read alone 4.41 s, +202 MB. At 1M rows one row group (1,048,576 rows)
  is the whole night, so streaming saves only the copies around it.
- 3M rows (one run): streamed 18.37 s, 1.26x psql (14.59 s), +511 MB; the one-shot snapshot 18.95 s,
  +1325 MB; ADBC's read alone 16.38 s, +596 MB. The streamed peak stays at about one row group whatever
  the night's size; the one-shot one grows with it (about 440 MB per 1M rows).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
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


def one_shot_snapshot(uri: str, spec, day: dt.date, store) -> str:
    """take_snapshot as it was before streaming (the whole night in Arrow, one write), for comparison only."""
    import hashlib

    import psycopg
    import pyarrow.parquet as pq

    from include.nightshift.snapshot import _PARQUET_OPTIONS, PostgresReader, normalise

    with psycopg.connect(uri) as conn:
        table = normalise(PostgresReader(conn).read_window(spec, day))
    path = Path(store) / "one_shot.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.combine_chunks(), path, **_PARQUET_OPTIONS)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def streamed_snapshot(uri: str, spec, day: dt.date, store) -> str:
    import psycopg

    from include.nightshift.artifacts import ArtifactStore
    from include.nightshift.snapshot import take_snapshot

    with psycopg.connect(uri) as conn:
        return take_snapshot(conn, ArtifactStore(Path(store)), spec, day).sha256


def adbc_read_alone(uri: str, query: str) -> None:
    import adbc_driver_postgresql.dbapi as adbc

    with adbc.connect(uri) as conn, conn.cursor() as cur:
        cur.execute(query)
        cur.fetch_arrow_table()


def psql_copy_to_file(uri: str, query: str, store) -> float:
    """psql's binary \\copy of the night to a file; psql's own peak RSS in MB (GNU time's %M)."""
    Path(store).mkdir(parents=True, exist_ok=True)
    command = f"\\copy ({query}) TO '{Path(store) / 'day.bin'}' WITH (FORMAT binary)"
    done = subprocess.run(["/usr/bin/time", "-f", "%M", shutil.which("psql"), uri, "-X", "-q", "-v",
                           "ON_ERROR_STOP=1", "-c", command], check=True, capture_output=True, text=True)
    return int(done.stderr.strip().splitlines()[-1]) / 1024


def high_water_mb() -> float:
    """This process's peak RSS (VmHWM): unlike ru_maxrss, it starts again at exec, not at the parent's."""
    status = Path("/proc/self/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) / 1024


TAKE_METHODS = {
    "take_snapshot, streamed (ours)": "streamed",
    "take_snapshot, one-shot (before)": "one_shot",
    "floor: ADBC read alone (fetch_arrow_table)": "adbc",
    "floor: psql \\copy TO file (binary)": "psql",
}


def child(method: str, uri: str, query: str, spec_path: str, store: str) -> None:
    """One method in this fresh process: prints its seconds, its peak RSS and its SHA-256 (a snapshot) as JSON."""
    import adbc_driver_postgresql.dbapi  # noqa: F401  (imports before the clock and the baseline)
    import psycopg  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    from include.nightshift.snapshot import take_snapshot  # noqa: F401
    from include.nightshift.spec import load_spec

    spec = load_spec(spec_path)
    base = high_water_mb()
    run = {"streamed": lambda: streamed_snapshot(uri, spec, DAY, store),
           "one_shot": lambda: one_shot_snapshot(uri, spec, DAY, store),
           "adbc": lambda: adbc_read_alone(uri, query), "psql": lambda: psql_copy_to_file(uri, query, store)}[method]
    start = time.perf_counter()
    out = run()
    seconds = time.perf_counter() - start
    peak = out if method == "psql" else high_water_mb()
    print(json.dumps({"seconds": seconds, "peak_mb": peak, "base_mb": base, "sha256": out}))


def take_in_processes(uri: str, query: str, spec_path: str, tmp: Path, repeat: int) -> dict[str, list[dict]]:
    """Each take method `repeat` times, in turn, each run in a fresh process."""
    runs: dict[str, list[dict]] = {name: [] for name in TAKE_METHODS}
    for i in range(repeat):
        for name, method in TAKE_METHODS.items():
            store = tmp / f"take-{method}-{i}"
            out = subprocess.run([sys.executable, __file__, "--child", method, "--uri", uri, "--query", query,
                                  "--spec", spec_path, "--store", str(store)],
                                 check=True, capture_output=True, text=True).stdout
            runs[name].append(json.loads(out.strip().splitlines()[-1]))
            shutil.rmtree(store, ignore_errors=True)
    return runs


def print_take(runs: dict[str, list[dict]], rows: int) -> None:
    hashes = {r["sha256"] for name in list(TAKE_METHODS)[:2] for r in runs[name]}
    assert len(hashes) == 1, f"the streamed and the one-shot snapshot differ: {hashes}"
    med = {name: (statistics.median(r["seconds"] for r in rs), statistics.median(r["peak_mb"] for r in rs),
                  statistics.median(r["base_mb"] for r in rs)) for name, rs in runs.items()}
    floor_s = med["floor: psql \\copy TO file (binary)"][0]
    floor_mb = med["floor: ADBC read alone (fetch_arrow_table)"][1]
    print(f"\ntaking the day, {rows:,} rows, each in a fresh process (median of {len(next(iter(runs.values())))}); "
          "time ratio to psql \\copy, memory ratio to ADBC's read alone")
    width = max(map(len, med))
    for name, (seconds, peak, base) in med.items():
        above = "psql's own" if "psql" in name else f"{peak - base:4.0f} MB above imports"
        print(f"  {name:<{width}}  {seconds:7.2f} s  {seconds / floor_s:5.2f}x   peak RSS {peak:6.0f} MB "
              f"({above:>24})  {peak / floor_mb:5.2f}x")
    print(f"  same SHA-256, streamed and one-shot: {hashes.pop()[:16]}...")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="median of this many runs per method")
    parser.add_argument("--spec", default=str(ROOT / "include" / "specs" / "churn.yaml"))
    parser.add_argument("--take-only", action="store_true", help="only the whole step, in fresh processes")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--uri", help=argparse.SUPPRESS)
    parser.add_argument("--query", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.uri, args.query, args.spec, args.store)
    if not shutil.which("psql"):
        sys.exit("psql is not on PATH: it is the floor this benchmark compares against")

    import pgserver
    import psycopg

    from include.nightshift import demo_data
    from include.nightshift.artifacts import ArtifactStore
    from include.nightshift.snapshot import source_columns, take_snapshot, window_parameters, window_query
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
                with psycopg.ClientCursor(conn) as binder:  # the night's bounds bound, as PostgresReader does
                    query = binder.mogrify(window_query(spec, DAY, False, source_columns(conn, spec)),
                                           window_parameters(spec, DAY))
            print(f"{args.rows:,} source rows of {DAY} ({len(spec.columns)} columns) loaded in "
                  f"{time.perf_counter() - t0:.1f} s", flush=True)

            if args.take_only:
                return print_take(take_in_processes(uri, query, args.spec, tmp_path, args.repeat), args.rows)
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
            take = take_in_processes(uri, query, args.spec, tmp_path, args.repeat)
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
    print_take(take, args.rows)


if __name__ == "__main__":
    main()
