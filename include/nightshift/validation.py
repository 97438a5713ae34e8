"""The validation step: a Great Expectations suite, built from the dataset spec, run on one snapshot.

Why GX and not a page of pandas checks: the suite is a reviewable artifact (it renders as Data
Docs), its results are a standard, machine-readable record, and the same suite could later run
on another backend. Why the suite is built from the spec: a new data set must need a new spec
file and nothing else, so every column name, type and threshold below comes from the spec.

The checks, per column:
- schema: the snapshot's columns are exactly ``spec.columns`` (missing and extra both fail);
- types: key integer or string, timestamp a timezone-aware datetime, numeric features and the
  label numeric, categorical features strings;
- nulls: key and timestamp never null, each feature at most ``max_null_share`` null (1: a night
  may have the column entirely null), the label never null when the day is labelled;
- ranges: numeric features within [min, max] when given and never +/-inf; the label in {0, 1};
  timestamps within the snapshot's day, [day 00:00, day+1 00:00) in ``source.timezone``;
- categories: at most ``max_unseen_share`` of a feature's values outside its categories;
- the entity key unique; the row count at least ``min_rows`` and at least ``min_row_ratio``
  times the median of the recent days' counts, and at most ``max_row_ratio`` times that median
  (or times ``min_rows`` when the median is below it; no ceiling without recent days).

The suite runs one column at a time (ColumnSource; the validate step reads the snapshot file column
by column) and its results are kept as one suite's result, one Data Docs page: a night costs its widest
column in memory, and GX's per-check work is on that column alone. Above ``validation.batch_rows`` a
column is checked a batch of rows (whole Parquet row groups) at a time and each check's counts are
summed, its verdict taken again on the sums: the same result, one batch of one column in memory. The
entity key's uniqueness does not add up over row batches (a key may repeat in two), so it is checked on
parts of the key column split by a hash of the key instead: every repeat of a key is in one part.

Checks on a column that is missing are not run (the schema check already names the column),
so a missing column is reported once, not once per check.

Importing this module is cheap: great_expectations (about 3 s to import) and pandas are
imported inside the functions that need them, so a DAG file or an operator module can import
this module without paying for them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import json
import math
import statistics
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

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
# BASIC gives unexpected counts and a few unexpected values, all the messages need. Measured on the
# churn suite (90 checks, 100k rows, 2 cores): BOOLEAN_ONLY 0.9 s, BASIC 1.4 s, SUMMARY 2.1 s. A
# cheap pass then a detailed rerun of the failures would save 0.5 s a night and leave the Data
# Docs without observed values, so: one BASIC run.
RESULT_FORMAT = {"result_format": "BASIC", "partial_unexpected_count": EXAMPLES}


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


# --- the suite -----------------------------------------------------------------------------


def _rule(violation: str) -> dict[str, Any]:
    """Meta kept on each expectation: the words that describe a value (or table) breaking it."""
    return {"violation": violation}


def _not_null(column: str, max_null_share: float) -> Any | None:
    """At most max_null_share null; a share of 1 allows every value null (a calm day has no wind
    gusts), so there is nothing to check (None)."""
    import great_expectations.expectations as gxe

    if max_null_share <= 0:
        return gxe.ExpectColumnValuesToNotBeNull(column=column, meta=_rule("are null (never allowed)"))
    if max_null_share >= 1:
        return None
    return gxe.ExpectColumnValuesToNotBeNull(
        column=column, mostly=1.0 - max_null_share, meta=_rule(f"are null (allowed: at most {max_null_share:.2%})"))


def _bounds_text(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"outside [{low:g}, {high:g}]"
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


def _max_rows(spec: DatasetSpec, recent_row_counts: Sequence[int]) -> tuple[int | None, str]:
    """The row ceiling for today, and why: a multiple of the recent median (none without history).

    A median below min_rows (a thin week that itself failed the floor) is normed at min_rows, so
    that the night the source recovers is not refused for being normal again.
    """
    if not recent_row_counts:
        return None, "no recent days to norm against"
    ratio, median = spec.validation.max_row_ratio, statistics.median(recent_row_counts)
    norm = max(median, spec.validation.min_rows)
    basis = (f"median {median:g} of the {len(recent_row_counts)} recent days" if norm == median
             else f"validation.min_rows {norm}, above the median {median:g} of the {len(recent_row_counts)} recent days")
    return math.floor(ratio * norm), f"validation.max_row_ratio {ratio:g} x {basis}"


def _table_expectations(spec: DatasetSpec, recent_row_counts: Sequence[int]) -> list[Any]:
    import great_expectations.expectations as gxe

    floor, why = _min_rows(spec, recent_row_counts)
    ceiling, why_not = _max_rows(spec, recent_row_counts)
    ceiling = None if ceiling is None else max(ceiling, floor)  # never an empty window
    bounds = f"expected at least {floor} rows ({why})"
    meta = {**_rule(bounds), "below": bounds}
    if ceiling is not None:
        meta["above"] = f"expected at most {ceiling} rows ({why_not})"
        meta["violation"] = f"{bounds} and {meta['above']}"
    return [
        gxe.ExpectTableColumnsToMatchSet(column_set=spec.columns, exact_match=True,
                                         meta=_rule("columns differ from the spec")),
        gxe.ExpectTableRowCountToBeBetween(min_value=floor, max_value=ceiling, meta=meta),
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

    start, end = spec.source.day_bounds(day)  # local midnights (source.timezone), as UTC instants
    zone = spec.source.timezone
    window = (f"outside the day [{start:%Y-%m-%d %H:%M} UTC, {end:%Y-%m-%d %H:%M} UTC)" if zone == "UTC" else
              f"outside the day [{day} 00:00, {day + dt.timedelta(days=1)} 00:00) {zone} "
              f"([{start:%Y-%m-%d %H:%M} UTC, {end:%Y-%m-%d %H:%M} UTC))")
    return [
        gxe.ExpectColumnValuesToBeOfType(column=spec.timestamp, type_=TIMESTAMP_TYPE,
                                         meta=_rule("are not timezone-aware datetimes")),
        gxe.ExpectColumnValuesToNotBeNull(column=spec.timestamp, meta=_rule("are null (the timestamp never is)")),
        gxe.ExpectColumnValuesToBeBetween(column=spec.timestamp, min_value=start, max_value=end, strict_max=True,
                                          meta=_rule(window)),
    ]


def _feature_expectations(feature: Any) -> list[Any]:
    import great_expectations.expectations as gxe

    name = feature.name
    out = [check for check in (_not_null(name, feature.max_null_share),) if check is not None]
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
    if spec.task == "multiclass":  # text, one of label.classes
        out = [gxe.ExpectColumnValuesToBeInTypeList(column=name, type_list=STRING_TYPES, meta=_rule("are not text")),
               gxe.ExpectColumnValuesToBeInSet(column=name, value_set=list(spec.label.classes),
                                               meta=_rule("are not among label.classes"))]
        return out + _labelled_rule(name, labelled)
    out = [gxe.ExpectColumnValuesToBeInTypeList(column=name, type_list=NUMERIC_TYPES, meta=_rule("are not numeric"))]
    if spec.task == "regression":  # a number, never +/-inf, within label.min / label.max when given
        out.append(gxe.ExpectColumnValuesToNotBeInSet(column=name, value_set=[math.inf, -math.inf],
                                                      meta=_rule("are +/-inf (never allowed)")))
        if spec.label.min is not None or spec.label.max is not None:
            out.append(gxe.ExpectColumnValuesToBeBetween(
                column=name, min_value=spec.label.min, max_value=spec.label.max,
                meta=_rule(f"are outside [{spec.label.min}, {spec.label.max}] (label.min, label.max)")))
    else:
        out.append(gxe.ExpectColumnValuesToBeInSet(column=name, value_set=[0, 1], meta=_rule("are not 0 or 1")))
    return out + _labelled_rule(name, labelled)


def _labelled_rule(name: str, labelled: bool) -> list[Any]:
    import great_expectations.expectations as gxe

    if labelled:
        return [gxe.ExpectColumnValuesToNotBeNull(column=name, meta=_rule("are null (the day is labelled)"))]
    return []


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


# --- running it ----------------------------------------------------------------------------


def _column(expectation: Any) -> str | None:
    return getattr(expectation, "column", None)


def _runnable(suite: gx.ExpectationSuite, columns: Sequence[str]) -> gx.ExpectationSuite:
    """The suite less the checks on missing columns: the schema check names those columns once."""
    import great_expectations as gx

    present = set(columns)
    kept = [e for e in suite.expectations if _column(e) is None or _column(e) in present]
    return gx.ExpectationSuite(name=suite.name, expectations=kept, meta=suite.meta)


def _context(report_dir: Path | None) -> Any:
    """An ephemeral GX context (no files, no progress bars) with a Data Docs site in report_dir."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    sites = {}
    if report_dir is not None:
        sites["report"] = {
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(report_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        }
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        data_docs_sites=sites,
        progress_bars=ProgressBarsConfig(globally=False),
        analytics_enabled=False,
    )
    return gx.get_context(mode="ephemeral", project_config=config)


