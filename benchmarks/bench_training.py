"""Peak memory and seconds of the train step's data path, before and after issue 15's changes, beside XGBoost alone.

On demand only (never a timed test):

    .venv/bin/python benchmarks/bench_training.py --rows 200000          # 14 + 3 days of 200k rows

Writes 17 labelled days of the demo's churn data (include/nightshift/demo_data.py, 24 columns) as the snapshot
step writes them (content-hashed Parquet), then runs each variant in a fresh interpreter, one after the other, and
reads its peak RSS (VmHWM) and seconds:

- before: the code of --before (a git revision, default the commit before issue 15's training changes, taken with
  `git archive` into a temporary folder): read_snapshots of every day, split_train_holdout (masks, a sort, copies),
  every candidate fitted on every training row, the baseline, the drift reference (every row converted first) and
  the serving check's statistics;
- after: this tree: training_window.read_window (day by day, no full sort or copy), the linear families on at most
  training.LINEAR_MAX_ROWS rows, the reference sampled before converting;
- after, max_rows: the same with training.max_rows set (--max-rows);
- floor: XGBoost alone (the spec's params) fitted on the same training matrix, loaded from a .npy file;
- evaluate's read of the holdout, before (every day read and split) and after (the holdout days only).

Without max_rows the window is under every cap but LINEAR_MAX_ROWS: XGBoost's and HistGradientBoosting's holdout
scores must be equal to the bit before and after (checked, printed); the logistic candidate (which is also the
baseline) fits on its capped sample, and its holdout metric and the gate's baseline check are printed beside the
full fit's, to show the cap moves them by less than noise. Seconds move with the machine and its load; compare the
variants of one run.

Measured here (2026-11-30, 17 days x 200k rows, 2 shared cores under other load): train before 201 s at 4.13 GB peak
RSS, after 176 s at 2.70 GB, after with max_rows 933,333 63 s at 1.60 GB; the floor (XGBoost alone) 68 s at 1.16 GB;
evaluate's holdout read 12.1 s at 3.29 GB before, 0.4 s at 0.51 GB after. Memory repeats within 1% from run to run,
seconds moved up to 15% with the load. Tree families bit-identical; the logistic baseline on its 1M-row sample:
holdout AUC 0.718625 vs 0.718629 on all rows (the gate's baseline check agrees), fit 8.4 s vs 20.9 s. About 0.25 GB
of every peak is the imports (idle MB).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEFORE = "5b80362"  # main before issue 15's training-memory changes
FIRST_DAY = dt.date(2026, 3, 1)


def _rss() -> dict[str, float]:
    """This process's resident memory now and at its peak, in MB (Linux /proc)."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {"rss_mb": int(fields["VmRSS"].split()[0]) / 1024, "peak_mb": int(fields["VmHWM"].split()[0]) / 1024}


def _spec(max_rows: int | None = None, root: Path = ROOT):
    """The demo's churn spec of the code at `root` (the 'before' code reads its own), with training.max_rows."""
    from include.nightshift.spec import load_spec

    spec = load_spec(root / "include" / "specs" / "churn.yaml")
    if max_rows is None:
        return spec
    return dataclasses.replace(spec, training=dataclasses.replace(spec.training, max_rows=max_rows))


# --- the children: one variant each, in a fresh interpreter ------------------------------------


def child(mode: str, workdir: Path, max_rows: int | None, root: Path) -> dict:
    """Run one variant and return its numbers (printed as JSON on the last line of stdout)."""
    import hashlib

    from include.nightshift import training
    from include.nightshift.artifacts import ArtifactStore
    from include.nightshift.snapshot import SnapshotRef

    spec = _spec(max_rows, root)
    store = ArtifactStore(workdir / "store")
    refs = [SnapshotRef.from_dict(r) for r in json.loads((workdir / "refs.json").read_text())]
    end = max(dt.date.fromisoformat(r.day) for r in refs)
    idle = _rss()
    started = time.perf_counter()
    if mode == "floor":
        return _floor(spec, workdir, started, idle)
    if mode.startswith("holdout"):
        holdout = _holdout(mode, store, refs, spec, end)
        return {"seconds": time.perf_counter() - started, "rows": len(holdout), "idle_mb": idle["rss_mb"], **_rss()}
    train, holdout, sampled_from = _read(mode, store, refs, spec, end)
    read_s = time.perf_counter() - started
    fits = training.fit_candidates(spec, train, holdout)
    fit_s = time.perf_counter() - started - read_s
    chosen = training.choose(fits, spec)
    _log_side(spec, train, fits, chosen)
    y = training.labels(holdout, spec)
    return {"seconds": time.perf_counter() - started, "read_s": read_s, "fit_s": fit_s,
            "log_s": time.perf_counter() - started - read_s - fit_s, "train_rows": len(train),
            "sampled_from": sampled_from, "holdout_rows": len(holdout), "idle_mb": idle["rss_mb"], **_rss(),
            "candidates": {f.family: {"metric": f.metric, "seconds": f.fit_seconds,
                                      "sha256": hashlib.sha256(f.holdout_scores.tobytes()).hexdigest()}
                           for f in fits},
            "positive_rate": float(y.mean())}


