"""Snapshots: one day of the source, frozen as an immutable, content-hashed Parquet file.

A snapshot is named by the SHA-256 of its bytes, so the same source rows always give the
same file and hash, and a model can name exactly the data it was trained on. Rows are read
by the source's reader (sources.py: PostgreSQL with ADBC, any DB-API database, Parquet or CSV
files) with the source's own column types, so a column of numbers stored as text stays text
and validation can name it. ``normalise`` is the one rule that turns the
driver's Arrow types into the snapshot's (integers int64, floats float64, ``numeric``
exact decimals, timestamptz in UTC). Rows are ordered by (timestamp, entity key) and
written with fixed Parquet options: that is what makes the bytes, and so the hash, reproducible.

A PostgreSQL night is streamed: the server sorts it, ADBC hands it over batch by batch, each batch is
normalised and the rows are written a row group at a time, so a task holds at most one row group
(ROW_GROUP_ROWS, fixed by rows, never by how the batches arrive) and never the whole night. The bytes
are those of writing the whole night at once (pyarrow's row groups are the same ROW_GROUP_ROWS rows),
so streaming changed no hash. Two cases still read the night whole: an unconstrained ``numeric``
column (its decimal scale is the widest of the night's values, known only at the end) and the sql
and files sources (they filter and sort in Arrow).

A stored snapshot is trusted only while its bytes still hash to its name: taking the same day
again re-hashes the stored file and rewrites it when it differs (a truncated or corrupt file is
repaired by the next run, not reused forever), and a snapshot that cannot be read is reported
with its path, its day and whether its bytes still match its name.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from psycopg import Connection

from include.nightshift.artifacts import ArtifactStore
from include.nightshift.sources import (  # noqa: F401  (the PostgreSQL reader's parts, where they were)
    PostgresReader, SourceReader, as_reader, source_columns, window_parameters, window_query)
from include.nightshift.spec import DatasetSpec, Source

if TYPE_CHECKING:
    from include.nightshift.validation import ColumnSource

log = logging.getLogger(__name__)

_PARQUET_OPTIONS = {"compression": "zstd", "use_dictionary": True, "write_statistics": True, "version": "2.6"}
_PG_TYPE = b"POSTGRESQL:type"  # field metadata the ADBC driver sets: the source column's PostgreSQL type
_PG_TYPMOD = b"POSTGRESQL:typmod"
# Rows per Parquet row group: pyarrow's own default, so that a snapshot written row group by row group has
# the bytes of one written whole (pq.write_table), whatever the source's batches.
ROW_GROUP_ROWS = 1024 * 1024


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


def day_bounds(day: dt.date, timezone: str = "UTC") -> tuple[dt.datetime, dt.datetime]:
    """Night `day`'s window, [day 00:00, day+1 00:00) in `timezone`, as UTC instants."""
    return Source(table="x", timezone=timezone).day_bounds(day)


class SourceSchemaError(Exception):
    """The source lacks the spec's timestamp column: no day can be selected from it."""


def read_day(conn: Connection, spec: DatasetSpec, day: dt.date, *, labelled: bool = False) -> pa.Table:
    """One day of a PostgreSQL source (a psycopg connection's database) as an Arrow table with the
    snapshot's types: sources.PostgresReader, normalised."""
    return normalise(PostgresReader(conn).read_window(spec, day, labelled=labelled))


def normalise(table: pa.Table) -> pa.Table:
    """The snapshot's types, from the source's (as ADBC hands them over), in one place.

    Integers of any width are int64 and floats float64 (what the models and validation have
    always seen), ``numeric`` becomes an exact decimal (never a float: a money column must
    keep its cents), timestamptz is a UTC timestamp, date/bool/text stay; anything else
    (json, uuid, ...) becomes its text. Field metadata is dropped, so the Parquet bytes
    depend on the rows alone, not on the driver's version.
    """
    fields, columns = [], []
    for field, column in zip(table.schema, table.columns):
        column = _normal_column(field, column)
        fields.append(pa.field(field.name, column.type))
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


# Arrow types kept as they are, and those widened (anything else becomes text).
_KEPT = (pa.types.is_boolean, pa.types.is_date32, pa.types.is_string, pa.types.is_decimal)
_WIDENED = ((pa.types.is_integer, pa.int64()), (pa.types.is_floating, pa.float64()))


