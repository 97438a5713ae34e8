"""A 5,000-value categorical at scale: the dense one-hot every family used to get vs the encodings
training.py builds now (native category codes for the trees, target encoding for HistGradientBoosting
above 255 categories, a sparse one-hot for the logistic regression).

Run on demand, never in tests:

    .venv/bin/python benchmarks/bench_high_cardinality.py --rows 100000
    .venv/bin/python benchmarks/bench_high_cardinality.py --variants ours   # seconds, not minutes

Each (variant, family) runs in its own fresh process, so that its peak memory (ru_maxrss, a
high-water mark) is its own: the candidate fitted as the nightly train step fits it (fit_candidates,
the holdout scored), then the population scored (predict_scores). The data and spec are
tests/unit/test_high_cardinality.py's: the label rate depends on the merchant alone, so the holdout
roc_auc shows whether the model uses the category.

Variants
- naive: a dense one-hot of every categorical (OneHotEncoder(sparse_output=False), ColumnTransformer
         sparse_threshold 0), the recipe before this change: about 80 KB per row at 5,000 values.
         Needs about 8 GB of memory per family at 100k rows, and minutes.
- ours:  training.build_candidate as it is.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

VARIANTS = ("naive", "ours")
FAMILIES = ("xgboost", "hist_gradient_boosting", "logistic_regression")


def _workload():
    """The test module that holds the spec, the data and train_and_score (tests/ is not a package)."""
    path = ROOT / "tests" / "unit" / "test_high_cardinality.py"
    spec = importlib.util.spec_from_file_location("high_cardinality_workload", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dense_candidate(spec, candidate):
    """The pre-change pipelines: dense one-hot for every family (passthrough numerics for the trees,
    imputed and scaled for the logistic regression)."""
    import numpy as np
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler
    from xgboost import XGBClassifier

    from include.nightshift import training

    one_hot = OneHotEncoder(categories=[list(f.categories) for f in spec.features if f.type == "categorical"],
                            handle_unknown="ignore", sparse_output=False, dtype=np.float64)
    seed, params = spec.training.seed, dict(candidate.params)
    numeric = "passthrough"
    if candidate.family == "xgboost":
        model = XGBClassifier(**{"tree_method": "hist", "n_jobs": training.N_JOBS, **params, "random_state": seed})
    elif candidate.family == "hist_gradient_boosting":
        model = HistGradientBoostingClassifier(**{**params, "random_state": seed})
    else:
        numeric = make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True), StandardScaler())
        model = LogisticRegression(**{"max_iter": training.BASELINE_MAX_ITER, **params, "random_state": seed})
    prep = ColumnTransformer([("numeric", numeric, spec.numeric_features),
                              ("categorical", one_hot, spec.categorical_features)], sparse_threshold=0.0)
    return Pipeline([("prep", prep), ("model", model)])


def run_variant(variant: str, family: str, rows: int) -> dict:
    """One family, in this process: train_and_score with today's or the dense candidate."""
    from include.nightshift import training

    if variant == "naive":
        training.build_candidate = dense_candidate  # fit_candidate looks it up in the module
    report = _workload().train_and_score(rows, [family])
    return {"variant": variant, "family": family, "rows": report["train_rows"],
            "peak_mb": report["peak_rss_kib"] / 1024, "seconds": report["seconds"], **report["families"][family]}


def spawn(variant: str, family: str, rows: int) -> dict:
    cmd = [sys.executable, __file__, "--child", variant, family, "--rows", str(rows)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT)
    if done.returncode != 0:
        return {"variant": variant, "family": family, "rows": rows, "error": done.stderr.strip()[-300:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(results: list[dict]) -> None:
    print(f"{'variant':8} {'family':24} {'rows':>8} {'peak MB':>8} {'fit s':>7} {'total s':>8} {'roc_auc':>8}")
    for r in results:
        if "error" in r:
            print(f"{r['variant']:8} {r['family']:24} {r['rows']:>8,} failed: {r['error']}")
            continue
        print(f"{r['variant']:8} {r['family']:24} {r['rows']:>8,} {r['peak_mb']:>8.0f} {r['fit_seconds']:>7.1f} "
              f"{r['seconds']:>8.1f} {r['roc_auc']:>8.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000, help="training rows (and scored rows)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "FAMILY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_variant(args.child[0], args.child[1], args.rows)))
        return
    results = []
    for variant in args.variants:
        for family in args.families:
            results.append(spawn(variant, family, args.rows))
            print(f"  {variant} {family}: {results[-1].get('seconds', 'failed')} s", file=sys.stderr, flush=True)
    report(results)


if __name__ == "__main__":
    main()
