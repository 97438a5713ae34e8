"""Validation of a snapshot file one column at a time (what the validate step does): the same verdict,
failures and report as validating the whole frame, and never more than one column held at a time.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import gc
import json
import math
import weakref
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from include.nightshift.artifacts import ArtifactStore
from include.nightshift.demo_data import generate_day
from include.nightshift.snapshot import SnapshotReadError, SnapshotRef, snapshot_columns
from include.nightshift.validation import ColumnSource, validate_snapshot

DAY = dt.date(2026, 3, 2)
ROWS = 3000


def _snapshot(df: pd.DataFrame, folder: Path) -> tuple[ArtifactStore, SnapshotRef]:
    store = ArtifactStore(folder)
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), folder / "night.parquet")
    return store, SnapshotRef(url=store.url("night.parquet"), sha256="", rows=len(df), day=DAY.isoformat(),
                              labelled=False)


def _broken(spec) -> pd.DataFrame:
    """A night with one fault of each kind: duplicated and null keys, a value out of range, +inf, an
    unseen category above its share, a null label on a labelled day, a missing and an extra column."""
    df = generate_day(DAY, ROWS)[spec.columns].copy()
    key = spec.entity_key.name
    df.loc[df.index[:5], key] = df[key].iloc[5]
    df[key] = df[key].astype("float64")
    df.loc[df.index[10:12], key] = math.nan
    df.loc[df.index[20:30], "age"] = 1000.0
    df.loc[df.index[30:32], "monthly_charges"] = math.inf
    df.loc[df.index[: ROWS // 5], "plan"] = "platinum"
    df.loc[df.index[40:45], spec.label.name] = np.nan
    return df.drop(columns=["region"]).assign(referrer="x")


def _report(folder: Path) -> dict:
    return json.loads((folder / "validation.json").read_text())


def test_a_snapshot_validated_column_by_column_gives_the_whole_frame_verdict(churn_spec, tmp_path):
    df = _broken(churn_spec)
    whole = validate_snapshot(df, churn_spec, day=DAY, labelled=True, report_dir=tmp_path / "whole")
    with snapshot_columns(*_snapshot(df, tmp_path)) as columns:
        by_column = validate_snapshot(columns, churn_spec, day=DAY, labelled=True, report_dir=tmp_path / "columns")
    assert not by_column.success and by_column.rows == ROWS and by_column.evaluated == whole.evaluated
    assert by_column.failures == whole.failures
    named = {f.column for f in by_column.failures}
    assert {"customer_id", "age", "monthly_charges", "plan", "region", "referrer", "churned"} <= named
    checks = {(c["expectation"], c["column"]): c for c in _report(tmp_path / "whole")["checks"]}
    seen = _report(tmp_path / "columns")["checks"]
    assert [(c["expectation"], c["column"]) for c in seen] == list(checks)
    for check in seen:
        same = checks[check["expectation"], check["column"]]
        assert check["success"] == same["success"], check
        if check["expectation"] != "expect_column_values_to_be_in_type_list":  # text: checked on its dtype
            assert check["measured"] == same["measured"], check
    assert (tmp_path / "columns" / _report(tmp_path / "columns")["data_docs_page"]).exists()


def test_text_read_from_a_snapshot_is_typed_by_the_file(churn_spec, tmp_path):
    """Arrow's string type says every value is text: the type rule holds on the dtype, not value by value."""
    df = generate_day(DAY, ROWS)[churn_spec.columns]
    with snapshot_columns(*_snapshot(df, tmp_path)) as columns:
        result = validate_snapshot(columns, churn_spec, day=DAY, report_dir=tmp_path / "report")
        assert isinstance(columns.read("plan")["plan"].dtype, pd.StringDtype)
    assert result.success, result.message()
    plan = next(c for c in _report(tmp_path / "report")["checks"]
                if c["column"] == "plan" and c["expectation"] == "expect_column_values_to_be_in_type_list")
    assert set(plan["measured"]) == {"dtype"}  # one dtype, no per-value counts


@pytest.mark.parametrize("batch_rows", [None, 1000], ids=["whole columns", "row batches"])
def test_each_column_is_read_once_and_released_before_the_next(churn_spec, batch_rows):
    """The memory bound: at most one column of the night (or one batch of one column) is alive at any time."""
    df = generate_day(DAY, ROWS)[churn_spec.columns]
    spec = dataclasses.replace(churn_spec, validation=dataclasses.replace(churn_spec.validation, batch_rows=batch_rows))
    alive: list[weakref.ref] = []
    reads: list[str] = []

    def held(name: str, frame: pd.DataFrame) -> pd.DataFrame:
        gc.collect()
        still = [ref() for ref in alive if ref() is not None]
        assert not still, f"reading {name} while {[list(f.columns) for f in still]} are still held"
        reads.append(name)
        alive.append(weakref.ref(frame))
        return frame

    source = ColumnSource(names=list(df.columns), rows=len(df), read=lambda name: held(name, df[[name]].copy()),
                          read_rows=lambda name, start, stop: held(name, df[[name]].iloc[start:stop].copy()))
    result = validate_snapshot(source, spec, day=DAY)
    assert result.success, result.message()
    key = churn_spec.entity_key.name
    times = 1 if batch_rows is None else ROWS // batch_rows  # the key twice: its batch checks, then its parts
    assert reads == [n for name in df.columns for n in [name] * (2 * times if name == key and batch_rows else times)]


def test_a_corrupt_or_missing_snapshot_names_the_file(churn_spec, tmp_path):
    store, ref = _snapshot(generate_day(DAY, 100)[churn_spec.columns], tmp_path)
    path = tmp_path / "night.parquet"
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(SnapshotReadError, match=f"{path} \\(day {DAY}\\) cannot be read"):
        with snapshot_columns(store, ref):
            pass
    path.unlink()
    with pytest.raises(SnapshotReadError, match="the file does not exist"):
        with snapshot_columns(store, ref):
            pass