@dataclass(frozen=True)
class ColumnSource:
    """A snapshot handed to validation one column at a time.

    Why: every rule but two is about one column, and GX's pandas engine takes a checked column's
    non-null rows from the whole frame it is given (a take of all 24 columns for each check on a
    column with nulls: the main cost of a large night). Given one column at a time, a night costs
    its widest column in memory, not its rows times its columns, and each take is one column. The
    two table rules need no values: the row count (`rows`) and the column names (`names`).
    """

    names: list[str]
    rows: int
    read: Callable[[str], pd.DataFrame]  # one column, as a one-column frame
    read_rows: Callable[[str, int, int], pd.DataFrame]  # rows [start, stop) of one column
    row_groups: tuple[int, ...] = ()  # rows of each stored row group: a batch is whole row groups

    @classmethod
    def of_frame(cls, df: pd.DataFrame) -> ColumnSource:
        """A frame already in memory: its columns are views under copy-on-write."""
        return cls(names=[str(c) for c in df.columns], rows=len(df), read=lambda name: df[[name]],
                   read_rows=lambda name, start, stop: df[[name]].iloc[start:stop])

    def batches(self, batch_rows: int | None) -> list[tuple[int, int]]:
        """The row ranges a column is checked in: the whole column when batch_rows is None or not exceeded,
        else runs of whole row groups of at most batch_rows rows (one row group when it alone is larger)."""
        if batch_rows is None or self.rows <= batch_rows:
            return [(0, self.rows)]
        sizes = self.row_groups or tuple(min(batch_rows, self.rows - start) for start in range(0, self.rows, batch_rows))
        bounds, start, stop = [], 0, 0
        for size in sizes:
            if stop > start and stop - start + size > batch_rows:
                bounds.append((start, stop))
                start = stop
            stop += size
        return [*bounds, (start, stop)]


