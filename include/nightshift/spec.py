"""The dataset spec: one YAML file describes a model's data and its whole policy.

Everything the pipeline knows about a data set comes from here, so that a new data set
needs a new spec file and nothing else. The loader is strict on purpose: an unknown key,
a wrong type or a missing threshold is refused with the dotted path of the key at fault,
because a typo in a threshold must never silently become "no threshold".

The spec is a tree of frozen standard-library dataclasses that pydantic validates (strict
scalars, bounds, Literal choices, cross-field validators). They stay plain dataclasses rather
than pydantic models so that `dataclasses.replace` keeps working for the callers that derive
a spec from another without re-validating it (tests build specs the loader would refuse, to
prove the core still quotes every name). The JSON Schema of the spec is published as
docs/dataset-spec.schema.json; regenerate it with

    python -m include.nightshift.spec --schema > docs/dataset-spec.schema.json

PyYAML and pydantic only: the DAG file parses specs at DAG-parse time.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import functools
import json
import os
import re
import sys
import zoneinfo
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, get_args, get_origin, get_type_hints

import yaml
from pydantic import (AfterValidator, ConfigDict, Field, Strict, TypeAdapter, ValidationError, WrapValidator,
                      field_validator, model_validator)
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$")
RESERVED_ROLES = {"public", "none", "current_user", "current_role", "session_user"}
# metric -> greater is better
METRICS = {"roc_auc": True, "average_precision": True, "accuracy": True, "f1": True, "log_loss": False,
           "rmse": False, "mae": False, "r2": True, "macro_f1": True}
Metric = Literal["roc_auc", "average_precision", "accuracy", "f1", "log_loss", "rmse", "mae", "r2", "macro_f1"]
# The task a spec's label poses (`task`), and the metrics that can judge it.
TASKS = ("binary", "multiclass", "regression")
Task = Literal["binary", "multiclass", "regression"]
Engine = Literal["local", "dask"]
TASK_METRICS = {"binary": ("roc_auc", "average_precision", "accuracy", "f1", "log_loss"),
                "multiclass": ("log_loss", "macro_f1", "accuracy"),
                "regression": ("rmse", "mae", "r2")}
KeyType = Literal["bigint", "integer", "text"]
KEY_TYPES = set(get_args(KeyType))
FEATURE_TYPES = {"numeric", "categorical"}


class SpecError(ValueError):
    """A dataset spec is invalid; each line of the message starts with the key at fault."""


# --- field types ---------------------------------------------------------------------------
# Strict scalars: YAML's "100" stays text and 14.5 is no integer (an int is still a number).


def _plain_identifier(value: str) -> str:
    """Names from a spec reach SQL (always quoted too); only plain names are accepted."""
    if not IDENTIFIER.match(value):
        raise PydanticCustomError("identifier", "{value} is not a plain SQL identifier (letters, digits, underscore)",
                                  {"value": repr(value)})
    return value


def _table_name(value: str) -> str:
    parts = value.split(".")
    if len(parts) > 2:
        raise PydanticCustomError("table", "{value} must be 'table' or 'schema.table'", {"value": repr(value)})
    for part in parts:
        _plain_identifier(part)
    return value


def _grantable_role(value: str) -> str:
    """PUBLIC (every role) and the predefined pg_* roles are refused: granting read access to
    them would open the warehouse to far more than one consumer login."""
    if value.lower() in RESERVED_ROLES or value.lower().startswith("pg_"):
        raise PydanticCustomError("reserved_role", "{value} is a reserved PostgreSQL role; name the consumers' own role",
                                  {"value": repr(value)})
    return value


def _share_message(value: Any, handler: Any) -> Any:
    """One message for both ends of a share, so that it reads as the range it is."""
    try:
        return handler(value)
    except ValidationError as exc:
        if exc.errors()[0]["type"] in ("greater_than_equal", "less_than_equal"):
            raise PydanticCustomError("share", "must be between 0 and 1, got {value}", {"value": value}) from None
        raise


Text = Annotated[str, Strict()]
Integer = Annotated[int, Strict()]
Number = Annotated[float, Strict(), Field(allow_inf_nan=False)]
Positive = Annotated[int, Strict(), Field(ge=1)]
NonNegative = Annotated[float, Strict(), Field(ge=0, allow_inf_nan=False)]
Share = Annotated[float, Strict(), Field(ge=0, le=1, allow_inf_nan=False), WrapValidator(_share_message)]
Identifier = Annotated[str, Strict(), AfterValidator(_plain_identifier),
                       Field(json_schema_extra={"pattern": IDENTIFIER.pattern})]
TableName = Annotated[str, Strict(), AfterValidator(_table_name), Field(json_schema_extra={"pattern": TABLE.pattern})]
Role = Annotated[Identifier, AfterValidator(_grantable_role)]


def _refuse(title: str, problems: list[tuple[tuple[str | int, ...], PydanticCustomError, Any]]) -> None:
    """Raise the cross-field problems at the keys they concern (a model validator alone would
    report them at the section)."""
    if problems:
        raise ValidationError.from_exception_data(
            title, [{"type": error, "loc": loc, "input": value} for loc, error, value in problems])


class _Section:
    """What every part of a spec shares: unknown keys are refused, and a key written with no
    value (`description:`) counts as absent, as the hand-written reader did before."""

    __pydantic_config__ = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, data: Any) -> Any:
        return {k: v for k, v in data.items() if v is not None} if isinstance(data, dict) else data


# --- the spec ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class NumericFeature(_Section):
    """A numeric model input, checked against its range each night."""

    name: Annotated[Identifier, Field(description="Column name in the source table.")]
    type: Literal["numeric"]
    min: Annotated[Number | None, Field(description="Smallest valid value (validation fails below it).")] = None
    max: Annotated[Number | None, Field(description="Largest valid value (validation fails above it).")] = None
    max_null_share: Annotated[Share, Field(description="Largest share of nulls a night may have.")] = 0.0
    # Not keys of a numeric feature (a file giving them is refused), but every feature answers them.
    categories: ClassVar[tuple[str, ...]] = ()
    max_unseen_share: ClassVar[float] = 0.0

    @model_validator(mode="after")
    def _min_not_above_max(self) -> NumericFeature:
        if self.min is not None and self.max is not None and self.min > self.max:
            _refuse("NumericFeature", [(("min",), PydanticCustomError(
                "range", "{low} is above max {high}", {"low": self.min, "high": self.max}), self.min)])
        return self


@dataclass(frozen=True, kw_only=True)
class CategoricalFeature(_Section):
    """A categorical model input with a closed list of known categories."""

    name: Annotated[Identifier, Field(description="Column name in the source table.")]
    type: Literal["categorical"]
    categories: Annotated[tuple[Text, ...], Field(min_length=1, description=(
        "The known categories, as text (quote values YAML would read otherwise: 'NO', 'yes', '01')."))]
    max_null_share: Annotated[Share, Field(description="Largest share of nulls a night may have.")] = 0.0
    max_unseen_share: Annotated[Share, Field(description="Largest share of rows whose category is not listed.")] = 0.0
    min: ClassVar[float | None] = None
    max: ClassVar[float | None] = None


Feature = Annotated[NumericFeature | CategoricalFeature, Field(discriminator="type")]
_FEATURE_KINDS = {"numeric": NumericFeature, "categorical": CategoricalFeature}


# A cast a spec may ask for -> the PostgreSQL type it names (a fixed word, never text from the file).
CASTS = {"date": "date", "timestamp": "timestamp", "timestamptz": "timestamptz", "integer": "integer",
         "bigint": "bigint", "numeric": "numeric", "float": "double precision", "text": "text"}
Cast = Literal["date", "timestamp", "timestamptz", "integer", "bigint", "numeric", "float", "text"]
# The night's window, bound as named parameters of a source query (psycopg, never string formatting).
QUERY_PARAMETERS = {"start": "the night's first instant (timestamptz)", "end": "the next night's first instant "
                    "(timestamptz, excluded)", "day": "the night's local date (date)"}
_PLACEHOLDER = re.compile(r"%%|%\((\w*)\)s|%s|%")


def _time_zone(value: str) -> str:
    """An IANA time zone name (Europe/Oslo, America/New_York, UTC), as PostgreSQL and Python both know it."""
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise PydanticCustomError("time_zone", "{value} is not an IANA time zone name (e.g. 'Europe/Oslo', "
                                  "'America/New_York', 'UTC')", {"value": repr(value)}) from None
    return value


def _window_query(value: str) -> str:
    """A SELECT that takes the night's window as %(start)s and %(end)s, or %(day)s: psycopg binds them
    (the snapshot also keeps only the night's rows); a positional %s, an unknown name or a lone % (write
    %%) is refused."""
    text = value.strip().rstrip(";").strip()
    if not re.match(r"(?is)^\s*(select|with)\b", text):
        raise PydanticCustomError("query", "must be a SELECT (or WITH ... SELECT), got {value}",
                                  {"value": repr(text[:40] + ("..." if len(text) > 40 else ""))})
    used = set()
    for match in _PLACEHOLDER.finditer(text):
        if match.group(0) == "%%":
            continue
        name = match.group(1)
        if name not in QUERY_PARAMETERS:
            written = match.group(0) if name is None else f"%({name})s"
            raise PydanticCustomError("query_parameter", "{written} is not a parameter of the night (use "
                                      "%(start)s, %(end)s or %(day)s; a literal % is written %%)",
                                      {"written": written})
        used.add(name)
    missing = [f"%({name})s" for name in ("start", "end") if name not in used]
    if missing and "day" not in used:
        raise PydanticCustomError("query_window", "must select the night's window with %(start)s and %(end)s "
                                  "(timestamptz, bound by psycopg: e.g. WHERE ts >= %(start)s AND ts < %(end)s) "
                                  "or %(day)s (the local date); missing: {missing}", {"missing": ", ".join(missing)})
    return text


def _files_path(value: str) -> str:
    """An fsspec URL template holding the partition's date: {date} or {date:<strftime format>}."""
    try:
        filled = value.format(date=dt.date(2000, 1, 2))
    except (KeyError, IndexError, ValueError, AttributeError) as exc:
        raise PydanticCustomError("files_path", "{value} is not a path template of the partition's date: use "
                                  "{date} or {date:%Y-%m-%d} and no other {...} ({error})",
                                  {"value": repr(value), "error": str(exc) or type(exc).__name__}) from None
    if filled == value:
        raise PydanticCustomError("files_path", "{value} does not hold the partition's date: put {date} or "
                                  "{date:%Y-%m-%d} where the date is in the path (e.g. .../dt={date}/*.parquet)",
                                  {"value": repr(value)})
    return value


