"""Warehouse I/O: the tables consumers read, written with COPY, one night at a time.

Plain psycopg2 on a connection the caller opens (the Airflow adapter gets it from a hook),
so the core stays testable without Airflow. One PostgreSQL schema per spec
(``spec.warehouse.schema``) holds:

- ``predictions``: one row per entity per score date, primary key (score_date, entity key);
- ``predictions_latest``: a view of the newest score date;
- ``pipeline_runs``: one row per logical date, the run's summary and decision.

Why it is written this way:
- Every identifier from the spec goes through ``sql.Identifier``: a schema such as
  ``Churn_X`` must be that schema, never ``churn_x``, and nothing is formatted into SQL.
- Consumers read with their own role (``spec.warehouse.reader_role``): the pipeline's role
  owns and writes the tables and grants that role USAGE and SELECT, never more, so a
  consumer's query can neither change a night nor lock a publish out.
- A night is replaced as a whole (DELETE that date + COPY, one transaction, under an
  advisory lock): a rerun never duplicates, a crash never leaves half a night.
- Rows stream Parquet -> Arrow record batches -> CSV (pyarrow) -> one COPY FROM STDIN,
  so memory stays bounded by one batch whatever the night's size; ``to_sql`` and row
  inserts are one to two orders of magnitude slower.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg2
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from psycopg2 import sql
from psycopg2.extras import Json

if TYPE_CHECKING:
    import pandas as pd

PREDICTIONS = "predictions"
PREDICTIONS_LATEST = "predictions_latest"
PIPELINE_RUNS = "pipeline_runs"
DECISIONS = ("skipped", "promoted", "rejected", "failed")
BATCH_ROWS = 65_536  # rows per Arrow batch: about 12 MB of CSV, the memory bound of a publish
COPY_READ_BYTES = 1 << 20  # how much psycopg2 asks the stream for at a time

_ARROW_KEY_TYPES = {"bigint": pa.int64(), "integer": pa.int32(), "text": pa.string()}

# Columns of `predictions` after score_date and the entity key: name, SQL type, Arrow type, comment.
_PREDICTION_COLUMNS: tuple[tuple[str, str, pa.DataType, str], ...] = (
    ("score", "double precision", pa.float64(), "Model output: probability of the positive class (or the predicted value)."),
    ("predicted_label", "smallint", pa.int16(), "Predicted class: 1 when score >= the spec's decision threshold, else 0."),
    ("model_name", "text", pa.string(), "MLflow registered model that produced the score."),
    ("model_version", "integer", pa.int32(), "MLflow model version that produced the score (the champion at scoring time)."),
    ("snapshot_sha256", "text", pa.string(), "SHA-256 of the input snapshot Parquet file the row was scored from."),
    ("dag_run_id", "text", pa.string(), "Airflow DAG run that scored and published the row."),
    # Written as naive UTC wall time, read under SET LOCAL TimeZone = 'UTC': pyarrow formats
    # tz-aware timestamps about 20x slower (most of a publish's time otherwise).
    ("scored_at", "timestamptz", pa.timestamp("us"), "When the row was scored."),
)
PREDICTION_INPUT_COLUMNS = tuple(c[0] for c in _PREDICTION_COLUMNS)  # plus the entity key

_RUN_COLUMNS: dict[str, str] = {
    "logical_date": "date PRIMARY KEY",
    "dag_run_id": "text",
    "rows_in": "bigint",
    "validation_passed": "boolean",
    "drift_share": "double precision",
    "retrain_reason": "text",
    "decision": "text CHECK (decision IN ({}))".format(", ".join(f"'{d}'" for d in DECISIONS)),
    "champion_version": "integer",
    "challenger_version": "integer",
    "champion_metric": "double precision",
    "challenger_metric": "double precision",
    "metric_name": "text",
    "rows_published": "bigint",
    "started_at": "timestamptz",
    "finished_at": "timestamptz",
    "details": "jsonb",
    "note": "text",
}
RUN_COLUMNS = tuple(_RUN_COLUMNS)

_DDL_LOCK = int.from_bytes(hashlib.sha256(b"nightshift.warehouse.ddl").digest()[:8], "big", signed=True)


# ---------------------------------------------------------------- helpers


def _table(spec: Any, name: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(spec.warehouse.schema), sql.Identifier(name))


def _key(spec: Any) -> tuple[str, str]:
    """The entity key's name and SQL type, refusing names that clash with our own columns."""
    name, kind = spec.entity_key.name, spec.entity_key.type
    if name == "score_date" or name in PREDICTION_INPUT_COLUMNS:
        raise ValueError(f"entity_key.name {name!r} clashes with a column of the predictions table")
    if kind not in _ARROW_KEY_TYPES:
        raise ValueError(f"entity_key.type {kind!r} is not one of {sorted(_ARROW_KEY_TYPES)}")
    return name, kind


