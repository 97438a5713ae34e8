"""Where a night's rows come from: one reader per kind of source, all giving the night as Arrow.

A reader answers two questions about a spec's source (``source.kind``):

- ``source_columns(spec, day)``: the source's columns as they are now (not as the spec says they
  should be), each with 'date' or 'timestamp' when it is known to hold local time;
- ``read_window(spec, day, labelled)``: the spec's columns of night ``day`` (labelled: only rows whose
  label is known), mapped (source.columns: renamed, cast), in (timestamp, entity key) order. A spec
  column missing from the source is left out, so that validation names it; a source without the
  timestamp column raises snapshot.SourceSchemaError.

The table keeps the source's types; snapshot.normalise turns them into the snapshot's. Three readers:

- PostgresReader (kind postgres, the default): the mapping in SQL (psycopg.sql), read with ADBC's
  binary COPY on a psycopg connection's parameters.
- SqlReader (kind sql): any DB-API connection (an Airflow common-sql hook's), identifiers quoted with
  the hook's escape format, the window bound as parameters in the hook's placeholder style; rows
  into Arrow, then the mapping (casts, local time, the exact window) in Arrow, as for files.
- FilesReader (kind files): Parquet or CSV files under an fsspec URL template of the partition's date.

No Airflow import here: runtime.source_reader builds the reader from the spec's connection.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import adbc_driver_postgresql.dbapi as adbc
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import ClientCursor, Connection, sql
from psycopg.conninfo import make_conninfo

from include.nightshift.spec import CASTS, DatasetSpec


class SourceReader(Protocol):
    """What a snapshot needs from a source (see the module's docstring)."""

    def source_columns(self, spec: DatasetSpec, day: dt.date | None = None) -> dict[str, str | None]: ...

    def read_window(self, spec: DatasetSpec, day: dt.date, *, labelled: bool = False) -> pa.Table: ...


def as_reader(source: SourceReader | Connection) -> SourceReader:
    """A reader for `source`: a psycopg connection is the PostgreSQL source it connects to."""
    return PostgresReader(source) if isinstance(source, Connection) else source


def _schema_error(message: str) -> Exception:
    """A source that does not fit the spec (snapshot.SourceSchemaError: errors.py knows it as permanent, a
    retry reads the same columns)."""
    from include.nightshift.snapshot import SourceSchemaError

    return SourceSchemaError(message)


def _missing_timestamp(spec: DatasetSpec, present: Sequence[str]) -> Exception:
    return _schema_error(
        f"source {spec.source.described} has no column {spec.source.column(spec.timestamp)[0]!r} (the spec's "
        f"timestamp), so the day's rows cannot be selected; its columns: {sorted(present)}")


def window_parameters(spec: DatasetSpec, day: dt.date) -> dict[str, object]:
    """The named parameters of the window query (and of a source query): the night's bounds and zone."""
    start, end = spec.source.day_bounds(day)
    return {"start": start, "end": end, "day": day, "timezone": spec.source.timezone}


# --- PostgreSQL (kind postgres): the mapping in SQL, read with ADBC ------------------------------------


def _table(spec: DatasetSpec) -> sql.Composable:
    schema, name = spec.source.schema_and_name
    return sql.Identifier(schema, name) if schema else sql.Identifier(name)


def _from(spec: DatasetSpec) -> sql.Composable:
    """The source relation: the table, or the spec's query as a subquery (its %(start)s, %(end)s and
    %(day)s stay placeholders that psycopg binds; the query is SQL the spec's author wrote, by design)."""
    if spec.source.query:
        return sql.SQL("({}) AS source").format(sql.SQL(spec.source.query))  # type: ignore[arg-type]
    return _table(spec)


# PostgreSQL type OIDs of the source columns that hold local time (read in source.timezone).
_LOCAL_TIME_OIDS = {1082: "date", 1114: "timestamp"}


def source_columns(conn: Connection, spec: DatasetSpec, day: dt.date | None = None) -> dict[str, str | None]:
    """The source's column names, as it is now (not as the spec says it should be), each with
    'date' or 'timestamp' when it holds local time (else None). A query source is asked with the
    night's parameters bound, and returns no row (LIMIT 0)."""
    query = sql.SQL("SELECT * FROM {} LIMIT 0").format(_from(spec))
    params = window_parameters(spec, day or dt.date(2000, 1, 1)) if spec.source.query else None
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(query, params)
        return {d.name: _LOCAL_TIME_OIDS.get(d.type_code) for d in cur.description}


def _column_expression(spec: DatasetSpec, name: str, source_type: str | None) -> sql.Composable:
    """One spec column as read from the source: renamed, cast, and a local date or timestamp made
    timestamptz in source.timezone; an untouched column is just its name (the snapshot is as before)."""
    column, cast = spec.source.column(name)
    expression: sql.Composable = sql.Identifier(column)
    if cast:
        expression = sql.SQL("CAST({} AS {})").format(expression, sql.SQL(CASTS[cast]))
    if name == spec.timestamp and (cast or source_type) in ("date", "timestamp"):
        expression = sql.SQL("(CAST({} AS timestamp) AT TIME ZONE {})").format(expression,
                                                                          sql.Placeholder("timezone"))
    if expression == sql.Identifier(name):
        return expression
    return sql.SQL("{} AS {}").format(expression, sql.Identifier(name))


def window_query(spec: DatasetSpec, day: dt.date, labelled: bool,
                 columns: dict[str, str | None] | list[str] | None = None) -> sql.Composed:
    """The spec's columns of one night's rows (labelled: only rows whose label is known), in a stable order.

    Only the spec's columns are read, each from its source column (source.columns: renamed, cast); other
    source columns are ignored. `columns` are the source's actual columns: a spec column whose source
    column is missing is left out (and of the filter and the order), so that the snapshot is still taken
    and validation names the column (a query on a missing column would crash here, be retried, and never
    reach validation). The window is %(start)s / %(end)s, bound by window_parameters.
    """
    present: dict[str, str | None] = (dict.fromkeys(spec.source.column(c)[0] for c in spec.columns)
                                      if columns is None else
                                      columns if isinstance(columns, dict) else dict.fromkeys(columns))
    wanted = [c for c in spec.columns if spec.source.column(c)[0] in present]
    if spec.timestamp not in wanted:
        raise _missing_timestamp(spec, list(present))
    mapped = [_column_expression(spec, c, present[spec.source.column(c)[0]]) for c in wanted]
    ts, key, label = (sql.Identifier(c) for c in (spec.timestamp, spec.entity_key.name, spec.label.name))
    query = sql.SQL("SELECT * FROM (SELECT {mapped} FROM {source}) AS night "
                    "WHERE {ts} >= {start} AND {ts} < {end}").format(
        mapped=sql.SQL(", ").join(mapped), source=_from(spec), ts=ts,
        start=sql.Placeholder("start"), end=sql.Placeholder("end"))
    if labelled and spec.label.name in wanted:
        query += sql.SQL(" AND {label} IS NOT NULL").format(label=label)
    order = [ts, key] if spec.entity_key.name in wanted else [ts]
    return query + sql.SQL(" ORDER BY ") + sql.SQL(", ").join(order)


def _conninfo(conn: Connection) -> str:
    """The libpq connection string of an open psycopg connection, password included."""
    password = conn.info.password
    return make_conninfo(conn.info.dsn, password=password) if password else conn.info.dsn


@dataclass(frozen=True)
class PostgresReader:
    """Kind postgres: a psycopg connection's database, read with ADBC.

    The rows come through ADBC on a second connection to the same database, opened with the
    psycopg connection's own parameters: ADBC reads the binary COPY format into Arrow in C++,
    where psycopg would build a Python object per value. The night's parameters are bound by
    psycopg's client-side binding (ClientCursor.mogrify: values adapted and quoted by psycopg,
    never formatted into the text by hand), since the query then runs on the other driver.
    Binary timestamps are UTC instants, so the session's TimeZone and DateStyle cannot change
    a snapshot.
    """

    conn: Connection

    def source_columns(self, spec: DatasetSpec, day: dt.date | None = None) -> dict[str, str | None]:
        return source_columns(self.conn, spec, day)

    def read_window(self, spec: DatasetSpec, day: dt.date, *, labelled: bool = False) -> pa.Table:
        with self.stream_window(spec, day, labelled=labelled) as batches:
            return batches.read_all()

    @contextmanager
    def stream_window(self, spec: DatasetSpec, day: dt.date, *,
                      labelled: bool = False) -> Iterator[pa.RecordBatchReader]:
        """The night as ADBC hands it over, batch by batch, already in (timestamp, entity key) order (the
        server sorts): a snapshot written from it never holds the whole night (snapshot.take_snapshot)."""
        composed = window_query(spec, day, labelled, source_columns(self.conn, spec, day))
        with ClientCursor(self.conn) as binder:
            query = binder.mogrify(composed, window_parameters(spec, day))
        with adbc.connect(_conninfo(self.conn)) as reader, reader.cursor() as cur:
            cur.execute(query)
            yield cur.fetch_record_batch()


# --- The mapping in Arrow (kinds sql and files) -----------------------------------------------------

# Field metadata that makes snapshot.normalise read a text column as PostgreSQL reads a numeric: an exact
# decimal of the scale its values need (one rule for `cast: numeric`, whatever the source).
NUMERIC_TEXT = {b"POSTGRESQL:type": b"numeric"}
_ARROW_CASTS = {"date": pa.date32(), "timestamp": pa.timestamp("us"), "timestamptz": pa.timestamp("us", "UTC"),
                "integer": pa.int32(), "bigint": pa.int64(), "float": pa.float64(), "text": pa.string()}
_UTC = pa.timestamp("us", "UTC")


def spec_type(spec: DatasetSpec, name: str) -> pa.DataType:
    """The Arrow type a spec column has when the source cannot tell (an all-null column, an empty night)."""
    if name == spec.timestamp:
        return _UTC
    if name == spec.entity_key.name:
        return pa.string() if spec.entity_key.type == "text" else pa.int64()
    if name == spec.label.name:
        task = getattr(spec, "task", "binary")
        return {"multiclass": pa.string(), "regression": pa.float64()}.get(task, pa.int64())
    kinds = {f.name: f.type for f in spec.features}
    return pa.string() if kinds.get(name) == "categorical" else pa.float64()


def _text_column(spec: DatasetSpec, name: str) -> bool:
    """A spec column whose values are text (read a CSV's '01' as '01', never as the number 1)."""
    return spec_type(spec, name) == pa.string() and name != spec.timestamp


def _cast(column: pa.ChunkedArray, cast: str, name: str) -> tuple[pa.ChunkedArray, dict | None]:
    """source.columns' cast in Arrow: (the column, the field metadata it needs)."""
    if cast == "numeric":
        if pa.types.is_decimal(column.type):
            return column, None
        return column.cast(pa.string()), NUMERIC_TEXT
    target = _ARROW_CASTS[cast]
    try:
        if pa.types.is_timestamp(target):
            return _cast_time(column, target, name), None
        if pa.types.is_floating(column.type) and pa.types.is_integer(target):
            column = pc.round(column, round_mode="half_to_even")  # as PostgreSQL's float -> integer
        return column.cast(target), None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise _schema_error(f"source column of {name!r}: cannot cast {column.type} to {cast}: {exc}") from exc


def _cast_time(column: pa.ChunkedArray, target: pa.DataType, name: str) -> pa.ChunkedArray:
    """To timestamp (naive) or timestamptz: text parsed as ISO-8601; a naive time made timestamptz is UTC."""
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return _parse_time(column.cast(pa.string()), name, aware=target.tz is not None)
    if target.tz and pa.types.is_timestamp(column.type) and not column.type.tz:
        return pc.assume_timezone(column.cast(pa.timestamp("us"), safe=False), "UTC")
    return column.cast(target, safe=False)


def _parse_time(column: pa.ChunkedArray, name: str, *, aware: bool) -> pa.ChunkedArray:
    """ISO-8601 text as timestamps: with a zone offset (or Z) as UTC instants, else naive (local time)."""
    try:
        return column.cast(_UTC)
    except pa.ArrowInvalid:
        try:
            naive = column.cast(pa.timestamp("us"))
        except pa.ArrowInvalid as exc:
            raise _schema_error(f"source column of {name!r}: its text is not an ISO-8601 date or time: {exc}") from exc
        return pc.assume_timezone(naive, "UTC") if aware else naive


def _instants(column: pa.ChunkedArray, zone: str, name: str) -> pa.ChunkedArray:
    """The timestamp column as UTC instants: a date or a time without zone is local time in `zone`."""
    kind = column.type
    if pa.types.is_null(kind):
        return column.cast(_UTC)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        column = _parse_time(column.cast(pa.string()), name, aware=False)
        kind = column.type
    if pa.types.is_date(kind):
        column, kind = column.cast(pa.timestamp("us")), pa.timestamp("us")
    if not pa.types.is_timestamp(kind):
        raise _schema_error(f"source column of the timestamp {name!r} is {kind}, not a date or time")
    if kind.tz:
        return column.cast(_UTC, safe=False)
    local = pc.assume_timezone(column.cast(pa.timestamp("us"), safe=False), zone, ambiguous="latest",
                               nonexistent="latest")  # as PostgreSQL's AT TIME ZONE, near enough at a DST change
    return local.cast(_UTC)


def arrow_window(spec: DatasetSpec, day: dt.date, labelled: bool, rows: pa.Table) -> pa.Table:
    """The night's rows of `rows` (a source's spec columns, named as in the spec, as stored): each cast
    (source.columns), the timestamp as UTC instants (local time in source.timezone), only the window's
    rows (labelled: with a label), in (timestamp, entity key) order; an all-null column gets its spec type."""
    start, end = spec.source.day_bounds(day)
    fields, columns = [], []
    for name in rows.column_names:
        column, cast = rows.column(name), spec.source.column(name)[1]
        metadata = None
        if cast:
            column, metadata = _cast(column, cast, name)
        if name == spec.timestamp:
            column = _instants(column, spec.source.timezone, name)
        if pa.types.is_null(column.type):
            column = column.cast(spec_type(spec, name))
        fields.append(pa.field(name, column.type, metadata=metadata))
        columns.append(column)
    table = pa.Table.from_arrays(columns, schema=pa.schema(fields))
    ts = table.column(spec.timestamp)
    keep = pc.and_(pc.greater_equal(ts, pa.scalar(start, _UTC)), pc.less(ts, pa.scalar(end, _UTC)))
    if labelled and spec.label.name in table.column_names:
        keep = pc.and_(keep, pc.is_valid(table.column(spec.label.name)))
    table = table.filter(pc.fill_null(keep, False))
    order = [(c, "ascending") for c in (spec.timestamp, spec.entity_key.name) if c in table.column_names]
    return pa.Table.from_arrays(table.sort_by(order).columns, schema=pa.schema(fields))


def empty_night(spec: DatasetSpec) -> pa.Table:
    """No rows, with the spec's columns in their spec types: validation then names the empty night."""
    return pa.schema([pa.field(c, spec_type(spec, c)) for c in spec.columns]).empty_table()


def _spec_source_names(spec: DatasetSpec, present: Sequence[str]) -> list[tuple[str, str]]:
    """(spec column, source column) of the spec's columns the source has; the timestamp is required."""
    found = {p.casefold(): p for p in present}
    wanted = [(c, found[spec.source.column(c)[0].casefold()]) for c in spec.columns
              if spec.source.column(c)[0].casefold() in found]
    if spec.timestamp not in dict(wanted):
        raise _missing_timestamp(spec, present)
    return wanted


# --- Any DB-API database (kind sql) ----------------------------------------------------------------

_NAMED = re.compile(r"%%|%\((\w+)\)s")


@dataclass
class SqlReader:
    """Kind sql: a DB-API connection (from an Airflow common-sql hook: runtime.source_reader).

    `quote` is the hook's escape format ('"{}"', or '`{}`' for MySQL, from the connection's extra
    escape_word_format); every identifier is quoted with it (spec identifiers are plain: letters, digits,
    underscore). `placeholder` is the driver's ('%s' or '?'). The database filters the night with its
    timestamp column between bounds a day wider than the window either side (the column's type and the
    session's zone are unknown here: a date, a time with or without zone, or ISO text all compare with
    them), and the exact window, the casts and local time are applied in Arrow, as for files.
    """

    conn: Any
    quote: str = '"{}"'
    placeholder: str = "%s"
    batch_rows: int = 50_000

    def _name(self, word: str) -> str:
        return self.quote.format(word)

    def _relation(self, spec: DatasetSpec, day: dt.date) -> tuple[str, list[Any]]:
        """The source relation and its parameters: the table, or the spec's query with its named
        parameters turned into the driver's placeholders (bound, never formatted)."""
        if not spec.source.query:
            return ".".join(self._name(p) for p in (spec.source.table or "").split(".")), []
        values = window_parameters(spec, day)
        params: list[Any] = []

        def bind(match: re.Match) -> str:
            if match.group(0) == "%%":
                return "%%" if self.placeholder == "%s" else "%"
            params.append(values[match.group(1)])
            return self.placeholder

        return f"({_NAMED.sub(bind, spec.source.query)}) source", params

    def _execute(self, query: str, params: list[Any]) -> Any:
        cur = self.conn.cursor()
        cur.execute(query, params) if params else cur.execute(query)
        return cur

    def source_columns(self, spec: DatasetSpec, day: dt.date | None = None) -> dict[str, str | None]:
        relation, params = self._relation(spec, day or dt.date(2000, 1, 1))
        cur = self._execute(f"SELECT * FROM {relation} WHERE 1 = 0", params)
        try:
            return {d[0]: None for d in cur.description}
        finally:
            cur.close()

    def read_window(self, spec: DatasetSpec, day: dt.date, *, labelled: bool = False) -> pa.Table:
        wanted = _spec_source_names(spec, list(self.source_columns(spec, day)))
        relation, params = self._relation(spec, day)
        start, end = spec.source.day_bounds(day)
        local = dt.datetime.combine(day, dt.time())
        low = min(local, start.replace(tzinfo=None)) - dt.timedelta(days=1)
        high = max(local + dt.timedelta(days=1), end.replace(tzinfo=None)) + dt.timedelta(days=1)
        ts = self._name(dict(wanted)[spec.timestamp])
        select = ", ".join(f"{self._name(src)} AS {self._name(name)}" for name, src in wanted)
        query = (f"SELECT {select} FROM {relation} WHERE {ts} >= {self.placeholder} "
                 f"AND {ts} < {self.placeholder}")
        cur = self._execute(query, [*params, low, high])
        try:
            names = [name for name, _ in wanted]
            rows = _rows_to_arrow(names, cur, self.batch_rows)
        finally:
            cur.close()
        return arrow_window(spec, day, labelled, rows)


def _rows_to_arrow(names: list[str], cur: Any, batch_rows: int) -> pa.Table:
    """A cursor's rows as Arrow, column by column; a column of mixed Python types becomes its text."""
    values: list[list[Any]] = [[] for _ in names]
    while batch := cur.fetchmany(batch_rows):
        for row in batch:
            for i, value in enumerate(row):
                values[i].append(value)
    return pa.table({name: _array(column) for name, column in zip(names, values)})


def _array(values: list[Any]) -> pa.Array:
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else str(v) for v in values], pa.string())


