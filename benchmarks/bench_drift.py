"""Drift at scale: Evidently on all rows vs on the seeded sample, and the numpy/scipy floor.

Run on demand, never in tests:

    .venv/bin/python benchmarks/bench_drift.py --rows 200000

Each variant runs in its own fresh process so that its peak memory (ru_maxrss, a
high-water mark) is its own. Reported per variant: wall seconds and CPU seconds (median
of --repeat, after a 2,000-row warm-up that pays imports and first-call costs; CPU time is
the steadier figure on a shared machine), peak RSS, and the peak above the process's
baseline once data, imports and warm-up are in memory. Then the ratios to the full run, and whether the sample's drifted columns equal the full data's
(with the largest per-column score gap).

Variants
- full:   measure_drift with sample_rows >= rows (Evidently sees every row)
- sample: measure_drift with the spec's sample_rows and seed (what the pipeline runs)
- floor:  the same statistics Evidently picks (normed Wasserstein, Jensen-Shannon), in
          numpy/scipy on the same seeded sample; no Evidently, no report
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

REFERENCE_DAY, CURRENT_DAY = dt.date(2026, 1, 5), dt.date(2026, 1, 20)
VARIANTS = ("full", "sample", "floor")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _data(rows: int, drift: bool):
    from include.nightshift.demo_data import DriftPlan, generate_day

    plan = DriftPlan(covariate_from=CURRENT_DAY) if drift else DriftPlan()
    return generate_day(CURRENT_DAY, rows, drift=plan), generate_day(REFERENCE_DAY, rows)


# --- the floor: Evidently's default statistics, in numpy/scipy --------------------------


def _js(ref, cur) -> float:
    """Jensen-Shannon distance over value shares, as Evidently bins categories (and numbers with few values)."""
    import numpy as np
    import pandas as pd
    from scipy.spatial import distance

    keys = pd.unique(pd.concat([cur, ref], ignore_index=True))
    ref_p = ref.value_counts().reindex(keys, fill_value=0).to_numpy() / len(ref)
    cur_p = cur.value_counts().reindex(keys, fill_value=0).to_numpy() / len(cur)
    return float(distance.jensenshannon(np.asarray(ref_p, float), np.asarray(cur_p, float)))


def _wasserstein_normed(ref, cur) -> float:
    import numpy as np
    from scipy import stats

    return float(stats.wasserstein_distance(ref, cur) / max(float(np.std(ref)), 0.001))


def floor_scores(current, reference, spec) -> dict[str, dict]:
    """Evidently's defaults above 1,000 rows: numbers with more than 5 values -> normed
    Wasserstein, otherwise (and categories) -> Jensen-Shannon; both drift at >= 0.1."""
    import numpy as np
    import pandas as pd

    from include.nightshift.drift import reference_sample

    cur, ref = reference_sample(current, spec), reference_sample(reference, spec)
    out = {}
    for name in spec.feature_names:
        c = cur[name].replace([np.inf, -np.inf], np.nan).dropna()
        r = ref[name].replace([np.inf, -np.inf], np.nan).dropna()
        few = pd.concat([r, c]).nunique() <= 5
        if name in spec.numeric_features and not few:
            method, score = "Wasserstein distance (normed)", _wasserstein_normed(r.to_numpy(), c.to_numpy())
        else:
            method, score = "Jensen-Shannon distance", _js(r, c)
        out[name] = {"method": method, "score": score, "threshold": 0.1, "drifted": score >= 0.1}
    return out


# --- one variant, in this process ----------------------------------------------------------


def run_variant(variant: str, rows: int, repeat: int, drift: bool, html: bool) -> dict:
    from include.nightshift.spec import load_spec

    spec = load_spec(ROOT / "include" / "specs" / "churn.yaml")
    current, reference = _data(rows, drift)
    if variant == "full":
        spec = dataclasses.replace(spec, drift=dataclasses.replace(spec.drift, sample_rows=max(rows, 1)))

    def once(cur, ref, html_path):
        if variant == "floor":
            return floor_scores(cur, ref, spec), None
        from include.nightshift.drift import measure_drift

        columns = measure_drift(cur, ref, spec, html_path=html_path).columns
        return columns, (html_path.stat().st_size if html_path else None)

    times, cpus = [], []
    with tempfile.TemporaryDirectory() as tmp:
        html_path = Path(tmp) / "drift.html" if html and variant != "floor" else None
        once(current.head(2000), reference.head(2000), html_path)  # warm-up: imports and first-call costs
        baseline = _rss_mb()
        for _ in range(repeat):
            start, cpu = time.perf_counter(), _cpu_seconds()
            columns, html_bytes = once(current, reference, html_path)
            times.append(time.perf_counter() - start)
            cpus.append(_cpu_seconds() - cpu)
    return {"variant": variant, "rows": rows, "rows_compared": min(rows, spec.drift.sample_rows),
            "seconds": statistics.median(times), "cpu_seconds": statistics.median(cpus), "peak_mb": _rss_mb(), "baseline_mb": baseline,
            "html_bytes": html_bytes, "columns": columns}


def spawn(variant: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", variant, "--rows", str(args.rows), "--repeat", str(args.repeat)]
    cmd += [] if args.drift else ["--no-drift"]
    cmd += [] if args.html else ["--no-html"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{variant} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(base: dict, other: dict) -> tuple[bool, float, str]:
    """Same drifted set? Largest absolute score gap, and on which column."""
    a, b = base["columns"], other["columns"]
    same = {n for n in a if a[n]["drifted"]} == {n for n in b if b[n]["drifted"]}
    gap, where = max((abs(a[n]["score"] - b[n]["score"]), n) for n in a)
    return same, gap, where


def report(results: dict[str, dict]) -> None:
    full = results["full"]
    print(f"rows per side: {full['rows']:,}   sample rows: {results['sample']['rows_compared']:,}")
    print(f"{'variant':8} {'rows':>9} {'wall s':>8} {'x full':>7} {'cpu s':>8} {'x full':>7} "
          f"{'peak MB':>8} {'+MB':>7} {'x full':>7}  verdict vs full")
    for name in VARIANTS:
        r = results[name]
        delta, full_delta = r["peak_mb"] - r["baseline_mb"], full["peak_mb"] - full["baseline_mb"]
        same, gap, where = compare(full, r)
        verdict = "-" if name == "full" else f"{'same' if same else 'DIFFERENT'} drifted set, max score gap {gap:.4f} ({where})"
        print(f"{name:8} {r['rows_compared']:>9,} {r['seconds']:>8.2f} {r['seconds'] / full['seconds']:>7.3f} "
              f"{r['cpu_seconds']:>8.2f} {r['cpu_seconds'] / full['cpu_seconds']:>7.3f} "
              f"{r['peak_mb']:>8.0f} {delta:>7.0f} {delta / max(full_delta, 1e-9):>7.3f}  {verdict}")
    same, gap, where = compare(results["sample"], results["floor"])
    drifted = sorted(n for n, c in full["columns"].items() if c["drifted"])
    print(f"floor vs Evidently on the same sample: {'same' if same else 'DIFFERENT'} drifted set, "
          f"max score gap {gap:.2e} ({where})")
    print(f"drifted on full data ({len(drifted)}/{len(full['columns'])}): {', '.join(drifted)}")
    scores = {n: c["score"] for n, c in full["columns"].items()}
    quiet = [s for n, s in scores.items() if not full["columns"][n]["drifted"]]
    loud = [s for n, s in scores.items() if full["columns"][n]["drifted"]]
    print(f"full-data scores: highest not drifted {max(quiet, default=float('nan')):.3f}, "
          f"lowest drifted {min(loud, default=float('nan')):.3f} (threshold 0.1)")
    if full["html_bytes"]:
        print(f"HTML report: full {full['html_bytes'] / 1e6:.1f} MB, sample {results['sample']['html_bytes'] / 1e6:.1f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000, help="rows per side (current and reference)")
    parser.add_argument("--repeat", type=int, default=1, help="timed runs per variant (median reported)")
    parser.add_argument("--no-drift", dest="drift", action="store_false",
                        help="compare two normal days instead of a covariate-drift day with a normal day")
    parser.add_argument("--no-html", dest="html", action="store_false", help="skip writing Evidently's HTML")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_variant(args.child, args.rows, args.repeat, args.drift, args.html)))
        return
    results = {}
    for variant in VARIANTS:
        results[variant] = spawn(variant, args)
        print(f"  {variant}: {results[variant]['seconds']:.2f} s", file=sys.stderr, flush=True)
    report(results)


if __name__ == "__main__":
    main()
