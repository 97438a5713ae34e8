"""Sources beyond PostgreSQL (issue 12, item 2): Parquet and CSV files under an fsspec path partitioned
by date, and any database with an Airflow common-sql hook (SQLite here, through its provider's hook).

Real components only: files written with pyarrow into tmp_path (and fsspec's memory:// filesystem), a
real SQLite database reached through the Airflow connection's own hook (runtime.source_reader), real
snapshots (take_snapshot) and real validation. The rows are one operational shape, wider than the
model and mapped by the spec (renamed, cast, local time in New York), so the snapshot of the same rows
is the same file whatever holds them.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import yaml

from nightshift_airflow import runtime  # plugins/ is on the path (tests/conftest.py)
from include.nightshift.artifacts import ArtifactStore
from include.nightshift.snapshot import SourceSchemaError, read_snapshot, take_snapshot
from include.nightshift.sources import FilesReader, SqlReader, partition_days
from include.nightshift.spec import SpecError, load_spec
from include.nightshift.validation import validate_snapshot
from orders_spec import CHURN, spec_file  # tests/unit/orders_spec.py

NIGHT = dt.date(2026, 3, 1)  # in New York: [2026-03-01 05:00Z, 2026-03-02 05:00Z), two UTC dates
NEW_YORK = ZoneInfo("America/New_York")

# (customer as text, local time placed (New York, no zone), amount as text, region, label or None)
ROWS = [
    ("1", "2026-02-28 23:59:59", "5.50", "SE", 0),  # the evening before: not the night's
    ("2", "2026-03-01 00:00:00", "10.25", "NO", 1),  # the night's first instant (05:00Z)
    ("3", "2026-03-01 12:00:00", "7", "SE", None),  # label not known yet
    ("4", "2026-03-01 23:30:00", "99.99", "NO", 1),  # 04:30Z on March 2: the UTC partition of March 2
    ("5", "2026-03-02 00:00:00", "1", "SE", 0),  # the next night's first instant
]
MAPPING = {
    "timezone": "America/New_York",
    "columns": {
        "customer_id": {"from": "cust_ref", "cast": "bigint"},
        "event_ts": {"from": "placed_at", "cast": "timestamp"},  # local time in source.timezone
        "amount": {"from": "amount_txt", "cast": "numeric"},
        "country": {"from": "group"},  # a reserved word in SQL: quoted by the hook's escape format
        "churned": {"from": "churn_flag"},
    },
}


def source_table(rows: list[tuple] = ROWS) -> pa.Table:
    """The operational table as files hold it: extra columns, text numbers, a naive local timestamp."""
    return pa.table({
        "order_no": pa.array(range(100, 100 + len(rows)), pa.int64()),  # extra
        "cust_ref": [r[0] for r in rows],
        "placed_at": pa.array([dt.datetime.fromisoformat(r[1]) for r in rows], pa.timestamp("us")),
        "amount_txt": [r[2] for r in rows],
        "group": [r[3] for r in rows],
        "churn_flag": pa.array([r[4] for r in rows], pa.int64()),
        "internal_note": ["not for the model"] * len(rows),  # extra
    })


def utc_day(local: str) -> dt.date:
    return dt.datetime.fromisoformat(local).replace(tzinfo=NEW_YORK).astimezone(dt.timezone.utc).date()


def write_partitions(root: str, layout: str, fmt: str, rows: list[tuple] = ROWS) -> str:
    """The rows split by their UTC date into `layout` (a template of the date) under fsspec URL `root`;
    returns the spec's path template."""
    fs, base = fsspec.core.url_to_fs(root)
    for day in sorted({utc_day(r[1]) for r in rows}):
        folder = f"{base}/{layout.format(date=day)}"
        fs.makedirs(folder, exist_ok=True)
        table = source_table([r for r in rows if utc_day(r[1]) == day])
        with fs.open(f"{folder}/part-0.{fmt}", "wb") as handle:
            (pq.write_table if fmt == "parquet" else pacsv.write_csv)(table, handle)
    return f"{root}/{layout}/*.{fmt}"


def files_spec(tmp_path: Path, path: str, **extra: Any):
    return load_spec(spec_file(tmp_path, {"kind": "files", "path": path, **MAPPING, **extra}))


