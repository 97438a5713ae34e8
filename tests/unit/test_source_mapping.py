"""Source mapping (issue 12, item 1): a spec reads the columns it uses from a wider table, renamed and
cast, with its days in a local time zone, or from a query bound with the night's window.

Every test loads a spec file the way the DAG does (load_spec) and takes a real snapshot from the
test PostgreSQL (ADBC, the pipeline's own path), then checks the snapshot's content.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
import yaml

from include.nightshift.artifacts import ArtifactStore
from include.nightshift.snapshot import read_snapshot, take_snapshot
from include.nightshift.spec import SpecError, load_spec
from include.nightshift.training import row_days, split_train_holdout
from include.nightshift.validation import validate_snapshot
from orders_spec import CHURN, spec_file  # tests/unit/orders_spec.py

NIGHT = dt.date(2026, 3, 1)
NEW_YORK = ZoneInfo("America/New_York")

# A wider source than the model needs, shaped as an operational table: other names, text where the
# model wants numbers, a local (naive) timestamp and a date, and columns the spec never names.
ORDERS = """
CREATE TABLE public.raw_orders (
    order_no     integer,        -- extra
    cust_ref     text,           -- the entity key, as text
    placed_at    timestamp,      -- local time, no zone
    order_day    date,           -- local date
    order_day_txt text,          -- the same date as text
    amount_txt   text,           -- a number stored as text
    country      text,
    churn_flag   smallint,
    internal_note text           -- extra
)"""
# (customer, local time placed, amount, country, label); the night is 2026-03-01 in New York.
ROWS = [
    (1, "2026-02-28 23:59:59", "5.50", "SE", 0),  # the evening before: not the night's
    (2, "2026-03-01 00:00:00", "10.25", "NO", 1),  # the night's first instant
    (3, "2026-03-01 12:00:00", "7", "SE", 0),
    (4, "2026-03-01 23:30:00", "99.99", "NO", 1),  # 04:30 UTC on March 2: still the local night of March 1
    (5, "2026-03-02 00:00:00", "1", "SE", 0),  # the next night's first instant
]


MAPPED = {
    "table": "public.raw_orders",
    "timezone": "America/New_York",
    "columns": {
        "customer_id": {"from": "cust_ref", "cast": "bigint"},
        "event_ts": {"from": "placed_at"},  # a timestamp without time zone: local time in source.timezone
        "amount": {"from": "amount_txt", "cast": "numeric"},
        "churned": {"from": "churn_flag"},
    },
}


@pytest.fixture
def orders(pg_conn):
    with pg_conn.transaction(), pg_conn.cursor() as cur:
        cur.execute(ORDERS)
        for i, (customer, placed, amount, country, label) in enumerate(ROWS):
            local = dt.datetime.fromisoformat(placed)
            cur.execute("INSERT INTO raw_orders VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                        (100 + i, str(customer), local, local.date(), local.date().isoformat(), amount, country,
                         label, "not for the model"))
    return pg_conn


def _utc(local: str) -> pd.Timestamp:
    return pd.Timestamp(dt.datetime.fromisoformat(local).replace(tzinfo=NEW_YORK)).tz_convert("UTC")


def test_a_wider_table_is_read_renamed_cast_and_in_local_days(orders, tmp_path):
    spec = load_spec(spec_file(tmp_path, MAPPED))
    store = ArtifactStore(tmp_path / "store")
    ref = take_snapshot(orders, store, spec, NIGHT)
    df = read_snapshot(store, ref)
    assert list(df.columns) == spec.columns == ["customer_id", "event_ts", "amount", "country", "churned"]
    assert df["customer_id"].tolist() == [2, 3, 4] and df["customer_id"].dtype == "int64"  # text cast to bigint
    assert df["event_ts"].tolist() == [_utc(ROWS[i][1]) for i in (1, 2, 3)]  # timestamptz (UTC) in the snapshot
    assert str(df["event_ts"].dt.tz) == "UTC"
    assert df["amount"].tolist() == [10.25, 7.0, 99.99] and df["country"].tolist() == ["NO", "SE", "NO"]
    assert df["churned"].tolist() == [1, 0, 1]
    # The row placed at 23:30 local is 04:30 UTC the next day, and is still the night of March 1 downstream.
    assert df["event_ts"].iloc[-1] == pd.Timestamp("2026-03-02 04:30", tz="UTC")
    assert set(row_days(df, spec)) == {NIGHT}
    # Validation's exact column set holds for the mapped snapshot (the extra source columns never reach it),
    # and its timestamp window is the local day.
    result = validate_snapshot(df, spec, day=NIGHT, labelled=True)
    assert result.success, result.message()
    # The same source, the same bytes: the mapping is deterministic.
    assert take_snapshot(orders, store, spec, NIGHT) == ref


def test_the_next_local_night_starts_at_local_midnight(orders, tmp_path):
    spec = load_spec(spec_file(tmp_path, MAPPED))
    store = ArtifactStore(tmp_path / "store")
    before = read_snapshot(store, take_snapshot(orders, store, spec, NIGHT - dt.timedelta(days=1)))
    after = read_snapshot(store, take_snapshot(orders, store, spec, NIGHT + dt.timedelta(days=1)))
    assert before["customer_id"].tolist() == [1] and after["customer_id"].tolist() == [5]
    # The out-of-time split counts the same local days (holdout: the last holdout_days nights).
    rows = pd.concat([before, read_snapshot(store, take_snapshot(orders, store, spec, NIGHT)), after])
    train, holdout = split_train_holdout(rows, spec, NIGHT)
    assert sorted(holdout["customer_id"]) == [1, 2, 3, 4] and train.empty  # holdout_days 3: Feb 27 to Mar 1


def test_a_date_column_and_a_text_date_cast_to_date_are_local_midnights(orders, tmp_path):
    for column in ({"from": "order_day"}, {"from": "order_day_txt", "cast": "date"}):
        source = {**MAPPED, "timezone": "Europe/Oslo", "columns": {**MAPPED["columns"], "event_ts": column}}
        spec = load_spec(spec_file(tmp_path, source))
        store = ArtifactStore(tmp_path / "store")
        df = read_snapshot(store, take_snapshot(orders, store, spec, NIGHT))
        assert df["customer_id"].tolist() == [2, 3, 4], column
        # midnight in Oslo (UTC+1 in March) is 23:00 UTC the day before
        assert set(df["event_ts"]) == {pd.Timestamp("2026-02-28 23:00", tz="UTC")}, column
        assert validate_snapshot(df, spec, day=NIGHT, labelled=True).success


def test_a_missing_mapped_column_is_left_to_validation_to_name(orders, tmp_path):
    source = {**MAPPED, "columns": {**MAPPED["columns"], "amount": {"from": "amount_eur", "cast": "numeric"}}}
    spec = load_spec(spec_file(tmp_path, source))
    store = ArtifactStore(tmp_path / "store")
    df = read_snapshot(store, take_snapshot(orders, store, spec, NIGHT))
    assert list(df.columns) == ["customer_id", "event_ts", "country", "churned"]
    result = validate_snapshot(df, spec, day=NIGHT, labelled=True)
    assert not result.success and [f.column for f in result.failures] == ["amount"], result.message()


QUERY = """
SELECT o.cust_ref::bigint AS customer_id, o.placed_at AT TIME ZONE 'America/New_York' AS event_ts,
       o.amount_txt::numeric AS amount, o.country, o.churn_flag AS churned