Frames = list[Callable[[], "pd.DataFrame"]]  # the batches a group of checks runs on, each read when its turn comes


def _groups(suite: gx.ExpectationSuite, source: ColumnSource, spec: DatasetSpec, batch_rows: int | None,
            spill: Path) -> list[tuple[Frames, list[Any]]]:
    """The suite split by what each check reads, with a way to get that data: the column names
    (schema), the row count, then each column in the snapshot's order, whole or in row batches."""
    import great_expectations.expectations as gxe
    import pandas as pd

    by_column: dict[str | None, list[Any]] = {}
    for expectation in suite.expectations:
        by_column.setdefault(_column(expectation), []).append(expectation)
    table = by_column.pop(None, [])
    schema = [e for e in table if isinstance(e, gxe.ExpectTableColumnsToMatchSet)]
    rows = [e for e in table if e not in schema]
    groups: list[tuple[Frames, list[Any]]] = [
        ([lambda: pd.DataFrame(columns=source.names)], schema),
        ([lambda: pd.DataFrame(index=pd.RangeIndex(source.rows))], rows),  # no columns: the count alone
    ]
    for name in source.names:
        if name in by_column:
            groups += _column_groups(source, name, spec, source.batches(batch_rows), by_column.pop(name), spill)
    return [(frames, checks) for frames, checks in groups if checks]


def _column_groups(source: ColumnSource, name: str, spec: DatasetSpec, bounds: list[tuple[int, int]],
                   checks: list[Any], spill: Path) -> list[tuple[Frames, list[Any]]]:
    """One column's checks with their frames: the whole column, or a frame per row batch. Uniqueness is
    not a count that adds up over row batches (a key may repeat in two of them), so in batches it runs on
    parts of the column split by value instead (_key_parts): every repeat of a key falls in one part."""
    import great_expectations.expectations as gxe
    import pyarrow as pa

    if len(bounds) == 1:
        return [([lambda: _integer_key_with_nulls(source.read(name), spec)], checks)]
    batches: Frames = [lambda start=start, stop=stop: _integer_key_with_nulls(source.read_rows(name, start, stop), spec)
                       for start, stop in bounds]
    unique = [e for e in checks if isinstance(e, gxe.ExpectColumnValuesToBeUnique)]
    rest = [e for e in checks if e not in unique]
    if not unique:
        return [(batches, rest)]
    try:
        parts = [lambda part_of=part_of: _integer_key_with_nulls(part_of(), spec)
                 for part_of in _key_parts(batches, name, spill)]
    except (pa.ArrowException, TypeError):  # values of several types (a frame's object column): not split
        parts = [lambda: _integer_key_with_nulls(source.read(name), spec)]
    return [(batches, rest), (parts, unique)]


def _key_parts(batches: Frames, name: str, spill: Path) -> Frames:
    """A column split into as many parts as it has row batches by a hash of each value, written to `spill`
    (Arrow files, zstd): equal values share a part, so uniqueness checked part by part finds every repeat
    of the night while one part (about a batch) is in memory. Rows keep their order within a part."""
    import pandas as pd
    import pyarrow as pa

    folder = Path(tempfile.mkdtemp(prefix="key-", dir=spill))
    paths = [folder / f"{i}.arrow" for i in range(len(batches))]
    with contextlib.ExitStack() as files:
        writers: list[Any] = []
        kind = None
        for batch_of in batches:
            values, cuts = _hashed_in_parts(batch_of()[name], len(paths), kind)
            if not writers:
                kind, schema = values.type, pa.schema([(name, values.type)])
                options = pa.ipc.IpcWriteOptions(compression="zstd")
                writers = [files.enter_context(pa.ipc.new_file(str(path), schema, options=options)) for path in paths]
            for i, writer in enumerate(writers):
                writer.write_batch(pa.record_batch([values.slice(cuts[i], cuts[i + 1] - cuts[i])], names=[name]))
    text = {pa.string(): pd.StringDtype("python"), pa.large_string(): pd.StringDtype("python")}
    return [lambda path=path: pa.ipc.open_file(str(path)).read_all().to_pandas(types_mapper=text.get)
            for path in paths]