def local_times(df: pd.DataFrame) -> list[str]:
    return [t.tz_convert(NEW_YORK).strftime("%Y-%m-%d %H:%M:%S") for t in df["event_ts"]]


def test_a_parquet_folder_by_date_gives_the_local_night_from_two_utc_partitions(tmp_path):
    path = write_partitions(str(tmp_path / "orders"), "{date:%Y-%m-%d}", "parquet")
    spec = files_spec(tmp_path, path)
    assert partition_days(spec, NIGHT) == [NIGHT, NIGHT + dt.timedelta(days=1)]
    store = ArtifactStore(tmp_path / "store")
    ref = take_snapshot(FilesReader(), store, spec, NIGHT)
    df = read_snapshot(store, ref)
    assert list(df.columns) == spec.columns  # only the spec's columns, renamed, in the spec's order
    assert local_times(df) == ["2026-03-01 00:00:00", "2026-03-01 12:00:00", "2026-03-01 23:30:00"]
    assert df["customer_id"].tolist() == [2, 3, 4] and str(df["customer_id"].dtype) == "int64"
    assert df["amount"].tolist() == [10.25, 7.0, 99.99] and df["country"].tolist() == ["NO", "SE", "NO"]
    with store.open(ref.url) as handle:
        schema = pq.read_schema(handle)
    assert str(schema.field("amount").type) == "decimal128(38, 2)"  # numeric: exact, as PostgreSQL's cast
    assert str(schema.field("event_ts").type) == "timestamp[us, tz=UTC]"
    labelled = read_snapshot(store, take_snapshot(FilesReader(), store, spec, NIGHT, labelled=True))
    assert labelled["customer_id"].tolist() == [2, 4]  # the label of customer 3 is not known yet
    assert validate_snapshot(df, spec, day=NIGHT).success


def test_the_snapshot_is_the_same_file_whatever_holds_the_rows(tmp_path):
    """Parquet by date folder, CSV in hive-style dt= folders, and Parquet on fsspec's memory://."""
    refs = {}
    for fmt, root, layout in (("parquet", str(tmp_path / "p"), "{date:%Y-%m-%d}"),
                              ("csv", f"file://{tmp_path / 'c'}", "dt={date}"),
                              ("parquet", f"memory://{tmp_path.name}/m", "day={date:%Y%m%d}")):
        spec = files_spec(tmp_path, write_partitions(root, layout, fmt), format=fmt)
        assert spec.source.file_format == fmt
        refs[root] = take_snapshot(FilesReader(), ArtifactStore(tmp_path / "store"), spec, NIGHT)
    assert len({ref.sha256 for ref in refs.values()}) == 1, refs
    assert {ref.rows for ref in refs.values()} == {3}


def test_a_missing_partition_is_an_empty_night_that_validation_names(tmp_path):
    path = write_partitions(str(tmp_path / "orders"), "{date:%Y-%m-%d}", "parquet")
    spec = files_spec(tmp_path, path)
    store = ArtifactStore(tmp_path / "store")
    night = dt.date(2026, 4, 1)  # no folder for it (nor for the next UTC date)
    ref = take_snapshot(FilesReader(), store, spec, night)
    df = read_snapshot(store, ref)
    assert ref.rows == 0 and list(df.columns) == spec.columns
    result = validate_snapshot(df, spec, day=night)
    assert not result.success
    assert "expect_table_row_count_to_be_between" in result.message() and "0 rows" in result.message(), \
        result.message()


def test_a_labelled_past_night_rereads_its_partitions_and_sees_late_labels(tmp_path):
    unlabelled = [r[:4] + (None,) for r in ROWS]
    path = write_partitions(str(tmp_path / "orders"), "{date:%Y-%m-%d}", "parquet", unlabelled)
    spec = files_spec(tmp_path, path)
    store, reader = ArtifactStore(tmp_path / "store"), FilesReader()
    assert take_snapshot(reader, store, spec, NIGHT, labelled=True).rows == 0
    write_partitions(str(tmp_path / "orders"), "{date:%Y-%m-%d}", "parquet")  # the labels arrive (rewritten)
    assert take_snapshot(reader, store, spec, NIGHT, labelled=True).rows == 2


