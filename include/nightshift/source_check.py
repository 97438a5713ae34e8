"""`spec check` for any source: the last nights read through the pipeline's own reader, then checked.

onboarding.check_spec checks a PostgreSQL table in SQL (catalog, one GROUP BY, a TABLESAMPLE). A
query, a database behind a common-sql hook or files under an fsspec path have no catalog to ask, so
here the nights are read exactly as the snapshot step reads them (sources.SourceReader: mapping,
casts, time zone and all), and the same rules are applied to what came back: missing columns and
casts that fail, rows per night, null shares, label arrival, ranges and undeclared categories. What
the reader refuses (a missing timestamp column, a value a cast cannot read) is a problem named by the
reader's own message, the one the nightly run would fail with.

The newest night is the last one with rows, found by walking back from today (in source.timezone) at
most LOOKBACK_DAYS nights: reading an empty night is cheap for every reader.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd

from include.nightshift.onboarding import (CheckReport, Night, Problem, check_nights, label_problems, null_problems,
                                           row_problems)
from include.nightshift.sources import SourceReader

LOOKBACK_DAYS = 60      # nights walked back from today to find the newest night with rows
SAMPLE_ROWS = 100_000   # rows of the window the range and category checks look at, at most (seeded)


class Unreadable(Exception):
    """The reader refused the source (a missing timestamp column, a cast that fails): one problem."""


def _read(reader: SourceReader, spec: Any, day: dt.date) -> pd.DataFrame:
    from include.nightshift.snapshot import SourceSchemaError

    try:
        return reader.read_window(spec, day).to_pandas()
    except (SourceSchemaError, ValueError, KeyError) as exc:
        raise Unreadable(str(exc)) from exc


def _newest(reader: SourceReader, spec: Any, today: dt.date) -> tuple[dt.date, pd.DataFrame] | None:
    for back in range(LOOKBACK_DAYS):
        day = today - dt.timedelta(days=back)
        df = _read(reader, spec, day)
        if len(df):
            return day, df
    return None


def _night(day: dt.date, df: pd.DataFrame) -> Night:
    return Night(day, len(df), {c: int(df[c].notna().sum()) for c in df.columns})


def _missing_columns(spec: Any, df: pd.DataFrame) -> list[Problem]:
    wanted = [("entity_key.name", spec.entity_key.name), ("label.name", spec.label.name)]
    wanted += [(f"features[{i}].name", f.name) for i, f in enumerate(spec.features)]
    return [Problem(key, name, f"no such column in {spec.source.described} (source column "
                               f"{spec.source.column(name)[0]!r})")
            for key, name in wanted if name not in df.columns]


def _numeric_problems(i: int, f: Any, values: pd.Series) -> list[Problem]:
    numbers = pd.to_numeric(values, errors="coerce").dropna()
    lowest = -math.inf if f.min is None else f.min
    highest = math.inf if f.max is None else f.max
    outside = int(((numbers < lowest) | (numbers > highest)).sum())
    if not outside:
        return []
    low, high = float(numbers.min()), float(numbers.max())
    key = f"features[{i}].{'min' if low < lowest else 'max'}"
    return [Problem(key, f.name, f"{outside} sampled rows outside [{_bound(f.min)}, {_bound(f.max)}]: values seen "
                                 f"from {low:g} to {high:g}")]


def _category_problems(i: int, f: Any, values: pd.Series) -> list[Problem]:
    present = values.dropna().astype(str)
    unseen = present[~present.isin(list(f.categories))].value_counts()
    share = float(unseen.sum() / len(values)) if len(values) else 0.0
    if unseen.empty or share <= f.max_unseen_share:
        return []
    listed = ", ".join(f"{v!r} ({n} rows)" for v, n in unseen.head(8).items()) + (" ..." if len(unseen) > 8 else "")
    return [Problem(f"features[{i}].categories", f.name, f"values not declared: {listed}; {share:.1%} of sampled "
                                                         f"rows (max_unseen_share {f.max_unseen_share:.1%})")]


def _bound(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _value_problems(spec: Any, window: pd.DataFrame) -> list[Problem]:
    problems: list[Problem] = []
    for i, f in enumerate(spec.features):
        if f.name not in window.columns:
            continue
        check = _numeric_problems if f.type == "numeric" else _category_problems
        problems += check(i, f, window[f.name])
    return problems


def check_by_reading(reader: SourceReader, spec: Any, nights: int | None = None,
                     today: dt.date | None = None) -> CheckReport:
    """Every problem of a spec against its source, at once, from its last nights as the pipeline reads them."""
    report = CheckReport(spec.source.described)
    today = today or dt.datetime.now(ZoneInfo(spec.source.timezone)).date()
    try:
        found = _newest(reader, spec, today)
        if found is None:
            report.problems.append(Problem("source", "", f"{spec.source.described} has no rows in the "
                                                         f"{LOOKBACK_DAYS} nights up to {today}"))
            return report
        newest, last = found
        count = nights or check_nights(spec)
        days = [newest - dt.timedelta(days=back) for back in range(count - 1, 0, -1)]
        frames = [_read(reader, spec, day) for day in days] + [last]
    except Unreadable as exc:
        report.problems.append(Problem("source.columns", "", str(exc)))
        return report
    report.nights = [_night(day, df) for day, df in zip([*days, newest], frames)]
    window = pd.concat([f for f in frames if len(f)], ignore_index=True)
    window = window.sample(n=min(len(window), SAMPLE_ROWS), random_state=0)
    report.sample_rows = len(window)
    report.problems += _missing_columns(spec, last) + row_problems(spec, report.nights)
    report.problems += null_problems(spec, report.nights) + _value_problems(spec, window)
    if spec.label.name in last.columns:
        report.problems += label_problems(spec, report.nights, newest)
    return report
