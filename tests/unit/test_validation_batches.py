"""Validation of a large snapshot a batch of rows at a time (validation.batch_rows): the same verdict, failures
and observations as one run on each whole column, one batch of one column held at a time, and the entity key's
uniqueness still checked across the whole night (on parts of the key split by value).
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
import pytest

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


def test_each_batch_reads_whole_row_groups_and_no_column_is_read_whole(churn_spec, tmp_path):
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
    assert [n for name, n in reads if name == "age"] == [1000, 1000, 1000]  # two row groups of 500 a batch
    assert [n for name, n in reads if name == "customer_id"] == [1000] * 6  # its batch checks, then its parts
    assert max(n for _, n in reads) == 1000


def _keyed(spec, keys: pd.Series) -> pd.DataFrame:
    df = generate_day(DAY, len(keys))[spec.columns].copy()
    return df.assign(**{spec.entity_key.name: keys.set_axis(df.index)})


@pytest.mark.parametrize("stored", ["Int64", "float64"], ids=["bigint key", "key stored as double"])
def test_a_key_repeated_across_batches_is_found_whatever_each_batch_s_dtype(churn_spec, tmp_path, stored):
    """A bigint key (Arrow int64) arrives as float64 in a batch that has nulls (Int64 once checked) and as
    int64 in one without; a key stored as double is Int64 in a batch with nulls and float64 in one without.
    The same key must fall in the same part either way."""
    keys = pd.Series(np.arange(ROWS) + 10_000, dtype="Int64").astype(stored)
    keys.iloc[[3, 4]] = pd.NA  # nulls in the first batch only
    keys.iloc[[2990, 1500, 2999]] = keys.iloc[[10, 11, 12]].to_numpy()  # first batch's keys again, later
    keys.iloc[2400] = keys.iloc[1600]  # second batch's key in the third
    df = _keyed(churn_spec, keys)
    store, ref = _snapshot(df, tmp_path)
    with snapshot_columns(store, ref) as columns:
        whole = validate_snapshot(columns, _batched(churn_spec, None), day=DAY, report_dir=tmp_path / "whole")
    with snapshot_columns(store, ref) as columns:
        batched = validate_snapshot(columns, _batched(churn_spec, 1000), day=DAY, report_dir=tmp_path / "batched")
    unique = [c for c in _checks(tmp_path / "batched") if c["expectation"] == "expect_column_values_to_be_unique"]
    assert unique[0]["measured"]["unexpected"] == 8 and unique[0]["measured"]["checked"] == ROWS - 2
    # the examples come part by part, not in row order: some of the repeated keys, as numbers
    assert unique[0]["measured"]["examples"] and set(unique[0]["measured"]["examples"]) <= {10010, 10011, 10012, 11600}
    whole_unique = next(c for c in _checks(tmp_path / "whole") if c["expectation"] == "expect_column_values_to_be_unique")
    assert whole_unique["measured"]["unexpected"] == 8 and not whole_unique["success"] and not unique[0]["success"]
    failed = {(f.expectation, f.column) for f in batched.failures}
    assert ("expect_column_values_to_not_be_null", "customer_id") in failed
    if stored == "Int64":  # a double key's batches without nulls are doubles: their type check fails there
        assert failed == {(f.expectation, f.column) for f in whole.failures}


def test_a_key_of_mixed_types_in_a_frame_is_checked_whole(churn_spec, tmp_path):
    """Values of several types (only a frame in memory can hold them) cannot be split by value: checked whole."""
    keys = pd.Series(list(range(ROWS)), dtype="object")
    keys.iloc[5] = "five"
    keys.iloc[2500] = 7
    df = _keyed(churn_spec, keys)
    whole = validate_snapshot(df, _batched(churn_spec, None), day=DAY, report_dir=tmp_path / "whole")
    batched = validate_snapshot(df, _batched(churn_spec, 1000), day=DAY, report_dir=tmp_path / "batched")
    assert batched.failures == whole.failures and not batched.success
    unique = [c for c in _checks(tmp_path / "batched") if c["expectation"] == "expect_column_values_to_be_unique"]
    assert unique[0]["measured"]["unexpected"] == 2
    assert _checks(tmp_path / "batched") == _checks(tmp_path / "whole")


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