def test_a_files_source_without_the_timestamp_column_is_a_schema_error(tmp_path):
    path = write_partitions(str(tmp_path / "orders"), "{date:%Y-%m-%d}", "parquet")
    mapping = {**MAPPING, "columns": {**MAPPING["columns"], "event_ts": {"from": "placed"}}}
    spec = load_spec(spec_file(tmp_path, {"kind": "files", "path": path, **mapping}))
    with pytest.raises(SourceSchemaError, match="no column 'placed'"):
        take_snapshot(FilesReader(), ArtifactStore(tmp_path / "store"), spec, NIGHT)


@pytest.mark.parametrize(("source", "message"), [
    ({"kind": "files"}, "source.path: is required by source.kind files (an fsspec URL with the partition's {date})"),
    ({"kind": "files", "path": "/data/orders/*.parquet"},
     "source.path: '/data/orders/*.parquet' does not hold the partition's date: put {date} or {date:%Y-%m-%d} "
     "where the date is in the path (e.g. .../dt={date}/*.parquet)"),
    ({"kind": "files", "path": "/data/{day}/*.parquet"},
     "source.path: '/data/{day}/*.parquet' is not a path template of the partition's date: use {date} or "
     "{date:%Y-%m-%d} and no other {...} ('day')"),
    ({"kind": "files", "path": "/data/{date}/*.csv", "table": "orders"},
     "source.table: a files source reads source.path, not a table"),
    ({"table": "orders", "path": "/data/{date}/*.csv"},
     "source.path: is for source.kind files only (this source is kind postgres)"),
    ({"kind": "sql", "connection_id": "x"},
     "source.table: give exactly one of source.table and source.query, got neither"),
    ({"kind": "duckdb", "table": "orders"}, "source.kind: must be one of ['files', 'postgres', 'sql'], got 'duckdb'"),
])
def test_a_bad_source_kind_is_refused_naming_key_and_value(tmp_path, source, message):
    with pytest.raises(SpecError) as caught:
        load_spec(spec_file(tmp_path, source))
    assert str(caught.value) == f"orders.yaml: {message}"


# --- kind sql: SQLite through its Airflow provider's hook --------------------------------------------


@pytest.fixture
def sqlite_source(tmp_path, monkeypatch) -> str:
    """A SQLite database holding the rows (text timestamps, as SQLite stores them), and an Airflow
    connection to it in the environment, as a deployment declares it."""
    db = tmp_path / "orders.db"
    with sqlite3.connect(db) as conn:
        conn.execute('CREATE TABLE "order" (order_no INTEGER, cust_ref TEXT, placed_at TEXT, amount_txt TEXT, '
                     '"group" TEXT, churn_flag INTEGER, internal_note TEXT)')
        conn.executemany('INSERT INTO "order" VALUES (?, ?, ?, ?, ?, ?, ?)',
                         [(100 + i, *row, "not for the model") for i, row in enumerate(ROWS)])
    monkeypatch.setenv("AIRFLOW_CONN_ORDERS_SQLITE", json.dumps({"conn_type": "sqlite", "host": str(db)}))
    return "orders_sqlite"


def sql_spec(tmp_path: Path, connection: str, **source: Any):
    return load_spec(spec_file(tmp_path, {"kind": "sql", "connection_id": connection, **MAPPING, **source}))


def test_a_sqlite_table_through_its_airflow_hook_gives_the_same_snapshot_as_the_files(tmp_path, sqlite_source):
    spec = sql_spec(tmp_path, sqlite_source, table="order")  # a reserved word: quoted, or SQLite refuses it
    store = ArtifactStore(tmp_path / "store")
    with runtime.source_reader(spec) as reader:
        assert isinstance(reader, SqlReader) and reader.placeholder == "?"
        ref = take_snapshot(reader, store, spec, NIGHT)
        labelled = take_snapshot(reader, store, spec, NIGHT, labelled=True)
    df = read_snapshot(store, ref)
    assert local_times(df) == ["2026-03-01 00:00:00", "2026-03-01 12:00:00", "2026-03-01 23:30:00"]
    assert df["customer_id"].tolist() == [2, 3, 4] and labelled.rows == 2
    files = files_spec(tmp_path, write_partitions(str(tmp_path / "p"), "{date}", "parquet"))
    assert take_snapshot(FilesReader(), store, files, NIGHT).sha256 == ref.sha256


