"""Onboarding a data set: profile a source into a commented spec draft, and check a spec against its source.

`spec init` (profile + draft_yaml) reads the catalog and a cheap profile of the source's last nights and
writes a spec draft whose every section says what was inferred and what to check. `spec check`
(check_spec) compares a spec with its live source and lists every problem at once, each naming the key
and column at fault and the value seen. Both take seconds on millions of rows:

- the catalog gives the column types (no scan);
- one GROUP BY over the window counts each night's rows and each column's non-null values (exact: the
  row counts are what validation.min_rows judges, the null shares what max_null_share judges);
- ranges, categories and label classes come from a seeded TABLESAMPLE of the window's pages when the
  window holds more than SAMPLE_ROWS rows (the whole window otherwise), with percentile_cont in SQL.

Every identifier reaches SQL through psycopg.sql.Identifier, every value as a parameter or a
psycopg.sql.Literal: never string formatting. No Airflow import (cli.py resolves connections).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import math
import statistics
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import yaml
from psycopg import Connection, sql

SAMPLE_ROWS = 100_000      # rows the range/category profile reads at most (about)
MAX_CATEGORIES = 50        # a text column with more distinct values is not drafted as categorical
QUANTILES = (0.001, 0.999)  # the range drafted is these quantiles widened by RANGE_MARGIN of their span ...
RANGE_MARGIN = 0.5         # ... and never narrower than the window's values (exact, not sampled)
INTEGER_TYPES = {"smallint", "integer", "bigint"}
TIMESTAMP_TYPES = {"timestamp with time zone", "timestamp without time zone", "date"}


class SourceError(Exception):
    """The source cannot be profiled at all (no such table, no timestamp column, no rows)."""


@dataclass(frozen=True)
class Column:
    name: str
    type: str          # format_type(): 'bigint', 'double precision', 'timestamp with time zone', 'text', ...
    category: str      # pg_type.typcategory: N numeric, S string, D date/time, B boolean, ...

    @property
    def numeric(self) -> bool:
        return self.category == "N"

    @property
    def text(self) -> bool:
        return self.category == "S"


@dataclass
class Night:
    day: dt.date
    rows: int
    non_null: dict[str, int]
    extremes: dict[str, tuple[float, float]] = field(default_factory=dict)  # numeric column -> (min, max)

    def null_share(self, column: str) -> float:
        return 1 - self.non_null[column] / self.rows if self.rows else 0.0


@dataclass
class Sample:
    rows: int = 0
    numeric: dict[str, tuple[float, float, float, float]] = field(default_factory=dict)  # min, q_lo, q_hi, max
    distinct: dict[str, tuple[int, list[str]]] = field(default_factory=dict)  # count, first MAX_CATEGORIES+1
    classes: dict[str, int] = field(default_factory=dict)  # label value (as text) -> rows


@dataclass
class Profile:
    table: str
    columns: list[Column]
    key: str
    timestamp: str
    label: str
    timezone: str
    newest: dt.date
    nights: list[Night]
    sample: Sample

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    @property
    def label_delay(self) -> int | None:
        return inferred_delay(self.nights, self.label, self.newest)


# --- the catalog and the window --------------------------------------------------------------


def table_identifier(table: str) -> sql.Identifier:
    return sql.Identifier(*table.split("."))


@dataclass(frozen=True)
class Relation:
    """A source table and how each (spec) column is read from it: its own name, or an expression
    (a renamed or cast source column, from the spec's source.columns)."""

    table: str
    expressions: dict[str, sql.Composable] = field(default_factory=dict)

    def of(self, name: str) -> sql.Composable:
        return self.expressions.get(name, sql.Identifier(name))

    @property
    def identifier(self) -> sql.Identifier:
        return table_identifier(self.table)


def catalog(conn: Connection, table: str) -> list[Column]:
    """The table's (or view's) columns and types, from the catalog: no row is read."""
    schema, _, name = table.rpartition(".")
    query = ("SELECT a.attname, format_type(a.atttypid, a.atttypmod), t.typcategory "
             "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
             "JOIN pg_type t ON t.oid = a.atttypid "
             "WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum")
    with conn.cursor() as cur:
        cur.execute(query, (schema or "public", name))
        columns = [Column(n, t, cat) for n, t, cat in cur.fetchall()]
    if not columns:
        raise SourceError(f"table {table} does not exist (or has no columns, or this login cannot see it)")
    return columns


def day_of(expression: sql.Composable, column: Column, timezone: str) -> sql.Composable:
    """The night a timestamp belongs to: its date in `timezone` (a date is its own night; a timestamp
    without time zone is taken as wall-clock time in that zone)."""
    if column.type == "date":
        return expression
    if column.type == "timestamp without time zone":
        return sql.SQL("({})::date").format(expression)
    return sql.SQL("({} AT TIME ZONE {})::date").format(expression, sql.Literal(timezone))


def since(column: Column, day: dt.date, timezone: str) -> sql.Literal:
    """The window's lower bound in the column's own type, so that an index on the column is used."""
    if column.type == "date":
        return sql.Literal(day)
    start = dt.datetime.combine(day, dt.time())
    if column.type == "timestamp without time zone":
        return sql.Literal(start)
    return sql.Literal(start.replace(tzinfo=ZoneInfo(timezone)))


def newest_day(conn: Connection, source: Relation, ts: Column, timezone: str) -> dt.date | None:
    query = sql.SQL("SELECT {} FROM {}").format(
        day_of(sql.SQL("max({})").format(source.of(ts.name)), ts, timezone), source.identifier)
    with conn.cursor() as cur:
        cur.execute(query)
        return cur.fetchone()[0]


def nightly_counts(conn: Connection, source: Relation, ts: Column, timezone: str, columns: list[str],
                   first: dt.date, last: dt.date, numeric: tuple[str, ...] = ()) -> list[Night]:
    """Rows and non-null values of each column per night, first..last (a night without rows: 0), and the
    smallest and largest value of each `numeric` column: one scan of the window, exact."""
    day = day_of(source.of(ts.name), ts, timezone)
    counts = sql.SQL(", ").join([*(sql.SQL("count({})").format(source.of(c)) for c in columns),
                                 *(sql.SQL("min({c}::float8), max({c}::float8)").format(c=source.of(c))
                                   for c in numeric)])
    query = sql.SQL("SELECT {day}, count(*), {counts} FROM {table} WHERE {ts} >= {since} GROUP BY 1").format(
        day=day, counts=counts, table=source.identifier, ts=source.of(ts.name),
        since=since(ts, first, timezone))
    with conn.cursor() as cur:
        cur.execute(query)
        found = {row[0]: row[1:] for row in cur.fetchall()}
    nights = []
    for offset in range((last - first).days + 1):
        d = first + dt.timedelta(days=offset)
        rows, *values = found.get(d, (0, *([0] * len(columns)), *([None, None] * len(numeric))))
        pairs = zip(numeric, values[len(columns)::2], values[len(columns) + 1::2])
        nights.append(Night(d, rows, dict(zip(columns, values[:len(columns)])),
                            {c: (lo, hi) for c, lo, hi in pairs if lo is not None}))
    return nights


def widened(stats: tuple[float, float, float, float], nights: list[Night], column: str) -> tuple[float, ...]:
    """Sample quantiles with the window's exact smallest and largest values."""
    seen = [n.extremes[column] for n in nights if column in n.extremes]
    if not seen:
        return stats
    return (min(stats[0], *(lo for lo, _ in seen)), stats[1], stats[2], max(stats[3], *(hi for _, hi in seen)))


def sampled(source: Relation, ts: Column, timezone: str, first: dt.date, window_rows: int,
            columns: list[str]) -> sql.Composable:
    """A subquery of the window's rows: a seeded TABLESAMPLE of pages when the window is large."""
    relation: sql.Composable = source.identifier
    if window_rows > SAMPLE_ROWS:
        percent = max(0.01, min(100.0, 100.0 * SAMPLE_ROWS / window_rows))
        relation = sql.SQL("{} TABLESAMPLE SYSTEM ({}) REPEATABLE (0)").format(relation, sql.Literal(percent))
    return sql.SQL("(SELECT {cols} FROM {source} WHERE {ts} >= {since}) AS sample").format(
        cols=sql.SQL(", ").join(sql.SQL("{} AS {}").format(source.of(c), sql.Identifier(c)) for c in columns),
        source=relation, ts=source.of(ts.name), since=since(ts, first, timezone))


def sample_stats(conn: Connection, sample: sql.Composable, numeric: list[str], text: list[str]) -> Sample:
    """Quantiles of the numeric columns and the distinct values of the text ones, in one query."""
    parts: list[sql.Composable] = [sql.SQL("count(*)")]
    for c in numeric:
        ident = sql.Identifier(c)
        parts.append(sql.SQL("min({c}::float8), percentile_cont({q}) WITHIN GROUP (ORDER BY {c}::float8), "
                             "max({c}::float8)").format(c=ident, q=sql.Literal(list(QUANTILES))))
    for c in text:
        parts.append(sql.SQL("count(DISTINCT {c}), (array_agg(DISTINCT {c}::text) FILTER (WHERE {c} IS NOT NULL))[1:{n}]").format(
            c=sql.Identifier(c), n=sql.Literal(MAX_CATEGORIES + 1)))
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(parts), sample))
        row = list(cur.fetchone())
    out = Sample(rows=row.pop(0))
    for c in numeric:
        low, (q_lo, q_hi), high = row.pop(0), row.pop(0) or (None, None), row.pop(0)
        if low is not None:
            out.numeric[c] = (low, q_lo, q_hi, high)
    for c in text:
        count, values = row.pop(0), row.pop(0)
        out.distinct[c] = (count, sorted(values or []))
    return out