SourceKind = Literal["postgres", "sql", "files"]
FileFormat = Literal["parquet", "csv"]
FilesPath = Annotated[str, Strict(), AfterValidator(_files_path)]
TimeZone = Annotated[str, Strict(), AfterValidator(_time_zone)]
WindowQuery = Annotated[str, Strict(), AfterValidator(_window_query)]


@dataclass(frozen=True, kw_only=True)
class SourceColumn(_Section):
    """Where one of the spec's columns comes from in the source, and the type it is read as."""

    from_: Annotated[Identifier | None, Field(alias="from", description=(
        "The source column's name (default: the spec's own name for it)."))] = None
    cast: Annotated[Cast | None, Field(description=(
        "Read the column as this type (CAST in SQL): date, timestamp (without time zone), timestamptz, integer, "
        "bigint, numeric, float (double precision) or text. A date or timestamp timestamp column is local time "
        "in source.timezone."))] = None


@dataclass(frozen=True, kw_only=True)
class Source(_Section):
    """Where the night's rows come from: a table (or a query) and how its columns map to the spec's."""

    __pydantic_config__ = ConfigDict(extra="forbid", json_schema_extra={
        "oneOf": [{"required": ["table"]}, {"required": ["query"]}, {"required": ["path"]}]})

    kind: Annotated[SourceKind, Field(description=(
        "postgres (the default: a PostgreSQL table or query, read with ADBC), sql (any database with an Airflow "
        "DB-API provider, through the connection's common-sql hook) or files (Parquet or CSV files under an fsspec "
        "path partitioned by date: source.path)."))] = "postgres"
    path: Annotated[FilesPath | None, Field(description=(
        "Kind files: an fsspec URL (a local folder, file://, s3://, memory://) with the partition's date as "
        "{date} or {date:%Y-%m-%d} (strftime), e.g. s3://bucket/flights/dt={date:%Y-%m-%d}/*.parquet; a glob, "
        "a file or a folder. The night reads its local date's partition and the UTC dates its window spans."))] \
        = None
    format: Annotated[FileFormat | None, Field(description=(
        "Kind files: parquet or csv (default: csv when the path names .csv files, else parquet)."))] = None
    table: Annotated[TableName | None, Field(description=(
        "'table' or 'schema.table': one row per entity per day. Give table or query, not both."))] = None
    query: Annotated[WindowQuery | None, Field(description=(
        "Instead of table: a SELECT over the source, given the night's window as the named parameters %(start)s "
        "and %(end)s (timestamptz) or %(day)s (the local date), which psycopg binds. A literal % is written %%."))] \
        = None
    connection_id: Annotated[Text, Field(description="Airflow connection of the source database.")] = \
        "nightshift_source"
    timezone: Annotated[TimeZone, Field(description=(
        "IANA time zone of the day boundary: night D holds the rows from D 00:00 to D+1 00:00 local time, and a "
        "date or timestamp-without-time-zone timestamp column is read as local time here."))] = "UTC"
    columns: Annotated[dict[Identifier, SourceColumn], Field(description=(
        "By the spec's column name (entity key, timestamp, label or feature): the source column it comes from "
        "(from) and/or a cast. Columns not listed are read by their own name, as they are. Source columns the "
        "spec does not name are ignored."))] = dataclasses.field(default_factory=dict)

    @property
    def schema_and_name(self) -> tuple[str | None, str]:
        parts = (self.table or "").split(".")
        return (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])

    @property
    def described(self) -> str:
        """The source in a few words, for messages and the DAG page."""
        if self.kind == "files":
            return f"{self.file_format} files {self.path}"
        return f"table {self.table}" if self.table else "the spec's source.query"

    @property
    def file_format(self) -> str:
        """Kind files: the files' format, as given or from the path's name."""
        return self.format or ("csv" if ".csv" in (self.path or "").lower() else "parquet")

    def column(self, name: str) -> tuple[str, str | None]:
        """(source column, cast or None) of a spec column."""
        mapped = self.columns.get(name)
        return (mapped.from_ or name, mapped.cast) if mapped else (name, None)

    def day_bounds(self, day: dt.date) -> tuple[dt.datetime, dt.datetime]:
        """Night `day`'s window, [day 00:00, day+1 00:00) local time, as UTC instants."""
        zone = zoneinfo.ZoneInfo(self.timezone)
        start, end = (dt.datetime.combine(d, dt.time(), tzinfo=zone) for d in (day, day + dt.timedelta(days=1)))
        return start.astimezone(dt.timezone.utc), end.astimezone(dt.timezone.utc)

    @model_validator(mode="after")
    def _table_or_query(self) -> Source:
        if self.kind == "files" or self.path is not None or self.format is not None:
            return self._files_only()
        if (self.table is None) == (self.query is None):
            _refuse("Source", [(("table",), PydanticCustomError(
                "table_or_query", "give exactly one of source.table and source.query, got {given}",
                {"given": "both" if self.table else "neither"}), self.table)])
        return self

    def _files_only(self) -> Source:
        """Kind files reads source.path (and format), never a table or query; the other kinds never a path."""
        if self.kind != "files":
            key = "path" if self.path is not None else "format"
            _refuse("Source", [((key,), PydanticCustomError(
                "files_key", "is for source.kind files only (this source is kind {kind})", {"kind": self.kind}),
                getattr(self, key))])
        given = [key for key in ("table", "query") if getattr(self, key) is not None]
        if given:
            _refuse("Source", [((given[0],), PydanticCustomError(
                "files_table", "a files source reads source.path, not a {key}", {"key": given[0]}),
                getattr(self, given[0]))])
        if self.path is None:
            _refuse("Source", [(("path",), PydanticCustomError(
                "files_path", "is required by source.kind files (an fsspec URL with the partition's {date})", {}),
                None)])
        return self