def test_a_sqlite_query_is_bound_with_the_nights_parameters_in_the_drivers_style(tmp_path, sqlite_source):
    query = ('SELECT * FROM "order" WHERE substr(placed_at, 1, 10) = %(day)s '
             "AND internal_note LIKE 'not%%'")  # a literal %: %% in the spec, % for the qmark driver
    spec = sql_spec(tmp_path, sqlite_source, query=query)
    with runtime.source_reader(spec) as reader:
        ref = take_snapshot(reader, ArtifactStore(tmp_path / "store"), spec, NIGHT)
    assert ref.rows == 3


def test_a_sqlite_source_without_the_timestamp_column_is_a_schema_error(tmp_path, sqlite_source):
    mapping = {**MAPPING["columns"], "event_ts": {"from": "placed"}}
    spec = load_spec(spec_file(tmp_path, {"kind": "sql", "connection_id": sqlite_source, "table": "order",
                                          **{**MAPPING, "columns": mapping}}))
    with runtime.source_reader(spec) as reader, pytest.raises(SourceSchemaError, match="no column 'placed'"):
        take_snapshot(reader, ArtifactStore(tmp_path / "store"), spec, NIGHT)


def test_the_runtime_gives_a_files_source_its_reader(tmp_path):
    spec = files_spec(tmp_path, str(tmp_path / "{date}" / "*.parquet"))
    with runtime.source_reader(spec) as reader:
        assert isinstance(reader, FilesReader)


# --- PostgreSQL: the default reader and the generic common-sql path agree with the files ----------------


@pytest.fixture
def pg_orders(pg_conn, pg_uri, monkeypatch) -> str:
    """The rows in the test PostgreSQL (a naive local timestamp, text numbers), and an Airflow connection."""
    import local_stack  # scripts/, on the path (tests/conftest.py)

    with pg_conn.transaction(), pg_conn.cursor() as cur:
        cur.execute('CREATE TABLE "order" (order_no integer, cust_ref text, placed_at timestamp, amount_txt text, '
                    '"group" text, churn_flag smallint, internal_note text)')
        for i, (customer, placed, amount, group, label) in enumerate(ROWS):
            cur.execute('INSERT INTO "order" VALUES (%s, %s, %s, %s, %s, %s, %s)',
                        (100 + i, customer, dt.datetime.fromisoformat(placed), amount, group, label, "x"))
    dbname = pg_uri.partition("?")[0].rsplit("/", 1)[-1]
    monkeypatch.setenv("AIRFLOW_CONN_ORDERS_PG", local_stack.connection_json(pg_uri, dbname))
    return "orders_pg"


@pytest.mark.parametrize("kind", ["postgres", "sql"])
def test_postgresql_by_either_reader_gives_the_files_snapshot(tmp_path, pg_orders, kind):
    """kind postgres (ADBC, the mapping in SQL) and kind sql (the Postgres provider's hook as a plain
    DbApiHook: %s placeholders, the mapping in Arrow) take the same snapshot as the Parquet files."""
    from include.nightshift.sources import PostgresReader

    spec = load_spec(spec_file(tmp_path, {"kind": kind, "connection_id": pg_orders, "table": "order", **MAPPING}))
    store = ArtifactStore(tmp_path / "store")
    with runtime.source_reader(spec) as reader:
        assert isinstance(reader, PostgresReader if kind == "postgres" else SqlReader)
        ref = take_snapshot(reader, store, spec, NIGHT)
    files = files_spec(tmp_path, write_partitions(str(tmp_path / "p"), "{date}", "parquet"))
    assert (ref.rows, ref.sha256) == (3, take_snapshot(FilesReader(), store, files, NIGHT).sha256)


# --- spec check of a source that is not a PostgreSQL table: its nights read as the pipeline reads them ---

CHECKED = dt.date(2026, 3, 10)  # the newest night of the checked source


