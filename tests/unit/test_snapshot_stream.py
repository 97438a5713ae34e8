"""A PostgreSQL night is snapshotted as a stream (ADBC batches, normalised per batch, written a row group
at a time), and its bytes are those of writing the whole night at once: the hash never depends on how
the rows arrived, and no more than one row group is held before it is written."""

import datetime as dt
import hashlib

import pyarrow as pa
import pyarrow.parquet as pq

from include.nightshift import demo_data, snapshot
from include.nightshift.artifacts import ArtifactStore
from include.nightshift.snapshot import PostgresReader, normalise, take_snapshot, write_batches

DAY = dt.date(2026, 3, 2)


def _one_shot(table: pa.Table, path, row_group_rows: int) -> str:
    """The snapshot as written before streaming: the whole night, one chunk, pyarrow's row groups."""
    pq.write_table(table.combine_chunks(), path, row_group_size=row_group_rows, **snapshot._PARQUET_OPTIONS)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_streamed_night_has_the_bytes_of_the_one_shot_write_across_row_groups(pg_conn, churn_spec, tmp_path,
                                                                                monkeypatch):
    demo_data.create_source_table(pg_conn)
    demo_data.load_day(pg_conn, DAY, 1000)
    monkeypatch.setattr(snapshot, "ROW_GROUP_ROWS", 300)  # 4 row groups: 300, 300, 300, 100
    store = ArtifactStore(tmp_path / "store")
    ref = take_snapshot(pg_conn, store, churn_spec, DAY)
    whole = normalise(PostgresReader(pg_conn).read_window(churn_spec, DAY))
    assert ref.rows == whole.num_rows == 1000
    assert ref.sha256 == _one_shot(whole, tmp_path / "one_shot.parquet", 300)
    with store.open(ref.url) as handle:
        meta = pq.ParquetFile(handle).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [300, 300, 300, 100]


def test_batches_of_any_size_give_the_same_bytes_and_each_row_group_is_written_when_full(churn_spec, tmp_path,
                                                                                      monkeypatch):
    frame = demo_data.generate_day(DAY, 1000)[churn_spec.columns]
    table = pa.Table.from_pandas(frame, preserve_index=False)
    monkeypatch.setattr(snapshot, "ROW_GROUP_ROWS", 256)
    arrived, seen_at_write = [0], []
    real_write = pq.ParquetWriter.write_table

    def write_table(self, table, row_group_size=None):
        seen_at_write.append((arrived[0], table.num_rows))
        return real_write(self, table, row_group_size)

    def batches(size: int):
        for batch in table.to_batches(max_chunksize=size):
            arrived[0] += batch.num_rows
            yield batch

    monkeypatch.setattr(pq.ParquetWriter, "write_table", write_table)
    refs = {size: write_batches(table.schema, batches(size), ArtifactStore(tmp_path / f"s{size}"), churn_spec, DAY,
                                labelled=False) for size in (37, 256, 1000)}
    monkeypatch.setattr(pq.ParquetWriter, "write_table", real_write)
    assert {r.sha256 for r in refs.values()} == {_one_shot(table, tmp_path / "one_shot.parquet", 256)}
    assert all(r.rows == 1000 for r in refs.values())
    # batches of 37 rows: the first row group is written once 259 rows (7 batches) arrived, not at the end
    assert seen_at_write[:4] == [(259, 256), (518, 256), (777, 256), (1000, 232)]


def test_an_empty_night_streams_to_the_one_shot_bytes(pg_conn, churn_spec, tmp_path):
    demo_data.create_source_table(pg_conn)
    ref = take_snapshot(pg_conn, ArtifactStore(tmp_path / "store"), churn_spec, DAY)
    whole = normalise(PostgresReader(pg_conn).read_window(churn_spec, DAY))
    assert ref.rows == 0 and ref.sha256 == _one_shot(whole, tmp_path / "one_shot.parquet", snapshot.ROW_GROUP_ROWS)
