"""Training beyond one worker's memory: the XGBoost candidate trained with XGBoost's Dask interface on a cluster.

With training.engine `dask` the training window never reaches one process. Each training day's snapshot is read
on a worker of the cluster (one partition per day, through snapshot.read_snapshot: the local path's reader and
conversions), turned into the model's inputs by the local path's preprocessing (training._tree_prep, whose
encodings come from the spec's declared categories, never from the rows, so fitting it on a few rows fits it for
all of them), and the booster is trained by xgboost.dask across the workers. The booster is then loaded into the
very Pipeline the local engine builds (training.build_model): the registry, the gate, the round trip and the
scorer take it as they take any other model, on one machine.

Only the XGBoost family trains on the cluster. What must see rows in this process (the baseline, the drift
reference, the serving round-trip sample, the training statistics) takes a seeded, time-stratified sample of the
window instead (training_window with training.max_rows); the holdout is read whole, as the gate needs it.

The cluster is named by an Airflow connection (training.dask_connection_id: its host and port are the
scheduler's address; the train task opens the client: nightshift_airflow.runtime.dask_client); its workers must
reach the artifact store at the same address as this process (a shared disk or object storage), as Celery workers
do.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from include.nightshift.artifacts import ArtifactStore
from include.nightshift.snapshot import SnapshotRef
from include.nightshift.spec import DatasetSpec

log = logging.getLogger(__name__)

PREP_ROWS = 1000  # rows the preprocessing is fitted on: its encodings are the spec's, the rows only show the columns


def _day_inputs(store: ArtifactStore, url: str, spec: DatasetSpec, prep: Any) -> tuple[np.ndarray, np.ndarray]:
    """One day's model inputs and labels, on a worker: the snapshot read and transformed as the local path does."""
    from include.nightshift.snapshot import read_snapshot
    from include.nightshift.training import features_frame, labels

    df = read_snapshot(store, url)
    return np.asarray(prep.transform(features_frame(df, spec)), dtype=np.float64), labels(df, spec)


def _dask_estimator(spec: DatasetSpec, local: Any) -> Any:
    """The Dask twin of the Pipeline's XGBoost estimator: the same parameters (seed, feature types, categories)."""
    from xgboost import dask as dxgb

    kind = dxgb.DaskXGBRegressor if spec.task == "regression" else dxgb.DaskXGBClassifier
    return kind(**local.get_params())


def fit_on_cluster(client: Any, store: ArtifactStore, spec: DatasetSpec, train_refs: Sequence[SnapshotRef],
                   sample: pd.DataFrame) -> Any:
    """The XGBoost candidate's Pipeline, its booster trained on every row of `train_refs` by the cluster behind
    `client`; `sample` (some training rows, read here) fits the preprocessing's column layout."""
    import dask
    import dask.array as da

    from include.nightshift.training import _categorical_columns, build_model, features_frame

    model = build_model(spec)
    prep, local = model.named_steps["prep"], model.named_steps["model"]
    prep.fit(features_frame(sample.head(PREP_ROWS), spec))
    width = len(_categorical_columns(spec))
    xs, ys = [], []
    for ref in (r for r in train_refs if r.rows):
        day = dask.delayed(_day_inputs, nout=2, pure=True)(store, ref.url, spec, prep)
        xs.append(da.from_delayed(day[0], shape=(ref.rows, width), dtype=np.float64))
        ys.append(da.from_delayed(day[1], shape=(ref.rows,), dtype=np.float64 if spec.task == "regression" else np.int64))
    if not xs:
        raise ValueError("training.engine dask: the training window has no rows")
    started = time.perf_counter()
    estimator = _dask_estimator(spec, local)
    estimator.client = client
    estimator.fit(da.concatenate(xs), da.concatenate(ys))
    with tempfile.TemporaryDirectory(prefix="nightshift-dask-") as tmp:
        path = Path(tmp) / "model.ubj"
        estimator.save_model(path)  # the booster with its sklearn attributes (classes, feature types)
        local.load_model(path)
    log.info("xgboost trained on the Dask cluster %s: %d rows of %d days, %d workers, %.1f s", client.scheduler.address,
             sum(r.rows for r in train_refs), len(xs), len(client.scheduler_info()["workers"]),
             time.perf_counter() - started)
    return model