def _read(mode: str, store, refs, spec, end):
    """The training and holdout frames, the way the variant's code reads them."""
    from include.nightshift import training

    if mode == "before":
        from include.nightshift.snapshot import read_snapshots

        train, holdout = training.split_train_holdout(read_snapshots(store, refs), spec, end)
        return train, holdout, None
    from include.nightshift.training_window import read_window

    window = read_window(store, refs, spec, end)
    return window.train, window.holdout, window.sampled_from


def _log_side(spec, train, fits, chosen) -> None:
    """What train_challenger does with the training rows after the fits: the baseline (nightly._fitted_baseline), the
    drift reference and the serving check's sample, scores and statistics (registry.log_challenger), MLflow aside."""
    from include.nightshift.drift import reference_sample
    from include.nightshift.nightly import _fitted_baseline
    from include.nightshift.skew import write_serving_check

    _fitted_baseline(spec, train, fits)
    reference_sample(train, spec)
    with tempfile.TemporaryDirectory() as tmp:
        write_serving_check(Path(tmp) / "serving_check", chosen.model, train, spec, {})


def _holdout(mode: str, store, refs, spec, end):
    """evaluate's holdout: before, every day read and split; after, the holdout days only."""
    if mode == "holdout-before":
        from include.nightshift import training
        from include.nightshift.snapshot import read_snapshots

        return training.split_train_holdout(read_snapshots(store, refs), spec, end)[1]
    from include.nightshift.training_window import read_holdout

    return read_holdout(store, refs, spec, end)


def _floor(spec, workdir: Path, started: float, idle: dict) -> dict:
    """XGBoost alone on the training matrix prepare() saved: what any training of these rows costs at least."""
    import numpy as np

    from include.nightshift import training

    x, y = np.load(workdir / "x.npy"), np.load(workdir / "y.npy")
    loaded = time.perf_counter()
    model = training.build_model(spec).named_steps["model"]
    with training.threadpool_limits(limits=training.N_JOBS, user_api="openmp"):
        model.fit(x, y)
    return {"seconds": time.perf_counter() - loaded, "load_s": loaded - started, "train_rows": len(y),
            "idle_mb": idle["rss_mb"], **_rss()}


# --- the parent: data, then the variants ------------------------------------------------------


def prepare(workdir: Path, rows: int) -> None:
    """17 labelled demo days as snapshots (refs.json), and the floor's training matrix (x.npy, y.npy)."""
    import numpy as np
    import pyarrow as pa

    from include.nightshift import demo_data, training
    from include.nightshift.artifacts import ArtifactStore
    from include.nightshift.snapshot import normalise, write_snapshot
    from include.nightshift.training_window import read_window

    if (workdir / "refs.json").exists():
        return
    spec = _spec()
    store = ArtifactStore(workdir / "store")
    days = [FIRST_DAY + dt.timedelta(days=i) for i in range(spec.training.window_days + spec.training.holdout_days)]
    refs = []
    for day in days:
        df = demo_data.generate_day(day, rows).sort_values(["event_ts", "customer_id"]).reset_index(drop=True)
        refs.append(write_snapshot(normalise(pa.Table.from_pandas(df, preserve_index=False)), store, spec, day,
                                   labelled=True))
    window = read_window(store, refs, spec, days[-1])
    prep = training.build_model(spec).named_steps["prep"]
    np.save(workdir / "x.npy", prep.fit_transform(training.features_frame(window.train, spec)))
    np.save(workdir / "y.npy", training.labels(window.train, spec))
    (workdir / "refs.json").write_text(json.dumps([r.to_dict() for r in refs]))