FROM raw_orders o
WHERE o.placed_at AT TIME ZONE 'America/New_York' >= %(start)s
  AND o.placed_at AT TIME ZONE 'America/New_York' < %(end)s
  AND o.internal_note LIKE 'not%%'
"""


def test_a_query_on_the_local_date_alone_is_bound_with_it(orders, tmp_path):
    query = ("SELECT cust_ref::bigint AS customer_id, order_day AS event_ts, amount_txt::numeric AS amount, "
             "country, churn_flag AS churned FROM raw_orders WHERE order_day = %(day)s")
    spec = load_spec(spec_file(tmp_path, {"query": query, "timezone": "America/New_York"}))
    store = ArtifactStore(tmp_path / "store")
    df = read_snapshot(store, take_snapshot(orders, store, spec, NIGHT))
    assert df["customer_id"].tolist() == [2, 3, 4]
    assert set(df["event_ts"]) == {pd.Timestamp("2026-03-01 05:00", tz="UTC")}  # a date: local midnight


def test_a_query_source_is_bound_with_the_nights_window(orders, tmp_path):
    spec = load_spec(spec_file(tmp_path, {"query": QUERY, "timezone": "America/New_York"}))
    assert spec.source.table is None and spec.source.described == "the spec's source.query"
    store = ArtifactStore(tmp_path / "store")
    df = read_snapshot(store, take_snapshot(orders, store, spec, NIGHT))
    assert df["customer_id"].tolist() == [2, 3, 4] and list(df.columns) == spec.columns
    assert validate_snapshot(df, spec, day=NIGHT, labelled=True).success
    # The window is a bound parameter: a night with no rows is empty, not an error.
    assert take_snapshot(orders, store, spec, dt.date(2026, 4, 1)).rows == 0


@pytest.mark.parametrize(("query", "message"), [
    ("SELECT * FROM raw_orders",
     "source.query: must select the night's window with %(start)s and %(end)s (timestamptz, bound by psycopg: "
     "e.g. WHERE ts >= %(start)s AND ts < %(end)s) "
     "or %(day)s (the local date); missing: %(start)s, %(end)s"),
    ("SELECT * FROM raw_orders WHERE placed_at >= %(start)s",
     "source.query: must select the night's window with %(start)s and %(end)s (timestamptz, bound by psycopg: "
     "e.g. WHERE ts >= %(start)s AND ts < %(end)s) "
     "or %(day)s (the local date); missing: %(end)s"),
    ("SELECT * FROM raw_orders WHERE placed_at >= %s AND placed_at < %(end)s",
     "source.query: %s is not a parameter of the night (use %(start)s, %(end)s or %(day)s; a literal % is "
     "written %%)"),
    ("SELECT * FROM t WHERE ts >= %(start)s AND ts < %(end)s AND note LIKE 'a%'",
     "source.query: % is not a parameter of the night (use %(start)s, %(end)s or %(day)s; a literal % is "
     "written %%)"),
    ("SELECT * FROM t WHERE ts >= %(start)s AND ts < %(stop)s",
     "source.query: %(stop)s is not a parameter of the night (use %(start)s, %(end)s or %(day)s; a literal % "
     "is written %%)"),
    ("DELETE FROM raw_orders WHERE placed_at >= %(start)s AND placed_at < %(end)s",
     "source.query: must be a SELECT (or WITH ... SELECT), got 'DELETE FROM raw_orders WHERE placed_at >...'"),
])
def test_a_query_without_the_nights_parameters_is_refused(tmp_path, query, message):
    with pytest.raises(SpecError) as caught:
        load_spec(spec_file(tmp_path, {"query": query}))
    assert str(caught.value) == f"orders.yaml: {message}"


@pytest.mark.parametrize(("source", "message"), [
    ({"table": "raw_orders", "query": QUERY},
     "source.table: give exactly one of source.table and source.query, got both"),
    ({"connection_id": "x"}, "source.table: give exactly one of source.table and source.query, got neither"),
    ({"table": "raw_orders", "timezone": "Mars/Olympus"},
     "source.timezone: 'Mars/Olympus' is not an IANA time zone name (e.g. 'Europe/Oslo', 'America/New_York', "
     "'UTC')"),
    ({"table": "raw_orders", "columns": {"amount": {"from": "amount txt"}}},
     "source.columns.amount.from: 'amount txt' is not a plain SQL identifier (letters, digits, underscore)"),
    ({"table": "raw_orders", "columns": {"amount": {"cast": "money"}}},
     "source.columns.amount.cast: must be one of ['bigint', 'date', 'float', 'integer', 'numeric', 'text', "
     "'timestamp', 'timestamptz'], got 'money'"),
    ({"table": "raw_orders", "columns": {"amonut": {"from": "amount_txt"}}},
     "source.columns.amonut: 'amonut' is not a column of the spec (entity_key, timestamp, label or a feature); "
     "did you mean amount?"),
    ({"table": "raw_orders", "columns": {"event_ts": {"cast": "integer"}}},
     "source.columns.event_ts.cast: the timestamp is cast to date, timestamp or timestamptz, got 'integer'"),
    ({"table": "raw_orders", "columns": {"amount": {"form": "amount_txt"}}},
     "source.columns.amount.form: unknown key; did you mean from? (allowed here: from, cast)"),
])
def test_a_bad_source_mapping_is_refused_naming_key_and_value(tmp_path, source, message):
    with pytest.raises(SpecError) as caught:
        load_spec(spec_file(tmp_path, source))
    assert str(caught.value) == f"orders.yaml: {message}"


def test_the_published_schema_takes_a_mapping_and_refuses_table_and_query_together(tmp_path):
    """An editor's YAML plugin agrees with the loader on the new keys."""
    import json

    import jsonschema

    schema = json.loads((CHURN.parents[2] / "docs" / "dataset-spec.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    data = json.loads(json.dumps(yaml.safe_load(spec_file(tmp_path, MAPPED).read_text()), default=str))
    assert list(validator.iter_errors(data)) == []
    data["source"]["query"] = QUERY
    assert list(validator.iter_errors(data))
    data["source"] = {"query": QUERY, "columns": {"amount": {"form": "amount_txt"}}}
    assert list(validator.iter_errors(data))