def week_of_rows(last: dt.date = CHECKED, *, change: Any = None) -> list[tuple]:
    """Three orders on each of the 8 nights up to `last` (local time), labelled up to the night before it
    (label.delay_days 1); `change(day, row)` may alter a row."""
    rows = []
    for back in range(8):
        day = last - dt.timedelta(days=back)
        for n, hour in enumerate((1, 12, 22)):
            row = (f"{day:%m%d}{n}", f"{day} {hour:02d}:00:00", f"{10 + n}.5", ("NO", "SE")[n % 2],
                   None if day == last else n % 2)
            rows.append(change(day, row) if change else row)
    return rows


def check_files(tmp_path: Path, rows: list[tuple]):
    from include.nightshift.source_check import check_by_reading

    spec = files_spec(tmp_path, write_partitions(str(tmp_path / "orders"), "{date:%Y-%m-%d}", "parquet", rows))
    return check_by_reading(FilesReader(), spec, today=CHECKED + dt.timedelta(days=3))


def test_spec_check_reads_a_files_source_night_by_night_and_finds_it_fits(tmp_path):
    report = check_files(tmp_path, week_of_rows())

    assert report.problems == []
    assert [n.day for n in report.nights] == [CHECKED - dt.timedelta(days=6 - i) for i in range(7)]  # walked back
    assert [n.rows for n in report.nights] == [3] * 7 and report.sample_rows == 21
    assert report.nights[-1].non_null["churned"] == 0 and report.nights[-2].non_null["churned"] == 3


def test_spec_check_of_a_files_source_lists_every_problem_at_once(tmp_path):
    def change(day: dt.date, row: tuple) -> tuple:
        if day == CHECKED - dt.timedelta(days=1):
            return row[:2] + ("5000",) + ("DK",) + (None,)  # out of range, undeclared, and its label late
        return row

    problems = {(p.key, p.column): p.message for p in check_files(tmp_path, week_of_rows(change=change)).problems}

    assert set(problems) == {("features[0].max", "amount"), ("features[1].categories", "country"),
                             ("label.delay_days", "churned")}, problems
    assert problems[("features[0].max", "amount")] == "3 sampled rows outside [0, 1000]: values seen from 10.5 to 5000"
    assert problems[("features[1].categories", "country")].startswith("values not declared: 'DK' (3 rows); 14.3%")
    assert "2026-03-09 have no label" in problems[("label.delay_days", "churned")]


def test_spec_check_names_a_value_the_cast_cannot_read_as_the_nightly_run_would(tmp_path):
    def change(day: dt.date, row: tuple) -> tuple:
        return row[:2] + ("ten",) + row[3:] if day == CHECKED - dt.timedelta(days=2) else row

    mapping = {**MAPPING, "columns": {**MAPPING["columns"], "amount": {"from": "amount_txt", "cast": "float"}}}
    path = write_partitions(str(tmp_path / "orders"), "{date:%Y-%m-%d}", "parquet", week_of_rows(change=change))
    spec = load_spec(spec_file(tmp_path, {"kind": "files", "path": path, **mapping}))
    from include.nightshift.source_check import check_by_reading

    report = check_by_reading(FilesReader(), spec, today=CHECKED)
    assert [(p.key, p.message) for p in report.problems] == [
        ("source.columns", "source column of 'amount': cannot cast string to float: Failed to parse string: 'ten' "
                           "as a scalar of type double")], report.problems


def test_spec_check_on_the_command_line_reads_a_sqlite_table_through_its_airflow_hook(tmp_path, monkeypatch,
                                                                                      capsys):
    from include.nightshift import cli

    last = dt.date.today() - dt.timedelta(days=1)
    db = tmp_path / "orders.db"
    with sqlite3.connect(db) as conn:
        conn.execute('CREATE TABLE "order" (order_no INTEGER, cust_ref TEXT, placed_at TEXT, amount_txt TEXT, '
                     '"group" TEXT, churn_flag INTEGER, internal_note TEXT)')
        conn.executemany('INSERT INTO "order" VALUES (?, ?, ?, ?, ?, ?, ?)',
                         [(i, *row, "x") for i, row in enumerate(week_of_rows(last))])
    monkeypatch.setenv("AIRFLOW_CONN_ORDERS_SQLITE", json.dumps({"conn_type": "sqlite", "host": str(db)}))
    spec = spec_file(tmp_path, {"kind": "sql", "connection_id": "orders_sqlite", "table": "order", **MAPPING})

    assert cli.main(["spec", "check", str(spec)]) == 0
    out = capsys.readouterr().out
    assert f"table order, nights {last - dt.timedelta(days=6)}..{last}, 21 rows sampled" in out and "OK" in out, out
    monkeypatch.delenv("AIRFLOW_CONN_ORDERS_SQLITE")
    assert cli.main(["spec", "check", str(spec)]) == 2  # a connection nobody defined: named, not a traceback
    assert "connection 'orders_sqlite'" in capsys.readouterr().err


