"""The training window read day by day (training_window.py), training.max_rows and the linear families' cap.

An unsampled window must give the frames, and so the models, that split_train_holdout gave for the same snapshots,
to the bit; a sampled one keeps each day's share, the same rows for the same seed, and never touches the holdout;
the run records how many rows there were before sampling (TrainingStep, the MLflow run, the run record).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from include.nightshift import demo_data, drift, training
from include.nightshift.artifacts import ArtifactStore
from include.nightshift.nightly import judge_challenger, train_challenger
from include.nightshift.reports import Origin
from include.nightshift.run_record import _training
from include.nightshift.snapshot import normalise, read_snapshots, write_snapshot
from include.nightshift.spec import load_spec
from include.nightshift.training_window import read_holdout, read_window

ROOT = Path(__file__).resolve().parents[2]
BASE = load_spec(ROOT / "include" / "specs" / "churn.yaml")
FIRST = dt.date(2026, 4, 1)
# uneven days, so that "each day keeps its share" is not the same as "each day keeps the same count"
ROWS = [900, 300, 1200, 600, 700, 500]


def _spec(**training_fields):
    fields = {"window_days": 4, "holdout_days": 2, "min_rows": 100, **training_fields}
    return dataclasses.replace(BASE, training=dataclasses.replace(BASE.training, **fields))


DAYS = [FIRST + dt.timedelta(days=i) for i in range(len(ROWS))]
END = DAYS[-1]


@pytest.fixture(scope="module")
def snapshots(tmp_path_factory):
    """Labelled snapshots of six demo days as the snapshot step writes them; day 2's file is deliberately out of
    (timestamp, key) order (another reader's order), which the window must put right as the old split did."""
    store = ArtifactStore(tmp_path_factory.mktemp("store"))
    refs = []
    for day, n in zip(DAYS, ROWS):
        df = demo_data.generate_day(day, n).sort_values(["event_ts", "customer_id"]).reset_index(drop=True)
        if day == DAYS[1]:
            df = df.iloc[::-1].reset_index(drop=True)
        refs.append(write_snapshot(normalise(pa.Table.from_pandas(df, preserve_index=False)), store, _spec(), day,
                                   labelled=True))
    return store, refs


def test_an_unsampled_window_is_split_train_holdout_s_frames_and_trains_bit_for_bit_as_before(snapshots):
    store, refs = snapshots
    spec = _spec()
    old_train, old_holdout = training.split_train_holdout(read_snapshots(store, refs), spec, END)
    window = read_window(store, refs, spec, END)
    assert window.sampled_from is None and len(window.train) == sum(ROWS[:4])
    pd.testing.assert_frame_equal(window.train, old_train)
    pd.testing.assert_frame_equal(window.holdout, old_holdout)
    pd.testing.assert_frame_equal(read_holdout(store, refs, spec, END), old_holdout)
    before = training.fit_candidates(spec, old_train, old_holdout)
    after = training.fit_candidates(spec, window.train, window.holdout)
    assert [f.family for f in after] == ["xgboost", "hist_gradient_boosting", "logistic_regression"]
    for old, new in zip(before, after):
        assert new.holdout_scores.tobytes() == old.holdout_scores.tobytes(), new.family


def test_max_rows_samples_each_day_by_its_share_the_same_rows_for_the_same_seed_and_leaves_the_holdout(snapshots):
    store, refs = snapshots
    full = read_window(store, refs, _spec(), END)
    sampled = read_window(store, refs, _spec(max_rows=1000), END)
    again = read_window(store, refs, _spec(max_rows=1000), END)
    other_seed = read_window(store, refs, _spec(max_rows=1000, seed=7), END)

    assert len(sampled.train) == 1000 and sampled.sampled_from == sum(ROWS[:4]) == 3000
    per_day = pd.Series(training.row_days(sampled.train, _spec())).value_counts().sort_index()
    assert per_day.tolist() == [300, 100, 400, 200]  # 900, 300, 1200, 600 rows: a third of each
    pd.testing.assert_frame_equal(again.train, sampled.train)
    assert not other_seed.train["customer_id"].equals(sampled.train["customer_id"])
    # a sample of the window's own rows, still in (timestamp, key) order; the holdout is every holdout row
    keys = ["event_ts", "customer_id"]
    assert len(sampled.train.merge(full.train, on=list(full.train.columns))) == 1000
    assert sampled.train[keys].equals(sampled.train.sort_values(keys, kind="mergesort")[keys].reset_index(drop=True))
    pd.testing.assert_frame_equal(sampled.holdout, full.holdout)
    assert read_window(store, refs, _spec(max_rows=3000), END).sampled_from is None  # not larger: not sampled


def test_holdout_max_rows_samples_each_holdout_day_by_its_share_the_same_rows_for_train_and_evaluate(snapshots):
    store, refs = snapshots
    full = read_window(store, refs, _spec(), END)
    sampled = read_window(store, refs, _spec(holdout_max_rows=600), END)

    assert len(sampled.holdout) == 600 and sampled.holdout_sampled_from == sum(ROWS[4:]) == 1200
    per_day = pd.Series(training.row_days(sampled.holdout, _spec())).value_counts().sort_index()
    assert per_day.tolist() == [350, 250]  # 700 and 500 rows: half of each
    pd.testing.assert_frame_equal(read_holdout(store, refs, _spec(holdout_max_rows=600), END), sampled.holdout)
    assert len(sampled.holdout.merge(full.holdout, on=list(full.holdout.columns))) == 600  # the holdout's own rows
    pd.testing.assert_frame_equal(sampled.train, full.train)  # the training rows are max_rows' business
    assert sampled.sampled_from is None and full.holdout_sampled_from is None
    assert read_window(store, refs, _spec(holdout_max_rows=1200), END).holdout_sampled_from is None


def test_day_quotas_add_up_to_max_rows_by_largest_remainder():
    assert training.day_quotas({"a": 10, "b": 10, "c": 10}, 31) == {}
    assert training.day_quotas({"a": 10, "b": 10, "c": 10}, 10) == {"a": 4, "b": 3, "c": 3}
    quotas = training.day_quotas({"a": 1, "b": 5, "c": 994}, 100)
    assert sum(quotas.values()) == 100 and quotas == {"a": 0, "b": 1, "c": 99}


def test_the_linear_families_fit_on_a_bounded_stratified_sample_and_unchanged_below_it(snapshots):
    store, refs = snapshots
    spec = _spec()
    train = read_window(store, refs, spec, END).train
    assert training.linear_rows(train, spec) is train  # 3,000 rows, far under LINEAR_MAX_ROWS
    sample = training.stratified_sample(train, spec, 600)
    assert len(sample) == 600
    assert pd.Series(training.row_days(sample, spec)).value_counts().sort_index().tolist() == [180, 60, 240, 120]
    pd.testing.assert_frame_equal(training.stratified_sample(train, spec, 600), sample)


def test_the_drift_reference_picks_its_rows_before_converting_and_is_the_sample_it_always_was(snapshots):
    store, refs = snapshots
    spec = dataclasses.replace(_spec(), drift=dataclasses.replace(BASE.drift, sample_rows=500))
    train = read_window(store, refs, spec, END).train
    converted = drift._feature_frame(train, spec)  # the old way: every row converted, then sampled
    converted[spec.label.name] = train[spec.label.name].to_numpy()
    expected, _ = drift._sample(converted, 500, spec.drift.seed)
    pd.testing.assert_frame_equal(drift.reference_sample(train, spec), expected)


NIGHT = dt.date(2026, 5, 20)


@pytest.fixture
def source(pg_conn):
    """The churn source with 17 labelled days before NIGHT (14 training + 3 holdout) of 120 rows each."""
    demo_data.create_source_table(pg_conn, BASE.source.table)
    _, days = training.training_days(BASE, NIGHT)
    for day in days:
        demo_data.load_day(pg_conn, day, 120, table=BASE.source.table, with_labels=True)
    return pg_conn


def _train_and_judge(source, registry, tmp_path, run_id: str, **training_fields):
    """Tonight's challenger trained with these training settings, its MLflow run, and the gate's verdict on it."""
    spec = dataclasses.replace(BASE, training=dataclasses.replace(BASE.training, min_rows=500, **training_fields))
    store = ArtifactStore(tmp_path / "artifacts")
    trained = train_challenger(source, store, registry, spec, NIGHT, None, run_id)
    verdict = judge_challenger(store, registry, spec, trained, day=NIGHT, policy="never", dry_run=False,
                               origin=Origin(dag_run_id=run_id), reports={})
    return trained, registry.client.get_run(trained.run_id), verdict


def test_a_sampled_training_run_records_the_rows_before_and_after_and_is_judged_on_the_whole_holdout(
        source, registry, tmp_path):
    trained, run, verdict = _train_and_judge(source, registry, tmp_path, "manual__sampled", max_rows=700)
    assert (trained.train_rows, trained.sampled_from, trained.holdout_rows) == (700, 14 * 120, 3 * 120)
    assert _training(trained)["sampled_from"] == 1680 and _training(trained)["train_rows"] == 700
    assert run.data.metrics["train_rows"] == 700 and run.data.metrics["train_rows_before_sampling"] == 1680
    assert run.data.params["max_rows"] == "700"
    assert verdict.evaluation["rows"] == 3 * 120  # the holdout, never sampled


def test_a_sampled_holdout_is_recorded_and_the_gate_judges_every_model_on_the_same_sampled_rows(
        source, registry, tmp_path):
    trained, run, verdict = _train_and_judge(source, registry, tmp_path, "manual__holdout", holdout_max_rows=200)
    assert (trained.holdout_rows, trained.holdout_sampled_from, trained.train_rows) == (200, 3 * 120, 14 * 120)
    assert _training(trained)["holdout_sampled_from"] == 360
    assert run.data.metrics["holdout_rows"] == 200 and run.data.metrics["holdout_rows_before_sampling"] == 360
    assert run.data.params["holdout_max_rows"] == "200"
    assert verdict.evaluation["rows"] == 200
    # evaluate read the rows train scored: the registry round trip compares tonight's predictions on them with
    # the scores train kept, so a different sample would fail it
    assert {c["name"]: c["passed"] for c in verdict.checks}["roundtrip"] is True


def test_a_max_rows_below_min_rows_is_refused_naming_the_key(tmp_path):
    from include.nightshift.spec import SpecError, load_spec

    text = (ROOT / "include" / "specs" / "churn.yaml").read_text()
    assert "  min_rows: 2000\n" in text
    path = tmp_path / "churn.yaml"
    path.write_text(text.replace("  min_rows: 2000\n", "  min_rows: 2000\n  max_rows: 1500\n"))
    with pytest.raises(SpecError, match=r"training\.max_rows.*must be at least min_rows \(2000\)"):
        load_spec(path)
    path.write_text(text.replace("  min_rows: 2000\n", "  min_rows: 2000\n  max_rows: 500000\n"))
    assert load_spec(path).training.max_rows == 500000


def test_fit_step_by_step_gives_the_model_pipeline_fit_gives_to_the_bit(snapshots):
    """training.fit fits the pipeline's steps itself (to free the features frame before the estimator fits):
    every family's holdout scores equal those of scikit-learn's Pipeline.fit on the same rows."""
    store, refs = snapshots
    spec = _spec()
    window = read_window(store, refs, spec, END)
    for candidate in spec.candidates:
        ours = training.fit(training.build_candidate(spec, candidate), window.train, spec)
        with training.threadpool_limits(limits=training.N_JOBS, user_api="openmp"):
            theirs = training.build_candidate(spec, candidate).fit(training.features_frame(window.train, spec),
                                                                   training.labels(window.train, spec))
        assert (training.predict_scores(ours, window.holdout, spec).tobytes()
                == training.predict_scores(theirs, window.holdout, spec).tobytes()), candidate.family


def test_the_monitor_s_days_are_every_row_below_realised_max_rows_and_a_seeded_share_of_each_day_above(snapshots):
    """read_days: the monitor step's realised window (and the staleness day) bounded by promotion.realised_max_rows."""
    from include.nightshift.training_window import read_days

    store, refs = snapshots
    in_order = [r for r in refs if r.day != DAYS[1].isoformat()]  # the step writes every snapshot in order
    whole, sampled_from = read_days(store, in_order, _spec(), None)
    assert sampled_from is None
    pd.testing.assert_frame_equal(whole, read_snapshots(store, in_order))
    assert read_days(store, in_order, _spec(), whole.shape[0])[1] is None  # exactly at the cap: not sampled

    sample, sampled_from = read_days(store, in_order, _spec(), 1000)
    assert (len(sample), sampled_from) == (1000, sum(ROWS) - ROWS[1])
    per_day = sample["event_ts"].dt.date.value_counts().sort_index()
    expected = training.day_quotas({r.day: r.rows for r in in_order}, 1000)
    assert [int(n) for n in per_day] == [expected[r.day] for r in sorted(in_order, key=lambda r: r.day)]
    again, _ = read_days(store, list(reversed(in_order)), _spec(), 1000)
    pd.testing.assert_frame_equal(sample, again)  # the same rows for the same seed, whatever the order given
    assert sample.merge(whole, how="left", indicator=True)["_merge"].eq("both").all()  # rows of the days, unchanged


def test_the_drift_step_samples_a_night_before_converting_and_gets_the_rows_it_always_got(snapshots):
    """drift.night_sample: the rows (and their order) that reading the whole night and sampling it gave."""
    from include.nightshift.drift import night_sample, reference_sample
    from include.nightshift.snapshot import read_snapshot

    store, refs = snapshots
    spec = dataclasses.replace(BASE, drift=dataclasses.replace(BASE.drift, sample_rows=500))
    for ref in refs[:3]:  # 900 and 1200 rows: sampled; 300: whole
        picked = night_sample(store, ref, spec)
        assert list(picked.columns) == spec.feature_names
        assert len(picked) == min(500, ref.rows)
        pd.testing.assert_frame_equal(reference_sample(picked, spec),
                                      reference_sample(read_snapshot(store, ref, columns=spec.feature_names), spec))


def test_rows_at_positions_are_read_a_row_group_at_a_time_in_the_order_asked(tmp_path):
    """read_snapshot_rows: what a sample of a large day reads instead of the day; the rows equal a take of the
    whole file, in the order asked, across row groups (and none asked gives an empty table of the file's columns)."""
    import pyarrow.parquet as pq

    from include.nightshift.snapshot import SnapshotRef, read_snapshot_rows, read_snapshot_table

    store = ArtifactStore(tmp_path)
    df = demo_data.generate_day(FIRST, 2500)
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp_path / "day.parquet", row_group_size=400)
    ref = SnapshotRef(url=store.url("day.parquet"), sha256="", rows=len(df), day=FIRST.isoformat(), labelled=True)
    assert pq.ParquetFile(tmp_path / "day.parquet").num_row_groups == 7
    whole = read_snapshot_table(store, ref)
    for positions in (np.array([2499, 0, 401, 399, 1200, 5]), np.random.default_rng(3).permutation(2500)[:900],
                      np.arange(2500)):
        assert read_snapshot_rows(store, ref, positions).equals(whole.take(pa.array(positions)))
    empty = read_snapshot_rows(store, ref, np.array([], dtype=np.int64))
    assert empty.num_rows == 0 and empty.column_names == whole.column_names
    some = read_snapshot_rows(store, ref, np.array([7, 3]), columns=["plan", "age"])
    assert some.equals(whole.select(["plan", "age"]).take(pa.array([7, 3])))
