"""What each nightly step hands to the next: small typed records that travel through XCom.

A step's output is one of these dataclasses. The operator returns ``output.to_xcom()`` (plain
JSON: XCom must stay small and readable in the UI) and the next operator receives it as an
XComArg and rebuilds it with ``from_xcom``. So a step never digs another step's result out of
an untyped dict by task id, and a renamed field fails in one place, loudly: ``from_xcom``
refuses keys it does not know.

Data never travels here: rows stay in the artifact store, these records only say where.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Self

from include.nightshift.snapshot import SnapshotRef


class StepOutput:
    """Mixin for the step dataclasses: to and from XCom's JSON."""

    def to_xcom(self) -> dict[str, Any]:
        return {f.name: _encode(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_xcom(cls, data: Mapping[str, Any] | Self | None) -> Self | None:
        """The record from XCom's JSON; None stays None (the step did not run, e.g. a skipped branch)."""
        if data is None or isinstance(data, cls):
            return data
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"{cls.__name__}.from_xcom: unknown key {unknown[0]!r} (known: {', '.join(sorted(names))})")
        return cls(**{name: _decode(hints[name], value) for name, value in data.items()})


def _not_none(hint: Any) -> Any:
    """X from `X | None`; any other hint as it is."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def _encode(value: Any) -> Any:
    if isinstance(value, StepOutput):
        return value.to_xcom()
    if isinstance(value, SnapshotRef):
        return value.to_dict()
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return value


def _decode(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    hint = _not_none(hint)
    if hint is dt.date and isinstance(value, str):
        return dt.date.fromisoformat(value)
    if hint is dt.datetime and isinstance(value, str):
        return dt.datetime.fromisoformat(value)
    if hint is SnapshotRef and isinstance(value, Mapping):
        return SnapshotRef.from_dict(dict(value))
    if isinstance(hint, type) and issubclass(hint, StepOutput):
        return hint.from_xcom(value)
    return value


@dataclass(frozen=True)
class SnapshotStep(StepOutput):
    """The night's rows and the newly labelled day's rows, frozen."""

    day: dt.date
    current: SnapshotRef
    labelled: SnapshotRef


@dataclass(frozen=True)
class ValidationStep(StepOutput):
    """The suite's verdict on each snapshot validated (``current``, ``labelled``).

    A failed validation is an output too (the task then fails): the run record names what failed.
    """

    passed: bool
    rows: int | None
    results: dict[str, dict] = field(default_factory=dict)
    report_urls: dict[str, str] = field(default_factory=dict)
    failure: dict | None = None  # {"snapshot": kind, "day", "message", "failures"} when it failed

    def error(self) -> str:
        """The task's error text when validation failed: which snapshot, and every failed rule."""
        f = self.failure or {}
        return f"validation failed for the {f.get('snapshot')} snapshot of {f.get('day')}: {f.get('message')}"


@dataclass(frozen=True)
class DriftStep(StepOutput):
    """Drift of the night against the champion's reference; share None when there is no champion."""

    share: float | None
    champion_version: int | None
    drifted: list[str] | None = None
    report_url: str | None = None
    details: dict = field(default_factory=dict)  # DriftResult.to_dict(): per-column methods and scores


@dataclass(frozen=True)
class MonitorStep(StepOutput):
    """The champion's realised metric on the rows whose labels just arrived."""

    realised_metric: float | None
    rows: int
    champion_version: int | None
    champion_holdout_metric: float | None = None
    day: dt.date | None = None


@dataclass(frozen=True)
class TrainingStep(StepOutput):
    """The challenger registered tonight, and where its holdout lives."""

    version: int
    run_id: str
    train_rows: int
    holdout_rows: int
    holdout_end: dt.date
    holdout_scores_url: str
    snapshots_url: str


@dataclass(frozen=True)
class VerdictStep(StepOutput):
    """The gate's verdict and what the run's policy made of it.

    ``promote`` is the gate's answer; ``promoted`` is what happened (a policy or a dry run may
    hold back a model the gate passed, or force one it did not).
    """

    promote: bool
    metric: str
    challenger: float | None
    champion: float | None
    baseline: float | None
    message: str
    checks: list[dict]
    policy: str
    dag_run_id: str
    champion_version: int | None
    challenger_version: int
    promoted: bool
    policy_note: str
    evaluation: dict = field(default_factory=dict)
    report_url: str | None = None

    def record(self) -> dict[str, Any]:
        """The verdict as the evaluation report and evaluation.json show it (the evaluation apart)."""
        return {k: v for k, v in self.to_xcom().items() if k not in ("evaluation", "report_url")}

    def tags(self) -> dict[str, Any]:
        """What goes on the model version as verdict.* tags: the record without each check's per-slice
        rows, which stay in the report (MLflow caps a tag's length, and a spec may have many slices)."""
        return {**self.record(), "checks": [{k: v for k, v in c.items() if k != "slices"} for c in self.checks]}


@dataclass(frozen=True)
class ScoringStep(StepOutput):
    """The night's predictions, scored by one champion version, waiting to be published."""

    url: str
    rows: int
    model_version: int
    day: dt.date


@dataclass(frozen=True)
class PublishStep(StepOutput):
    """The partition written to the warehouse."""

    rows: int
    day: dt.date
    model_version: int


def read_outputs(sent: Mapping[str, Any]) -> dict[str, Any]:
    """Upstream outputs by the name a step takes them under, each rebuilt as its type (None stays None)."""
    from include.nightshift.decide import Decision

    kinds: dict[str, type[StepOutput]] = {
        "snapshot": SnapshotStep, "validation": ValidationStep, "drift": DriftStep, "monitor": MonitorStep,
        "decision": Decision, "trained": TrainingStep, "verdict": VerdictStep, "scored": ScoringStep,
        "published": PublishStep}
    unknown = sorted(set(sent) - set(kinds))
    if unknown:
        raise ValueError(f"read_outputs: no step output is called {unknown[0]!r} (known: {', '.join(kinds)})")
    return {name: kinds[name].from_xcom(value) for name, value in sent.items()}