@dataclass(frozen=True, kw_only=True)
class EntityKey(_Section):
    """The column that identifies what is scored (a customer, an account)."""

    name: Annotated[Identifier, Field(description="Column name.")]
    type: Annotated[KeyType, Field(description="Column type in the warehouse.")]


@dataclass(frozen=True, kw_only=True)
class Label(_Section):
    """The target column, null until it is known: 0/1 for task binary, one of `classes` for task multiclass,
    a number for task regression."""

    name: Annotated[Identifier, Field(description="Column name.")]
    delay_days: Annotated[Integer, Field(ge=0, description="Days after the event before the label is known.")] = 1
    min: Annotated[Number | None, Field(description="Task regression only: the smallest valid label value.")] = None
    max: Annotated[Number | None, Field(description="Task regression only: the largest valid label value.")] = None
    classes: Annotated[tuple[Text, ...] | None, Field(min_length=3, description=(
        "Task multiclass only (and required there): every class the label takes, as text, in the order the "
        "published probabilities list them (quote values YAML would read otherwise)."))] = None

    def key_fields(self) -> dict[str, Any]:
        """The label's settings as the training key hashes them: a field left unset is left out, so a binary
        spec's key is what it was before the regression fields existed."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass(frozen=True, kw_only=True)
class Validation(_Section):
    """Checks on each night's snapshot before anything is trained or published."""

    min_rows: Annotated[Positive, Field(description="An empty or near-empty night fails.")]
    min_row_ratio: Annotated[Share, Field(
        description="A night fails below this share of the median row count of the last row_norm_days nights.")]
    row_norm_days: Annotated[Positive, Field(description="Nights in that median.")] = 7
    max_row_ratio: Annotated[float, Strict(), Field(ge=1, allow_inf_nan=False, description=(
        "A night fails above this multiple of the same median (or of min_rows, when the median is below it): "
        "a duplicated or runaway load. At least 1 (a night like the median passes) and above min_row_ratio."))] = 10.0
    batch_rows: Annotated[Positive | None, Field(description=(
        "A snapshot above this many rows is checked a batch of rows at a time (whole Parquet row groups, at "
        "most this many rows unless one row group is larger), and each check's counts are added up, so the "
        "step holds one batch of one column, not a whole column. The entity key's uniqueness, which does not "
        "add up over batches, is checked on as many parts of the key column, split by a hash of the key "
        "(every repeat of a key in one part; the parts wait in a temporary folder). null: every column whole."
    ))] = 1_000_000

    @model_validator(mode="after")
    def _row_bounds_leave_a_window(self) -> Validation:
        """An upper bound at or below the lower one would fail every night."""
        if self.max_row_ratio <= self.min_row_ratio:
            _refuse("Validation", [(("max_row_ratio",), PydanticCustomError(
                "max_row_ratio", "must be above validation.min_row_ratio ({low}), got {high}",
                {"low": self.min_row_ratio, "high": self.max_row_ratio}), self.max_row_ratio)])
        return self


FAMILIES = ("xgboost", "hist_gradient_boosting", "logistic_regression", "ridge")
Family = Literal["xgboost", "hist_gradient_boosting", "logistic_regression", "ridge"]
# The task's linear model: the simple baseline's family, and the one linear candidate the task accepts.
LINEAR_FAMILY = {"binary": "logistic_regression", "multiclass": "logistic_regression", "regression": "ridge"}
Calibration = Literal["none", "sigmoid", "isotonic"]


@dataclass(frozen=True, kw_only=True)
class Candidate(_Section):
    """One model family that competes for the challenger's place on the holdout."""

    family: Annotated[Family, Field(description=(
        "xgboost (XGBoost, hist), hist_gradient_boosting (scikit-learn's HistGradientBoosting) or the task's "
        "linear model on scaled numerics and one-hot categoricals: logistic_regression (task binary or "
        "multiclass) or ridge (task regression)."))]
    params: Annotated[dict[str, Any], Field(description=(
        "The estimator's parameters, passed as given; the seed comes from training.seed."))] = \
        dataclasses.field(default_factory=dict)


def _dask_problems(training: Any) -> list[tuple[tuple[str | int, ...], PydanticCustomError, Any]]:
    """engine dask trains the xgboost family only, uncalibrated: anything else asked of it is refused by name."""
    problems: list[tuple[tuple[str | int, ...], PydanticCustomError, Any]] = []
    for i, candidate in enumerate(training.candidates):
        if candidate.family != "xgboost":
            problems.append((("candidates", i, "family"), PydanticCustomError(
                "dask_family", "engine dask trains the xgboost family only, got {family}",
                {"family": repr(candidate.family)}), candidate.family))
    if training.calibration != "none":
        problems.append((("calibration",), PydanticCustomError(
            "dask_calibration", "engine dask does not calibrate: use none, got {calibration}",
            {"calibration": training.calibration}), training.calibration))
    return problems


@dataclass(frozen=True, kw_only=True)
class Training(_Section):
    """How a challenger is trained: every candidate on the same rows, the holdout picks one."""

    window_days: Annotated[Positive, Field(description="Labelled days to train on ...")]
    holdout_days: Annotated[Positive, Field(
        description="... followed by the latest labelled days, held out (out of time).")]
    min_rows: Annotated[Positive, Field(description="Fewest training rows to train at all.")]
    seed: Annotated[Integer, Field(description="Seed of the model and of every sample: same data, same model.")]
    params: Annotated[dict[str, Any], Field(description=(
        "XGBoost parameters, passed as given: the xgboost candidate's params when candidates is absent. "
        "Give either this or candidates, not both."))] = dataclasses.field(default_factory=dict)
    candidates: Annotated[tuple[Candidate, ...], Field(min_length=1, description=(
        "The model families that compete on the holdout (families unique). Absent: all three, "
        "xgboost with training.params, the others with their library defaults."))] = ()
    calibration: Annotated[Calibration, Field(description=(
        "Calibrate every candidate's probabilities (sigmoid or isotonic) on the last calibration_days of the "
        "training window, after fitting it on the days before them; none: no calibration."))] = "none"
    calibration_days: Annotated[Positive, Field(description=(
        "Days at the end of the training window that calibrate instead of train (with calibration only); "
        "fewer than window_days."))] = 2
    max_rows: Annotated[Positive | None, Field(description=(
        "Most training rows: a larger training window is trained on a seeded (seed), time-stratified sample of "
        "this many rows, each day keeping its share, sampled while the days are read; the holdout only by "
        "holdout_max_rows. null: no limit."))] = None
    holdout_max_rows: Annotated[Positive | None, Field(description=(
        "Most holdout rows: larger holdout days are judged on a seeded (seed), time-stratified sample of this many "
        "rows, each day keeping its share: the same rows for every model the gate compares and on every rerun. "
        "The train and evaluate tasks hold the holdout in memory, so at millions of rows a day this bounds them. "
        "null: every row."))] = None
    engine: Annotated[Engine, Field(description=(
        "Where the XGBoost candidate trains: local (this task's process), or dask (XGBoost's Dask interface on "
        "the cluster named by dask_connection_id, reading the window's snapshot files on its workers, so the "
        "window never has to fit in one process; only the xgboost family, no calibration). With dask the "
        "baseline and the samples kept with the model take a seeded, time-stratified sample of max_rows (or "
        "1,000,000) rows."))] = "local"
    dask_connection_id: Annotated[Text, Field(description=(
        "With engine dask: the Airflow connection whose host and port are the Dask scheduler's address (schema: "
        "the protocol, tcp by default). Its workers must reach the artifact store at the same address."))] = \
        "nightshift_dask"


    @model_validator(mode="after")
    def _candidates_fit_together(self) -> Training:
        """params and candidates would be two answers to one question; a family listed twice is ambiguous
        (its holdout metric names it); calibration needs training days left before its own."""
        problems: list[tuple[tuple[str | int, ...], PydanticCustomError, Any]] = []
        if self.params and self.candidates:
            problems.append((("params",), PydanticCustomError(
                "params_and_candidates", "give either training.params or training.candidates, not both: move "
                "these params to the xgboost candidate's params", {}), self.params))
        seen: set[str] = set()
        for i, candidate in enumerate(self.candidates):
            if candidate.family in seen:
                problems.append((("candidates", i, "family"), PydanticCustomError(
                    "duplicate_family", "{family} is listed more than once", {"family": repr(candidate.family)}),
                    candidate.family))
            seen.add(candidate.family)
        if self.calibration != "none" and self.calibration_days >= self.window_days:
            problems.append((("calibration_days",), PydanticCustomError(
                "calibration_days", "must be fewer than window_days ({window}) to leave days to fit on, got {days}",
                {"window": self.window_days, "days": self.calibration_days}), self.calibration_days))
        if self.engine == "dask":
            problems += _dask_problems(self)
        if self.max_rows is not None and self.max_rows < self.min_rows:
            problems.append((("max_rows",), PydanticCustomError(
                "max_rows", "must be at least min_rows ({min_rows}): a sample smaller than that never trains, got "
                "{max_rows}", {"min_rows": self.min_rows, "max_rows": self.max_rows}), self.max_rows))
        _refuse("Training", problems)
        return self