def _schema_lock_id(schema: str) -> int:
    """A stable int4 per schema, so that locks on different schemas never wait on each other."""
    return int.from_bytes(hashlib.sha256(schema.encode()).digest()[:4], "big", signed=True)


def _table_exists(cur: Any, spec: Any, name: str) -> bool:
    cur.execute("SELECT to_regclass(format('%%I.%%I', %s::text, %s::text)) IS NOT NULL", (spec.warehouse.schema, name))
    return bool(cur.fetchone()[0])


# ---------------------------------------------------------------- DDL


def ensure_warehouse(conn: Any, spec: Any) -> None:
    """Create the schema, tables and view when missing; safe to run again and at the same time.

    CREATE ... IF NOT EXISTS alone still races (two sessions can both decide to create and
    one fails on a catalog unique index), so the DDL runs under a transaction-scoped
    advisory lock. An existing `predictions` table whose entity key differs from the spec
    is refused rather than silently kept.

    When everything exists already (every task after the first night) no DDL runs at all:
    CREATE OR REPLACE VIEW takes an exclusive lock on the view, and a publish must not queue
    behind a consumer's long query on predictions_latest.

    With ``warehouse.reader_role`` set, that role gets read access (see _grant_read); a
    role that does not exist is refused before anything is created.
    """
    key_name, key_type = _key(spec)
    reader = _reader_role(conn, spec)
    with conn, conn.cursor() as cur:
        ready = all(_table_exists(cur, spec, name) for name in (PREDICTIONS, PREDICTIONS_LATEST, PIPELINE_RUNS))
        if ready and (reader is None or _reader_can_read(cur, spec, reader)):
            _check_key_column(cur, spec, key_name, key_type)
            return
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK,))
        if ready:
            _check_key_column(cur, spec, key_name, key_type)
        else:
            cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(spec.warehouse.schema)))
            _create_predictions(cur, spec, key_name, key_type)
            _check_key_column(cur, spec, key_name, key_type)
            _create_latest_view(cur, spec, key_name)
            _create_runs(cur, spec)
        if reader is not None:
            _grant_read(cur, spec, reader)


def _reader_role(conn: Any, spec: Any) -> str | None:
    """spec.warehouse.reader_role, checked against the server: it must exist, and be neither
    the role the pipeline writes with nor a superuser (either could write)."""
    reader = getattr(spec.warehouse, "reader_role", None)
    if reader is None:
        return None
    with conn, conn.cursor() as cur:
        cur.execute("SELECT rolsuper, rolname = current_user FROM pg_roles WHERE rolname = %s", (reader,))
        row = cur.fetchone()
    setting = f"warehouse.reader_role of spec {spec.name!r}"
    if row is None:
        raise ValueError(f"{setting}: role {reader!r} does not exist on the warehouse server; "
                         f"create it (CREATE ROLE \"{reader}\" LOGIN PASSWORD ...) or remove the setting")
    superuser, is_writer = row
    if is_writer:
        raise ValueError(f"{setting}: {reader!r} is the role the pipeline writes with; name a separate read-only role")
    if superuser:
        raise ValueError(f"{setting}: {reader!r} is a superuser, which can write anything; name a read-only role")
    return reader