def test_a_value_the_cast_cannot_read_is_a_schema_error_naming_the_column(tmp_path):
    rows = [ROWS[1][:2] + ("ten",) + ROWS[1][3:]]  # a number that is not one
    path = write_partitions(str(tmp_path / "orders"), "{date}", "csv", rows)
    mapping = {**MAPPING, "columns": {**MAPPING["columns"], "amount": {"from": "amount_txt", "cast": "float"}}}
    spec = load_spec(spec_file(tmp_path, {"kind": "files", "path": path, **mapping}))
    with pytest.raises(SourceSchemaError, match="source column of 'amount': cannot cast string to float"):
        take_snapshot(FilesReader(), ArtifactStore(tmp_path / "store"), spec, NIGHT)


# --- one real DAG run over a files source ------------------------------------------------------------

DAG_RUN = '''
import datetime as dt, json, os, sys
import pandas as pd, pyarrow as pa, pyarrow.parquet as pq
import local_stack
specs, files, name = sys.argv[1], sys.argv[2], sys.argv[3]
server, _ = local_stack.start()  # Airflow configured before it is imported, as in the demo
from include.nightshift import demo_data
from include.nightshift.spec import load_spec
night = dt.date(2026, 3, 20)
for i in range(19):  # the window, the holdout and the night, one Parquet folder per date
    day = night - dt.timedelta(days=18 - i)
    rows = demo_data.generate_day(day, 600, 7, demo_data.DriftPlan())
    if day >= night:
        rows["churned"] = pd.array([None] * len(rows), dtype="Int64")  # tonight's labels are not known yet
    os.makedirs(f"{files}/dt={day}", exist_ok=True)
    pq.write_table(pa.Table.from_pandas(rows, preserve_index=False), f"{files}/dt={day}/part-0.parquet")
spec = load_spec(f"{specs}/{name}.yaml")
done = local_stack.NightRunner(spec.dag_id).run(night, {})
print(json.dumps({"state": str(getattr(done.dag_run, "state", None)), "log": str(done.log)}))
'''


@pytest.mark.dagrun
def test_a_night_of_the_dag_runs_on_a_files_source(tmp_path, pg_server_uri):
    """The operators read a kind-files spec through runtime.source_reader: snapshot, validate, train (cold
    start), promote and publish, from Parquet date folders (about 30 s here under load)."""
    import psycopg

    import local_stack

    name = f"files_{uuid.uuid4().hex[:8]}"  # its own DAG, model and warehouse schema on a shared server
    data = yaml.safe_load(CHURN.read_text())
    data.update(name=name, source={"kind": "files", "path": str(tmp_path / "files" / "dt={date}" / "*.parquet")})
    data["warehouse"]["schema"] = name
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / f"{name}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    root = CHURN.parents[2]
    env = {**os.environ, "NIGHTSHIFT_HOME": str(tmp_path / "home"), "NIGHTSHIFT_PG_URI": pg_server_uri,
           "NIGHTSHIFT_SPECS_DIR": str(tmp_path / "specs"), "NIGHTSHIFT_RETRY_DELAY_SECONDS": "1",
           "PYTHONPATH": ":".join(str(p) for p in (root, root / "scripts", root / "plugins"))}
    out = subprocess.run([sys.executable, "-c", DAG_RUN, str(tmp_path / "specs"), str(tmp_path / "files"), name],
                         env=env, cwd=root, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    run = json.loads(out.stdout.strip().splitlines()[-1])
    assert run["state"] == "success", Path(run["log"]).read_text()[-3000:]
    with psycopg.connect(local_stack.database_uri(pg_server_uri, "warehouse")) as conn:
        published = conn.execute(f'SELECT count(*), min(model_version) FROM "{name}".predictions').fetchone()
    assert published == (600, 1)
