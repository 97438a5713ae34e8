"""The validation step: a Great Expectations suite, built from the dataset spec, run on one snapshot.

Why GX and not a page of pandas checks: the suite is a reviewable artifact (it renders as Data
Docs), its results are a standard, machine-readable record, and the same suite could later run
on another backend. Why the suite is built from the spec: a new data set must need a new spec
file and nothing else, so every column name, type and threshold below comes from the spec.

The checks, per column:
- schema: the snapshot's columns are exactly ``spec.columns`` (missing and extra both fail);
- types: key integer or string, timestamp a timezone-aware datetime, numeric features and the
  label numeric, categorical features strings;
- nulls: key and timestamp never null, each feature at most ``max_null_share`` null, the label
  never null when the day is labelled;
- ranges: numeric features within [min, max] when given and never +/-inf; the label in {0, 1};
  timestamps within the snapshot's day, [day 00:00 UTC, day+1 00:00 UTC);
- categories: at most ``max_unseen_share`` of a feature's values outside its categories;
- the entity key unique; the row count at least ``min_rows`` and at least ``min_row_ratio``
  times the median of the recent days' counts.

Checks on a column that is missing are not run (the schema check already names the column),
so a missing column is reported once, not once per check.

Importing this module is cheap: great_expectations (about 3 s to import) and pandas are
imported inside the functions that need them, so a DAG file or an operator module can import
``ValidationFailed`` without paying for them.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import great_expectations as gx
    import pandas as pd

    from include.nightshift.spec import DatasetSpec

INTEGER_TYPES = [
    "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "Int8Dtype", "Int16Dtype", "Int32Dtype", "Int64Dtype",
    "UInt8Dtype", "UInt16Dtype", "UInt32Dtype", "UInt64Dtype",
    "int",  # an object column of Python ints (checked value by value)
]
NUMERIC_TYPES = [*INTEGER_TYPES, "float16", "float32", "float64", "Float32Dtype", "Float64Dtype", "float"]
# "str" makes GX check an object column value by value; "StringDtype" matches pandas' string dtype.
STRING_TYPES = ["str", "StringDtype"]
# GX compares the dtype's scalar type: pandas.Timestamp is what a timezone-aware datetime column holds.
TIMESTAMP_TYPE = "Timestamp"

EXAMPLES = 5  # unexpected values shown per failed check
RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": EXAMPLES}


@dataclass
class Failure:
    """One failed check, in words a person on call can act on."""

    expectation: str
    column: str | None
    details: str


@dataclass
class ValidationResult:
    """What the validate task needs: a verdict, the failures in words, and where the report is."""

    success: bool
    rows: int
    failures: list[Failure] = field(default_factory=list)
    evaluated: int = 0
    report_path: str | None = None

    def message(self) -> str:
        """One paragraph naming every failed check and column: the task's exception text."""
        if self.success:
            return f"Snapshot validation passed: {self.evaluated} checks on {self.rows} rows."
        parts = [f"[{f.expectation}] {f.details}" for f in self.failures]
        text = (f"Snapshot validation failed: {len(self.failures)} problem(s) in {self.evaluated} checks "
                f"on {self.rows} rows: " + "; ".join(parts) + ".")
        return text + (f" Report: {self.report_path}" if self.report_path else "")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only: this goes to XCom and the run-history table."""
        return asdict(self)


class ValidationFailed(Exception):
    """Raised by the validate task when a snapshot fails; str(exc) is the result's message."""

    def __init__(self, result: ValidationResult) -> None:
        super().__init__(result.message())
        self.result = result


# --- the suite -----------------------------------------------------------------------------


def _rule(violation: str, **extra: Any) -> dict[str, Any]:
    """Meta kept on each expectation: the words used when it fails (and shown in Data Docs)."""
    return {"violation": violation, **extra}


def _not_null(column: str, max_null_share: float) -> Any:
    """At most max_null_share null; with a share of 1 or more, at least one non-null value."""
    import great_expectations.expectations as gxe

    if max_null_share <= 0:
        return gxe.ExpectColumnValuesToNotBeNull(column=column, meta=_rule("are null (never allowed)"))
    mostly = max(1.0 - max_null_share, 1e-9)  # a column entirely null always fails
    return gxe.ExpectColumnValuesToNotBeNull(
        column=column, mostly=mostly, meta=_rule(f"are null (allowed: at most {max_null_share:.2%})"))


def _bounds_text(low: Any, high: Any, *, right_open: bool = False) -> str:
    if low is not None and high is not None:
        return f"outside [{low:g}, {high:g}]" if not right_open else f"outside [{low}, {high})"
    return f"below {low:g}" if low is not None else f"above {high:g}"


def _min_rows(spec: DatasetSpec, recent_row_counts: Sequence[int]) -> tuple[int, str]:
    """The row floor for today, and why: the spec's minimum or a share of the recent median."""
    floor, why = spec.validation.min_rows, f"validation.min_rows = {spec.validation.min_rows}"
    if recent_row_counts:
        median = statistics.median(recent_row_counts)
        relative = math.ceil(spec.validation.min_row_ratio * median)
        if relative > floor:
            floor = relative
            why = (f"validation.min_row_ratio {spec.validation.min_row_ratio:g} x median {median:g} "
                   f"of the {len(recent_row_counts)} recent days")
    return floor, why