def _reader_can_read(cur: Any, spec: Any, reader: str) -> bool:
    """Whether the reader already has every grant _grant_read gives (so nothing needs to run)."""
    cur.execute(
        """
        SELECT has_schema_privilege(%(role)s, n.oid, 'USAGE')
           AND bool_and(has_table_privilege(%(role)s, c.oid, 'SELECT'))
           AND EXISTS (
               SELECT 1 FROM pg_default_acl d, aclexplode(d.defaclacl) a
               WHERE d.defaclnamespace = n.oid AND d.defaclrole = (SELECT oid FROM pg_roles WHERE rolname = current_user)
                 AND d.defaclobjtype = 'r' AND a.privilege_type = 'SELECT'
                 AND a.grantee = (SELECT oid FROM pg_roles WHERE rolname = %(role)s))
        FROM pg_namespace n JOIN pg_class c ON c.relnamespace = n.oid
        WHERE n.nspname = %(schema)s AND c.relname = ANY(%(names)s)
        GROUP BY n.oid
        """,
        {"role": reader, "schema": spec.warehouse.schema, "names": [PREDICTIONS, PREDICTIONS_LATEST, PIPELINE_RUNS]},
    )
    row = cur.fetchone()
    return bool(row and row[0])


def _grant_read(cur: Any, spec: Any, reader: str) -> None:
    """For the reader role: USAGE on the schema, SELECT on every table and view in it (the
    three relations, and the audit table when it exists), and SELECT on those the writer
    creates there later (default privileges). Nothing else: no write, no DDL, no row locks.

    Idempotent (GRANT of a held privilege is a no-op); run under the DDL advisory lock, since
    two sessions updating the same ACL at once fail with "tuple concurrently updated".
    A GRANT by a role that does not own the tables only warns, so the result is checked.
    """
    role, schema = sql.Identifier(reader), sql.Identifier(spec.warehouse.schema)
    cur.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, role))
    cur.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(schema, role))
    cur.execute(sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT SELECT ON TABLES TO {}").format(schema, role))
    if not _reader_can_read(cur, spec, reader):
        raise ValueError(
            f"warehouse.reader_role of spec {spec.name!r}: could not grant {reader!r} read access to schema "
            f"{spec.warehouse.schema!r}: the pipeline's role must own its schema and tables")


def _create_predictions(cur: Any, spec: Any, key_name: str, key_type: str) -> None:
    table = _table(spec, PREDICTIONS)
    columns = [
        sql.SQL("score_date date NOT NULL"),
        sql.SQL("{} {} NOT NULL").format(sql.Identifier(key_name), sql.SQL(key_type)),
        *(sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t, _, _ in _PREDICTION_COLUMNS),
        sql.SQL("PRIMARY KEY (score_date, {})").format(sql.Identifier(key_name)),
    ]
    cur.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(table, sql.SQL(", ").join(columns)))
    comments = {
        "score_date": "The night the row was scored for (the DAG run's logical date); one partition per date.",
        key_name: f"Entity key ({key_name}, from the dataset spec); unique within a score_date.",
        **{n: c for n, _, _, c in _PREDICTION_COLUMNS},
    }
    cur.execute(sql.SQL("COMMENT ON TABLE {} IS {}").format(
        table, sql.Literal(f"Nightly batch predictions of dataset {spec.name}: one row per entity per score_date.")))
    for column, text in comments.items():
        cur.execute(sql.SQL("COMMENT ON COLUMN {}.{} IS {}").format(table, sql.Identifier(column), sql.Literal(text)))


def _check_key_column(cur: Any, spec: Any, key_name: str, key_type: str) -> None:
    cur.execute(
        "SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
        "WHERE a.attrelid = format('%%I.%%I', %s::text, %s::text)::regclass AND a.attname = %s AND NOT a.attisdropped",
        (spec.warehouse.schema, PREDICTIONS, key_name),
    )
    row = cur.fetchone()
    if row is None or row[0] != key_type:
        found = "no such column" if row is None else row[0]
        raise ValueError(
            f"{spec.warehouse.schema}.{PREDICTIONS} exists with a different entity key: "
            f"spec says {key_name} {key_type}, table has {found}"
        )


def _create_latest_view(cur: Any, spec: Any, key_name: str) -> None:
    columns = sql.SQL(", ").join(
        sql.Identifier(c) for c in ("score_date", key_name, *PREDICTION_INPUT_COLUMNS)
    )
    table = _table(spec, PREDICTIONS)
    view = _table(spec, PREDICTIONS_LATEST)
    cur.execute(sql.SQL(
        "CREATE OR REPLACE VIEW {view} AS SELECT {columns} FROM {table} "
        "WHERE score_date = (SELECT max(score_date) FROM {table})"
    ).format(view=view, columns=columns, table=table))
    cur.execute(sql.SQL("COMMENT ON VIEW {} IS {}").format(
        view, sql.Literal("The predictions of the newest score_date only.")))