def run_child(code_root: Path, mode: str, workdir: Path, max_rows: int | None) -> dict:
    """One variant in a fresh interpreter whose `include` package comes from `code_root`."""
    args = [sys.executable, __file__, "--child", mode, "--workdir", str(workdir), "--code", str(code_root)]
    if max_rows is not None:
        args += ["--max-rows", str(max_rows)]
    env = {**os.environ, "PYTHONPATH": str(code_root), "OMP_WAIT_POLICY": "PASSIVE"}
    done = subprocess.run(args, cwd=code_root, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def before_tree(revision: str, into: Path) -> Path:
    """`include/` (and the specs) of `revision`, extracted with git archive: the code as it was, run as it was."""
    archive = into / "before.tar"
    subprocess.run(["git", "-C", str(ROOT), "archive", "-o", str(archive), revision, "include"], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into / "before", filter="data")
    return into / "before"


def report(results: dict[str, dict], spec_cap: int) -> None:
    """The table, the equality of the tree families' scores and the linear cap's effect on the gate's baseline."""
    print(f"\n{'variant':<34}{'rows':>11}{'seconds':>9}{'read s':>8}{'fit s':>8}{'peak MB':>9}{'idle MB':>9}")
    for name, r in results.items():
        print(f"{name:<34}{r.get('train_rows', r.get('rows', 0)):>11}{r['seconds']:>9.1f}{r.get('read_s', 0):>8.1f}"
              f"{r.get('fit_s', 0):>8.1f}{r['peak_mb']:>9.0f}{r['idle_mb']:>9.0f}")
    before, after = results["train before"], results["train after"]
    for family in ("xgboost", "hist_gradient_boosting"):
        same = before["candidates"][family]["sha256"] == after["candidates"][family]["sha256"]
        print(f"{family}: holdout scores before and after {'bit-identical' if same else 'DIFFER'}")
    full, capped = (r["candidates"]["logistic_regression"]["metric"] for r in (before, after))
    seconds = [round(r["candidates"]["logistic_regression"]["seconds"], 1) for r in (before, after)]
    best = max(after["candidates"][f]["metric"] for f in ("xgboost", "hist_gradient_boosting"))
    margin = _spec().promotion.baseline_margin
    print(f"logistic (the baseline) on all {before['train_rows']} rows: {full:.6f}; on LINEAR_MAX_ROWS "
          f"{min(spec_cap, after['train_rows'])}: {capped:.6f} (difference {capped - full:+.2e}; fit seconds "
          f"{seconds[0]} -> {seconds[1]}); best tree family {best:.6f} beats the baseline by {best - full:.6f} / "
          f"{best - capped:.6f} (baseline_margin {margin}): the gate's baseline check "
          f"{'agrees' if (best - full > margin) == (best - capped > margin) else 'DIFFERS'}")
    print(f"peak RSS after / before: {after['peak_mb'] / before['peak_mb']:.2f}; after / floor "
          f"{after['peak_mb'] / results['floor: xgboost alone']['peak_mb']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="rows per day (17 days)")
    parser.add_argument("--max-rows", type=int, default=None, help="training.max_rows for the sampled variant")
    parser.add_argument("--before", default=BEFORE, help="git revision of the 'before' code")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the data here (reused when present)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--code", type=Path, default=ROOT, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.workdir, args.max_rows, args.code)))
        return
    sys.path.insert(0, str(ROOT))
    from include.nightshift import training

    max_rows = args.max_rows or args.rows * 14 // 3
    with tempfile.TemporaryDirectory(prefix="nightshift-bench-training-") as tmp:
        workdir = args.workdir or Path(tmp) / "data"
        workdir.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        prepare(workdir, args.rows)
        print(f"data: 17 days x {args.rows} rows in {workdir} ({time.perf_counter() - started:.0f} s)")
        old = before_tree(args.before, Path(tmp))
        plan = [("train before", old, "before", None), ("train after", ROOT, "after", None),
                (f"train after, max_rows {max_rows}", ROOT, "after", max_rows),
                ("floor: xgboost alone", ROOT, "floor", None),
                ("evaluate read before", old, "holdout-before", None), ("evaluate read after", ROOT, "holdout-after", None)]
        results = {}
        for name, code, mode, cap in plan:
            results[name] = run_child(code, mode, workdir, cap)
            print(f"{name}: {results[name]['seconds']:.1f} s, peak {results[name]['peak_mb']:.0f} MB", flush=True)
        (workdir / "results.json").write_text(json.dumps(results, indent=2))
        report(results, training.LINEAR_MAX_ROWS)


if __name__ == "__main__":
    main()