# --- Files under an fsspec path (kind files) -------------------------------------------------------


def partition_days(spec: DatasetSpec, day: dt.date) -> list[dt.date]:
    """The partitions a night may have rows in: its local date, and each UTC date its window spans (a
    local night in New York or Oslo spans two UTC dates; files may be partitioned by either)."""
    start, end = spec.source.day_bounds(day)
    last = (end - dt.timedelta(microseconds=1)).date()
    return sorted({day, start.date(), last})


@dataclass
class FilesReader:
    """Kind files: Parquet or CSV files under source.path, an fsspec URL template of the partition's date.

    Each read lists the partitions again (fsspec's listing cache is dropped first): a past night's
    labelled snapshot re-reads its partitions and sees labels written since. A partition that is not
    there holds no rows: a night without any is an empty night, which validation names.
    """

    storage_options: dict[str, Any] = field(default_factory=dict)

    def files(self, spec: DatasetSpec, day: dt.date) -> list[tuple[Any, str]]:
        """(filesystem, path) of every data file of the night's partitions, in a stable order."""
        import fsspec

        found: list[tuple[Any, str]] = []
        for partition in partition_days(spec, day):
            fs, path = fsspec.core.url_to_fs(spec.source.path.format(date=partition), **self.storage_options)
            fs.invalidate_cache()
            for hit in sorted(fs.glob(path) if any(c in path for c in "*?[") else [path]):
                if fs.isdir(hit):
                    found += [(fs, f) for f in sorted(fs.find(hit)) if _data_file(f)]
                elif fs.exists(hit) and _data_file(hit):
                    found.append((fs, hit))
        return found

    def _tables(self, spec: DatasetSpec, day: dt.date) -> list[tuple[pa.Table, list[str]]]:
        """Each file of the night: (its columns the spec reads, all its column names)."""
        read = _parquet_reader(spec) if spec.source.file_format == "parquet" else _csv_reader(spec)
        tables = []
        for fs, path in self.files(spec, day):
            with fs.open(path, "rb", compression="infer") as handle:
                tables.append(read(handle))
        return tables

    def source_columns(self, spec: DatasetSpec, day: dt.date | None = None) -> dict[str, str | None]:
        """The columns of the night's files (the union); {} when the night has no file."""
        return {name: None for _, names in self._tables(spec, day or dt.date.today()) for name in names}

    def read_window(self, spec: DatasetSpec, day: dt.date, *, labelled: bool = False) -> pa.Table:
        tables = self._tables(spec, day)
        if not tables:
            return empty_night(spec)
        wanted = _spec_source_names(spec, list(dict.fromkeys(n for _, names in tables for n in names)))
        parts = [t.select([s for _, s in wanted if s in t.column_names]) for t, _ in tables]
        rows = pa.concat_tables(parts, promote_options="permissive") if len(parts) > 1 else parts[0]
        rows = rows.select([s for _, s in wanted]).rename_columns([n for n, _ in wanted])
        return arrow_window(spec, day, labelled, rows)


