"""The demo's source data: a seeded, realistic subscription-churn problem, one day at a time.

Only the demo uses this module; the pipeline never imports it. It matches
include/specs/churn.yaml. Each day is generated from its own seed (base seed + day), so
any day can be regenerated alone, in any order, bit for bit: that is how labels are
"revealed" one day later and how tests build the same data as the demo.

Two kinds of drift can be switched on from a chosen day:
- covariate drift: prices rise, usage falls, the customer mix moves (features shift);
- concept drift: the same features mean a different churn risk (the label's link changes).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
from psycopg import Connection, Cursor, sql

PLANS = ["basic", "standard", "premium", "family"]
REGIONS = ["north", "south", "east", "west", "central"]
PAYMENTS = ["card", "bank_transfer", "paypal", "invoice"]
CHANNELS = ["organic", "paid_search", "social", "partner", "retail"]

NUMERIC = [
    "tenure_months", "monthly_charges", "total_charges", "age", "num_products",
    "support_calls_30d", "days_since_last_login", "logins_30d", "avg_session_minutes",
    "data_usage_gb", "late_payments_12m", "discount_pct", "referrals", "satisfaction_score",
    "contract_months_left", "price_increase_pct", "outage_minutes_30d",
]


@dataclass(frozen=True)
class DriftPlan:
    """From which day each kind of drift is on (None: never)."""

    covariate_from: dt.date | None = None
    concept_from: dt.date | None = None

    def covariate(self, day: dt.date) -> bool:
        return self.covariate_from is not None and day >= self.covariate_from

    def concept(self, day: dt.date) -> bool:
        return self.concept_from is not None and day >= self.concept_from


def generate_day(day: dt.date, n_rows: int, seed: int = 7, drift: DriftPlan = DriftPlan()) -> pd.DataFrame:
    """One day's rows: one per customer (ids 1..n_rows), labels included."""
    rng = np.random.default_rng([seed, day.toordinal()])
    cov = drift.covariate(day)
    n = n_rows

    plan = rng.choice(PLANS, n, p=[0.25, 0.25, 0.25, 0.25] if cov else [0.4, 0.3, 0.2, 0.1])
    region = rng.choice(REGIONS, n, p=[0.2, 0.2, 0.2, 0.2, 0.2])
    payment = rng.choice(PAYMENTS, n, p=[0.5, 0.25, 0.15, 0.1])
    channel = rng.choice(CHANNELS, n, p=[0.1, 0.35, 0.35, 0.1, 0.1] if cov else [0.4, 0.2, 0.15, 0.15, 0.1])

    tenure = np.clip(rng.gamma(2.0, 6.0 if cov else 14.0, n), 0, 240).round(0)
    base_price = np.select([plan == "basic", plan == "standard", plan == "premium"], [25.0, 45.0, 80.0], 95.0)
    price_increase = np.clip(rng.normal(12.0 if cov else 2.0, 4.0, n), -50, 100).round(1)
    monthly = np.clip(base_price * (1 + price_increase / 100) + rng.normal(0, 5, n), 0, 500).round(2)
    total = np.clip(monthly * np.maximum(tenure, 1) * rng.uniform(0.9, 1.05, n), 0, 150000).round(2)
    age = np.clip(rng.normal(42, 13, n), 18, 100).round(0)
    products = np.clip(rng.poisson(1.8, n) + 1, 1, 10).astype(float)
    outage = np.clip(rng.exponential(120.0 if cov else 30.0, n), 0, 43200).round(0)
    support = np.clip(rng.poisson(0.8 + outage / 200.0), 0, 100).astype(float)
    logins = np.clip(rng.poisson(9.0 if cov else 20.0, n), 0, 1000).astype(float)
    last_login = np.clip(rng.exponential(30.0 / (1 + logins / 5.0)) * 5, 0, 3650).round(0)
    session = np.clip(rng.lognormal(2.6 if cov else 3.0, 0.5, n), 0, 600).round(1)
    usage = np.clip(rng.gamma(2.0, 10.0 if cov else 25.0, n), 0, 5000).round(2)
    late = np.clip(rng.poisson(0.4, n), 0, 12).astype(float)
    discount = np.clip(rng.choice([0, 0, 0, 5, 10, 15, 20], n) + 0.0, 0, 100)
    referrals = np.clip(rng.poisson(0.3, n), 0, 100).astype(float)
    satisfaction = np.clip(rng.normal(7.5 - support * 0.6 - outage / 400.0, 1.5), 1, 10).round(0)
    months_left = np.clip(rng.choice([0, 0, 0, 3, 6, 12, 24], n) - (tenure % 12), 0, 36)

    # The truth: churn risk, with the thresholds and interactions real churn has (so trees beat a
    # linear baseline). Concept drift changes what price and plan mean for the same features.
    concept = drift.concept(day)
    unhappy = (support >= 3) & (satisfaction <= 5)
    z = (
        -2.4
        + 1.6 * (tenure < 6)
        - 0.6 * (tenure > 36)
        + (1.4 if not concept else -0.3) * (price_increase > 8)
        + 1.8 * unhappy
        + 0.9 * (last_login > 30)
        - 0.8 * (logins > 25)
        + 0.7 * np.minimum(late, 3)
        - 1.2 * (months_left > 6)
        + (1.5 if concept else 0.0) * (plan == "premium")
        + 0.9 * (payment == "invoice") * (tenure < 12)
        - 0.5 * (products >= 3)
        + 0.6 * (channel == "social") * (discount > 0)
        + 0.8 * (outage > 240)
    )
    churned = (rng.uniform(0, 1, n) < 1 / (1 + np.exp(-z))).astype("int64")

    df = pd.DataFrame({
        "customer_id": np.arange(1, n + 1, dtype="int64"),
        "event_ts": pd.Timestamp(day, tz="UTC") + pd.to_timedelta(rng.integers(0, 86_400, n), unit="s"),
        "tenure_months": tenure, "monthly_charges": monthly, "total_charges": total, "age": age,
        "num_products": products, "support_calls_30d": support, "days_since_last_login": last_login,
        "logins_30d": logins, "avg_session_minutes": session, "data_usage_gb": usage,
        "late_payments_12m": late, "discount_pct": discount, "referrals": referrals,
        "satisfaction_score": satisfaction, "contract_months_left": months_left,
        "price_increase_pct": price_increase, "outage_minutes_30d": outage,
        "plan": plan, "region": region, "payment_method": payment, "acquisition_channel": channel,
        "churned": churned,
    })
    # Missing values where real systems have them.
    for col, share in (("total_charges", 0.01), ("days_since_last_login", 0.03),
                       ("avg_session_minutes", 0.02), ("satisfaction_score", 0.08),
                       ("acquisition_channel", 0.005)):
        df.loc[rng.uniform(0, 1, n) < share, col] = None
    return df