def _normal_column(field: pa.Field, column: pa.ChunkedArray) -> pa.ChunkedArray:
    kind = field.type
    if (field.metadata or {}).get(_PG_TYPE) == b"numeric":
        return _decimal(field, _storage(column))
    if isinstance(kind, pa.BaseExtensionType):
        return _extension_text(field, column)
    if any(kept(kind) for kept in _KEPT):
        return column
    if pa.types.is_timestamp(kind):
        return column.cast(pa.timestamp("us", tz="UTC" if kind.tz else None))
    target = next((to for test, to in _WIDENED if test(kind)), pa.string())
    try:
        return column.cast(target)
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid) as exc:
        raise TypeError(f"source column {field.name!r} ({kind}) has no snapshot type; "
                        "cast it in a view over the source table") from exc


def _extension_text(field: pa.Field, column: pa.ChunkedArray) -> pa.ChunkedArray:
    """json, jsonb and other text-backed types as their text; a uuid in its usual form."""
    if isinstance(field.type, pa.UuidType):
        return pa.chunked_array([pa.array([None if v is None else str(v) for v in column.to_pylist()], pa.string())])
    if pa.types.is_string(field.type.storage_type):
        return _storage(column)
    raise TypeError(f"source column {field.name!r} ({field.type}) has no snapshot type; "
                    "cast it to text in a view over the source table")


