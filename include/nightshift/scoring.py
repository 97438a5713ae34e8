"""Batch scoring in bounded memory: read the night's snapshot a chunk at a time, write predictions as we go.

Peak memory is one chunk (spec.scoring.chunk_rows rows) plus the model, whatever the
night's size. Every prediction row carries the model version, the snapshot hash and the
run id, so any number in the warehouse can be traced to the model and data that made it.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from include.nightshift.artifacts import ArtifactStore
from include.nightshift.spec import DatasetSpec
from include.nightshift.training import features_frame, scores_of_features
from include.nightshift.warehouse import prediction_schema


def _predicted_label(scores: np.ndarray, spec: DatasetSpec) -> pa.Array:
    """Task binary: 1 when the score reaches the decision threshold, else 0; task regression: NULL (the
    predicted value is the score itself); task multiclass: NULL (predicted_class says it)."""
    if spec.task != "binary":
        return pa.nulls(len(scores), type=pa.int16())
    return pa.array((scores >= spec.scoring.decision_threshold).astype("int16"))


def _multiclass_columns(probabilities: np.ndarray, spec: DatasetSpec) -> dict[str, pa.Array]:
    """Task multiclass: predicted_class (the most probable of label.classes) and class_probabilities (JSON
    text {class: probability}, written to a jsonb column); nothing for the other tasks."""
    if spec.task != "multiclass":
        return {}
    classes = list(spec.label.classes)
    return {"predicted_class": pa.array([classes[i] for i in probabilities.argmax(axis=1)], type=pa.string()),
            "class_probabilities": pa.array([json.dumps(dict(zip(classes, map(float, row))))
                                             for row in probabilities], type=pa.string())}


def serving_chunks(source, spec: DatasetSpec, rows: tuple[int, int] | None = None):
    """The serving path's reader: a snapshot's rows as frames of at most scoring.chunk_rows rows, in file order;
    with `rows` (first, end), only those positions (a shard), reading only the row groups that hold them."""
    parquet = pq.ParquetFile(source)
    if rows is None:
        for batch in parquet.iter_batches(batch_size=spec.scoring.chunk_rows):
            yield batch.to_pandas()
        return
    first, end = rows
    groups, position, starts = [], 0, []
    for index in range(parquet.num_row_groups):
        size = parquet.metadata.row_group(index).num_rows
        if position < end and position + size > first:
            groups.append(index)
            starts.append(position)
        position += size
    position = starts[0] if starts else end
    for batch in parquet.iter_batches(batch_size=spec.scoring.chunk_rows, row_groups=groups):
        lo, hi = max(first - position, 0), min(end - position, batch.num_rows)
        position += batch.num_rows
        if hi > lo:
            yield batch.slice(lo, hi - lo).to_pandas()


def serving_features(chunk, spec: DatasetSpec):
    """The model inputs the serving path builds from a chunk of rows (what skew.SkewWatch compares with training's)."""
    return features_frame(chunk, spec)


def serving_scores(model, chunk, spec: DatasetSpec, watch=None, start: int = 0) -> np.ndarray:
    """A chunk's scores through the serving path; `watch` (skew.SkewWatch) sees the inputs the model was fed."""
    features = serving_features(chunk, spec)
    if watch is not None:
        watch.see(features, start)
    return scores_of_features(model, features, spec)


def score_snapshot(store: ArtifactStore, snapshot_url: str, output_url: str, spec: DatasetSpec, *, model,
                   model_version: int, snapshot_sha256: str, dag_run_id: str, watch=None,
                   rows_range: tuple[int, int] | None = None, scored_at: dt.datetime | None = None,
                   then: Callable[[Path], None] | None = None) -> int:
    """Score every row of a snapshot (or the positions `rows_range` of a shard) into a predictions Parquet file;
    returns the row count.

    `watch` (skew.SkewWatch): sees every chunk's model inputs, and verifies them before anything is written
    (its ServingSkew leaves the predictions file unwritten). `scored_at`: the night's one scoring time, which
    every shard of a night shares (default: now). `then`: called with the finished local file once it is in the
    store (a shard stages its rows from it instead of fetching the file back from the store)."""
    schema = prediction_schema(spec)
    scored_at = scored_at or dt.datetime.now(dt.timezone.utc)
    first = rows_range[0] if rows_range else 0
    rows = 0
    with store.staging_dir() as tmp, store.open(snapshot_url) as source:
        local = tmp / "predictions.parquet"
        with pq.ParquetWriter(local, schema, compression="zstd") as writer:
            for chunk in serving_chunks(source, spec, rows_range):
                scores = serving_scores(model, chunk, spec, watch, first + rows)
                extra = _multiclass_columns(scores, spec)
                scores = scores.max(axis=1) if scores.ndim == 2 else scores  # multiclass: the predicted class's
                if not np.isfinite(scores).all():
                    raise ValueError(f"model {spec.model_name} v{model_version} produced non-finite scores "
                                     f"for {int((~np.isfinite(scores)).sum())} rows; nothing is written")
                n = len(chunk)
                writer.write_table(pa.table({
                    spec.entity_key.name: pa.array(chunk[spec.entity_key.name], type=schema.field(0).type),
                    "score": pa.array(scores, type=pa.float64()),
                    "predicted_label": _predicted_label(scores, spec),
                    # the run's constants, repeated in Arrow: from Python lists they cost 0.1 s per 100k rows
                    **{name: pa.repeat(pa.scalar(value, schema.field(name).type), n) for name, value in (
                        ("model_name", spec.model_name), ("model_version", model_version),
                        ("snapshot_sha256", snapshot_sha256), ("dag_run_id", dag_run_id), ("scored_at", scored_at))},
                    **extra,
                }, schema=schema))
                rows += n
        if watch is not None:
            watch.verify()
        store.put_file(local, output_url)
        if then is not None:
            then(local)
    return rows