def _create_runs(cur: Any, spec: Any) -> None:
    table = _table(spec, PIPELINE_RUNS)
    columns = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in _RUN_COLUMNS.items()
    )
    cur.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(table, columns))
    cur.execute(sql.SQL("COMMENT ON TABLE {} IS {}").format(
        table, sql.Literal(f"One row per nightly run of dataset {spec.name}: inputs, checks, decision, output.")))


# ---------------------------------------------------------------- predictions


def replace_partition(conn: Any, spec: Any, score_date: dt.date, predictions_path: str | Path) -> int:
    """Replace one score_date's rows with those of a Parquet file, all or nothing; returns rows written.

    One transaction: an advisory lock on (schema, date) so two publishes of the same night
    queue instead of colliding on the primary key, DELETE of the date, then a single COPY fed
    batch by batch. Any error rolls back (the previous rows stay) and is re-raised.
    scored_at may be tz-aware (any zone) or naive UTC; the session's TimeZone does not matter.
    Needs ensure_warehouse() to have run.
    """
    key_name, _ = _key(spec)
    parquet = pq.ParquetFile(predictions_path, pre_buffer=False)  # opened first: a missing file fails before any DELETE
    columns = (key_name, *PREDICTION_INPUT_COLUMNS)
    missing = [c for c in columns if c not in parquet.schema_arrow.names]
    if missing:
        raise ValueError(f"{predictions_path}: missing column(s) {missing}")
    target = _arrow_schema(spec)
    copy = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv)").format(
        _table(spec, PREDICTIONS), sql.SQL(", ").join(sql.Identifier(c) for c in ("score_date", *columns))
    )
    stream = _CsvStream(_csv_chunks(parquet, columns, target, score_date))
    try:
        with conn, conn.cursor() as cur:
            lock = (_schema_lock_id(spec.warehouse.schema), score_date.toordinal())
            cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", lock)
            cur.execute("SET LOCAL TimeZone = 'UTC'")  # naive timestamps in the CSV are UTC
            cur.execute(sql.SQL("DELETE FROM {} WHERE score_date = %s").format(_table(spec, PREDICTIONS)), (score_date,))
            cur.copy_expert(copy, stream, size=COPY_READ_BYTES)
    except psycopg2.Error as exc:
        if stream.error is not None:  # psycopg2 reports our own failure as QueryCanceled: raise the real one
            raise stream.error from exc
        raise
    return stream.rows


def _arrow_schema(spec: Any) -> pa.Schema:
    """The Arrow types the CSV is written from: casting first turns e.g. a bool label into 0/1."""
    key_name, key_type = _key(spec)
    return pa.schema([(key_name, _ARROW_KEY_TYPES[key_type]), *((n, t) for n, _, t, _ in _PREDICTION_COLUMNS)])


def _csv_chunks(
    parquet: pq.ParquetFile, columns: tuple[str, ...], target: pa.Schema, score_date: dt.date
) -> Iterator[tuple[pa.Buffer, int]]:
    """CSV bytes (no header) per record batch, with score_date prepended, and the batch's row count."""
    options = pa_csv.WriteOptions(include_header=False)
    for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=list(columns)):
        table = _conform(pa.Table.from_batches([batch]).select(list(columns)), target)
        table = table.add_column(0, "score_date", pa.repeat(score_date, table.num_rows))
        sink = pa.BufferOutputStream()  # Arrow memory, handed on without a copy
        pa_csv.write_csv(table, sink, options)
        yield sink.getvalue(), table.num_rows


def _conform(table: pa.Table, target: pa.Schema) -> pa.Table:
    """Cast to the target types; overflow stays an error, sub-microsecond time is truncated (PostgreSQL keeps us).

    A tz-aware timestamp becomes its UTC wall time; a naive one is taken to be UTC already.
    """
    arrays = [
        table.column(f.name).cast(f.type, safe=not pa.types.is_timestamp(f.type)) for f in target
    ]
    return pa.Table.from_arrays(arrays, schema=target)


