"""The dataset spec: one YAML file describes a model's data and its whole policy.

Everything the pipeline knows about a data set comes from here, so that a new data set
needs a new spec file and nothing else. The loader is strict on purpose: an unknown key,
a wrong type or a missing threshold is refused with the dotted path of the key at fault,
because a typo in a threshold must never silently become "no threshold".

Plain Python and PyYAML only: the DAG file parses specs at DAG-parse time.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
KEY_TYPES = {"bigint", "integer", "text"}
FEATURE_TYPES = {"numeric", "categorical"}
RESERVED_ROLES = {"public", "none", "current_user", "current_role", "session_user"}
METRICS = {"roc_auc": True, "average_precision": True, "accuracy": True, "f1": True, "log_loss": False}


class SpecError(ValueError):
    """A dataset spec is invalid; the message starts with the key at fault."""


@dataclass(frozen=True)
class Feature:
    name: str
    type: str  # "numeric" | "categorical"
    min: float | None = None
    max: float | None = None
    categories: tuple[str, ...] = ()
    max_null_share: float = 0.0
    max_unseen_share: float = 0.0


@dataclass(frozen=True)
class Source:
    table: str  # "schema.table" or "table"
    connection_id: str

    @property
    def schema_and_name(self) -> tuple[str | None, str]:
        parts = self.table.split(".")
        return (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])


@dataclass(frozen=True)
class EntityKey:
    name: str
    type: str  # bigint | integer | text


@dataclass(frozen=True)
class Label:
    name: str
    delay_days: int = 1


@dataclass(frozen=True)
class Validation:
    min_rows: int
    min_row_ratio: float  # a day's rows must be at least this share of the recent median
    row_norm_days: int = 7


@dataclass(frozen=True)
class Training:
    window_days: int
    holdout_days: int
    min_rows: int
    seed: int
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Drift:
    share_threshold: float  # retrain when at least this share of features drifted
    sample_rows: int
    seed: int = 0


@dataclass(frozen=True)
class Promotion:
    metric: str
    floor: float  # absolute floor on the holdout metric
    min_improvement: float  # over the champion, same holdout
    slice_tolerance: float  # largest allowed regression on any slice
    baseline_margin: float  # must beat the logistic-regression baseline by this much
    max_model_age_days: int
    realised_tolerance: float  # champion's realised metric may fall this far below its holdout metric
    slice_columns: tuple[str, ...] = ()
    min_slice_rows: int = 50

    @property
    def greater_is_better(self) -> bool:
        return METRICS[self.metric]


@dataclass(frozen=True)
class Scoring:
    chunk_rows: int
    decision_threshold: float


@dataclass(frozen=True)
class Warehouse:
    schema: str
    connection_id: str
    # A role that consumers log in as: ensure_warehouse grants it read access and nothing else.
    reader_role: str | None = None


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    description: str
    schedule: str
    start_date: dt.date
    source: Source
    entity_key: EntityKey
    timestamp: str
    label: Label
    features: tuple[Feature, ...]
    validation: Validation
    training: Training
    drift: Drift
    promotion: Promotion
    scoring: Scoring
    warehouse: Warehouse
    path: str = ""

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


# --- loading -------------------------------------------------------------------------

_MISSING = object()


class _Reader:
    """Reads one mapping, remembering its dotted path and refusing keys nobody asked for."""

    def __init__(self, data: Any, path: str) -> None:
        if not isinstance(data, dict):
            raise SpecError(f"{path or '<root>'}: expected a mapping, got {type(data).__name__}")
        self.data = data
        self.path = path
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def get(self, name: str, kind: type | tuple[type, ...], default: Any = _MISSING) -> Any:
        self.seen.add(name)
        if name not in self.data or self.data[name] is None:
            if default is _MISSING:
                raise SpecError(f"{self.key(name)}: required key is missing")
            return default
        value = self.data[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and bool not in kinds:
            raise SpecError(f"{self.key(name)}: expected {_names(kinds)}, got a boolean")
        if not isinstance(value, kinds):
            raise SpecError(f"{self.key(name)}: expected {_names(kinds)}, got {type(value).__name__} {value!r}")
        return value

    def share(self, name: str, default: Any = _MISSING) -> float:
        value = self.get(name, float, default)
        if value is not None and not 0.0 <= value <= 1.0:
            raise SpecError(f"{self.key(name)}: must be between 0 and 1, got {value}")
        return value

    def finite(self, name: str, default: Any = _MISSING) -> float:
        value = self.get(name, float, default)
        if value is not None and not math.isfinite(value):
            raise SpecError(f"{self.key(name)}: must be a finite number, got {value}")
        return value

    def non_negative(self, name: str, default: Any = _MISSING) -> float:
        value = self.finite(name, default)
        if value is not None and value < 0:
            raise SpecError(f"{self.key(name)}: must be 0 or more, got {value}")
        return value

    def positive(self, name: str, default: Any = _MISSING) -> int:
        value = self.get(name, int, default)
        if value < 1:
            raise SpecError(f"{self.key(name)}: must be at least 1, got {value}")
        return value

    def identifier(self, name: str, default: Any = _MISSING) -> str:
        value = self.get(name, str, default)
        return value if value is None else _identifier(value, self.key(name))

    def child(self, name: str) -> "_Reader":
        self.seen.add(name)
        if name not in self.data:
            raise SpecError(f"{self.key(name)}: required section is missing")
        return _Reader(self.data[name], self.key(name))

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            raise SpecError(
                f"{self.key(str(unknown[0]))}: unknown key (allowed here: {', '.join(sorted(self.seen))})"
            )


def _names(kinds: tuple[type, ...]) -> str:
    return " or ".join({int: "an integer", float: "a number", str: "a string", list: "a list",
                        dict: "a mapping", bool: "a boolean", dt.date: "a date"}.get(k, k.__name__) for k in kinds)


def _identifier(value: str, key: str) -> str:
    if not IDENTIFIER.match(value):
        raise SpecError(f"{key}: {value!r} is not a plain SQL identifier (letters, digits, underscore)")
    return value


def _role(value: str | None, key: str) -> str | None:
    """A role to grant to: a plain identifier that names one real role.

    PUBLIC (every role) and the predefined pg_* roles are refused: granting read access to
    them would open the warehouse to far more than one consumer login.
    """
    if value is not None and (value.lower() in RESERVED_ROLES or value.lower().startswith("pg_")):
        raise SpecError(f"{key}: {value!r} is a reserved PostgreSQL role; name the consumers' own role")
    return value


def _feature(data: Any, key: str) -> Feature:
    r = _Reader(data, key)
    name = r.identifier("name")
    kind = r.get("type", str)
    if kind not in FEATURE_TYPES:
        raise SpecError(f"{r.key('type')}: must be one of {sorted(FEATURE_TYPES)}, got {kind!r}")
    feature = Feature(
        name=name,
        type=kind,
        max_null_share=r.share("max_null_share", 0.0),
        **(_numeric_bounds(r) if kind == "numeric" else _categories(r)),
    )
    r.done()
    return feature


def _numeric_bounds(r: _Reader) -> dict[str, Any]:
    low, high = r.get("min", float, None), r.get("max", float, None)
    if low is not None and high is not None and low > high:
        raise SpecError(f"{r.key('min')}: {low} is above max {high}")
    return {"min": low, "max": high}


def _categories(r: _Reader) -> dict[str, Any]:
    cats = r.get("categories", list)
    if not cats or not all(isinstance(c, str) for c in cats):
        raise SpecError(f"{r.key('categories')}: must be a non-empty list of strings")
    return {"categories": tuple(cats), "max_unseen_share": r.share("max_unseen_share", 0.0)}


def parse_spec(data: Any, path: str = "") -> DatasetSpec:
    """Build a DatasetSpec from parsed YAML, or raise SpecError naming the key at fault."""
    root = _Reader(data, "")
    src, key, lab = root.child("source"), root.child("entity_key"), root.child("label")
    val, trn, drf = root.child("validation"), root.child("training"), root.child("drift")
    pro, sco, wh = root.child("promotion"), root.child("scoring"), root.child("warehouse")

    table = src.get("table", str)
    parts = table.split(".")
    if len(parts) > 2:
        raise SpecError(f"source.table: {table!r} must be 'table' or 'schema.table'")
    for part in parts:
        _identifier(part, "source.table")

    features_raw = root.get("features", list)
    if not features_raw:
        raise SpecError("features: at least one feature is required")
    features = tuple(_feature(f, f"features[{i}]") for i, f in enumerate(features_raw))

    key_type = key.get("type", str)
    if key_type not in KEY_TYPES:
        raise SpecError(f"entity_key.type: must be one of {sorted(KEY_TYPES)}, got {key_type!r}")

    metric = pro.get("metric", str)
    if metric not in METRICS:
        raise SpecError(f"promotion.metric: must be one of {sorted(METRICS)}, got {metric!r}")
    floor = pro.finite("floor")
    if METRICS[metric] and not 0.0 <= floor <= 1.0:  # every greater-is-better metric here lives in [0, 1]
        raise SpecError(f"promotion.floor: must be between 0 and 1 for {metric}, got {floor}")
    if floor < 0:  # log_loss: a ceiling, never below 0
        raise SpecError(f"promotion.floor: must be 0 or more for {metric}, got {floor}")

    start = root.get("start_date", (dt.date, str))
    if isinstance(start, str):
        try:
            start = dt.date.fromisoformat(start)
        except ValueError:
            raise SpecError(f"start_date: {start!r} is not an ISO date (YYYY-MM-DD)") from None

    spec = DatasetSpec(
        name=root.identifier("name"),
        description=root.get("description", str, ""),
        schedule=root.get("schedule", str, "@daily"),
        start_date=start,
        source=Source(table=table, connection_id=src.get("connection_id", str, "nightshift_source")),
        entity_key=EntityKey(name=key.identifier("name"), type=key_type),
        timestamp=root.identifier("timestamp"),
        label=Label(name=lab.identifier("name"), delay_days=lab.get("delay_days", int, 1)),
        features=features,
        validation=Validation(
            min_rows=val.positive("min_rows"),
            min_row_ratio=val.share("min_row_ratio"),
            row_norm_days=val.positive("row_norm_days", 7),
        ),
        training=Training(
            window_days=trn.positive("window_days"),
            holdout_days=trn.positive("holdout_days"),
            min_rows=trn.positive("min_rows"),
            seed=trn.get("seed", int),
            params=trn.get("params", dict, {}),
        ),
        drift=Drift(
            share_threshold=drf.share("share_threshold"),
            sample_rows=drf.positive("sample_rows"),
            seed=drf.get("seed", int, 0),
        ),
        promotion=Promotion(
            metric=metric,
            floor=floor,
            min_improvement=pro.non_negative("min_improvement"),
            slice_tolerance=pro.non_negative("slice_tolerance"),
            baseline_margin=pro.non_negative("baseline_margin"),
            max_model_age_days=pro.positive("max_model_age_days"),
            realised_tolerance=pro.non_negative("realised_tolerance"),
            slice_columns=tuple(pro.get("slice_columns", list, [])),
            min_slice_rows=pro.positive("min_slice_rows", 50),
        ),
        scoring=Scoring(
            chunk_rows=sco.positive("chunk_rows"),
            decision_threshold=sco.share("decision_threshold"),
        ),
        warehouse=Warehouse(
            schema=wh.identifier("schema"),
            connection_id=wh.get("connection_id", str, "nightshift_warehouse"),
            reader_role=_role(wh.identifier("reader_role", None), wh.key("reader_role")),
        ),
        path=path,
    )
    for reader in (src, key, lab, val, trn, drf, pro, sco, wh, root):
        reader.done()
    _check_cross_references(spec)
    return spec


def _check_cross_references(spec: DatasetSpec) -> None:
    named = [("entity_key.name", spec.entity_key.name), ("timestamp", spec.timestamp), ("label.name", spec.label.name),
             *((f"features[{i}].name", f.name) for i, f in enumerate(spec.features))]
    seen: dict[str, str] = {}
    for key, column in named:
        if column in seen:
            raise SpecError(f"{key}: column {column!r} is named more than once (also {seen[column]})")
        seen[column] = key
    categorical = set(spec.categorical_features)
    for i, col in enumerate(spec.promotion.slice_columns):
        if col not in categorical:
            raise SpecError(f"promotion.slice_columns[{i}]: {col!r} is not a categorical feature")
    if spec.label.delay_days < 0:
        raise SpecError(f"label.delay_days: must be 0 or more, got {spec.label.delay_days}")


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
    """Read and validate one spec file; errors name the file and the key."""
    path = Path(path)
    try:
        text = path.read_text()
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from None
    try:
        _refuse_duplicate_keys(node)
        return parse_spec(data, str(path))
    except SpecError as exc:
        raise SpecError(f"{path.name}: {exc}") from None


def specs_dir() -> Path:
    """include/specs, or NIGHTSHIFT_SPECS_DIR (tests point it at their own specs)."""
    return Path(os.environ.get("NIGHTSHIFT_SPECS_DIR") or Path(__file__).resolve().parent.parent / "specs")


def load_all_specs(directory: str | Path | None = None) -> list[DatasetSpec]:
    """Every spec in include/specs, sorted by name; a broken spec raises (the DAG shows an import error)."""
    directory = Path(directory) if directory else specs_dir()
    specs = [load_spec(p) for p in sorted(directory.glob("*.y*ml"))]
    names = [s.name for s in specs]
    for name in names:
        if names.count(name) > 1:
            raise SpecError(f"name: {name!r} is used by more than one spec in {directory}")
    return specs