def _table_expectations(spec: DatasetSpec, recent_row_counts: Sequence[int]) -> list[Any]:
    import great_expectations.expectations as gxe

    floor, why = _min_rows(spec, recent_row_counts)
    return [
        gxe.ExpectTableColumnsToMatchSet(column_set=spec.columns, exact_match=True,
                                         meta=_rule("columns differ from the spec")),
        gxe.ExpectTableRowCountToBeBetween(min_value=floor, meta=_rule(f"expected at least {floor} rows ({why})")),
    ]


def _key_expectations(spec: DatasetSpec) -> list[Any]:
    import great_expectations.expectations as gxe

    key = spec.entity_key
    integer = key.type in ("bigint", "integer")
    return [
        gxe.ExpectColumnValuesToBeInTypeList(
            column=key.name, type_list=INTEGER_TYPES if integer else STRING_TYPES,
            meta=_rule(f"are not {'integers' if integer else 'strings'} (entity_key.type {key.type})")),
        gxe.ExpectColumnValuesToNotBeNull(column=key.name, meta=_rule("are null (the entity key never is)")),
        gxe.ExpectColumnValuesToBeUnique(column=key.name, meta=_rule("are duplicated keys (the entity key is unique)")),
    ]


def _timestamp_expectations(spec: DatasetSpec, day: dt.date) -> list[Any]:
    import great_expectations.expectations as gxe

    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.timezone.utc)
    end = start + dt.timedelta(days=1)
    window = f"outside the day [{start:%Y-%m-%d %H:%M} UTC, {end:%Y-%m-%d %H:%M} UTC)"
    return [
        gxe.ExpectColumnValuesToBeOfType(column=spec.timestamp, type_=TIMESTAMP_TYPE,
                                         meta=_rule("is not a timezone-aware datetime")),
        gxe.ExpectColumnValuesToNotBeNull(column=spec.timestamp, meta=_rule("are null (the timestamp never is)")),
        gxe.ExpectColumnValuesToBeBetween(column=spec.timestamp, min_value=start, max_value=end, strict_max=True,
                                          meta=_rule(window)),
    ]


def _feature_expectations(feature: Any) -> list[Any]:
    import great_expectations.expectations as gxe

    name = feature.name
    out = [_not_null(name, feature.max_null_share)]
    if feature.type == "numeric":
        out.insert(0, gxe.ExpectColumnValuesToBeInTypeList(column=name, type_list=NUMERIC_TYPES,
                                                           meta=_rule("are not numeric")))
        if feature.min is not None or feature.max is not None:
            out.append(gxe.ExpectColumnValuesToBeBetween(column=name, min_value=feature.min, max_value=feature.max,
                                                         meta=_rule(_bounds_text(feature.min, feature.max))))
        out.append(gxe.ExpectColumnValuesToNotBeInSet(column=name, value_set=[math.inf, -math.inf],
                                                      meta=_rule("are +/-inf (never allowed)")))
    else:
        out.insert(0, gxe.ExpectColumnValuesToBeInTypeList(column=name, type_list=STRING_TYPES,
                                                           meta=_rule("are not strings")))
        allowed = feature.max_unseen_share
        kwargs = {"mostly": 1.0 - allowed} if allowed > 0 else {}
        out.append(gxe.ExpectColumnValuesToBeInSet(
            column=name, value_set=list(feature.categories), **kwargs,
            meta=_rule(f"are not among the spec's categories (allowed: at most {allowed:.2%} unseen)")))
    return out


def _label_expectations(spec: DatasetSpec, labelled: bool) -> list[Any]:
    import great_expectations.expectations as gxe

    name = spec.label.name
    out = [
        gxe.ExpectColumnValuesToBeInTypeList(column=name, type_list=NUMERIC_TYPES, meta=_rule("are not numeric")),
        gxe.ExpectColumnValuesToBeInSet(column=name, value_set=[0, 1], meta=_rule("are not 0 or 1")),
    ]
    if labelled:
        out.append(gxe.ExpectColumnValuesToNotBeNull(column=name, meta=_rule("are null (the day is labelled)")))
    return out


def build_suite(spec: DatasetSpec, *, day: dt.date, labelled: bool,
                recent_row_counts: Sequence[int] = ()) -> gx.ExpectationSuite:
    """The day's expectation suite, from the spec alone (the day and row norm are its only inputs)."""
    import great_expectations as gx

    expectations = [
        *_table_expectations(spec, recent_row_counts),
        *_key_expectations(spec),
        *_timestamp_expectations(spec, day),
        *(e for f in spec.features for e in _feature_expectations(f)),
        *_label_expectations(spec, labelled),
    ]
    return gx.ExpectationSuite(name=spec.name, expectations=expectations,
                               meta={"day": day.isoformat(), "labelled": labelled})