# Evidently 0.7's registered drift methods (stattests) for numeric and categorical columns, and the
# feature types each accepts. Static on purpose: this module is read at DAG-parse time and must not
# import evidently (seconds); tests/unit/test_drift.py checks the table against Evidently's registry.
DRIFT_METHOD_TYPES: dict[str, tuple[str, ...]] = {
    "anderson": ("numeric",), "chisquare": ("categorical",), "cramer_von_mises": ("numeric",),
    "ed": ("numeric",), "empirical_mmd": ("numeric",), "es": ("numeric",), "fisher_exact": ("categorical",),
    "g_test": ("categorical",), "hellinger": ("numeric", "categorical"),
    "jensenshannon": ("numeric", "categorical"), "kl_div": ("numeric", "categorical"), "ks": ("numeric",),
    "mannw": ("numeric",), "psi": ("numeric", "categorical"), "t_test": ("numeric",), "TVD": ("categorical",),
    "wasserstein": ("numeric",), "z": ("categorical",),
}
DRIFT_METHODS = tuple(DRIFT_METHOD_TYPES)
DriftMethod = Literal[DRIFT_METHODS]  # type: ignore[valid-type]
DriftReference = Literal["champion_training", "recent"]


@dataclass(frozen=True, kw_only=True)
class DriftTest(_Section):
    """How one feature (or every feature of a type) is tested for drift: Evidently's method and threshold."""

    method: Annotated[DriftMethod | None, Field(description=(
        "An Evidently stattest name (distances such as wasserstein, jensenshannon, psi: drift when the score is "
        "at or above the threshold; p-value tests such as ks, chisquare, z: drift when it is below). "
        "Default: chosen by type, cardinality and rows (see include/nightshift/drift.py)."))] = None
    threshold: Annotated[NonNegative | None, Field(description=(
        "The method's threshold. Default: the method's own (0.1 for distances, 0.05 for p-values)."))] = None


@dataclass(frozen=True, kw_only=True)
class Drift(_Section):
    """Drift as evidence: which features are compared, how, over which nights, and when it calls for retraining."""

    share_threshold: Annotated[Share, Field(description=(
        "A night is drifted when at least this share of the compared features drifted."))]
    sample_rows: Annotated[Positive, Field(description="Evidently runs on a seeded sample of at most this many rows.")]
    seed: Annotated[Integer, Field(description="Seed of that sample.")] = 0
    exclude: Annotated[tuple[Identifier, ...], Field(description=(
        "Features left out of drift (e.g. calendar features constant within a day): not compared, not in the "
        "share."))] = ()
    columns: Annotated[dict[Identifier, DriftTest], Field(description=(
        "Per-feature method and/or threshold, by feature name."))] = dataclasses.field(default_factory=dict)
    numeric: Annotated[DriftTest | None, Field(description=(
        "Method and/or threshold for every numeric feature without its own entry in columns."))] = None
    categorical: Annotated[DriftTest | None, Field(description=(
        "Method and/or threshold for every categorical feature without its own entry in columns."))] = None
    target: Annotated[DriftTest | None, Field(description=(
        "Method and/or threshold for the label's drift: the labels of the days the champion is monitored on "
        "against its training labels (recorded as evidence, never a reason to retrain by itself). Default: by the "
        "label's type (numeric for task regression, categorical otherwise), as for features."))] = None
    current_nights: Annotated[Positive, Field(description=(
        "The current side pools the night's rows with those of the previous current_nights - 1 nights."))] = 1
    reference: Annotated[DriftReference, Field(description=(
        "What the current window is compared with: champion_training (a sample of the champion's training rows) "
        "or recent (the reference_nights nights just before the current window, as served)."))] = \
        "champion_training"
    reference_nights: Annotated[Positive, Field(description="Nights pooled as the reference when reference is recent.")] = 14
    persist_nights: Annotated[Positive, Field(description=(
        "Drift retrains only when the night is drifted on this many consecutive nights (tonight included, against "
        "the same champion), or together with a measured quality drop (the realised interval entirely worse than "
        "the champion's holdout metric). Otherwise it is recorded and shown, not acted on."))] = 2


@dataclass(frozen=True, kw_only=True)
class Promotion(_Section):
    """The gate a challenger must pass to become the champion, and when to retrain a champion."""

    # The floor's range depends on the metric; the schema says so too (the loader checks it below).
    __pydantic_config__ = ConfigDict(extra="forbid", json_schema_extra={"if": {
        "properties": {"metric": {"enum": [m for m, greater in METRICS.items() if greater]}}},
        "then": {"properties": {"floor": {"maximum": 1}}}})

    metric: Annotated[Metric, Field(description="Holdout metric the gate compares.")]
    floor: Annotated[Number, Field(description=(
        "Never promote below this, even the first model (for log_loss: never above it). "
        "Between 0 and 1 for every metric but log_loss."), json_schema_extra={"minimum": 0})]
    min_improvement: Annotated[NonNegative, Field(
        description="A challenger must beat the champion by this much on the same holdout.")]
    slice_tolerance: Annotated[NonNegative, Field(description="... and lose no more than this on any slice.")]
    slice_columns: Annotated[tuple[Identifier, ...], Field(
        description="Categorical features whose values are the slices.")] = ()
    min_slice_rows: Annotated[Positive, Field(description="Slices with fewer holdout rows are not judged.")] = 50
    baseline_margin: Annotated[NonNegative, Field(
        description="... and beat a logistic regression trained on the same rows by this much.")]
    max_model_age_days: Annotated[Positive, Field(description="Retrain a champion older than this.")]
    realised_tolerance: Annotated[NonNegative, Field(description=(
        "Retrain (quality_decay) when the realised metric's whole interval falls more than this below the "
        "champion's holdout metric (for log_loss: above it)."))]
    realised_window_days: Annotated[Positive, Field(description=(
        "The realised metric pools the champion's last this many labelled days it never saw (after its holdout)."))] = 7
    realised_confidence: Annotated[float, Strict(), Field(gt=0, lt=1, allow_inf_nan=False, description=(
        "Confidence of the realised metric's bootstrap interval."))] = 0.95
    realised_resamples: Annotated[int, Strict(), Field(ge=20, description=(
        "Bootstrap resamples of that interval (seeded with training.seed)."))] = 200
    realised_max_rows: Annotated[Positive | None, Field(description=(
        "Labelled rows the monitor step reads from the realised window at most: when its days hold more, a "
        "seeded, time-stratified sample of this many (each day its share), the rows before sampling recorded "
        "as sampled_from; the newest labelled day's staleness scoring reads at most this many too. Bounds the "
        "step's memory whatever a night's size. null: every row."))] = 2_000_000

    @property
    def greater_is_better(self) -> bool:
        return METRICS[self.metric]

    @model_validator(mode="after")
    def _floor_fits_the_metric(self) -> Promotion:
        """A negative floor silently removes the floor; every greater-is-better metric here lives in [0, 1]."""
        context = {"metric": self.metric, "floor": self.floor}
        if METRICS[self.metric] and not 0.0 <= self.floor <= 1.0:
            _refuse("Promotion", [(("floor",), PydanticCustomError(
                "floor", "must be between 0 and 1 for {metric}, got {floor}", context), self.floor)])
        if self.floor < 0:  # log_loss: a ceiling, never below 0
            _refuse("Promotion", [(("floor",), PydanticCustomError(
                "floor", "must be 0 or more for {metric}, got {floor}", context), self.floor)])
        return self