def label_classes(conn: Connection, sample: sql.Composable, label: str) -> dict[str, int]:
    """Rows per label value (as text) among the labelled rows of the sample, at most 21 values."""
    ident = sql.Identifier(label)
    query = sql.SQL("SELECT {l}::text, count(*) FROM {s} WHERE {l} IS NOT NULL GROUP BY 1 ORDER BY 2 DESC LIMIT 21")
    with conn.cursor() as cur:
        cur.execute(query.format(l=ident, s=sample))
        return dict(cur.fetchall())


def inferred_delay(nights: list[Night], label: str, newest: dt.date) -> int | None:
    """Days between the newest night and the newest night whose labels have mostly arrived (at least half
    the labelled share of the best-labelled night); None when no label is known at all."""
    shares = {n.day: n.non_null.get(label, 0) / n.rows for n in nights if n.rows}
    best = max(shares.values(), default=0.0)
    if best <= 0:
        return None
    labelled = max(day for day, share in shares.items() if share >= best / 2)
    return (newest - labelled).days


# --- spec init: the profile ------------------------------------------------------------------


def profile(conn: Connection, table: str, *, key: str, timestamp: str, label: str, days: int = 28,
            timezone: str = "UTC") -> Profile:
    """Everything the draft needs, from the catalog, the window's nightly counts and one sample."""
    columns = catalog(conn, table)
    ts = _required(table, columns, key, timestamp, label)
    source = Relation(table)
    newest = newest_day(conn, source, ts, timezone)
    if newest is None:
        raise SourceError(f"table {table} has no rows (column {timestamp!r} is empty)")
    first = newest - dt.timedelta(days=days - 1)
    numeric, text = _profiled(columns, key, timestamp, label)
    nights = nightly_counts(conn, source, ts, timezone, [c.name for c in columns], first, newest, tuple(numeric))
    sample = sampled(source, ts, timezone, first, sum(n.rows for n in nights),
                     list(dict.fromkeys([*numeric, *text, label])))
    stats = sample_stats(conn, sample, numeric, text)
    stats.classes = label_classes(conn, sample, label)
    conn.rollback()  # read only: end the transaction psycopg opened
    return Profile(table, columns, key, timestamp, label, timezone, newest, nights, stats)