def _hashed_in_parts(column: pd.Series, parts: int, kind: Any) -> tuple[Any, Any]:
    """A batch's values as Arrow (of type `kind`, when given) ordered by their part, and where each part
    starts and ends. Numbers are hashed as float64: an integer key is int64 in a batch and float64 or Int64
    in one with nulls, and the same key must hash the same in each (two integers that one float stands for
    share a part, which is harmless: the check tells them apart)."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    if pd.api.types.is_numeric_dtype(column):
        hashes = pd.util.hash_array(column.to_numpy(dtype="float64", na_value=np.nan))
    else:
        hashes = pd.util.hash_pandas_object(column, index=False).to_numpy()
    part = (hashes % parts).astype(np.intp)
    order = np.argsort(part, kind="stable")
    cuts = np.concatenate(([0], np.cumsum(np.bincount(part, minlength=parts))))
    return pa.array(column.take(order), type=kind), cuts


def _run(source: ColumnSource, suite: gx.ExpectationSuite, spec: DatasetSpec, day: dt.date,
         report_dir: Path | None, batch_rows: int | None) -> tuple[Any, list[dict[str, Any]], str | None]:
    """Run the suite one group of checks at a time, then keep one result for the whole suite.

    Returns GX's result (as one run of the whole suite would give it), what each check observed
    (measured while its column is in memory), and with a report_dir the Data Docs page of the run
    (relative to report_dir). The run is named after the day, so a rerun of the same day overwrites
    the same page.
    """
    from great_expectations.core.expectation_validation_result import ExpectationSuiteValidationResult
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )
    from great_expectations.validator.validation_statistics import calc_validation_statistics

    context = _context(report_dir)
    run_id = RunIdentifier(run_name=day.isoformat())
    results, checks, meta = [], [], {}
    gc.freeze()  # what exists now (GX's modules, the caller's objects) is not garbage: each collection skips it
    try:
        with tempfile.TemporaryDirectory(prefix="nightshift-validate-") as spill:
            for frames, expectations in _groups(suite, source, spec, batch_rows, Path(spill)):
                group = _gx_suite(spec.name, expectations, suite.meta)
                runs = [_run_group(context, spec.name, frame_of, group) for frame_of in frames]
                outcome, observed = runs[0] if len(runs) == 1 else _merged_runs(runs)
                results += outcome.results
                checks += observed
                meta = meta or outcome.meta
    finally:
        gc.unfreeze()
    stats = calc_validation_statistics(results)
    whole = ExpectationSuiteValidationResult(
        success=stats.success, results=results, suite_name=spec.name,
        statistics={"evaluated_expectations": stats.evaluated_expectations,
                    "successful_expectations": stats.successful_expectations,
                    "unsuccessful_expectations": stats.unsuccessful_expectations,
                    "success_percent": stats.success_percent},
        meta={**meta, "run_id": run_id, "validation_time": run_id.run_time, "batch_markers": {},
              "batch_parameters": {"dataframe": "<the snapshot, one column at a time>"}})
    if report_dir is None:
        return whole, checks, None
    suite_id = ExpectationSuiteIdentifier(name=spec.name)
    context.suites.add(suite)
    key = ValidationResultIdentifier(expectation_suite_identifier=suite_id, run_id=run_id,
                                     batch_identifier="snapshot")
    context.validation_results_store.set(key, whole)
    context.build_data_docs(site_names=["report"], resource_identifiers=[key, suite_id])
    url = context.get_docs_sites_urls(resource_identifier=key, site_name="report")[0]["site_url"]
    return whole, checks, str(Path(unquote(urlparse(url).path)).relative_to(report_dir))


def _run_group(context: Any, name: str, frame_of: Callable[[], pd.DataFrame],
               suite: gx.ExpectationSuite) -> tuple[Any, list[dict[str, Any]]]:
    """One group of checks on its data, through a data source of its own, then the data is gone: that
    is the memory bound, one column at a time.

    Why the data source goes and a collection runs: GX's execution engine keeps the last batch it
    loaded, and its validator's objects refer to one another, so they (and the arrays they hold) wait
    for Python's cyclic collector, which counts objects, not bytes. Without it a 3M-row night held
    about 1 GB more by its last column (benchmarks/bench_validation.py). The collection is cheap
    because _run froze everything older than the group (gc.freeze): 26 full collections of GX's
    objects cost 4 s of a 1M-row night.
    """
    from great_expectations.validator.v1_validator import Validator

    batch = (context.data_sources.add_pandas(name).add_dataframe_asset("snapshot")
             .add_batch_definition_whole_dataframe("whole"))
    try:
        frame = frame_of()
        outcome = Validator(batch_definition=batch, batch_parameters={"dataframe": frame},
                            result_format=RESULT_FORMAT).validate_expectation_suite(suite)
        return outcome, [_check(r, frame) for r in outcome.results]
    finally:
        context.data_sources.delete(name)
        gc.collect()


@dataclass(frozen=True)
class _Merged:
    """What the batches of one group of checks add up to: the results and meta of one run."""

    results: list[Any]
    meta: dict[str, Any]


def _merged_runs(runs: list[tuple[Any, list[dict[str, Any]]]]) -> tuple[_Merged, list[dict[str, Any]]]:
    """The runs of one group of checks on the batches of its column, as one run on the whole column.

    Why sums are exact here: every check run on row batches is a per-value check (nulls, type, range,
    set), whose verdict is a count of values breaking it against a share allowed (`mostly`); uniqueness,
    the one that is not, runs on the hash parts of its column instead (_column_groups), and a repeat
    never spans two parts.
    """
    merged = [_merged_result([outcome.results[i] for outcome, _ in runs]) for i in range(len(runs[0][0].results))]
    checks = [_merged_check(result, [observed[i] for _, observed in runs]) for i, result in enumerate(merged)]
    return _Merged(results=merged, meta=runs[0][0].meta), checks


def _merged_result(results: list[Any]) -> Any:
    """One check's results on each batch, as GX would give it on the whole column (its counts summed, its
    first unexpected values kept in row order, its verdict taken again on the sums); a batch whose check
    raised stands for the whole, and so does the first failing batch of a check with no counts (a dtype)."""
    from great_expectations.core.expectation_validation_result import ExpectationValidationResult

    raised = [r for r in results if r.exception_info.get("raised_exception")]
    if raised:
        return raised[0]
    if not all("unexpected_count" in (r.result or {}) for r in results):
        return next((r for r in results if not r.success), results[0])
    counts, config = _summed_counts([r.result for r in results]), results[0].expectation_config
    considered = counts["element_count"] - counts.get("missing_count", 0)
    mostly = 1.0 if config.kwargs.get("mostly") is None else config.kwargs["mostly"]
    success = considered == 0 or (considered - counts["unexpected_count"]) / considered >= mostly
    return ExpectationValidationResult(success=success, expectation_config=config, result=counts,
                                       meta=results[0].meta, exception_info=results[0].exception_info)


def _summed_counts(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """GX's map-check result fields (BASIC format) for the batches taken together."""
    elements = sum(p["element_count"] for p in parts)
    unexpected = sum(p["unexpected_count"] or 0 for p in parts)
    examples = [v for p in parts for v in p.get("partial_unexpected_list") or []][:EXAMPLES]
    if not all("missing_count" in p for p in parts):  # a null check: every value is considered
        return {"element_count": elements, "unexpected_count": unexpected,
                "unexpected_percent": _percent(unexpected, elements), "partial_unexpected_list": examples}
    missing = sum(p["missing_count"] for p in parts)
    nonmissing = _percent(unexpected, elements - missing)
    return {"element_count": elements, "unexpected_count": unexpected, "unexpected_percent": nonmissing,
            "partial_unexpected_list": examples, "missing_count": missing,
            "missing_percent": _percent(missing, elements), "unexpected_percent_total": _percent(unexpected, elements),
            "unexpected_percent_nonmissing": nonmissing}


