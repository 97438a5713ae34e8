"""Snapshots: one day of the source, frozen as an immutable, content-hashed Parquet file.

A snapshot is named by the SHA-256 of its bytes, so the same source rows always give the
same file and hash, and a model can name exactly the data it was trained on. Rows are read
with COPY TO STDOUT into Arrow (about ten times faster than pandas.read_sql) with the
source's own column types, so a column of numbers stored as text stays text and
validation can name it. Rows are ordered by (timestamp, entity key) and written with fixed
Parquet options: that is what makes the bytes, and so the hash, reproducible.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from psycopg2 import sql

from include.nightshift.artifacts import ArtifactStore
from include.nightshift.spec import DatasetSpec

# PostgreSQL type OIDs -> Arrow types; anything else is read as text.
_ARROW_TYPES = {
    16: pa.bool_(), 20: pa.int64(), 21: pa.int64(), 23: pa.int64(),
    700: pa.float64(), 701: pa.float64(), 1700: pa.float64(),
    1082: pa.date32(), 1114: pa.timestamp("us"), 1184: pa.timestamp("us", tz="UTC"),
}
_PARQUET_OPTIONS = {"compression": "zstd", "use_dictionary": True, "write_statistics": True, "version": "2.6"}


@dataclass(frozen=True)
class SnapshotRef:
    """What XCom carries about a snapshot: where it is and what it holds, never the rows."""

    url: str
    sha256: str
    rows: int
    day: str
    labelled: bool

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "SnapshotRef":
        return cls(**data)


def day_bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.timezone.utc)
    return start, start + dt.timedelta(days=1)


def _table(spec: DatasetSpec) -> sql.Composable:
    schema, name = spec.source.schema_and_name
    return sql.Identifier(schema, name) if schema else sql.Identifier(name)


class SourceSchemaError(Exception):
    """The source table lacks the spec's timestamp column: no day can be selected from it."""


def source_columns(conn, spec: DatasetSpec) -> list[str]:
    """The source table's column names, as it is now (not as the spec says it should be)."""
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT * FROM {} LIMIT 0").format(_table(spec)))
        names = [d.name for d in cur.description]
    conn.rollback()
    return names


def window_query(spec: DatasetSpec, labelled: bool, columns: list[str] | None = None) -> sql.Composed:
    """All columns of one day's rows (labelled: only rows whose label is known), in a stable order.

    `columns` are the source's actual columns: a missing label or entity key column is left out of
    the filter and the order, so that the snapshot is still taken and validation names the column
    (a query on a missing column would crash here, be retried, and never reach validation).
    """
    present = set(spec.columns if columns is None else columns)
    if spec.timestamp not in present:
        raise SourceSchemaError(f"source table {spec.source.table} has no column {spec.timestamp!r} (the spec's "
                                f"timestamp), so the day's rows cannot be selected; its columns: {sorted(present)}")
    ts, key, label = (sql.Identifier(c) for c in (spec.timestamp, spec.entity_key.name, spec.label.name))
    query = sql.SQL("SELECT * FROM {table} WHERE {ts} >= %(start)s AND {ts} < %(end)s").format(
        table=_table(spec), ts=ts)
    if labelled and spec.label.name in present:
        query += sql.SQL(" AND {label} IS NOT NULL").format(label=label)
    order = [ts, key] if spec.entity_key.name in present else [ts]
    return query + sql.SQL(" ORDER BY ") + sql.SQL(", ").join(order)


def read_day(conn, spec: DatasetSpec, day: dt.date, *, labelled: bool = False) -> pa.Table:
    """One day of the source as an Arrow table with the source's column types."""
    start, end = day_bounds(day)
    query = window_query(spec, labelled, source_columns(conn, spec))
    with conn.cursor() as cur:
        cur.execute("SET TIME ZONE 'UTC'")
        cur.execute(sql.SQL("SELECT * FROM ({q}) AS w LIMIT 0").format(q=query), {"start": start, "end": end})
        columns = [(d.name, _ARROW_TYPES.get(d.type_code, pa.string())) for d in cur.description]
        copy = sql.SQL("COPY ({q}) TO STDOUT WITH (FORMAT csv, HEADER true)").format(q=query)
        with tempfile.TemporaryFile() as buf:
            cur.copy_expert(cur.mogrify(copy, {"start": start, "end": end}).decode(), buf)
            buf.seek(0)
            table = pacsv.read_csv(buf, convert_options=pacsv.ConvertOptions(
                column_types=dict(columns), strings_can_be_null=True, quoted_strings_can_be_null=False))
    conn.rollback()  # end the read-only transaction; nothing to keep
    return table


def write_snapshot(table: pa.Table, store: ArtifactStore, spec: DatasetSpec, day: dt.date,
                   *, labelled: bool) -> SnapshotRef:
    """Write once under its content hash; an identical snapshot already stored is reused as is."""
    with tempfile.TemporaryDirectory(prefix="nightshift-snap-") as tmp:
        local = Path(tmp) / "snapshot.parquet"
        pq.write_table(table, local, **_PARQUET_OPTIONS)
        digest = _sha256(local)
        url = store.url("snapshots", spec.name, day.isoformat(), f"{digest}.parquet")
        if not store.exists(url):
            store.put_file(local, url)
    return SnapshotRef(url=url, sha256=digest, rows=table.num_rows, day=day.isoformat(), labelled=labelled)


def take_snapshot(conn, store: ArtifactStore, spec: DatasetSpec, day: dt.date, *, labelled: bool = False) -> SnapshotRef:
    return write_snapshot(read_day(conn, spec, day, labelled=labelled), store, spec, day, labelled=labelled)


def read_snapshot(store: ArtifactStore, ref: SnapshotRef | str, columns: list[str] | None = None) -> pd.DataFrame:
    url = ref.url if isinstance(ref, SnapshotRef) else ref
    with store.open(url) as handle:
        return pq.read_table(handle, columns=columns).to_pandas()


def read_snapshots(store: ArtifactStore, refs: list[SnapshotRef]) -> pd.DataFrame:
    """Several days as one frame, in day order (empty days contribute nothing)."""
    frames = [read_snapshot(store, ref) for ref in sorted(refs, key=lambda r: r.day)]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def manifest(refs: list[SnapshotRef]) -> str:
    """A stable JSON listing of a set of snapshots: logged with a model as its data lineage."""
    return json.dumps([r.to_dict() for r in sorted(refs, key=lambda r: (r.day, r.labelled))], indent=2, sort_keys=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
