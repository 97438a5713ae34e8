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
from collections.abc import Mapping, Sequence
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
    """Drift of the current window against the reference (drift.reference), and how long it has lasted.

    share None: not measured (no champion, or no reference rows). ``detected``: share at or above
    drift.share_threshold tonight. ``persisted_nights``: consecutive nights detected against the
    same champion, tonight included, counted back over at most drift.persist_nights nights (from
    pipeline_runs; a night missing there counts as not drifted). ``prediction_drift``: the
    champion's score distribution tested like a feature ({"method", "score", "threshold",
    "drifted"}), recorded evidence only.
    """

    share: float | None
    champion_version: int | None
    drifted: list[str] | None = None
    report_url: str | None = None
    details: dict = field(default_factory=dict)  # DriftResult.to_dict(), the windows and the history read
    detected: bool | None = None
    persisted_nights: int = 0
    prediction_drift: dict | None = None


@dataclass(frozen=True)
class MonitorStep(StepOutput):
    """The champion's realised metric on the labelled days it never saw (a pooled rolling window).

    ``realised_metric`` is the point estimate on the pooled rows; ``interval`` its seeded bootstrap
    interval [low, high] at ``confidence``; ``days`` the labelled days pooled (ISO dates, after the
    champion's holdout end, at most promotion.realised_window_days); ``brier`` and ``ece`` the
    calibration of its scores on those rows. None throughout when nothing was measured. ``target_drift``:
    those rows' labels against the champion's training labels (evidence, not a rule's input).
    """

    realised_metric: float | None
    rows: int
    champion_version: int | None
    champion_holdout_metric: float | None = None
    day: dt.date | None = None
    interval: list[float] | None = None
    confidence: float | None = None
    days: list[str] = field(default_factory=list)
    brier: float | None = None
    ece: float | None = None
    holdout_end: dt.date | None = None
    target_drift: dict = field(default_factory=dict)  # drift.measure_target_drift's record; {} when not measured
    staleness: dict = field(default_factory=dict)  # nightly.measure_staleness: tonight's points and the cadence
    prediction_bias: dict = field(default_factory=dict)  # bias.prediction_bias per slice value; {} when not measured
    shadow: dict = field(default_factory=dict)  # shadow.measure_shadow: the shadow against the champion; {} without one
    served_baseline: dict = field(default_factory=dict)  # nightly.served_baseline: the champion vs its baseline
    sampled_from: int | None = None  # the window's labelled rows when `rows` is a sample (promotion.realised_max_rows)


@dataclass(frozen=True)
class TrainingStep(StepOutput):
    """The challenger registered tonight, and where its holdout lives.

    family: the candidate the holdout chose; candidates: every candidate's holdout metric and fit
    time, by family. reused: the version already carried tonight's training key (same snapshots,
    spec, libraries and code), so nothing new was registered; holdout_scores_url then holds the
    fresh fit's scores, which the round trip compares with the reused version's.
    A dry run registers nothing: version None, run_id "" (no MLflow run), and model_url is the zip of
    the challenger and its baseline kept in the artifact store (nightly.train_challenger).
    """

    version: int | None
    run_id: str
    train_rows: int
    holdout_rows: int
    holdout_end: dt.date
    holdout_scores_url: str
    snapshots_url: str
    family: str = "xgboost"
    candidates: dict[str, dict] = field(default_factory=dict)
    reused: bool = False
    training_key: str | None = None
    model_url: str | None = None
    shadow: dict = field(default_factory=dict)  # a shadow_wins night: the shadow's realised evidence (shadow.py), no fit
    sampled_from: int | None = None  # training.max_rows: the window's rows before sampling (train_rows after); None: all
    holdout_sampled_from: int | None = None  # training.holdout_max_rows: the holdout's rows before sampling; None: all


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
    challenger_version: int | None  # None: a dry run's challenger, never registered
    promoted: bool
    policy_note: str
    evaluation: dict = field(default_factory=dict)
    report_url: str | None = None
    family: str | None = None  # the challenger's model family (TrainingStep.family)
    candidates: dict[str, dict] = field(default_factory=dict)  # every candidate's holdout metric, by family
    reused: bool = False  # the challenger is a version reused by training key, not one registered tonight
    feature_benefit: dict = field(default_factory=dict)  # benefit.feature_benefit: each feature's permutation importance
    example_trace: dict = field(default_factory=dict)  # trace.trace_example: one holdout row through the model's stages

    def record(self) -> dict[str, Any]:
        """The verdict as the evaluation report and evaluation.json show it (the evaluation apart)."""
        return {k: v for k, v in self.to_xcom().items() if k not in ("evaluation", "report_url")}

    def tags(self) -> dict[str, Any]:
        """What goes on the model version (registry.verdict_description: its description, and nightshift.gate):
        the record without each check's per-slice rows, which stay in the report and evaluation.json."""
        return {**{k: v for k, v in self.record().items() if k not in ("feature_benefit", "example_trace")},  # not tags
                "checks": [{k: v for k, v in c.items() if k != "slices"} for c in self.checks]}


