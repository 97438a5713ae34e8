"""training.engine dask (training_dask.py): XGBoost trained across a real distributed.LocalCluster of two worker
processes, from snapshot files the workers read themselves, is a normal model the local scorer and MLflow load."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from include.nightshift import training
from include.nightshift.artifacts import ArtifactStore
from include.nightshift.demo_data import generate_day
from include.nightshift.evaluation import metric_value
from include.nightshift.snapshot import read_snapshots, write_snapshot
from include.nightshift.training_dask import fit_on_cluster

pytestmark = pytest.mark.postgres  # one test trains through nightly.train_challenger from the PostgreSQL source

DAYS = [dt.date(2026, 3, 1) + dt.timedelta(days=i) for i in range(7)]
ROWS = 2000


@pytest.fixture(scope="module")
def cluster():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as found, \
            Client(found) as client:
        yield client


@pytest.fixture(scope="module")
def window(tmp_path_factory, churn_spec_module):
    store = ArtifactStore(tmp_path_factory.mktemp("artifacts"))
    refs = [write_snapshot(pa.Table.from_pandas(generate_day(day, ROWS), preserve_index=False), store,
                           churn_spec_module, day, labelled=True) for day in DAYS]
    return store, refs[:-2], refs[-2:]  # five training days, two held out


@pytest.fixture(scope="module")
def churn_spec_module():
    from pathlib import Path

    from include.nightshift.spec import load_spec

    return load_spec(Path(__file__).resolve().parents[2] / "include" / "specs" / "churn.yaml")


def test_xgboost_trained_on_two_dask_workers_is_the_local_pipeline_and_as_good_as_a_local_fit(cluster, window,
                                                                                              churn_spec_module):
    from distributed import get_task_stream

    spec = churn_spec_module
    store, train_refs, holdout_refs = window
    train_df, holdout = read_snapshots(store, train_refs), read_snapshots(store, holdout_refs)
    with get_task_stream(cluster) as stream:
        model = fit_on_cluster(cluster, store, spec, train_refs, train_df.sample(500, random_state=0))
    read_on = {task["worker"] for task in stream.data if "day_inputs" in str(task["key"])}
    assert read_on and read_on <= set(cluster.scheduler_info()["workers"])  # the days were read on the workers

    assert type(model) is type(training.build_model(spec)) and model.named_steps["model"].n_estimators == 150
    y = training.labels(holdout, spec)
    on_cluster = training.predict_scores(model, holdout, spec)  # the local scorer's path
    local = training.predict_scores(training.fit(training.build_model(spec), train_df, spec), holdout, spec)
    auc = [metric_value("roc_auc", y, s) for s in (on_cluster, local)]
    assert auc[0] > 0.75 and abs(auc[0] - auc[1]) < 0.02, auc
    assert np.isfinite(on_cluster).all() and ((on_cluster >= 0) & (on_cluster <= 1)).all()


def test_the_cluster_model_survives_mlflow_and_scores_the_same_after_loading(cluster, window, churn_spec_module,
                                                                             tmp_path):
    import mlflow.sklearn

    spec = churn_spec_module
    store, train_refs, holdout_refs = window
    model = fit_on_cluster(cluster, store, spec, train_refs, read_snapshots(store, train_refs[:1]))
    holdout = read_snapshots(store, holdout_refs)
    mlflow.sklearn.save_model(model, tmp_path / "model", serialization_format="cloudpickle")
    loaded = mlflow.sklearn.load_model(str(tmp_path / "model"))
    assert np.array_equal(training.predict_scores(loaded, holdout, spec), training.predict_scores(model, holdout, spec))


def test_a_window_without_rows_is_refused_by_name(cluster, window, churn_spec_module):
    store, train_refs, _ = window
    empty = [type(r)(url=r.url, sha256=r.sha256, rows=0, day=r.day, labelled=True) for r in train_refs]
    with pytest.raises(ValueError, match="training.engine dask: the training window has no rows"):
        fit_on_cluster(cluster, store, churn_spec_module, empty, read_snapshots(store, train_refs[:1]))


def test_the_nightly_train_step_on_engine_dask_registers_a_model_the_gate_judges_as_any_other(
        cluster, registry, pg_conn, tmp_path, churn_spec_module):
    """training.engine dask through nightly.train_challenger: one candidate (xgboost, trained on the cluster on all
    14 training days), the baseline and the samples from a bounded local sample, registered, loaded back by the
    gate and judged on the whole holdout; without a client the step names the setting."""
    from include.nightshift import demo_data
    from include.nightshift.nightly import judge_challenger, train_challenger
    from include.nightshift.reports import Origin

    night = dt.date(2026, 5, 20)
    spec = dataclasses.replace(churn_spec_module, training=dataclasses.replace(
        churn_spec_module.training, engine="dask", min_rows=500, max_rows=700))
    demo_data.create_source_table(pg_conn, spec.source.table)
    for day in training.training_days(spec, night)[1]:
        demo_data.load_day(pg_conn, day, 120, table=spec.source.table, with_labels=True)
    store = ArtifactStore(tmp_path / "artifacts")
    with pytest.raises(ValueError, match="training.engine dask: no Dask client .* training.dask_connection_id"):
        train_challenger(pg_conn, store, registry, spec, night, None, "manual__dask", cluster=None)

    trained = train_challenger(pg_conn, store, registry, spec, night, None, "manual__dask", cluster=cluster)
    assert (trained.family, list(trained.candidates)) == ("xgboost", ["xgboost"])
    assert (trained.train_rows, trained.sampled_from, trained.holdout_rows) == (14 * 120, None, 3 * 120)
    run = registry.client.get_run(trained.run_id)
    assert run.data.params["engine"] == "dask" and run.data.metrics["train_rows"] == 700  # the local sample
    assert run.data.metrics["train_rows_before_sampling"] == 14 * 120  # what the cluster trained on
    verdict = judge_challenger(store, registry, spec, trained, day=night, policy="auto", dry_run=False,
                               origin=Origin(dag_run_id="manual__dask"), reports={})
    checks = {c["name"]: c["passed"] for c in verdict.checks}
    assert checks["roundtrip"] and checks["finite"] and verdict.evaluation["rows"] == 3 * 120
    assert verdict.challenger > 0.6  # a real model, judged as any other


def test_engine_dask_refuses_what_it_cannot_train(churn_spec_module, tmp_path):
    from pathlib import Path

    from include.nightshift.spec import SpecError, load_spec

    text = Path(churn_spec_module.path).read_text().replace("  calibration: none", "  calibration: sigmoid")
    text = text.replace("training:\n", "training:\n  engine: dask\n", 1)
    path = tmp_path / "churn.yaml"
    path.write_text(text)
    with pytest.raises(SpecError, match=r"training.calibration.*engine dask does not calibrate"):
        load_spec(path)