class _CsvStream(io.RawIOBase):
    """A read-only file over CSV chunks made on demand, for copy_expert: one chunk in memory at a time."""

    def __init__(self, chunks: Iterator[tuple[pa.Buffer, int]]) -> None:
        super().__init__()
        self._chunks = chunks
        self._current = memoryview(b"")
        self._pos = 0
        self.rows = 0
        self.error: Exception | None = None

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while self._pos >= len(self._current):
            try:
                data, rows = next(self._chunks)
            except StopIteration:
                return b""
            except Exception as exc:
                self.error = exc
                raise
            self._current, self._pos = memoryview(data), 0
            self.rows += rows
        end = len(self._current) if size is None or size < 0 else self._pos + size
        out = bytes(self._current[self._pos:end])
        self._pos += len(out)
        return out


def published_predictions(conn: Any, spec: Any, score_date: dt.date) -> "pd.DataFrame":
    """Entity key and score published for one date (empty when none), for the realised-quality check.

    COPY TO STDOUT + pyarrow's CSV reader: several times faster than pd.read_sql, and the key
    keeps the spec's type (int64 for integer keys, strings for text keys).
    """
    key_name, key_type = _key(spec)
    types = {key_name: _ARROW_KEY_TYPES[key_type] if key_type == "text" else pa.int64(), "score": pa.float64()}
    buffer = io.BytesIO()
    with conn, conn.cursor() as cur:
        if _table_exists(cur, spec, PREDICTIONS):
            query = sql.SQL("COPY (SELECT {key}, score FROM {table} WHERE score_date = {day} ORDER BY {key}) "
                            "TO STDOUT WITH (FORMAT csv, HEADER true)").format(
                key=sql.Identifier(key_name), table=_table(spec, PREDICTIONS), day=sql.Literal(score_date))
            cur.copy_expert(query, buffer)
    if not buffer.getvalue():
        return pa.table({k: pa.array([], t) for k, t in types.items()}).to_pandas()
    buffer.seek(0)
    table = pa_csv.read_csv(buffer, convert_options=pa_csv.ConvertOptions(column_types=types))
    return table.to_pandas()


# ---------------------------------------------------------------- run history


def upsert_run(conn: Any, spec: Any, run: Mapping[str, Any]) -> None:
    """Insert or update the row of run["logical_date"], setting only the keys given.

    Tasks record what they know when they know it; a rerun of the same date overwrites its
    row instead of adding one. An unknown key is a ValueError (a typo must not vanish).
    `details` (a dict) is stored as jsonb and replaced whole, so a rerun drops stale entries.
    """
    unknown = [k for k in run if k not in _RUN_COLUMNS]
    if unknown:
        raise ValueError(f"upsert_run: unknown key {unknown[0]!r} (allowed: {', '.join(RUN_COLUMNS)})")
    if run.get("logical_date") is None:
        raise ValueError("upsert_run: 'logical_date' is required")
    names = list(run)
    values = [Json(v) if k == "details" and v is not None else v for k, v in run.items()]
    updates = [n for n in names if n != "logical_date"]
    conflict = (
        sql.SQL("DO UPDATE SET {}").format(sql.SQL(", ").join(
            sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(n)) for n in updates))
        if updates else sql.SQL("DO NOTHING")
    )
    query = sql.SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT (logical_date) {}").format(
        _table(spec, PIPELINE_RUNS),
        sql.SQL(", ").join(sql.Identifier(n) for n in names),
        sql.SQL(", ").join(sql.Placeholder() * len(names)),
        conflict,
    )
    with conn, conn.cursor() as cur:
        cur.execute(query, values)


def recent_row_counts(conn: Any, spec: Any, before: dt.date, days: int) -> list[int]:
    """rows_in of the last `days` validated runs before `before`, newest first ([] when none).

    The row-count norm compares tonight with recent good nights only: a night that failed
    validation must not drag the norm down. No table yet (first run) means no history.
    """
    with conn, conn.cursor() as cur:
        if not _table_exists(cur, spec, PIPELINE_RUNS):
            return []
        cur.execute(
            sql.SQL("SELECT rows_in FROM {} WHERE logical_date < %s AND validation_passed AND rows_in IS NOT NULL "
                    "ORDER BY logical_date DESC LIMIT %s").format(_table(spec, PIPELINE_RUNS)),
            (before, days),
        )
        return [int(r[0]) for r in cur.fetchall()]