def _percent(count: int, total: int) -> float | None:
    """A share as GX computes it (count / total * 100, in that order), so a report reads the same digits
    whether its column was checked whole or in batches; None of nothing."""
    return count / total * 100 if total > 0 else None


def _merged_check(result: Any, batches: list[dict[str, Any]]) -> dict[str, Any]:
    """A check's observations on the whole column from those on its batches: the summed result's counts,
    and the least and greatest values any batch saw."""
    measured = _measure(result, None)
    if "unexpected" in measured and result.expectation_config.type == "expect_column_values_to_be_between":
        measured.update(_widest([b["measured"] for b in batches]))
    return _described(result, measured)


def _widest(measures: list[dict[str, Any]]) -> dict[str, Any]:
    """The min of the batches' mins and the max of their maxes (nothing when no batch had an order)."""
    seen = [m for m in measures if "min" in m]
    try:
        return {"min": min(m["min"] for m in seen), "max": max(m["max"] for m in seen)} if seen else {}
    except TypeError:  # values of different types in different batches: no order to speak of
        return {}


def _gx_suite(name: str, expectations: list[Any], meta: dict[str, Any]) -> gx.ExpectationSuite:
    """A suite of copies of `expectations`: an expectation belongs to one suite."""
    import great_expectations as gx

    return gx.ExpectationSuite(name=name, expectations=[e.configuration.to_domain_obj() for e in expectations],
                               meta=meta)