@dataclass(frozen=True, kw_only=True)
class Scoring(_Section):
    """How the champion scores the night's population."""

    chunk_rows: Annotated[Positive, Field(description="Rows scored at a time (bounds the memory).")]
    decision_threshold: Annotated[Share, Field(description=(
        "Task binary: score at or above which the predicted label is 1 (unused by task regression)."))] = 0.5
    allow_no_predictions: Annotated[bool, Strict(), Field(description=(
        "A night with no champion after the gate (nothing can score) is recorded as decision no_model and "
        "alerted either way; false (the default): the run fails, true: the run stays green."))] = False
    horizon_days: Annotated[Integer, Field(ge=0, description=(
        "The night scores the rows of the day this many days after it (0: its own day). With labels known "
        "the same day (label.delay_days 0) it must be at least 1: the night's own rows already have their "
        "outcome, and that day is the newest of the holdout that chose the model."))] = 0
    shard_rows: Annotated[Positive | None, Field(description=(
        "A night of more rows than this is scored in shards of this many rows, one mapped score_shard task each "
        "(any worker), staged in predictions_staging and published in one transaction. null (the default): "
        "one score task scores the whole night."))] = None

    def shards(self, rows: int) -> int:
        """How many score_shard tasks a night of `rows` rows takes (0: the score task scores it itself)."""
        if self.shard_rows is None or rows <= self.shard_rows:
            return 0
        return -(-rows // self.shard_rows)


@dataclass(frozen=True, kw_only=True)
class Staleness(_Section):
    """How fast the model goes stale: each labelled day scored by the champion and older blessed versions."""

    versions: Annotated[Positive, Field(description=(
        "Versions that score each new labelled day: the champion and the newest blessed ones before it, "
        "up to this many in all."))] = 5
    min_days: Annotated[Positive, Field(description=(
        "Labelled days scored by versions of different ages before a retraining cadence is recommended."))] = 7
    history_days: Annotated[Positive, Field(description="Labelled days the recommendation is fitted on, newest first.")] = 90


@dataclass(frozen=True, kw_only=True)
class Shadow(_Section):
    """Shadow scoring: a version that scores the night beside the champion, unserved, until realised labels say
    whether it is better (include/nightshift/shadow.py)."""

    max_gap: Annotated[NonNegative | None, Field(description=(
        "A challenger the gate rejected only because it did not beat the champion by promotion.min_improvement, "
        "and that fell short of the champion's holdout metric by at most this much (0: it was at least as good), "
        "becomes the shadow. null: only a version named in the trigger form (shadow_version) shadows."))] = 0.0
    min_nights: Annotated[Positive | None, Field(description=(
        "The shadow is promoted (reason shadow_wins) once it beat the champion on this many consecutive newest "
        "labelled days, each by min_improvement, and passes the gate on those days' pooled rows. At most "
        "promotion.realised_window_days. null: 3, or the window's days when it has fewer."))] = None
    min_improvement: Annotated[NonNegative | None, Field(description=(
        "How much better than the champion the shadow must be on each of those days, and pooled. "
        "null: promotion.min_improvement."))] = None


@dataclass(frozen=True, kw_only=True)
class Costs(_Section):
    """When a step's cost (task_costs: wall seconds, peak memory) is alerted: a jump tonight or a slow leak."""

    slower_factor: Annotated[float, Strict(), Field(gt=1, allow_inf_nan=False, description=(
        "A step whose wall seconds tonight exceed this many times the median of its last history_nights nights "
        "is alerted as slower; a steady rise by this factor over those nights, as a slow leak."))] = 2.0
    bigger_factor: Annotated[float, Strict(), Field(gt=1, allow_inf_nan=False, description=(
        "The same for the step's peak resident memory (bigger, or a memory leak)."))] = 1.5
    history_nights: Annotated[Positive, Field(ge=3, description=(
        "Recorded nights (not dry runs) a step is compared with, and the leak is fitted on, tonight included."))] = 14
    min_nights: Annotated[Positive, Field(ge=3, description=(
        "Nights of a step's history needed before any of its costs is judged."))] = 5
    min_seconds: Annotated[NonNegative, Field(description=(
        "A step is called slower only when it also took this many seconds more than its median: "
        "short steps jitter."))] = 5.0
    min_megabytes: Annotated[NonNegative, Field(description=(
        "A step is called bigger only when its peak memory also grew by this many MB over its median."))] = 100.0


@dataclass(frozen=True, kw_only=True)
class Skew(_Section):
    """Training/serving skew: the serving path must feed the model what the training path would (skew.py)."""

    tolerance: Annotated[NonNegative, Field(description=(
        "How far a feature's statistic (count, nulls, min, max, mean, quantiles, category shares) on tonight's "
        "sampled rows may differ between the serving path and the training path (relative to the larger value, "
        "at least 1) before it is a skew finding, which fails the score task: nothing is published."))] = 1e-9
    sample_rows: Annotated[Positive, Field(description=(
        "Tonight's rows (a fixed, seeded sample of positions) whose model inputs are compared between the two "
        "paths."))] = 20000
    round_trip_rows: Annotated[Positive, Field(description=(
        "Training rows logged with each model version with the scores it gave them; every night the champion "
        "must reproduce them through the serving path within 1e-9."))] = 256
    top_categories: Annotated[Positive, Field(description=(
        "Most frequent values kept per categorical feature in the statistics (their shares are compared)."))] = 20
    null_share_gap: Annotated[Share, Field(description=(
        "Evidence only: a feature whose null share tonight is further than this from training's is flagged in "
        "the score step's evidence (drift judges the data; skew judges the code)."))] = 0.2


@dataclass(frozen=True, kw_only=True)
class Warehouse(_Section):
    """Where predictions and the run history are published."""

    schema: Annotated[Identifier, Field(description=(
        "One PostgreSQL schema per spec: predictions, predictions_latest, pipeline_runs."))]
    connection_id: Annotated[Text, Field(description=(
        "The pipeline writes with this connection's role (it owns the tables)."))] = "nightshift_warehouse"
    reader_role: Annotated[Role | None, Field(description=(
        "Optional: a role consumers log in as. The pipeline grants it USAGE on the schema and SELECT on the "
        "relations it writes, nothing else. The role must already exist. A plain identifier, never PUBLIC "
        "or a pg_* role."))] = None


@dataclass(frozen=True, kw_only=True)
class DatasetSpec(_Section):
    """A Nightshift dataset spec: one file = one nightly DAG, one MLflow registered model
    (nightshift_<name>) and one warehouse schema. Every threshold the pipeline applies is here.
    The loader (include/nightshift/spec.py) also checks what this schema cannot say: min <= max,
    column names used once, slice columns that are categorical features, no reserved reader role,
    and no two spec files sharing a name or a warehouse schema."""

    name: Annotated[Identifier, Field(description=(
        "The data set; the DAG and the registered model are called nightshift_<name>. Unique across specs."))]
    description: Annotated[Text, Field(description="Shown on the DAG page.")] = ""
    task: Annotated[Task, Field(description=(
        "What the label is: binary (0/1, the score is the probability of 1), multiclass (one of label.classes: "
        "the predicted class and every class's probability are published) or regression (a number, the score "
        "is the predicted value)."))] = "binary"
    schedule: Annotated[Text, Field(description="A cron expression or preset, in UTC.")] = "@daily"
    start_date: Annotated[dt.date, Strict(), Field(description="First night the DAG may run (YYYY-MM-DD).")]
    source: Source
    entity_key: EntityKey
    timestamp: Annotated[Identifier, Field(description=(
        "The event time column: rows with it in [D 00:00, D+1 00:00) in source.timezone belong to night D. "
        "timestamptz, or a date / timestamp without time zone read as local time in source.timezone; "
        "always timestamptz in the snapshot."))]
    label: Label
    features: Annotated[tuple[Feature, ...], Field(min_length=1, description="The model's inputs, in order.")]
    validation: Validation
    training: Training
    drift: Drift
    promotion: Promotion
    scoring: Scoring
    warehouse: Warehouse
    staleness: Annotated[Staleness, Field(description=(
        "The age-vs-quality curve and the recommended retraining cadence (include/nightshift/staleness.py)."))] = \
        dataclasses.field(default_factory=Staleness)
    skew: Annotated[Skew, Field(description=(
        "Training/serving skew and the serving round trip, checked before every publish (include/nightshift/skew.py)."))] = \
        dataclasses.field(default_factory=Skew)
    shadow: Annotated[Shadow, Field(description=(
        "Which challengers score beside the champion unserved, and when realised labels promote them "
        "(include/nightshift/shadow.py)."))] = dataclasses.field(default_factory=Shadow)
    costs: Annotated[Costs, Field(description=(
        "When a step's wall time or peak memory is alerted (include/nightshift/task_costs.py)."))] = \
        dataclasses.field(default_factory=Costs)
    # The file the spec was read from: set by load_spec, never a key of the file.
    path: SkipJsonSchema[str] = ""

    @property
    def model_name(self) -> str:
        return f"nightshift_{self.name}"

    @property
    def dag_id(self) -> str:
        return f"nightshift_{self.name}"

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def numeric_features(self) -> list[str]:
        return [f.name for f in self.features if f.type == "numeric"]

    @property
    def categorical_features(self) -> list[str]:
        return [f.name for f in self.features if f.type == "categorical"]

    @property
    def columns(self) -> list[str]:
        """Every column a snapshot must have, in a stable order."""
        return [self.entity_key.name, self.timestamp, *self.feature_names, self.label.name]

    @field_validator("start_date", mode="before")
    @classmethod
    def _iso_date(cls, value: Any) -> Any:
        """YAML reads an unquoted 2026-01-01 as a date; a quoted one must still be an ISO date."""
        if isinstance(value, dt.datetime):
            return value.date()
        if isinstance(value, str):
            try:
                return dt.date.fromisoformat(value)
            except ValueError:
                raise PydanticCustomError("date", "{value} is not an ISO date (YYYY-MM-DD)",
                                          {"value": repr(value)}) from None
        return value

    @model_validator(mode="before")
    @classmethod
    def _path_is_not_a_key(cls, data: Any) -> Any:
        if isinstance(data, dict) and "path" in data:
            raise ValidationError.from_exception_data(
                "DatasetSpec", [{"type": "extra_forbidden", "loc": ("path",), "input": data["path"]}])
        return data

    @model_validator(mode="after")
    def _columns_fit_together(self) -> DatasetSpec:
        named = [(("entity_key", "name"), self.entity_key.name), (("timestamp",), self.timestamp),
                 (("label", "name"), self.label.name),
                 *((("features", i, "name"), f.name) for i, f in enumerate(self.features))]
        problems: list[tuple[tuple[str | int, ...], PydanticCustomError, Any]] = []
        seen: dict[str, tuple[str | int, ...]] = {}
        for loc, column in named:
            if column in seen:
                problems.append((loc, PydanticCustomError(
                    "duplicate_column", "column {column} is named more than once (also {other})",
                    {"column": repr(column), "other": _dotted(seen[column])}), column))
            seen.setdefault(column, loc)
        categorical = set(self.categorical_features)
        for i, column in enumerate(self.promotion.slice_columns):
            if column not in categorical:
                problems.append((("promotion", "slice_columns", i), PydanticCustomError(
                    "slice_column", "{column} is not a categorical feature", {"column": repr(column)}), column))
        _refuse("DatasetSpec", problems)
        return self

    @model_validator(mode="after")
    def _source_columns_are_spec_columns(self) -> DatasetSpec:
        """source.columns maps the spec's own columns; a name it does not know is a typo, and the timestamp
        can only be read as a point in time. Two spec columns from one source column are fine (a copy)."""
        problems: _Problems = []
        for name, mapped in self.source.columns.items():
            if name not in self.columns:
                close = difflib.get_close_matches(name, self.columns, n=1)
                problems.append((("source", "columns", name), PydanticCustomError(
                    "source_column", "{name} is not a column of the spec (entity_key, timestamp, label or a feature)"
                    + (f"; did you mean {close[0]}?" if close else ""), {"name": repr(name)}), name))
            elif name == self.timestamp and mapped.cast not in (None, "date", "timestamp", "timestamptz"):
                problems.append((("source", "columns", name, "cast"), PydanticCustomError(
                    "timestamp_cast", "the timestamp is cast to date, timestamp or timestamptz, got {cast}",
                    {"cast": repr(mapped.cast)}), mapped.cast))
        _refuse("DatasetSpec", problems)
        return self

    @model_validator(mode="after")
    def _drift_names_features(self) -> DatasetSpec:
        """drift.exclude and drift.columns name features, and a column's method fits the feature's type:
        a typo would otherwise silently leave a feature in drift, or test it with Evidently's default."""
        kinds = {f.name: f.type for f in self.features}
        problems = _drift_exclude_problems(self.drift, kinds) + _drift_method_problems(self.drift, kinds)
        _refuse("DatasetSpec", problems)
        return self

    @model_validator(mode="after")
    def _task_fits(self) -> DatasetSpec:
        """The metric, the label's settings and calibration must fit the task."""
        problems: _Problems = []
        if self.promotion.metric not in TASK_METRICS[self.task]:
            problems.append((("promotion", "metric"), PydanticCustomError(
                "task_metric", "{metric} does not judge task {task}; use one of {allowed}",
                {"metric": repr(self.promotion.metric), "task": self.task,
                 "allowed": ", ".join(TASK_METRICS[self.task])}), self.promotion.metric))
        problems += _label_problems(self.task, self.label)
        linear = LINEAR_FAMILY[self.task]
        for i, candidate in enumerate(self.training.candidates):
            if candidate.family in LINEAR_FAMILY.values() and candidate.family != linear:
                problems.append((("training", "candidates", i, "family"), PydanticCustomError(
                    "task_family", "{family} is not task {task}'s linear model; use {linear}",
                    {"family": repr(candidate.family), "task": self.task, "linear": linear}), candidate.family))
        if self.task == "regression" and self.training.calibration != "none":
            problems.append((("training", "calibration"), PydanticCustomError(
                "task_calibration", "calibrates probabilities: task regression has none, use none", {}),
                self.training.calibration))
        _refuse("DatasetSpec", problems)
        return self

    @model_validator(mode="after")
    def _scores_what_is_not_known(self) -> DatasetSpec:
        """A night must score rows whose outcome is still unknown: with same-day labels and no horizon it
        would publish predictions of known outcomes, for the very day that closed the holdout."""
        if self.label.delay_days == 0 and self.scoring.horizon_days == 0:
            _refuse("DatasetSpec", [(("scoring", "horizon_days"), PydanticCustomError(
                "horizon", "must be at least 1 when label.delay_days is 0: the night's own rows already have "
                "their labels, and that day closes the holdout that chose the model", {}), 0)])
        return self

    @model_validator(mode="after")
    def _shadow_fits_the_window(self) -> DatasetSpec:
        """The shadow's nights are judged within the realised window: more nights than it holds never come."""
        if self.shadow.min_nights is not None and self.shadow.min_nights > self.promotion.realised_window_days:
            _refuse("DatasetSpec", [(("shadow", "min_nights"), PydanticCustomError(
                "shadow_nights", "{nights} is more than promotion.realised_window_days {window}: the shadow is "
                "compared on that window's labelled days only", {"nights": self.shadow.min_nights,
                                                                  "window": self.promotion.realised_window_days}),
                self.shadow.min_nights)])
        return self

    @property
    def shadow_min_nights(self) -> int:
        """shadow.min_nights, or 3 (at most the realised window's days) when it is not set."""
        found = self.shadow.min_nights
        return min(3, self.promotion.realised_window_days) if found is None else found

    @property
    def shadow_min_improvement(self) -> float:
        """shadow.min_improvement, or promotion.min_improvement when it is not set."""
        found = self.shadow.min_improvement
        return float(self.promotion.min_improvement if found is None else found)

    @property
    def candidates(self) -> tuple[Candidate, ...]:
        """The candidates that compete: training.candidates as listed, or by default xgboost (with
        training.params), hist_gradient_boosting and the task's linear model (xgboost alone with engine dask)."""
        if self.training.candidates:
            return self.training.candidates
        families = ("xgboost",) if self.training.engine == "dask" else (
            "xgboost", "hist_gradient_boosting", LINEAR_FAMILY[self.task])
        return tuple(Candidate(family=f, params=dict(self.training.params) if f == "xgboost" else {})
                     for f in families)

    @property
    def scored_day_offset(self) -> dt.timedelta:
        """From a night to the day whose rows it scores (scoring.horizon_days)."""
        return dt.timedelta(days=self.scoring.horizon_days)


_Problems = list[tuple[tuple[str | int, ...], PydanticCustomError, Any]]


def _label_problems(task: str, label: Label) -> _Problems:
    """The label's settings against the task: classes for multiclass only (and required there), min/max for
    regression only, min <= max."""
    problems: _Problems = []
    if task != "regression" and (label.min is not None or label.max is not None):
        problems.append((("label", "min"), PydanticCustomError(
            "task_label", "label.min and label.max are for task regression only", {}), label.min))
    if (task == "multiclass") != (label.classes is not None):
        problems.append((("label", "classes"), PydanticCustomError(
            "task_classes", "is required by task multiclass and only allowed there (task {task})",
            {"task": task}), label.classes))
    elif label.classes is not None and len(set(label.classes)) != len(label.classes):
        problems.append((("label", "classes"), PydanticCustomError(
            "duplicate_class", "lists a class more than once: {classes}", {"classes": list(label.classes)}),
            label.classes))
    if label.min is not None and label.max is not None and label.min > label.max:
        problems.append((("label", "max"), PydanticCustomError(
            "label_range", "must be at least label.min ({low}), got {high}",
            {"low": label.min, "high": label.max}), label.max))
    return problems


def _drift_exclude_problems(drift: Drift, kinds: dict[str, str]) -> _Problems:
    problems: _Problems = []
    for i, name in enumerate(drift.exclude):
        if name not in kinds:
            problems.append((("drift", "exclude", i), PydanticCustomError(
                "drift_feature", "{name} is not a feature", {"name": repr(name)}), name))
    if kinds and set(kinds) <= set(drift.exclude):
        problems.append((("drift", "exclude"), PydanticCustomError(
            "drift_exclude", "leaves no feature to compare", {}), list(drift.exclude)))
    return problems


def _drift_method_problems(drift: Drift, kinds: dict[str, str]) -> _Problems:
    problems: _Problems = []
    for name, test in drift.columns.items():
        if name not in kinds or name in drift.exclude:
            why = "is not a feature" if name not in kinds else "is also in drift.exclude"
            problems.append((("drift", "columns", name), PydanticCustomError(
                "drift_feature", "{name} " + why, {"name": repr(name)}), name))
        elif test.method and kinds[name] not in DRIFT_METHOD_TYPES[test.method]:
            problems.append((("drift", "columns", name, "method"), _method_type_error(test.method, kinds[name]),
                             test.method))
    for kind in ("numeric", "categorical"):
        test = getattr(drift, kind)
        if test is not None and test.method and kind not in DRIFT_METHOD_TYPES[test.method]:
            problems.append((("drift", kind, "method"), _method_type_error(test.method, kind), test.method))
    return problems


def _method_type_error(method: str, kind: str) -> PydanticCustomError:
    fits = sorted(m for m, types in DRIFT_METHOD_TYPES.items() if kind in types)
    return PydanticCustomError("drift_method", "{method} does not test {kind} features (those that do: {fits})",
                               {"method": repr(method), "kind": kind, "fits": ", ".join(fits)})


# --- errors: pydantic's to one line per key ------------------------------------------------

_UNKNOWN = {"extra_forbidden", "unexpected_keyword_argument"}
_EXPECTED = {
    "int_type": "an integer", "int_from_float": "an integer", "int_parsing": "an integer",
    "float_type": "a number", "float_parsing": "a number", "string_type": "a string", "date_type": "a date",
    "dataclass_type": "a mapping", "model_attributes_type": "a mapping", "dict_type": "a mapping",
    "tuple_type": "a list", "list_type": "a list", "bool_type": "a boolean",
}

_READ_AS = {int: "a number", float: "a number", dt.date: "a date", dt.datetime: "a timestamp"}
_TOO_SHORT = {"features": "at least one feature is required", "categories": "must be a non-empty list of strings"}


def _clean(loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
    """pydantic puts a feature's tag in its location (features.3.numeric.max); the file has none."""
    return tuple(part for i, part in enumerate(loc)
                 if not (i and isinstance(loc[i - 1], int) and part in _FEATURE_KINDS))


def _dotted(loc: tuple[str | int, ...]) -> str:
    key = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")
    return key or "<root>"


def _type_at(raw_loc: tuple[str | int, ...]) -> Any:
    """The declared type at a pydantic location (tags included), or None past what is declared."""
    current: Any = DatasetSpec
    for part in raw_loc:
        if get_origin(current) is tuple:
            current = get_args(current)[0]
        elif get_origin(current) is dict:  # a mapping's value, whatever its key (drift.columns.<feature>)
            current = get_args(current)[1]
        elif part in _FEATURE_KINDS and not dataclasses.is_dataclass(current):
            current = _FEATURE_KINDS[part]
        elif dataclasses.is_dataclass(current):
            current = get_type_hints(current).get(part)
        else:
            return None
    return current


def _choices(declared: Any) -> list[Any]:
    """The values a Literal allows, also inside `Literal[...] | None`."""
    args = get_args(declared)
    if args and all(get_origin(a) is Literal or a is type(None) for a in args):
        return sorted(v for a in args if a is not type(None) for v in get_args(a))
    return sorted(args)


def _written(node: yaml.Node | None, loc: tuple[str | int, ...]) -> str | None:
    """The text of a scalar as the file wrote it (YAML's NO, not Python's False)."""
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            node = next((value for key, value in node.value if key.value == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            return None
    return node.value if isinstance(node, yaml.ScalarNode) else None


def _got(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "nothing"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _keys(parent: Any) -> list[str]:
    """The keys a section allows, as a file writes them (a field's alias: source.columns' `from`)."""
    hints = get_type_hints(parent, include_extras=True)
    keys = []
    for f in dataclasses.fields(parent):
        alias = next((m.alias for m in get_args(hints.get(f.name)) if getattr(m, "alias", None)), None)
        if f.name != "path":
            keys.append(alias or f.name)
    return keys


def _meant(raw_loc: tuple[str | int, ...]) -> str | None:
    """The valid key an unknown one was probably meant to be (flor -> floor)."""
    parent = _type_at(raw_loc[:-1])
    if not dataclasses.is_dataclass(parent):
        return None
    close = difflib.get_close_matches(str(raw_loc[-1]), _keys(parent), n=1)
    return close[0] if close else None


def _unknown_key(raw_loc: tuple[str | int, ...]) -> str:
    parent = _type_at(raw_loc[:-1])
    if not dataclasses.is_dataclass(parent):
        return "unknown key"
    meant = _meant(raw_loc)
    hint = f"; did you mean {meant}?" if meant else ""
    return f"unknown key{hint} (allowed here: {', '.join(_keys(parent))})"


def _at_least(ctx: dict[str, Any], value: Any) -> str:
    return f"must be {'0 or more' if ctx['ge'] == 0 else 'at least ' + str(ctx['ge'])}, got {value}"


def _missing(raw: tuple[str | int, ...]) -> str:
    return f"required {'section' if dataclasses.is_dataclass(_type_at(raw)) else 'key'} is missing"


def _quote_it(written: str, value: Any) -> str:
    read_as = f"the boolean {str(value).lower()}" if isinstance(value, bool) else _READ_AS.get(type(value), "a value")
    return f"{written} was read by YAML as {read_as}; quote it: '{written}'"


# error type -> message, from (raw location, clean location, wrong value, pydantic's context)
_SAY: dict[str, Any] = {
    "missing": lambda raw, loc, value, ctx: _missing(raw),
    "extra_forbidden": lambda raw, loc, value, ctx: _unknown_key(raw),
    "unexpected_keyword_argument": lambda raw, loc, value, ctx: _unknown_key(raw),
    "too_short": lambda raw, loc, value, ctx: _TOO_SHORT.get(loc[-1] if loc else "", "must not be empty"),
    "greater_than_equal": lambda raw, loc, value, ctx: _at_least(ctx, value),
    "less_than_equal": lambda raw, loc, value, ctx: f"must be at most {ctx['le']}, got {value}",
    "finite_number": lambda raw, loc, value, ctx: f"must be a finite number, got {value}",
    "literal_error": lambda raw, loc, value, ctx: f"must be one of {_choices(_type_at(raw))}, got {value!r}",
    **{kind: (lambda raw, loc, value, ctx, what=what: f"expected {what}, got {_got(value)}")
       for kind, what in _EXPECTED.items()},
}


def _explain(error: Any, node: yaml.Node | None) -> tuple[tuple[str | int, ...], str]:
    """One error as (location in the file, message), in the words the spec's author uses."""
    raw, kind, value = tuple(error["loc"]), error["type"], error.get("input")
    loc, ctx = _clean(raw), error.get("ctx") or {}
    if kind == "union_tag_not_found":  # a feature without its `type`
        return (*loc, "type"), "required key is missing"
    if kind == "union_tag_invalid":
        return (*loc, "type"), f"must be one of {sorted(FEATURE_TYPES)}, got {ctx.get('tag')!r}"
    if kind == "string_type" and (written := _written(node, loc) or _yaml_text(value)) is not None:
        return loc, _quote_it(written, value)
    if kind in _EXPECTED and isinstance(value, bool):  # the value as written (NO, on), not Python's False
        written = _written(node, loc) or _yaml_text(value)
        return loc, f"expected {_EXPECTED[kind]}, got {written}, which YAML reads as the boolean {str(value).lower()}"
    say = _SAY.get(kind)
    return loc, say(raw, loc, value, ctx) if say else error["msg"]


def _yaml_text(value: Any) -> str | None:
    """Without the file's nodes, a scalar YAML would have read as something other than text."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value) if isinstance(value, (int, float, dt.date)) else None


def _hidden(errors: list[Any]) -> set[tuple[str | int, ...]]:
    """The missing keys an unknown key stands for (`flor:` for `floor:`): the typo is the one problem,
    so the key it hid is not reported missing as well."""
    meant = ((tuple(e["loc"])[:-1], _meant(tuple(e["loc"]))) for e in errors if e["type"] in _UNKNOWN)
    return {(*parent, key) for parent, key in meant if key is not None}


def _messages(exc: ValidationError, node: yaml.Node | None) -> list[str]:
    """One line per problem, unknown keys first: a typo'd `flor:` is the cause of the missing
    `floor`, so it is what the author reads (and the missing `floor` is not reported besides)."""
    errors = exc.errors()
    hidden = _hidden(errors)
    unknown: list[str] = []
    other: list[str] = []
    for error in errors:
        loc = _clean(tuple(error["loc"]))
        # A list whose items failed also reports itself as too short: the items are the news.
        if error["type"] == "too_short" and any(_clean(tuple(e["loc"]))[:len(loc)] == loc
                                                for e in errors if e is not error):
            continue
        if error["type"] == "missing" and tuple(error["loc"]) in hidden:
            continue
        where, message = _explain(error, node)
        (unknown if error["type"] in _UNKNOWN else other).append(f"{_dotted(where)}: {message}")
    return list(dict.fromkeys(unknown + other))


@functools.cache
def _adapter() -> TypeAdapter[DatasetSpec]:
    return TypeAdapter(DatasetSpec)


def _validate(data: Any, path: str, node: yaml.Node | None) -> DatasetSpec:
    try:
        spec = _adapter().validate_python(data)
    except ValidationError as exc:
        raise SpecError("\n".join(_messages(exc, node))) from None
    return dataclasses.replace(spec, path=path)


# --- loading -------------------------------------------------------------------------------


def _refuse_duplicate_keys(node: Any, path: str = "") -> None:
    """YAML keeps the last of two equal keys without a word; a spec must not (a second `floor:`
    further down a file would silently replace the first)."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = f"{path}.{key_node.value}" if path else str(key_node.value)
            if key_node.value in seen:
                raise SpecError(f"{key}: given more than once (line {key_node.start_mark.line + 1})")
            seen.add(key_node.value)
            _refuse_duplicate_keys(value_node, key)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _refuse_duplicate_keys(item, f"{path}[{i}]")


def load_spec(path: str | Path) -> DatasetSpec:
    """Read and validate one spec file; every line of an error names the file and the key."""
    path = Path(path)
    # One parse gives both the nodes (for duplicate keys and the text as written) and the data;
    # libyaml's loader when PyYAML has it (the DAG processor parses every spec file continually).
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(path.read_text())
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from None
    finally:
        loader.dispose()
    try:
        _refuse_duplicate_keys(node)
        return _validate(data, str(path), node)
    except SpecError as exc:
        raise SpecError("\n".join(f"{path.name}: {line}" for line in str(exc).splitlines())) from None


def specs_dir() -> Path:
    """include/specs, or NIGHTSHIFT_SPECS_DIR (tests point it at their own specs)."""
    return Path(os.environ.get("NIGHTSHIFT_SPECS_DIR") or Path(__file__).resolve().parent.parent / "specs")


# What two specs may not share: each spec has its own DAG and registered model (both named after
# `name`) and its own warehouse schema (and predictions Asset). Compared ignoring case: names that
# differ only in case are a mistake, not a second data set.
_UNIQUE = {
    "name": lambda spec: spec.name,
    "warehouse.schema": lambda spec: spec.warehouse.schema,
}


def load_specs(directory: str | Path | None = None) -> list[tuple[Path, DatasetSpec | SpecError]]:
    """Every spec file in the directory, sorted, with its spec or its error.

    Specs that share a name or a warehouse schema are all refused, each error naming the other
    files: otherwise one DAG would silently replace another, or two would write one schema.
    """
    directory = Path(directory) if directory else specs_dir()
    loaded: list[tuple[Path, DatasetSpec | SpecError]] = []
    for path in sorted(directory.glob("*.y*ml")):
        try:
            loaded.append((path, load_spec(path)))
        except SpecError as exc:
            loaded.append((path, exc))
    clashes = _clashes([(path, spec) for path, spec in loaded if isinstance(spec, DatasetSpec)])
    return [(path, SpecError("\n".join(clashes[path])) if path in clashes else spec) for path, spec in loaded]


def _clashes(specs: list[tuple[Path, DatasetSpec]]) -> dict[Path, list[str]]:
    """file -> one line per unique key it shares with other files."""
    problems: dict[Path, list[str]] = {}
    for key, value_of in _UNIQUE.items():
        holders: dict[str, list[tuple[Path, str]]] = {}
        for path, spec in specs:
            holders.setdefault(value_of(spec).lower(), []).append((path, value_of(spec)))
        for shared in (group for group in holders.values() if len(group) > 1):
            for path, value in shared:
                others = ", ".join(other.name for other, _ in shared if other != path)
                problems.setdefault(path, []).append(
                    f"{path.name}: {key}: {value!r} is also the {key} of {others} (spec files must not share it)")
    return problems


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a spec file, published as docs/dataset-spec.schema.json for editors and reviewers."""
    schema = _adapter().json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "Nightshift dataset spec", **{
        k: v for k, v in schema.items() if k != "title"}}


if __name__ == "__main__":
    if sys.argv[1:] != ["--schema"]:
        sys.exit("usage: python -m include.nightshift.spec --schema > docs/dataset-spec.schema.json")
    print(json.dumps(json_schema(), indent=2))