def _required(table: str, columns: list[Column], key: str, timestamp: str, label: str) -> Column:
    """The timestamp column, once the three named columns are known to exist."""
    by_name = {c.name: c for c in columns}
    missing = [name for name in (key, timestamp, label) if name not in by_name]
    if missing:
        raise SourceError(f"table {table} has no column {', '.join(map(repr, missing))}; "
                          f"its columns: {', '.join(by_name)}")
    if by_name[timestamp].type not in TIMESTAMP_TYPES:
        raise SourceError(f"column {timestamp!r} of {table} is {by_name[timestamp].type}, not a timestamp or date")
    return by_name[timestamp]


def _profiled(columns: list[Column], key: str, timestamp: str, label: str) -> tuple[list[str], list[str]]:
    """The numeric columns (the label included: its range) and the text columns (the label excluded)."""
    numeric = [c.name for c in columns if c.numeric and c.name not in (key, timestamp)]
    text = [c.name for c in columns if c.text and c.name not in (key, timestamp, label)]
    return numeric, text


# --- spec init: the draft --------------------------------------------------------------------


def _flow(value: Any) -> str:
    """A value as YAML flow text: quoted where YAML would read it as something else ('NO', '01')."""
    return yaml.safe_dump(value, default_flow_style=True, width=1 << 20, allow_unicode=True, sort_keys=False).strip().removesuffix(
        "\n...").removesuffix("...").strip()


def nice(value: float, up: bool) -> float | int:
    """Round outward to two significant digits (an int when it is one)."""
    if value == 0 or not math.isfinite(value):
        return 0
    step = 10 ** (math.floor(math.log10(abs(value))) - 1)
    rounded = (math.ceil if up else math.floor)(value / step) * step
    rounded = round(rounded, max(0, -math.floor(math.log10(step))))
    return int(rounded) if float(rounded).is_integer() else rounded


