"""Same inputs, same outputs, to the last bit: the model from a snapshot set and a seed, and
the snapshot from a set of source rows.

A rerun of a night must reproduce its model and its scores (evaluation compares numbers
across runs, and a model names the data it came from by hash), so "close" is not enough:
predictions are compared as float64 bytes, snapshots as file bytes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pytest

from include.nightshift import demo_data, training
from include.nightshift.artifacts import ArtifactStore
from include.nightshift.snapshot import take_snapshot

ROOT = Path(__file__).resolve().parents[2]
FIRST_DAY = dt.date(2026, 2, 1)
DAYS = 3
ROWS_PER_DAY = 1500


def _spec():
    from include.nightshift.spec import load_spec

    base = load_spec(ROOT / "include" / "specs" / "churn.yaml")
    return dataclasses.replace(base, training=dataclasses.replace(base.training, window_days=2, holdout_days=1))


def fit_and_predict(calibration: str = "none") -> dict[str, bytes]:
    """Data from the seeded generator, every candidate and the baseline trained, the holdout scored:
    the float64 bytes of each model's scores and XGBoost's own serialised booster."""
    spec = _spec()
    spec = dataclasses.replace(spec, training=dataclasses.replace(spec.training, calibration=calibration,
                                                                  calibration_days=1))
    days = [FIRST_DAY + dt.timedelta(days=i) for i in range(DAYS)]
    rows = pd.concat([demo_data.generate_day(day, ROWS_PER_DAY) for day in days], ignore_index=True)
    train, holdout = training.split_train_holdout(rows, spec, days[-1])
    model = training.fit(training.build_model(spec), train, spec)
    baseline = training.fit(training.build_baseline(spec), train, spec)
    scores = training.predict_scores(model, holdout, spec)
    assert scores.dtype == np.float64 and scores.size == ROWS_PER_DAY
    fits = training.fit_candidates(spec, train, holdout)
    return {
        "model": scores.tobytes(),
        "baseline": training.predict_scores(baseline, holdout, spec).tobytes(),
        "booster": bytes(model.named_steps["model"].get_booster().save_raw("ubj")),
        **{f.family: f.holdout_scores.tobytes() for f in fits},
    }


@pytest.mark.parametrize("calibration", ["none", "isotonic"])
def test_two_fits_in_one_process_are_bit_identical(calibration):
    first, again = fit_and_predict(calibration), fit_and_predict(calibration)
    assert set(first) == {"model", "baseline", "booster", "xgboost", "hist_gradient_boosting", "logistic_regression"}
    for name in first:
        assert again[name] == first[name], f"{name} differs between two fits"


# The nightly path in a fresh interpreter: snapshots from the source, then training on them.
PIPELINE = textwrap.dedent("""
    import dataclasses, datetime as dt, hashlib, json, sys
    import psycopg
    from include.nightshift import training
    from include.nightshift.artifacts import ArtifactStore
    from include.nightshift.snapshot import read_snapshots, take_snapshot
    from include.nightshift.spec import load_spec

    uri, store_dir, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    spec = load_spec("include/specs/churn.yaml")
    spec = dataclasses.replace(spec, training=dataclasses.replace(spec.training, seed=seed))
    days = [dt.date.fromisoformat(d) for d in sys.argv[4:]]
    conn = psycopg.connect(uri)
    refs = [take_snapshot(conn, ArtifactStore(store_dir), spec, d, labelled=True) for d in days]
    train, holdout = training.split_train_holdout(read_snapshots(ArtifactStore(store_dir), refs), spec, days[-1])
    model = training.fit(training.build_model(spec), train, spec)
    baseline = training.fit(training.build_baseline(spec), train, spec)
    digest = lambda data: hashlib.sha256(data).hexdigest()
    print(json.dumps({
        "snapshots": [r.sha256 for r in refs], "rows": len(holdout),
        "scores": digest(training.predict_scores(model, holdout, spec).tobytes()),
        "baseline": digest(training.predict_scores(baseline, holdout, spec).tobytes()),
        "booster": digest(bytes(model.named_steps["model"].get_booster().save_raw("ubj"))),
        "candidates": {f.family: digest(f.holdout_scores.tobytes())
                       for f in training.fit_candidates(spec, train, holdout)},
        "key": training.training_key(spec, [r.sha256 for r in refs]),
    }))
