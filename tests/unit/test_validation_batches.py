"""Validation of a large snapshot a batch of rows at a time (validation.batch_rows): the same verdict, failures
and observations as one run on each whole column, one batch of one column held at a time, and the entity key's
uniqueness still checked across the whole night.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from include.nightshift.artifacts import ArtifactStore
from include.nightshift.demo_data import generate_day
from include.nightshift.snapshot import SnapshotRef, snapshot_columns
from include.nightshift.validation import ColumnSource, validate_snapshot

DAY = dt.date(2026, 3, 2)
ROWS = 3000
GROUP = 500  # rows per Parquet row group: 6 groups


def _batched(spec, rows: int | None):
    return dataclasses.replace(spec, validation=dataclasses.replace(spec.validation, batch_rows=rows))


def _snapshot(df: pd.DataFrame, folder: Path) -> tuple[ArtifactStore, SnapshotRef]:
    store = ArtifactStore(folder)
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), folder / "night.parquet", row_group_size=GROUP)
    return store, SnapshotRef(url=store.url("night.parquet"), sha256="", rows=len(df), day=DAY.isoformat(),
                              labelled=False)


def _night(spec) -> pd.DataFrame:
    """Faults that sit in some batches only, against the spec's shares:
    - total_charges (at most 5% null): 140 nulls all in the first batch of 1000 rows, 4.7% of the night,
      14% of that batch (passes whole; a verdict taken batch by batch would fail it);
    - days_since_last_login (at most 10% null): 310 nulls spread over the night, 10.3% (fails);
    - region (at most 1% unseen): 40 unseen values in the last batch (1.3% of the night: fails);
    - age out of range in two batches, +inf in one (out of range too), a key repeated across the first and
      last batch."""
    df = generate_day(DAY, ROWS)[spec.columns].copy()
    df["total_charges"] = df["total_charges"].fillna(100.0)
    df.loc[df.index[:140], "total_charges"] = math.nan
    df["days_since_last_login"] = df["days_since_last_login"].mask(np.arange(ROWS) % 9 == 0)
    assert df["days_since_last_login"].isna().sum() > 0.10 * ROWS
    df.loc[df.index[-40:], "region"] = "atlantis"
    df.loc[df.index[[7, 2500]], "age"] = [1000.0, -3.0]
    df.loc[df.index[1800], "monthly_charges"] = math.inf
    key = spec.entity_key.name
    df.loc[df.index[-1], key] = df[key].iloc[0]
    return df


def _checks(folder: Path) -> list[dict]:
    return json.loads((folder / "validation.json").read_text())["checks"]


def test_a_night_checked_in_row_batches_gives_the_whole_column_verdict_and_observations(churn_spec, tmp_path):
    df = _night(churn_spec)
    store, ref = _snapshot(df, tmp_path)
    with snapshot_columns(store, ref) as columns:
        whole = validate_snapshot(columns, _batched(churn_spec, None), day=DAY, labelled=True,
                                  report_dir=tmp_path / "whole")
    with snapshot_columns(store, ref) as columns:
        batched = validate_snapshot(columns, _batched(churn_spec, 1000), day=DAY, labelled=True,
                                    report_dir=tmp_path / "batched")
    assert batched.failures == whole.failures and batched.evaluated == whole.evaluated
    failed = {(f.expectation, f.column) for f in batched.failures}
    assert failed == {("expect_column_values_to_not_be_null", "days_since_last_login"),
                      ("expect_column_values_to_be_in_set", "region"),
                      ("expect_column_values_to_be_between", "age"),
                      ("expect_column_values_to_not_be_in_set", "monthly_charges"),
                      ("expect_column_values_to_be_between", "monthly_charges"),
                      ("expect_column_values_to_be_unique", "customer_id")}
    assert _checks(tmp_path / "batched") == _checks(tmp_path / "whole")
    age = next(c for c in _checks(tmp_path / "batched")
               if c["column"] == "age" and c["expectation"] == "expect_column_values_to_be_between")
    assert (age["measured"]["min"], age["measured"]["max"], age["measured"]["unexpected"]) == (-3.0, 1000.0, 2)
    page = json.loads((tmp_path / "batched" / "validation.json").read_text())["data_docs_page"]
    assert (tmp_path / "batched" / page).exists()


def test_each_batch_reads_whole_row_groups_and_the_key_is_read_whole(churn_spec, tmp_path):
    df = _night(churn_spec)
    reads: list[tuple[str, int]] = []
    with snapshot_columns(*_snapshot(df, tmp_path)) as columns:
        def read(name: str) -> pd.DataFrame:
            reads.append((name, ROWS))
            return columns.read(name)

        def read_rows(name: str, start: int, stop: int) -> pd.DataFrame:
            frame = columns.read_rows(name, start, stop)
            assert len(frame) == stop - start and start % GROUP == 0
            pd.testing.assert_frame_equal(frame.reset_index(drop=True),
                                          columns.read(name).iloc[start:stop].reset_index(drop=True))
            reads.append((name, stop - start))
            return frame

        watched = dataclasses.replace(columns, read=read, read_rows=read_rows)
        result = validate_snapshot(watched, _batched(churn_spec, 1200), day=DAY)
    assert not result.success
    assert ("customer_id", ROWS) in reads  # uniqueness needs the whole key
    assert [n for name, n in reads if name == "age"] == [1000, 1000, 1000]  # two row groups of 500 a batch
    assert all(n <= 1200 for name, n in reads if name != "customer_id")


def test_batches_follow_row_groups_and_a_larger_group_is_a_batch_alone():
    def source(rows: int, groups: tuple[int, ...] = ()) -> ColumnSource:
        return ColumnSource(names=[], rows=rows, read=lambda n: None, read_rows=lambda n, a, b: None, row_groups=groups)

    assert source(3000).batches(None) == [(0, 3000)]
    assert source(3000).batches(3000) == [(0, 3000)]
    assert source(3000).batches(1000) == [(0, 1000), (1000, 2000), (2000, 3000)]
    assert source(2500).batches(1000) == [(0, 1000), (1000, 2000), (2000, 2500)]
    assert source(3000, (500,) * 6).batches(1200) == [(0, 1000), (1000, 2000), (2000, 3000)]
    assert source(3000, (400, 1600, 1000)).batches(1000) == [(0, 400), (400, 2000), (2000, 3000)]


def test_a_frame_in_memory_is_batched_as_a_snapshot_file_is(churn_spec):
    df = _night(churn_spec)
    whole = validate_snapshot(df, _batched(churn_spec, None), day=DAY, labelled=True)
    batched = validate_snapshot(df, _batched(churn_spec, 700), day=DAY, labelled=True)
    assert batched.failures == whole.failures and not batched.success