def drafted_range(stats: tuple[float, float, float, float]) -> tuple[float | int, float | int]:
    """Quantiles widened by RANGE_MARGIN of their span, covering every value seen; for a column without
    negative values never below 0, and 0 when the widened bound is below half the smallest value."""
    low, q_lo, q_hi, high = stats
    margin = RANGE_MARGIN * ((q_hi - q_lo) or abs(q_hi) or 1.0)
    lo, hi = min(low, q_lo - margin), max(high, q_hi + margin)
    if low >= 0 and lo < low / 2:  # a count or an amount: 0 is valid, a floor just below what was seen is not
        lo = 0.0
    return nice(lo, up=False), nice(hi, up=True)


def drafted_null_share(nights: list[Night], column: str) -> float:
    """The largest null share of a night, with headroom: 0 stays 0 (validation then refuses any null)."""
    worst = max((n.null_share(column) for n in nights if n.rows), default=0.0)
    if worst <= 0:
        return 0.0
    return min(1.0, math.ceil(min(1.0, worst * 1.5 + 0.01) * 100) / 100)


def key_type(column: Column) -> str:
    return {"bigint": "bigint", "integer": "integer", "smallint": "integer"}.get(
        column.type, "text" if column.text else "bigint")


@dataclass
class Draft:
    """The draft's decisions, kept apart from the text so that they are easy to test and to read."""

    features: list[dict[str, Any]]
    left_out: list[tuple[str, str]]  # column, why
    task: str
    delay: int
    casts: dict[str, str] = field(default_factory=dict)  # column -> cast (source.columns), when the spec has them


def _feature(p: Profile, column: Column) -> tuple[dict[str, Any] | None, str]:
    """One column as a feature (or None and why not); a boolean becomes a category (cast to text)."""
    share = drafted_null_share(p.nights, column.name)
    if column.category == "B":
        item = {"name": column.name, "type": "categorical", "categories": ["false", "true"]}
    elif column.numeric:
        if column.name not in p.sample.numeric:
            return None, "no value in the sample (entirely null)"
        low, high = drafted_range(widened(p.sample.numeric[column.name], p.nights, column.name))
        item = {"name": column.name, "type": "numeric", "min": low, "max": high}
    elif column.text:
        count, values = p.sample.distinct.get(column.name, (0, []))
        if not 0 < count <= MAX_CATEGORIES:
            return None, f"{count} distinct values in the sample (more than {MAX_CATEGORIES}: not a category list)"
        item = {"name": column.name, "type": "categorical", "categories": values}
    else:
        return None, f"type {column.type}: neither numeric nor text"
    if share:
        item["max_null_share"] = share
    return item, ""


def draft(p: Profile) -> Draft:
    """What the draft says."""
    features, left_out = [], []
    for column in p.columns:
        if column.name in (p.key, p.timestamp, p.label):
            continue
        item, why = _feature(p, column)
        if item:
            features.append(item)
        else:
            left_out.append((column.name, why))
    task = drafted_task(p)
    delay = p.label_delay
    casts = {c.name: "text" for c in p.columns if c.category == "B" and c.name in {f["name"] for f in features}}
    return Draft(features, left_out, task, 1 if delay is None else delay, casts)


def drafted_task(p: Profile) -> str:
    """binary for 0/1 (or boolean) labels, regression for other numbers, multiclass for three or more text
    classes (two text classes stay binary, with a CHECK to map them to 0/1)."""
    classes = set(p.sample.classes)
    if classes <= {"0", "1", "true", "false"}:
        return "binary"
    if p.column(p.label).numeric:
        return "regression"
    return "multiclass" if len(classes) >= 3 else "binary"


def _label_line(p: Profile, d: Draft) -> str:
    fields = f"name: {p.label}, delay_days: {d.delay}"
    if d.task == "multiclass":
        fields += f", classes: {_flow(sorted(p.sample.classes))}"
    return f"label: {{{fields}}}"


def _gate(p: Profile, d: Draft) -> tuple[str, Any]:
    """The promotion metric and a starting floor for the task (for rmse a ceiling: the label's spread)."""
    if d.task == "regression":
        low, q_lo, q_hi, high = p.sample.numeric.get(p.label, (0.0, 0.0, 1.0, 1.0))
        return "rmse", nice((q_hi - q_lo) or (high - low) or 1.0, up=True)
    if d.task == "multiclass":
        return "macro_f1", round(1 / max(2, len(p.sample.classes)), 2)
    return "roc_auc", 0.6


def _rows_summary(p: Profile) -> tuple[int, int, int]:
    """Nights with rows; fewest and median rows of a night (the newest night excluded: it may be partial)."""
    full = [n.rows for n in p.nights[:-1] if n.rows] or [n.rows for n in p.nights if n.rows]
    return len([n for n in p.nights if n.rows]), min(full), int(statistics.median(full))