""")
PIPELINE_DAYS = [dt.date(2026, 3, 1) + dt.timedelta(days=i) for i in range(4)]
# Thread pools and hash seeds differ between the runs: none of them may change a bit.
SETTINGS = [
    {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "1"},
    {"OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "PYTHONHASHSEED": "2"},
    {},
]


def test_separate_processes_give_the_same_snapshots_and_model_to_the_bit(pg_conn, pg_uri, tmp_path):
    """Three fresh interpreters at once, each with its own artifact store and thread settings;
    the third trains with another seed, to show the comparison can tell models apart.

    training.N_JOBS pins XGBoost's threads and HistGradientBoosting's OpenMP pool, so
    OMP_NUM_THREADS must not matter; BLAS threads (the logistic models) and PYTHONHASHSEED (set
    and dict order) must not either. Every candidate family and the training key are compared.
    """
    demo_data.create_source_table(pg_conn)
    for day in PIPELINE_DAYS:
        demo_data.load_day(pg_conn, day, 800, with_labels=True)
    runs = []
    for i, (seed, extra) in enumerate(zip((42, 42, 43), SETTINGS)):
        args = [sys.executable, "-c", PIPELINE, pg_uri, str(tmp_path / f"store{i}"), str(seed), *map(str, PIPELINE_DAYS)]
        env = {"PYTHONPATH": str(ROOT), "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
               "OMP_WAIT_POLICY": "PASSIVE", **extra}  # idle OpenMP threads sleep: 3 runs share 2 cores
        runs.append(subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True))
    results = []
    for run in runs:
        out, err = run.communicate(timeout=300)
        assert run.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    first, second, other_seed = results

    assert first["rows"] > 0
    assert first == second
    assert other_seed["snapshots"] == first["snapshots"]
    assert other_seed["scores"] != first["scores"] and other_seed["booster"] != first["booster"]
    # every family's scores are in `first == second` (other thread settings); the seed is in the key
    assert len(first["candidates"]) == 3 and other_seed["key"] != first["key"]
    assert other_seed["candidates"]["xgboost"] != first["candidates"]["xgboost"]


# --- snapshots ---------------------------------------------------------------------------

DAY = dt.date(2026, 3, 2)


def test_same_source_rows_give_the_same_snapshot_bytes_and_hash(pg_conn, pg_uri, churn_spec, tmp_path):
    """The same rows, stored in a different physical order in another table and read from a
    session in another time zone into another store, give the same file, byte for byte."""
    demo_data.create_source_table(pg_conn)
    demo_data.load_day(pg_conn, DAY, 800)
    demo_data.reveal_labels(pg_conn, DAY, 800)
    demo_data.create_source_table(pg_conn, "public.churn_copy")
    with pg_conn.transaction(), pg_conn.cursor() as cur:
        cur.execute("SELECT setseed(0.5)")
        cur.execute("INSERT INTO public.churn_copy SELECT * FROM public.churn_events ORDER BY random()")
        cur.execute("SELECT (SELECT array_agg(customer_id) FROM (SELECT customer_id FROM churn_events LIMIT 20) a)"
                    " = (SELECT array_agg(customer_id) FROM (SELECT customer_id FROM churn_copy LIMIT 20) b)")
        assert cur.fetchone() == (False,)  # the copy really is stored in another order
    copy_spec = dataclasses.replace(churn_spec, source=dataclasses.replace(churn_spec.source, table="public.churn_copy"))

    first_store, second_store = ArtifactStore(tmp_path / "a"), ArtifactStore(tmp_path / "b")
    first = take_snapshot(pg_conn, first_store, churn_spec, DAY, labelled=True)
    again = take_snapshot(pg_conn, first_store, churn_spec, DAY, labelled=True)
    other_session = psycopg.connect(pg_uri, options="-c TimeZone=Asia/Tokyo -c DateStyle=German")
    try:
        elsewhere = take_snapshot(other_session, second_store, copy_spec, DAY, labelled=True)
    finally:
        other_session.close()

    assert first.rows == 800
    assert again == first
    assert elsewhere.sha256 == first.sha256
    with first_store.open(first.url) as a, second_store.open(elsewhere.url) as b:
        assert a.read() == b.read()