def _data_file(path: str) -> bool:
    """Not a marker or hidden file (_SUCCESS, .crc, _metadata)."""
    return not path.rstrip("/").rsplit("/", 1)[-1].startswith(("_", "."))


def _parquet_reader(spec: DatasetSpec) -> Callable[[Any], tuple[pa.Table, list[str]]]:
    """A Parquet file's columns the spec reads (a wide file is not read whole), and all its names."""
    import pyarrow.parquet as pq

    wanted = {spec.source.column(c)[0].casefold() for c in spec.columns}

    def read(handle: Any) -> tuple[pa.Table, list[str]]:
        parquet = pq.ParquetFile(handle)
        names = parquet.schema_arrow.names
        return parquet.read(columns=[n for n in names if n.casefold() in wanted]), names

    return read


def _csv_reader(spec: DatasetSpec) -> Callable[[Any], tuple[pa.Table, list[str]]]:
    """A CSV read with the spec's text columns, and every column with a cast, as text ('01' stays '01';
    the cast reads the text as written) and an empty field as null."""
    import pyarrow.csv as pacsv

    text = {spec.source.column(c)[0]: pa.string() for c in spec.columns
            if _text_column(spec, c) or spec.source.column(c)[1]}
    options = pacsv.ConvertOptions(column_types=text, strings_can_be_null=True)

    def read(handle: Any) -> tuple[pa.Table, list[str]]:
        table = pacsv.read_csv(handle, convert_options=options)
        return table, table.column_names

    return read