def _label_comment(p: Profile, d: Draft) -> list[str]:
    total = sum(p.sample.classes.values())
    balance = ", ".join(f"{value}: {rows / total:.1%}" for value, rows in list(p.sample.classes.items())[:10])
    lines = [f"# label: classes seen in the sample ({total} labelled rows): {balance or 'none'}"]
    if d.task == "binary" and not set(p.sample.classes) <= {"0", "1", "true", "false"}:
        lines.append("# CHECK: the label has two text classes, not 0/1: map them to 0/1 (source.columns cannot).")
    if p.label_delay is None:
        lines.append(f"# NO labelled row in the last {len(p.nights)} nights: delay_days 1 is a guess. CHECK IT.")
    else:
        lines.append(f"# delay_days {d.delay}: the newest night is {p.newest}; the newest night whose labels have "
                     f"mostly arrived is {p.newest - dt.timedelta(days=d.delay)}.")
    return lines


def _source_lines(p: Profile, d: Draft, connection_id: str) -> list[str]:
    """The source section: a local date or timestamp column is read in the zone given here (source.timezone),
    and columns that need a cast to be features get one (source.columns)."""
    ts = p.column(p.timestamp)
    lines = ["source:", f"  table: {p.table}", f"  connection_id: {connection_id}"]
    local = ts.type != "timestamp with time zone"
    what = (f"# {p.timestamp} is a {ts.type}, local time: night D holds its rows dated D in this zone.\n"
            "  # CHECK: the business day's zone (an IANA name such as Europe/Oslo)." if local else
            f"# {p.timestamp} is a timestamptz; night D holds the rows from D 00:00 to D+1 00:00 in this zone\n"
            f"  # (profiled in {p.timezone}). CHECK: the business day's zone.")
    lines += [f"  {what}", f"  timezone: {p.timezone}" if local or p.timezone != "UTC" else f"  # timezone: {p.timezone}"]
    if d.casts:
        lines += ["  # read as text, so that they are categories (the pipeline casts them; the table is left as it is):",
                  "  columns:", *(f"    {name}: {{cast: {cast}}}" for name, cast in d.casts.items())]
    return lines


def _feature_lines(d: Draft) -> list[str]:
    lines = ["# features: every numeric column (range: the 0.1%..99.9% quantiles of the sample widened by half",
             "# their span, and never narrower than the window's values; 0 for a column of no negative value",
             "# when the margin reaches below half its smallest) and every text column with at most 50 distinct",
             "# values (its categories). max_null_share:",
             "# the worst night's null share with headroom (absent: no null allowed). CHECK: drop columns the",
             "# model must not see (leaks of the label, ids), and widen ranges to what is valid, not what was seen.",
             "features:"]
    lines += [f"  - {_flow(item)}" for item in d.features]
    lines += [f"  # left out (not read): {name}: {why}" for name, why in d.left_out]
    return lines