# --- reading the result ----------------------------------------------------------------------


def _example(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _examples(values: Sequence[Any]) -> str:
    shown = list(dict.fromkeys(_example(v) for v in values))[:EXAMPLES]
    return f", e.g. {', '.join(shown)}" if shown else ""


def _schema_failures(result: Any, expectation: str) -> list[Failure]:
    mismatched = (result.get("details") or {}).get("mismatched") or {}
    out = [Failure(expectation, col, f"column '{col}' is missing (the spec requires it)")
           for col in mismatched.get("missing") or []]
    out += [Failure(expectation, col, f"column '{col}' is an unexpected extra column (not in the spec)")
            for col in mismatched.get("unexpected") or []]
    return out


def _map_details(column: str, result: dict[str, Any], violation: str) -> str:
    """'column 'age': 12 of 5000 values (0.24%) outside [18, 100], e.g. 150.0'."""
    count = result.get("unexpected_count", 0)
    total = result.get("element_count", 0) - result.get("missing_count", 0)
    share = 100.0 * count / total if total else 0.0
    examples = "" if "null" in violation else _examples(result.get("partial_unexpected_list") or [])
    return f"column '{column}': {count} of {total} values ({share:.2f}%) {violation}{examples}"


def _type_details(column: str, result: dict[str, Any], violation: str) -> str:
    if "unexpected_count" in result:  # an object column, checked value by value
        values = result.get("partial_unexpected_list") or []
        kinds = sorted({type(v).__name__ for v in values})
        return _map_details(column, result, violation) + (f" (found {', '.join(kinds)})" if kinds else "")
    return f"column '{column}': values of type {result.get('observed_value')} {violation}"


def _row_count_details(config: Any, rows: Any, violation: str) -> str:
    """'the snapshot has 400000 rows, expected at most 20000 rows (validation.max_row_ratio 10 x ...)':
    the bound that was crossed, with its rule."""
    meta, ceiling = config.meta or {}, config.kwargs.get("max_value")
    above = isinstance(rows, (int, float)) and ceiling is not None and rows > ceiling
    return f"the snapshot has {rows} rows, {meta.get('above' if above else 'below', violation)}"


def _failure(res: Any) -> list[Failure]:
    config = res.expectation_config
    kind, column = config.type, config.kwargs.get("column")
    violation = (config.meta or {}).get("violation", "failed")
    result = res.result or {}
    if res.exception_info.get("raised_exception"):
        return [Failure(kind, column, f"column '{column}': the check could not run "
                                      f"({res.exception_info.get('exception_message')})")]
    if kind == "expect_table_columns_to_match_set":
        return _schema_failures(result, kind)
    if kind == "expect_table_row_count_to_be_between":
        return [Failure(kind, None, _row_count_details(config, result.get("observed_value"), violation))]
    if kind in ("expect_column_values_to_be_in_type_list", "expect_column_values_to_be_of_type"):
        return [Failure(kind, column, _type_details(column, result, violation))]
    return [Failure(kind, column, _map_details(column, result, violation))]


def _failures(gx_result: Any) -> list[Failure]:
    """Every failed check in words, schema and types first.

    On a column of the wrong type only the type failure (and a null failure) is kept: a range or
    set check on, say, numbers stored as text fails or crashes for a reason the type already names.
    """
    order = {"expect_table_columns_to_match_set": 0, "expect_table_row_count_to_be_between": 1,
             "expect_column_values_to_be_in_type_list": 2, "expect_column_values_to_be_of_type": 2}
    failed = sorted((r for r in gx_result.results if not r.success),
                    key=lambda r: order.get(r.expectation_config.type, 3))
    out: list[Failure] = []
    mistyped: set[str] = set()
    for res in failed:
        column = res.expectation_config.kwargs.get("column")
        if column in mistyped and res.expectation_config.type != "expect_column_values_to_not_be_null":
            continue
        if order.get(res.expectation_config.type) == 2:
            mistyped.add(column)
        out.extend(_failure(res))
    return out


def _json_safe(value: Any) -> Any:
    """Strict JSON: non-finite floats and odd scalars become strings."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    plain = _plain(value)  # a numpy scalar (a nullable integer column's values): its Python value
    return str(value) if plain is value else _json_safe(plain)


def _share(count: int, total: int) -> str:
    return f"{count} of {total} ({100.0 * count / total if total else 0.0:.2f}%)"


def _extremes(df: pd.DataFrame, column: str) -> dict[str, Any]:
    """The column's observed min and max (nulls left out): what a range check is about, which GX's
    per-value result does not give."""
    values = df[column].dropna()
    if values.empty:
        return {}
    try:
        low, high = values.min(), values.max()
    except TypeError:  # mixed types (a type check fails for it already): no order to speak of
        return {}
    return {"min": _plain(low), "max": _plain(high)}


def _plain(value: Any) -> Any:
    """A numpy scalar as its Python value (JSON writes it as a number); anything else unchanged."""
    import numpy as np

    return value.item() if isinstance(value, np.generic) else value


def _map_measure(kind: str, result: dict[str, Any]) -> dict[str, Any]:
    """GX's counts for a per-value check, named as the rule is: null share, unseen values, ..."""
    count = int(result.get("unexpected_count") or 0)
    if kind == "expect_column_values_to_not_be_null":  # the nulls are the unexpected values
        return {"nulls": count, "of": int(result.get("element_count") or 0),
                "null_percent": result.get("unexpected_percent")}
    checked = int(result.get("element_count") or 0) - int(result.get("missing_count") or 0)
    return {"unexpected": count, "checked": checked, "unexpected_percent": result.get("unexpected_percent"),
            "examples": list(dict.fromkeys(result.get("partial_unexpected_list") or []))[:EXAMPLES]}


def _table_measure(kind: str, result: dict[str, Any]) -> dict[str, Any]:
    if kind == "expect_table_columns_to_match_set":
        mismatched = (result.get("details") or {}).get("mismatched") or {}
        return {"columns": len(result.get("observed_value") or []), "missing": mismatched.get("missing") or [],
                "extra": mismatched.get("unexpected") or []}
    return {"rows": result.get("observed_value")}  # expect_table_row_count_to_be_between


def _measure(res: Any, df: pd.DataFrame | None) -> dict[str, Any]:
    """What the check saw, as numbers: the row count, the dtype, the null share, min and max, the
    values outside a set, the duplicates (an empty dict when GX reported nothing to show)."""
    config, result = res.expectation_config, res.result or {}
    kind, column = config.type, config.kwargs.get("column")
    if res.exception_info.get("raised_exception"):
        return {"error": res.exception_info.get("exception_message")}
    if column is None:
        return _table_measure(kind, result)
    if "unexpected_count" not in result:  # a dtype check on a typed column
        return {"dtype": result.get("observed_value")} if "observed_value" in result else {}
    measured = _map_measure(kind, result)
    if kind == "expect_column_values_to_be_between" and df is not None and column in df.columns:
        measured.update(_extremes(df, column))
    return measured


# What the unexpected values of a per-value check are, in the report's "observed" column.
WORDS = {"expect_column_values_to_be_in_set": "not in the set (unseen)",
         "expect_column_values_to_not_be_in_set": "in the excluded set (+/-inf)",
         "expect_column_values_to_be_between": "out of range",
         "expect_column_values_to_be_unique": "duplicated",
         "expect_column_values_to_be_in_type_list": "of another type",
         "expect_column_values_to_be_of_type": "of another type"}


def _observed(kind: str, m: dict[str, Any]) -> str:
    """The measure in words, next to the rule on the page: '3 of 2000 (0.15%) null', 'min 18, max 99; ...'."""
    whole = _observed_whole(m)
    if whole is not None:
        return whole
    if "unexpected" not in m:  # e.g. a range check on a column of text: GX gives no counts
        return "not reported by Great Expectations"
    words = WORDS.get(kind, "break the rule")
    text = f"{_share(m['unexpected'], m['checked'])} {words}{_examples(m['examples'])}"
    if "min" in m:
        text = f"min {_example(m['min'])}, max {_example(m['max'])}; {text}"
    return text


def _observed_whole(m: dict[str, Any]) -> str | None:
    """The words of a measure that is one fact (an error, the columns, the rows, a dtype, the nulls); None otherwise."""
    if "error" in m:
        return f"could not run: {m['error']}"
    if "columns" in m:
        off = [f"missing {', '.join(m['missing'])}" if m["missing"] else "",
               f"extra {', '.join(m['extra'])}" if m["extra"] else ""]
        return "; ".join(x for x in off if x) or f"{m['columns']} columns, as in the spec"
    if "rows" in m:
        return f"{m['rows']} rows"
    if "dtype" in m:
        return f"dtype {m['dtype']}"
    if "nulls" in m:
        return f"{_share(m['nulls'], m['of'])} null"
    return None


def _check(r: Any, frame: pd.DataFrame) -> dict[str, Any]:
    """One check that ran, with what it observed in the data it was given (`frame`)."""
    return _described(r, _measure(r, frame))


def _described(r: Any, measured: dict[str, Any]) -> dict[str, Any]:
    """A check's line of the report: the rule, its verdict and what it observed, in words and numbers."""
    kind = r.expectation_config.type
    return {"expectation": kind, "column": r.expectation_config.kwargs.get("column"),
            "fails_on": (r.expectation_config.meta or {}).get("violation", ""),
            "success": bool(r.success), "observed": _observed(kind, measured), "measured": measured}


def _in_order(checks: list[dict[str, Any]], columns: list[str]) -> list[dict[str, Any]]:
    """Table checks first, then column by column in the spec's order."""
    position = {name: i for i, name in enumerate(columns)}
    return sorted(checks, key=lambda c: -1 if c["column"] is None else position.get(c["column"], len(columns)))


def _html_report(result: ValidationResult, checks: list[dict[str, Any]], spec: DatasetSpec,
                 day: dt.date, page: str | None) -> str:
    """A self-contained page (no CDN): Data Docs load their styles and scripts from the internet,
    and without them the index is blank and failed checks are not marked."""
    from include.nightshift.reports import render

    return render("validation.html", title=f"Validation of {spec.name} for {day.isoformat()}",
                  passed=result.success, failures=result.failures, checks=checks, evaluated=result.evaluated,
                  summary=f"{result.rows} rows, {result.evaluated} checks run, {len(result.failures)} problem(s).",
                  data_docs_page=page or "index.html")


def _write_reports(report_dir: Path, result: ValidationResult, checks: list[dict[str, Any]],
                   spec: DatasetSpec, day: dt.date, labelled: bool, page: str | None) -> None:
    """validation.json (the record) and validation.html (the page a person opens first)."""
    checks = _in_order(checks, spec.columns)
    record = {**result.to_dict(), "dataset": spec.name, "day": day.isoformat(), "labelled": labelled,
              "message": result.message(), "data_docs_page": page, "checks": checks}
    (report_dir / "validation.json").write_text(json.dumps(_json_safe(record), indent=2))
    (report_dir / "validation.html").write_text(_html_report(result, checks, spec, day, page))


def _integer_key_with_nulls(df: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """Give an integer key that holds nulls its integer type back (nullable Int64).

    Why: pandas has no null in int64, so a bigint column with a null arrives from Arrow as float64,
    and the key would be reported twice: null (true) and "not integers" (false, an artefact). Only
    when every other value is a whole number; fractions still fail the type check. A real float key
    is masked only while the nulls fail the run anyway.
    """
    import numpy as np
    import pandas as pd

    key = spec.entity_key.name
    if spec.entity_key.type not in ("bigint", "integer") or key not in df.columns:
        return df
    column = df[key]
    if not pd.api.types.is_float_dtype(column) or not column.isna().any():
        return df
    values = column.dropna().to_numpy()
    if not (np.isfinite(values) & (values == np.round(values))).all():
        return df
    return df.assign(**{key: column.astype("Int64")})


def validate_snapshot(data: pd.DataFrame | ColumnSource, spec: DatasetSpec, *, day: dt.date, labelled: bool = False,
                      recent_row_counts: Sequence[int] = (),
                      report_dir: str | Path | None = None) -> ValidationResult:
    """Validate one day's snapshot against the spec's suite; never raises for bad data.

    The caller (the validate step) keeps the verdict (report, XCom) and then stops the run when
    result.success is False. `data` is a frame or, for a night too large to hold whole, a
    ColumnSource (snapshot.snapshot_columns): each column is read, checked and released in turn.

    Runs with pandas' copy-on-write: a column of a frame is then a view, not a copy, and nothing
    here or in GX writes into the data.
    """
    import pandas as pd

    source = data if isinstance(data, ColumnSource) else ColumnSource.of_frame(data)
    with pd.option_context("mode.copy_on_write", True):
        return _validate(source, spec, day=day, labelled=labelled, recent_row_counts=recent_row_counts,
                         report_dir=report_dir)


def _validate(source: ColumnSource, spec: DatasetSpec, *, day: dt.date, labelled: bool,
              recent_row_counts: Sequence[int], report_dir: str | Path | None) -> ValidationResult:
    """validate_snapshot's body (under copy-on-write)."""
    suite = _runnable(build_suite(spec, day=day, labelled=labelled, recent_row_counts=recent_row_counts),
                      source.names)
    report = Path(report_dir).resolve() if report_dir is not None else None
    if report is not None:
        report.mkdir(parents=True, exist_ok=True)
    gx_result, checks, page = _run(source, suite, spec, day, report, spec.validation.batch_rows)
    failures = _failures(gx_result)
    result = ValidationResult(
        success=bool(gx_result.success) and not failures, rows=source.rows, failures=failures,
        evaluated=len(gx_result.results),
        report_path=str(report / "validation.html") if report is not None else None,
    )
    if report is not None:
        _write_reports(report, result, checks, spec, day, labelled, page)
    return result
