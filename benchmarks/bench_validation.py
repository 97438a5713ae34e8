"""How long does the validate step take on a large night, and how much memory, against the same rules in pandas?

On demand only (never a timed test):

    .venv/bin/python benchmarks/bench_validation.py --rows 1000000

One night of the demo's churn data (include/nightshift/demo_data.py, 24 columns) is written as a snapshot
file (Parquet, as snapshot.py writes it), clean and failing (a few keys duplicated, nulls and out-of-range
values injected). Each method starts from the file, as the validate task does:

- ours: snapshot.snapshot_columns + validation.validate_snapshot with a report folder, as the DAG runs it
  (GX suite from the spec, one column at a time, Data Docs, validation.json and validation.html); the
  report is written either way;
- the floor: the whole file read into pandas (pq.read_table().to_pandas()), then the same rules written by
  hand in pandas (pandas_rules below: counts of nulls, duplicates, values out of range or out of set,
  types, row count), no report.

Each runs --repeat times in turn, the median counts; the ratio ours / floor is what issue 15 holds to 2x.
Then each method runs once more in a fresh process for its peak RSS above the process after its imports
(Arrow's memory included, which tracemalloc would miss). --profile prints where ours spends (cProfile).

Measured here (2026-12-01, 1M rows, --repeat 3, 2 cores): see the README's Benchmarks section. Before
validation read one column at a time (the whole night in one frame, 2026-11-30): 5.33 s clean, 3.3x the
pandas rules on a frame in memory, 1.8 GB peak in the task.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import math
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DAY = dt.date(2026, 3, 1)


def night(rows: int, spec):
    """The night's rows as a snapshot holds them: the demo's rows, through Arrow, as pandas."""
    import pyarrow as pa

    from include.nightshift import demo_data

    frame = demo_data.generate_day(DAY, rows)[spec.columns]
    table = pa.Table.from_pandas(frame, preserve_index=False)
    return table.to_pandas()


def write_snapshot(df, folder: Path, name: str):
    """The rows as a snapshot file in a local artifact store, and its ref."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from include.nightshift.artifacts import ArtifactStore
    from include.nightshift.snapshot import SnapshotRef

    store = ArtifactStore(folder)
    path = folder / f"{name}.parquet"
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path, compression="zstd")
    return store, SnapshotRef(url=store.url(path.name), sha256="", rows=len(df), day=DAY.isoformat(), labelled=False)


def broken(df, spec):
    """The same night with a few keys duplicated, an age out of range and nulls in the key."""
    bad = df.copy()
    key = spec.entity_key.name
    bad.loc[bad.index[:50], key] = bad[key].iloc[50]
    bad.loc[bad.index[100:120], "age"] = 1000.0
    bad[key] = bad[key].astype("float64")
    bad.loc[bad.index[200:203], key] = math.nan
    return bad


def pandas_rules(df, spec, day: dt.date, labelled: bool = False) -> dict[str, int]:
    """The suite's rules in plain pandas: the number of values breaking each (0: passes)."""
    import pandas as pd

    out: dict[str, int] = {"columns": len(set(df.columns) ^ set(spec.columns)), "rows": int(len(df) < spec.validation.min_rows)}
    key, ts = df[spec.entity_key.name], df[spec.timestamp]
    out["key type"] = int(not pd.api.types.is_integer_dtype(key))
    out["key null"] = int(key.isna().sum())
    out["key unique"] = int(key.duplicated(keep=False).sum())
    start, end = spec.source.day_bounds(day)
    out["ts type"] = int(not isinstance(ts.dtype, pd.DatetimeTZDtype))
    out["ts null"] = int(ts.isna().sum())
    out["ts window"] = int(((ts < pd.Timestamp(start)) | (ts >= pd.Timestamp(end))).sum())
    for f in spec.features:
        column = df[f.name]
        nulls = int(column.isna().sum())
        out[f"{f.name} null"] = nulls if nulls > f.max_null_share * len(df) else 0
        if f.type == "numeric":
            out[f"{f.name} type"] = int(not pd.api.types.is_numeric_dtype(column))
            low = -math.inf if f.min is None else f.min
            high = math.inf if f.max is None else f.max
            out[f"{f.name} range"] = int((column.notna() & ~column.between(low, high)).sum())
            out[f"{f.name} inf"] = int(column.isin([math.inf, -math.inf]).sum())
        else:
            out[f"{f.name} type"] = int(not column.dropna().map(type).eq(str).all())
            unseen = int((column.notna() & ~column.isin(f.categories)).sum())
            out[f"{f.name} set"] = unseen if unseen > f.max_unseen_share * column.notna().sum() else 0
    label = df[spec.label.name]
    out["label type"] = int(not pd.api.types.is_numeric_dtype(label))
    out["label set"] = int((label.notna() & ~label.isin([0, 1])).sum())
    if labelled:
        out["label null"] = int(label.isna().sum())
    return out


def ours(snapshot, spec, report: Path):
    """The validate step on one snapshot file."""
    from include.nightshift.snapshot import snapshot_columns
    from include.nightshift.validation import validate_snapshot

    store, ref = snapshot
    with snapshot_columns(store, ref) as columns:
        return validate_snapshot(columns, spec, day=DAY, report_dir=report)