def _policy_lines(p: Profile, d: Draft) -> list[str]:
    nights, fewest, median = _rows_summary(p)
    labelled = max(1, sum(1 for n in p.nights if n.rows and n.day <= p.newest - dt.timedelta(days=d.delay)))
    holdout = 3 if labelled >= 10 else max(1, labelled // 4)
    window = max(1, min(14, labelled - holdout))
    metric, floor = _gate(p, d)
    return [
        f"# validation: {nights} of the last {len(p.nights)} nights have rows: fewest {fewest}, median {median}"
        " (the newest night left out: it may be partial).",
        "# min_rows is half the fewest. CHECK: the smallest night you would still score.",
        "validation:", f"  min_rows: {max(1, fewest // 2)}", "  min_row_ratio: 0.5", "  row_norm_days: 7", "",
        f"# training: {labelled} labelled nights in the profile window. CHECK: window_days (labelled nights",
        "# trained on) and holdout_days (the newest labelled nights, held out) against how fast the data changes.",
        "training:", f"  window_days: {window}", f"  holdout_days: {holdout}",
        f"  min_rows: {max(1, fewest * window // 2)}", "  seed: 42",
        "  params: {n_estimators: 150, max_depth: 4, learning_rate: 0.1, subsample: 0.9, colsample_bytree: 0.9}", "",
        "# drift: the defaults. CHECK: exclude calendar columns (constant within a night, always drifted).",
        "drift:", "  share_threshold: 0.25", "  sample_rows: 50000", "  persist_nights: 2", "",
        "# promotion: a cautious gate to start with. CHECK: the floor is what the business can use.",
        "promotion:", f"  metric: {metric}", f"  floor: {floor}", "  min_improvement: 0.002",
        "  slice_tolerance: 0.03", "  baseline_margin: 0.0", "  max_model_age_days: 30",
        "  realised_tolerance: 0.05", "",
        "scoring:", "  chunk_rows: 100000", *(["  decision_threshold: 0.5"] if d.task == "binary" else []),
        *(["  horizon_days: 1             # labels known the same day: score the next day's rows"]
          if d.delay == 0 else []), "",
    ]


def draft_yaml(p: Profile, *, name: str, connection_id: str = "nightshift_source") -> str:
    """The commented spec draft: every section says what was inferred from the profile and what to check."""
    d = draft(p)
    key = p.column(p.key)
    lines = [
        f"# Drafted by `python -m include.nightshift spec init` from {p.table}: the {len(p.nights)} nights",
        f"# {p.nights[0].day}..{p.newest} ({sum(n.rows for n in p.nights)} rows; ranges and categories from a "
        f"sample of {p.sample.rows}).",
        "# Read every CHECK below, then run `python -m include.nightshift spec check <this file>`.",
        f"name: {name}", f"description: {_flow(f'Drafted from {p.table}; say what is predicted, and for whom.')}",
        'schedule: "@daily"',
        f"start_date: {p.newest}          # the newest night in the source (the DAG does not catch up)", "",
        *_source_lines(p, d, connection_id), "",
        f"# entity_key: {p.key} is {key.type} in the source.",
        f"entity_key: {{name: {p.key}, type: {key_type(key)}}}",
        f"timestamp: {p.timestamp}     # {p.column(p.timestamp).type}: a row belongs to the night of its date",
        *_label_comment(p, d),
        f"task: {d.task}",
        _label_line(p, d), "",
        *_feature_lines(d), "",
        *_policy_lines(p, d),
        "warehouse:", f"  schema: {name}", "  connection_id: nightshift_warehouse", "",
    ]
    return "\n".join(lines)


# --- spec check ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    key: str       # the spec key at fault, dotted as the loader writes it
    column: str    # the source column it concerns ('' for the table itself)
    message: str

    def __str__(self) -> str:
        return f"{self.key} ({self.column}): {self.message}" if self.column else f"{self.key}: {self.message}"


@dataclass
class CheckReport:
    table: str
    nights: list[Night] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    sample_rows: int = 0


def _spec_columns(spec: Any) -> list[tuple[str, str, str]]:
    """(spec key, column, expected kind) for every column the spec reads."""
    label = "label:" + getattr(spec, "task", "binary")
    out = [("entity_key.name", spec.entity_key.name, "key:" + spec.entity_key.type),
           ("timestamp", spec.timestamp, "timestamp"), ("label.name", spec.label.name, label)]
    out += [(f"features[{i}].name", f.name, f.type) for i, f in enumerate(spec.features)]
    return out


def _compatible(kind: str, column: Column) -> bool:
    if kind == "timestamp":
        return column.type in TIMESTAMP_TYPES
    if kind == "label:multiclass":
        return column.numeric or column.text
    if kind.startswith("label:"):
        return column.numeric or (kind == "label:binary" and column.category == "B")
    if kind == "numeric":
        return column.numeric
    if kind == "categorical" or kind == "key:text":
        return column.text
    return column.type in INTEGER_TYPES  # key:bigint, key:integer


# A spec's cast (source.columns.<name>.cast) -> the type the column is read as: (format_type, typcategory).
CAST_TYPES = {"date": ("date", "D"), "timestamp": ("timestamp without time zone", "D"),
              "timestamptz": ("timestamp with time zone", "D"), "integer": ("integer", "N"), "bigint": ("bigint", "N"),
              "numeric": ("numeric", "N"), "float": ("double precision", "N"), "text": ("text", "S")}


def _source_column(spec: Any, name: str) -> tuple[str, str | None]:
    """(source column, cast or None) of a spec column: source.columns when this checkout has it."""
    column = getattr(spec.source, "column", None)
    return column(name) if callable(column) else (name, None)


def mapped_source(spec: Any, catalog_columns: list[Column]) -> tuple[Relation, dict[str, Column]]:
    """The spec's columns as the pipeline reads them from the table: by spec name, renamed and cast."""
    found = {c.name: c for c in catalog_columns}
    expressions: dict[str, sql.Composable] = {}
    columns: dict[str, Column] = {}
    for _, name, _ in _spec_columns(spec):
        source_name, cast = _source_column(spec, name)
        if source_name not in found:
            continue
        expression: sql.Composable = sql.Identifier(source_name)
        kind, category = found[source_name].type, found[source_name].category
        if cast:
            kind, category = CAST_TYPES[cast]
            expression = sql.SQL("CAST({} AS {})").format(expression, sql.SQL(kind))  # a fixed word, never the file's
        if expression != sql.Identifier(name):
            expressions[name] = expression
        columns[name] = Column(name, kind, category)
    return Relation(spec.source.table, expressions), columns


def _columns_hint(name: str, found: list[Column]) -> str:
    """The closest column names, or the columns themselves when there are few."""
    names = [c.name for c in found]
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    if close:
        return f"did you mean {' or '.join(map(repr, close))}?"
    return f"its columns: {', '.join(names[:12])}{', ...' if len(names) > 12 else ''} ({len(names)})"


def _named(spec: Any, name: str) -> str:
    source_name, cast = _source_column(spec, name)
    return name if source_name == name else f"{name}, from {source_name}"


def _schema_problems(spec: Any, found: list[Column], columns: dict[str, Column]) -> list[Problem]:
    problems = []
    for key, name, kind in _spec_columns(spec):
        if name not in columns:
            problems.append(Problem(key, _named(spec, name), f"no such column in {spec.source.table} "
                                    f"({_columns_hint(_source_column(spec, name)[0], found)})"))
        elif not _compatible(kind, columns[name]):
            want = kind.split(":")[-1]
            problems.append(Problem(key, _named(spec, name),
                                    f"is {columns[name].type} in the source, not {want}-compatible"))
    if not _maps_timestamp(spec):
        named = {name for _, name, _ in _spec_columns(spec)}
        problems += [Problem("features", c.name, f"is in {spec.source.table} but not in the spec: validation refuses "
                             "extra columns (add it as a feature, or read the table through a view without it)")
                     for c in found if c.name not in named]
        ts = columns.get(spec.timestamp)
        if ts is not None and ts.type != "timestamp with time zone":
            problems.append(Problem("timestamp", spec.timestamp, f"is {ts.type}: the pipeline reads timestamptz "
                                    "(cast it in a view)"))
    return problems


def _maps_timestamp(spec: Any) -> bool:
    """Whether the spec maps its source columns itself (issue 12 item 1), so a date is acceptable."""
    return any(f.name in ("columns", "timezone") for f in dataclasses.fields(spec.source))


def row_problems(spec: Any, nights: list[Night]) -> list[Problem]:
    low = spec.validation.min_rows
    return [Problem("validation.min_rows", "", f"night {n.day} has {n.rows} rows, below {low}")
            for n in nights if n.rows < low]


def null_problems(spec: Any, nights: list[Night]) -> list[Problem]:
    problems = []
    for i, f in enumerate(spec.features):
        worst = max((n for n in nights if n.rows and f.name in n.non_null), key=lambda n: n.null_share(f.name),
                    default=None)
        if worst is not None and worst.null_share(f.name) > f.max_null_share:
            problems.append(Problem(f"features[{i}].max_null_share", f.name,
                                    f"night {worst.day} is {worst.null_share(f.name):.1%} null, above "
                                    f"{f.max_null_share:.1%}"))
    return problems


def label_problems(spec: Any, nights: list[Night], newest: dt.date) -> list[Problem]:
    name, delay = spec.label.name, spec.label.delay_days
    if not any(n.non_null.get(name) for n in nights):
        return [Problem("label.delay_days", name, f"no labelled row in the last {len(nights)} nights "
                                                  f"({nights[0].day}..{newest}): labels never arrive")]
    due = [n for n in nights if n.rows and n.day <= newest - dt.timedelta(days=delay)]
    late = [n for n in due if not n.non_null.get(name)]
    if not late:
        return []
    seen = inferred_delay(nights, name, newest)
    return [Problem("label.delay_days", name, f"{delay} says nights up to {newest - dt.timedelta(days=delay)} "
                                              f"are labelled, but {', '.join(str(n.day) for n in late)} have no label"
                                              f" (labels arrive after {seen} days here)")]


def _value_problems(conn: Connection, spec: Any, source: Relation, columns: dict[str, Column], ts: Column,
                    first: dt.date, nights: list[Night]) -> tuple[int, list[Problem]]:
    """Numeric values outside the declared ranges and categories not declared, on the window's sample."""
    features = _checkable(spec, columns)
    numeric = [f.name for _, f in features if f.type == "numeric"]
    text = [f.name for _, f in features if f.type == "categorical"]
    sample = sampled(source, ts, _timezone(spec), first, sum(n.rows for n in nights), numeric + text)
    stats = sample_stats(conn, sample, numeric, [])
    problems = []
    for i, f in features:
        if f.type == "numeric" and f.name in stats.numeric:
            problems += _range_problem(conn, sample, i, f, stats.numeric[f.name])
        elif f.type == "categorical":
            problems += _category_problem(conn, sample, i, f, stats.rows)
    return stats.rows, problems


def _checkable(spec: Any, columns: dict[str, Column]) -> list[tuple[int, Any]]:
    """(index, feature) of the features present in the source with a compatible type."""
    return [(i, f) for i, f in enumerate(spec.features) if f.name in columns and _compatible(f.type, columns[f.name])]


def _range_problem(conn: Connection, sample: sql.Composable, i: int, f: Any,
                   stats: tuple[float, float, float, float]) -> list[Problem]:
    low, _, _, high = stats
    below = f.min is not None and low < f.min
    above = f.max is not None and high > f.max
    if not (below or above):
        return []
    c = sql.Identifier(f.name)
    query = sql.SQL("SELECT count(*) FILTER (WHERE {c} < {lo}), count(*) FILTER (WHERE {c} > {hi}) FROM {s}").format(
        c=c, lo=sql.Literal(f.min if f.min is not None else -math.inf),
        hi=sql.Literal(f.max if f.max is not None else math.inf), s=sample)
    with conn.cursor() as cur:
        cur.execute(query)
        n_below, n_above = cur.fetchone()
    key = f"features[{i}].{'min' if below else 'max'}"
    return [Problem(key, f.name, f"{n_below + n_above} sampled rows outside [{_bound(f.min)}, {_bound(f.max)}]: values seen "
                                 f"from {_num(low)} to {_num(high)}")]


def _category_problem(conn: Connection, sample: sql.Composable, i: int, f: Any, rows: int) -> list[Problem]:
    c = sql.Identifier(f.name)
    query = sql.SQL("SELECT {c}::text, count(*) FROM {s} WHERE {c} IS NOT NULL AND NOT ({c}::text = ANY({cats})) "
                    "GROUP BY 1 ORDER BY 2 DESC").format(c=c, s=sample, cats=sql.Literal(list(f.categories)))
    with conn.cursor() as cur:
        cur.execute(query)
        unseen = cur.fetchall()
    share = sum(n for _, n in unseen) / rows if rows else 0.0
    if not unseen or share <= f.max_unseen_share:
        return []
    listed = ", ".join(f"{value!r} ({n} rows)" for value, n in unseen[:8]) + (" ..." if len(unseen) > 8 else "")
    return [Problem(f"features[{i}].categories", f.name, f"values not declared: {listed}; {share:.1%} of sampled rows "
                                                         f"(max_unseen_share {f.max_unseen_share:.1%})")]


def _bound(value: float | None) -> str:
    return "-" if value is None else _num(value)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _timezone(spec: Any) -> str:
    return getattr(spec.source, "timezone", None) or "UTC"


def check_nights(spec: Any) -> int:
    """Nights checked: the validation's median window, and enough to see labels of the declared delay."""
    return max(7, spec.validation.row_norm_days, spec.label.delay_days + 3)


def reads_catalog(spec: Any) -> bool:
    """Whether check_spec can check this spec in SQL (a PostgreSQL table); source_check.check_by_reading
    checks any other source by reading its nights."""
    return spec.source.kind == "postgres" and bool(spec.source.table)


def check_spec(conn: Connection, spec: Any, nights: int | None = None) -> CheckReport:
    """Every problem of a spec against its live source, at once (an empty list: the spec fits)."""
    if not reads_catalog(spec):
        raise ValueError(f"check_spec reads a PostgreSQL table; {spec.source.described} is read by "
                         "source_check.check_by_reading")
    report = CheckReport(spec.source.table)
    try:
        found = catalog(conn, spec.source.table)
    except SourceError as exc:
        report.problems.append(Problem("source.table", "", str(exc)))
        return report
    source, columns = mapped_source(spec, found)
    report.problems += _schema_problems(spec, found, columns)
    ts = columns.get(spec.timestamp)
    if ts is None or ts.type not in TIMESTAMP_TYPES:
        return report
    report.problems += _window_problems(conn, spec, source, columns, nights, report)
    conn.rollback()
    return report


def _window_problems(conn: Connection, spec: Any, source: Relation, columns: dict[str, Column],
                     nights: int | None, report: CheckReport) -> list[Problem]:
    """What the last nights' rows say: row counts, null shares, labels, ranges and categories."""
    ts, zone = columns[spec.timestamp], _timezone(spec)
    newest = newest_day(conn, source, ts, zone)
    if newest is None:
        return [Problem("source.table", spec.timestamp, f"{spec.source.table} has no rows")]
    first = newest - dt.timedelta(days=(nights or check_nights(spec)) - 1)
    report.nights = nightly_counts(conn, source, ts, zone, list(columns), first, newest)
    problems = row_problems(spec, report.nights) + null_problems(spec, report.nights)
    if spec.label.name in columns:
        problems += label_problems(spec, report.nights, newest)
    report.sample_rows, found = _value_problems(conn, spec, source, columns, ts, first, report.nights)
    return problems + found