SOURCE_DDL = """
CREATE TABLE IF NOT EXISTS {table} (
    customer_id bigint NOT NULL,
    event_ts timestamptz NOT NULL,
    {numeric},
    plan text, region text, payment_method text, acquisition_channel text,
    churned smallint,
    PRIMARY KEY (event_ts, customer_id)
)
"""


def _table(name: str) -> sql.Composable:
    return sql.Identifier(*name.split("."))


def create_source_table(conn: Connection, table: str = "public.churn_events") -> None:
    ddl = sql.SQL(SOURCE_DDL).format(
        table=_table(table),
        numeric=sql.SQL(", ").join(sql.SQL("{} double precision").format(sql.Identifier(c)) for c in NUMERIC),
    )
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(ddl)
        cur.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (event_ts)").format(
            sql.Identifier(table.split(".")[-1] + "_ts"), _table(table)))


def _copy(cur: Cursor, table: sql.Composable, df: pd.DataFrame) -> None:
    sink = pa.BufferOutputStream()
    pacsv.write_csv(pa.Table.from_pandas(df, preserve_index=False), sink, pacsv.WriteOptions(include_header=False))
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in df.columns)
    with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(table, cols)) as copy:
        copy.write(memoryview(sink.getvalue()))


def load_day(conn: Connection, day: dt.date, n_rows: int, *, table: str = "public.churn_events", seed: int = 7,
             drift: DriftPlan = DriftPlan(), with_labels: bool = False) -> int:
    """Replace one day in the source table; labels are withheld unless asked for (they come a day later)."""
    df = generate_day(day, n_rows, seed, drift)
    if not with_labels:
        df["churned"] = pd.array([None] * len(df), dtype="Int64")
    start = pd.Timestamp(day, tz="UTC")
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(sql.SQL("DELETE FROM {} WHERE event_ts >= %s AND event_ts < %s").format(_table(table)),
                    (start.to_pydatetime(), (start + pd.Timedelta(days=1)).to_pydatetime()))
        _copy(cur, _table(table), df)
    return len(df)


def reveal_labels(conn: Connection, day: dt.date, n_rows: int, *, table: str = "public.churn_events", seed: int = 7,
                  drift: DriftPlan = DriftPlan()) -> int:
    """Fill in one day's labels, as the business learns them one day after the event."""
    df = generate_day(day, n_rows, seed, drift)[["customer_id", "event_ts", "churned"]]
    start = pd.Timestamp(day, tz="UTC")
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("CREATE TEMP TABLE revealed (customer_id bigint, event_ts timestamptz, churned smallint) ON COMMIT DROP")
        _copy(cur, sql.Identifier("revealed"), df)
        cur.execute(sql.SQL(
            "UPDATE {t} s SET churned = r.churned FROM revealed r "
            "WHERE s.customer_id = r.customer_id AND s.event_ts = r.event_ts "
            "AND s.event_ts >= %s AND s.event_ts < %s").format(t=_table(table)),
            (start.to_pydatetime(), (start + pd.Timedelta(days=1)).to_pydatetime()))
        return cur.rowcount