def floor(snapshot, spec):
    """The whole file into pandas, then the rules by hand."""
    import pyarrow.parquet as pq

    store, ref = snapshot
    with store.open(ref.url) as handle:
        df = pq.read_table(handle).to_pandas()
    return pandas_rules(df, spec, DAY)


def batched(spec, batch_rows: int | None):
    """The spec with validation.batch_rows set (0: every column whole); None keeps the spec's own."""
    import dataclasses

    if batch_rows is None:
        return spec
    validation = dataclasses.replace(spec.validation, batch_rows=batch_rows or None)
    return dataclasses.replace(spec, validation=validation)


def _peak_child(queue, method: str, snapshot, warm, spec_path: str, report: str, batch_rows: int | None) -> None:
    """One method's peak RSS above this process after its imports and a warm-up on `warm` (a fresh process, Linux)."""
    import gc

    from include.nightshift.spec import load_spec

    spec = batched(load_spec(spec_path), batch_rows)
    ours(warm, spec, Path(report) / "warm-child")  # imports, GX's lazy imports and first-run caches
    floor(warm, spec)
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    base = _status_kb("VmRSS")
    if method == "ours":
        ours(snapshot, spec, Path(report) / "peak")
    else:
        floor(snapshot, spec)
    queue.put((_status_kb("VmHWM") - base) / 1024)


def _status_kb(field: str) -> int:
    """A memory field of /proc/self/status, in kB. Not ru_maxrss: a spawned child inherits its parent's."""
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(field + ":"))
    return int(line.split()[1])


def peak_mb(method: str, snapshot, warm, spec_path: str, report: Path, batch_rows: int | None) -> float:
    """Run in a fresh process: ru_maxrss is a high-water mark, so each method needs its own."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_peak_child, args=(queue, method, snapshot, warm, spec_path, str(report), batch_rows))
    child.start()
    out = queue.get()
    child.join()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="median of this many runs per method")
    parser.add_argument("--spec", default=str(ROOT / "include" / "specs" / "churn.yaml"))
    parser.add_argument("--profile", action="store_true", help="print where ours spends, on the failing night")
    parser.add_argument("--batch-rows", type=int, default=None,
                        help="validation.batch_rows for ours (0: every column whole); default: the spec's")
    args = parser.parse_args()

    import great_expectations  # noqa: F401  (imported before any clock starts)

    from include.nightshift.spec import load_spec

    spec = batched(load_spec(args.spec), args.batch_rows)
    t0 = time.perf_counter()
    clean = night(args.rows, spec)
    failing = broken(clean, spec)
    assert sum(pandas_rules(clean, spec, DAY).values()) == 0, "the pandas rules fail the clean night"
    with tempfile.TemporaryDirectory(prefix="bench_validation_") as tmp:
        report = Path(tmp)
        files = {"clean": write_snapshot(clean, report, "clean"), "failing": write_snapshot(failing, report, "failing"),
                 "warm": write_snapshot(clean.head(100), report, "warm")}
        del clean, failing
        print(f"{args.rows:,} rows of {DAY} ({len(spec.columns)} columns) made and written in "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
        if args.profile:
            profile = cProfile.Profile()
            profile.runcall(ours, files["failing"], spec, report / "profile")
            pstats.Stats(profile).sort_stats("cumulative").print_stats(45)
            return
        first = ours(files["clean"], spec, report / "warm")  # GX's first run pays its lazy imports
        assert first.success, first.message()
        methods = {
            "ours, clean night (GX + reports)": lambda i: ours(files["clean"], spec, report / f"clean{i}"),
            "ours, failing night (GX + reports)": lambda i: ours(files["failing"], spec, report / f"failing{i}"),
            "floor: read + the same rules in pandas, clean": lambda i: floor(files["clean"], spec),
            "floor: read + the same rules in pandas, failing": lambda i: floor(files["failing"], spec),
        }
        times: dict[str, list[float]] = {name: [] for name in methods}
        for i in range(args.repeat):
            for name, fn in methods.items():
                start = time.perf_counter()
                result = fn(i)
                times[name].append(time.perf_counter() - start)
                if name.startswith("ours, failing"):
                    assert not result.success and Path(result.report_path).exists(), "the failing night left no report"
        peaks = {method: peak_mb(method, files["failing"], files["warm"], args.spec, report, args.batch_rows)
                 for method in ("ours", "floor")}
    medians = {name: statistics.median(t) for name, t in times.items()}
    print(f"\nvalidating {args.rows:,} rows from their snapshot file (median of {args.repeat}; validation.batch_rows "
          f"{spec.validation.batch_rows}); ratio = seconds / the floor")
    width = max(map(len, medians))
    for name, seconds in medians.items():
        base = medians["floor: read + the same rules in pandas, " + ("failing" if "failing" in name else "clean")]
        print(f"  {name:<{width}}  {seconds:7.2f} s  {seconds / base:5.2f}x   runs: "
              + ", ".join(f"{t:.2f}" for t in times[name]))
    print(f"\npeak RSS above the process after imports, failing night: ours {peaks['ours']:.0f} MB, "
          f"floor {peaks['floor']:.0f} MB ({peaks['ours'] / peaks['floor']:.2f}x)")


if __name__ == "__main__":
    main()