@dataclass(frozen=True)
class ScoringStep(StepOutput):
    """The night's predictions, scored by one champion version, waiting to be published.

    With no champion after the gate nothing is scored: ``url`` and ``model_version`` are None
    (``no_model``); the score task hands this on although it fails, so the run record can say so.
    """

    url: str | None
    rows: int
    model_version: int | None
    day: dt.date
    checks: dict = field(default_factory=dict)  # skew.before_scoring's evidence: environment, round_trip, skew
    shadow_url: str | None = None  # the shadow's scores of the same rows (shadow.py), for predictions_shadow
    shadow_version: int | None = None
    shards: int = 0  # > 0: the night is scored by that many score_shard tasks (url None; scoring.shard_rows)
    scored_at: dt.datetime | None = None  # the scoring time every shard of the night writes

    @property
    def no_model(self) -> bool:
        """Nothing could score the night: there was no champion."""
        return self.model_version is None

    def shard_range(self, shard: int, shard_rows: int) -> tuple[int, int]:
        """Shard `shard`'s first and end row positions in the night's snapshot."""
        if not 0 <= shard < self.shards:
            raise ValueError(f"shard {shard} of a night scored in {self.shards} shard(s)")
        return shard * shard_rows, min((shard + 1) * shard_rows, self.rows)


@dataclass(frozen=True)
class ShardStep(StepOutput):
    """One shard of a night, scored and staged (predictions_staging) for the publish step."""

    shard: int
    rows: int
    url: str
    model_version: int
    staged: bool  # False on a dry run: scored, nothing written to the warehouse
    checks: dict = field(default_factory=dict)  # this worker's round trip and skew check on this shard


@dataclass(frozen=True)
class PublishStep(StepOutput):
    """The partition written to the warehouse."""

    rows: int
    day: dt.date
    model_version: int
    shadow_rows: int = 0  # rows written to predictions_shadow (0: no shadow scored the night)


def read_outputs(sent: Mapping[str, Any]) -> dict[str, Any]:
    """Upstream outputs by the name a step takes them under, each rebuilt as its type (None stays None)."""
    from include.nightshift.decide import Decision

    kinds: dict[str, type[StepOutput]] = {
        "snapshot": SnapshotStep, "validation": ValidationStep, "drift": DriftStep, "monitor": MonitorStep,
        "decision": Decision, "trained": TrainingStep, "verdict": VerdictStep, "scored": ScoringStep,
        "published": PublishStep, "shards": ShardStep}
    unknown = sorted(set(sent) - set(kinds))
    if unknown:
        raise ValueError(f"read_outputs: no step output is called {unknown[0]!r} (known: {', '.join(kinds)})")
    return {name: [kinds[name].from_xcom(v) for v in value] if _many(value)  # a mapped step's, one per instance
            else kinds[name].from_xcom(value) for name, value in sent.items()}


def _many(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))