def _storage(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """The values under an extension type (PostgreSQL numeric, json): their text."""
    if not isinstance(column.type, pa.BaseExtensionType):
        return column
    return pa.chunked_array([chunk.storage for chunk in column.chunks], column.type.storage_type)


def _decimal(field: pa.Field, text: pa.ChunkedArray) -> pa.ChunkedArray:
    """numeric(p, s) as decimal(p, s); an unconstrained numeric as decimal(38, the scale its values
    need) (so its type can change with the data: declare numeric(p, s) for a stable one).

    PostgreSQL's typmod is ((p << 16) | s) + 4, or -1 when the column declares neither.
    NaN and infinities have no decimal form and are refused with the column named.
    """
    typmod = int((field.metadata or {}).get(_PG_TYPMOD, b"-1"))
    if typmod >= 4:
        precision, scale = (typmod - 4) >> 16, (typmod - 4) & 0x7FF
        scale = scale - 0x800 if scale & 0x400 else scale  # PostgreSQL 15+ allows a negative scale
    else:
        dot, length = pc.find_substring(text, "."), pc.utf8_length(text)
        has_dot = pc.greater_equal(dot, 0)
        scale = pc.max(pc.if_else(has_dot, pc.subtract(pc.subtract(length, dot), 1), 0)).as_py() or 0
        digits = pc.max(pc.if_else(has_dot, dot, length)).as_py() or 0
        precision = 38 if digits + scale <= 38 else 76
    kind = pa.decimal128(precision, scale) if precision <= 38 else pa.decimal256(precision, scale)
    try:
        return text.cast(kind)
    except pa.ArrowInvalid as exc:
        raise ValueError(f"source column {field.name!r} (numeric): a value does not fit {kind} "
                         f"(NaN, infinity or too many digits): {exc}") from exc


def write_snapshot(table: pa.Table, store: ArtifactStore, spec: DatasetSpec, day: dt.date,
                   *, labelled: bool) -> SnapshotRef:
    """Write once under its content hash; an identical snapshot already stored is reused, once its
    bytes are checked against its name (a stored file that no longer hashes to it is rewritten)."""
    return write_batches(table.schema, table.to_batches(), store, spec, day, labelled=labelled)


def write_batches(schema: pa.Schema, batches: Iterable[pa.RecordBatch], store: ArtifactStore, spec: DatasetSpec,
                  day: dt.date, *, labelled: bool) -> SnapshotRef:
    """write_snapshot for rows arriving in batches (normalised, in snapshot order): one row group in memory."""
    with tempfile.TemporaryDirectory(prefix="nightshift-snap-") as tmp:
        local = Path(tmp) / "snapshot.parquet"
        rows = _write_row_groups(schema, batches, local)
        digest = _sha256(local)
        url = store.url("snapshots", spec.name, day.isoformat(), f"{digest}.parquet")
        if not _intact(store, url, digest):
            store.put_file(local, url)
    return SnapshotRef(url=url, sha256=digest, rows=rows, day=day.isoformat(), labelled=labelled)


def _write_row_groups(schema: pa.Schema, batches: Iterable[pa.RecordBatch], path: Path) -> int:
    """The rows as Parquet, ROW_GROUP_ROWS rows a row group, each written as one contiguous chunk (Parquet's
    page boundaries follow the Arrow chunks: how a reader chunks its batches must not change the bytes).
    Columns are held column by column, so each is freed once concatenated. Returns the row count."""
    rows, held, pending = 0, 0, [[] for _ in schema]
    with pq.ParquetWriter(path, schema, **_PARQUET_OPTIONS) as writer:
        for batch in batches:
            while batch.num_rows:
                take = min(batch.num_rows, ROW_GROUP_ROWS - held)
                for i, column in enumerate(batch.slice(0, take).columns):
                    pending[i].append(column)
                held, batch = held + take, batch.slice(take)
                if held == ROW_GROUP_ROWS:
                    writer.write_table(_one_chunk(schema, pending))
                    rows, held, pending = rows + held, 0, [[] for _ in schema]
        if held or not rows:  # the last, partial row group; an empty night is one empty row group, as before
            writer.write_table(_one_chunk(schema, pending))
            rows += held
    return rows


def _one_chunk(schema: pa.Schema, pending: list[list[pa.Array]]) -> pa.Table:
    """The pending row group as a table of one chunk per column, emptying `pending` column by column."""
    columns = []
    for i, field in enumerate(schema):
        parts, pending[i] = pending[i], []
        columns.append(pa.concat_arrays(parts) if parts else pa.array([], field.type))
        del parts
    return pa.Table.from_arrays(columns, schema=schema)


def _intact(store: ArtifactStore, url: str, digest: str) -> bool:
    """True when `url` is stored and its bytes hash to `digest`; a mismatch is logged, naming the path."""
    if not store.exists(url):
        return False
    stored = store.sha256(url)
    if stored == digest:
        return True
    log.warning("snapshot %s is corrupt: its bytes hash to %s, not to the %s its name says; rewriting it "
                "from the source", url, stored, digest)
    return False


class SnapshotReadError(ValueError):
    """A stored snapshot that cannot be read: the message names its path and day."""


def take_snapshot(source: SourceReader | Connection, store: ArtifactStore, spec: DatasetSpec, day: dt.date, *,
                  labelled: bool = False) -> SnapshotRef:
    """Night `day` of the source (a reader of sources.py; a psycopg connection is a PostgreSQL source),
    normalised and written under its content hash. A labelled snapshot of a past night reads it again."""
    reader = as_reader(source)
    if isinstance(reader, PostgresReader):
        with reader.stream_window(spec, day, labelled=labelled) as batches:
            if any(_scale_from_data(field) for field in batches.schema):
                return write_snapshot(normalise(batches.read_all()), store, spec, day, labelled=labelled)
            schema = normalise(batches.schema.empty_table()).schema
            return write_batches(schema, _normalised(batches), store, spec, day, labelled=labelled)
    table = reader.read_window(spec, day, labelled=labelled)
    return write_snapshot(normalise(table), store, spec, day, labelled=labelled)


def _normalised(batches: pa.RecordBatchReader) -> Iterable[pa.RecordBatch]:
    """Each source batch in the snapshot's types (normalise is value by value: per batch as for the whole)."""
    for batch in batches:
        yield from normalise(pa.Table.from_batches([batch])).to_batches()


def _scale_from_data(field: pa.Field) -> bool:
    """An unconstrained numeric: its decimal scale is the widest of the night's values (_decimal)."""
    metadata = field.metadata or {}
    return metadata.get(_PG_TYPE) == b"numeric" and int(metadata.get(_PG_TYPMOD, b"-1")) < 4


def read_snapshot(store: ArtifactStore, ref: SnapshotRef | str, columns: list[str] | None = None) -> pd.DataFrame:
    """A snapshot as a frame for the steps; exact decimals become float64 here, deliberately:
    the models, drift and validation compute in floating point, the snapshot file stays exact."""
    return read_snapshot_table(store, ref, columns).to_pandas()


def read_snapshot_table(store: ArtifactStore, ref: SnapshotRef | str, columns: list[str] | None = None) -> pa.Table:
    """A snapshot as the Arrow table read_snapshot converts (decimals as float64): for a reader that selects
    or samples rows before any of them reach pandas (training_window.py)."""
    url = ref.url if isinstance(ref, SnapshotRef) else ref
    with _reading(store, url, ref.day if isinstance(ref, SnapshotRef) else Path(url).parent.name), \
            store.open(url) as handle:
        table = pq.read_table(handle, columns=columns)
    return _decimals_as_floats(table)


def read_snapshot_rows(store: ArtifactStore, ref: SnapshotRef, positions: np.ndarray,
                       columns: list[str] | None = None) -> pa.Table:
    """The rows of a snapshot at `positions` (0-based, in the order given) as read_snapshot_table gives them
    (all columns, or `columns`), read one row group at a time.

    Why: a sample of a large day (the monitor's realised window, training.max_rows) then costs the sample and
    one row group in memory, not the whole day: at 10M rows a day the day in Arrow alone is about 2 GB.
    """
    with _reading(store, ref.url, ref.day), store.local_copy(ref.url) as path:
        file = pq.ParquetFile(path)
        order = np.argsort(positions, kind="stable")
        wanted = np.asarray(positions, dtype=np.int64)[order]
        bounds = np.cumsum([0] + [file.metadata.row_group(g).num_rows for g in range(file.num_row_groups)])
        pieces = []
        for group, (start, end) in enumerate(zip(bounds[:-1], bounds[1:])):
            inside = wanted[np.searchsorted(wanted, start):np.searchsorted(wanted, end)]
            if len(inside):
                pieces.append(file.read_row_group(group, columns=columns).take(pa.array(inside - start)))
        schema = file.schema_arrow if columns is None else pa.schema([file.schema_arrow.field(c) for c in columns])
        table = pa.concat_tables(pieces) if pieces else schema.empty_table()
    back = np.empty_like(order)
    back[order] = np.arange(len(order))
    return _decimals_as_floats(table.take(pa.array(back)))


def _decimals_as_floats(table: pa.Table) -> pa.Table:
    for i, field in enumerate(table.schema):
        if pa.types.is_decimal(field.type):
            # through the decimal text: Arrow's direct decimal -> float cast can miss the nearest float by an ulp
            table = table.set_column(i, field.name, table.column(i).cast(pa.string()).cast(pa.float64()))
    return table


# Text columns as pandas' string dtype, not object: the file's type already says every value is text or null,
# so the type rule is checked on the dtype at once instead of value by value (1.5 s of a 1M-row night).
_TEXT = {pa.string(): pd.StringDtype("python"), pa.large_string(): pd.StringDtype("python")}


@contextlib.contextmanager
def snapshot_columns(store: ArtifactStore, ref: SnapshotRef) -> Iterator[ColumnSource]:
    """A snapshot for validation, one column at a time, as read_snapshot would give each column (text
    columns typed as text).

    Why: the validate step then holds one column of the night, not the night (holding it whole, the step
    peaked at 1.8 GB per 1M rows of the demo). Parquet is columnar, so reading column by column reads the
    file once.
    """
    from include.nightshift.validation import ColumnSource

    with contextlib.ExitStack() as open_files:
        with _reading(store, ref.url, ref.day):  # not around the yield: the caller's own errors are not the file's
            file = pq.ParquetFile(open_files.enter_context(store.local_copy(ref.url)))

        groups = tuple(file.metadata.row_group(g).num_rows for g in range(file.num_row_groups))
        starts = np.cumsum((0, *groups))

        def read(name: str) -> pd.DataFrame:
            with _reading(store, ref.url, ref.day):
                return _decimals_as_floats(file.read(columns=[name])).to_pandas(types_mapper=_TEXT.get)

        def read_rows(name: str, start: int, stop: int) -> pd.DataFrame:
            """Rows [start, stop) of a column, reading only the row groups that hold them."""
            first, last = np.searchsorted(starts, start, side="right") - 1, np.searchsorted(starts, stop, side="left")
            with _reading(store, ref.url, ref.day):
                table = file.read_row_groups(list(range(first, last)), columns=[name])
                table = table.slice(start - starts[first], stop - start)
                return _decimals_as_floats(table).to_pandas(types_mapper=_TEXT.get)

        yield ColumnSource(names=file.schema_arrow.names, rows=file.metadata.num_rows, read=read,
                           read_rows=read_rows, row_groups=groups)


@contextlib.contextmanager
def _reading(store: ArtifactStore, url: str, day: str) -> Iterator[None]:
    """A failed read of snapshot `url` raised as SnapshotReadError (_unreadable: the file, its day, its bytes)."""
    try:
        yield
    except (OSError, ValueError, pa.ArrowException) as exc:  # ArrowInvalid is a ValueError
        raise SnapshotReadError(_unreadable(store, url, day, exc)) from exc


def _unreadable(store: ArtifactStore, url: str, day: str, exc: Exception) -> str:
    """Why a snapshot could not be read, naming the file, its day and whether its bytes match its name."""
    head = f"snapshot {url} (day {day}) cannot be read"
    try:
        if not store.exists(url):
            return f"{head}: the file does not exist ({exc})"
        named, stored = Path(url).stem, store.sha256(url)
    except Exception:  # noqa: BLE001  (the store itself failing: the read's own error says why)
        return f"{head}: {exc}"
    if named != stored and len(named) == 64:
        return (f"{head}: the file is corrupt, its bytes hash to {stored}, not to the {named} its name says "
                f"(taking the day's snapshot again rewrites it): {exc}")
    return f"{head}: {exc}"


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
