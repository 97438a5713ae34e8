"""Shards of a night: which rows each scores (steps.ScoringStep.shard_range, spec Scoring.shards) and the
serving path's reader of a range of a multi-row-group snapshot (scoring.serving_chunks)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from include.nightshift.scoring import serving_chunks
from include.nightshift.steps import ScoringStep


def test_a_night_at_or_below_shard_rows_is_scored_whole(churn_spec):
    scoring = dataclasses.replace(churn_spec.scoring, shard_rows=1000)
    assert [scoring.shards(n) for n in (0, 999, 1000, 1001, 2999, 3000, 3001)] == [0, 0, 0, 2, 3, 3, 4]
    assert dataclasses.replace(scoring, shard_rows=None).shards(10**9) == 0


def test_shard_ranges_cover_every_row_once():
    scored = ScoringStep(url=None, rows=2000, model_version=1, day=dt.date(2026, 5, 1), shards=3)
    ranges = [scored.shard_range(i, 700) for i in range(3)]
    assert ranges == [(0, 700), (700, 1400), (1400, 2000)]
    with pytest.raises(ValueError, match="shard 3 of a night scored in 3"):
        scored.shard_range(3, 700)


@pytest.mark.parametrize("rows_range", [(0, 25), (25, 60), (37, 38), (90, 103), (0, 103)])
def test_a_range_of_a_snapshot_of_several_row_groups_is_read_exactly(churn_spec, tmp_path, rows_range):
    path = tmp_path / "snapshot.parquet"
    pq.write_table(pa.table({"customer_id": list(range(103))}), path, row_group_size=20)
    spec = dataclasses.replace(churn_spec, scoring=dataclasses.replace(churn_spec.scoring, chunk_rows=7))
    chunks = list(serving_chunks(str(path), spec, rows_range))
    assert all(len(c) <= 7 for c in chunks)
    assert [k for c in chunks for k in c["customer_id"]] == list(range(*rows_range))
