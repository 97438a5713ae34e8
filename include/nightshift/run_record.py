"""The run's row of history, built from the steps' outputs: ``<schema>.run_attempts`` (every DAG
run) and ``<schema>.pipeline_runs`` (the latest non-dry run of each night).

Pure: no database, no Airflow. The record_run task gathers the steps' typed outputs and the
task states, calls build_run_record, and writes the result (nightly.record_night).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from include.nightshift.decide import Decision
from include.nightshift.spec import DatasetSpec
from include.nightshift.steps import (DriftStep, PublishStep, ScoringStep, ShardStep, SnapshotStep, StepOutput,
                                      TrainingStep, ValidationStep, VerdictStep)
from include.nightshift.test_score import summary_text
from include.nightshift.task_costs import findings_clause
from include.nightshift.warehouse import ATTEMPT_COLUMNS

FAILED_STATES = ("failed", "upstream_failed")
ATTEMPT_ONLY = ("dry_run", "conf")  # RunRecord fields that run_attempts has and pipeline_runs does not


def run_outcome(failed_tasks: list[str], verdict: VerdictStep | None, scored: ScoringStep | None = None) -> str:
    """no_model, failed, reproduced, promoted, rejected or skipped (no challenger tonight): the decision column.

    no_model first: the score step found no champion after the gate, and the failures that follow
    from it (score, publish) are that, not something else; nothing upstream of score had failed,
    or it would not have run.
    """
    if scored is not None and scored.no_model:
        return "no_model"
    if failed_tasks:
        return "failed"
    if verdict is not None and verdict.reused and verdict.challenger_version == verdict.champion_version:
        return "reproduced"  # the retrain gave the champion back, bit for bit: nothing to promote or reject
    if verdict is not None:
        return "promoted" if verdict.promoted else "rejected"
    return "skipped"


def failed_tasks(states: dict[str, str], *, besides: str) -> list[str]:
    """The tasks that failed (or could not run because an upstream failed), sorted."""
    return sorted(t for t, s in states.items() if s in FAILED_STATES and t != besides)


def root_failures(states: dict[str, str], errors: dict[str, dict] | None, *, besides: str) -> list[dict[str, Any]]:
    """The tasks that failed themselves (not upstream_failed), each with what it pushed when it failed
    (plugins/nightshift_airflow/base.py: message, permanent, try_number; message None if it pushed nothing)."""
    errors = errors or {}
    return [{"task": t, "message": None, **errors.get(t, {})}
            for t in sorted(t for t, s in states.items() if s == "failed" and t != besides)]


def failure_story(failed: list[str], roots: list[dict[str, Any]]) -> str:
    """"run failed at <root>: <its error>", each root first, then what could not run because of it."""
    if not roots:  # only upstream_failed states seen (a root outside this run's view): name them all
        return f"run failed at {', '.join(failed)}"
    named = "; and at ".join(f"{r['task']}: {r.get('message') or 'no error recorded (see the task log)'}" for r in roots)
    blocked = [t for t in failed if t not in {r["task"] for r in roots}]
    then = f"; could not run because of {'it' if len(roots) == 1 else 'them'}: {', '.join(blocked)}" if blocked else ""
    return f"run failed at {named}{then}"


@dataclass(frozen=True)
class RunRecord(StepOutput):
    """One row of pipeline_runs: its keys are the table's columns."""

    logical_date: dt.date
    dag_run_id: str
    rows_in: int | None
    validation_passed: bool | None
    drift_share: float | None
    retrain_reason: str | None
    decision: str
    champion_version: int | None
    challenger_version: int | None
    champion_metric: float | None
    challenger_metric: float | None
    metric_name: str
    rows_published: int
    started_at: dt.datetime | None
    finished_at: dt.datetime
    note: str | None
    details: dict = field(default_factory=dict)
    dry_run: bool = False
    conf: dict = field(default_factory=dict)  # the run's parameters, as it ran

    def row(self) -> dict[str, Any]:
        """The pipeline_runs row, values as the warehouse takes them (dates and times as Python objects)."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__ if name not in ATTEMPT_ONLY}

    def attempt_row(self) -> dict[str, Any]:
        """The run_attempts row: the columns it shares with pipeline_runs, and what only an attempt has
        (dry_run, conf, failed_tasks). A pipeline_runs column run_attempts lacks is left out."""
        values = {**self.row(), "dry_run": self.dry_run, "conf": self.conf,
                  "failed_tasks": self.details.get("failed_tasks", [])}
        return {name: value for name, value in values.items() if name in ATTEMPT_COLUMNS}

    def error(self, spec: DatasetSpec) -> str | None:
        """Why the DAG run must fail (the record task raises it, and its failure alerts), None when it may pass.

        Besides a failed step: a night that published nothing although nothing failed, unless that is
        explained (a dry run, or no_model that the spec allows). No step can do that today; this keeps
        a future one from leaving consumers without predictions on a green, silent run.
        """
        failed = self.details.get("failed_tasks")
        where = f"recorded in {spec.warehouse.schema}.pipeline_runs and {spec.warehouse.schema}.run_attempts"
        if not failed:
            if self.dry_run or self.decision == "no_model" or self.rows_published:
                return None
            return f"nothing was published for {self.logical_date} although no step failed; {where}"
        if self.decision == "no_model":
            return (f"no predictions for {self.logical_date}: no champion after the gate (decision no_model; "
                    f"scoring.allow_no_predictions is false); {where}")
        return f"{failure_story(failed, self.details.get('root_failure') or [])}; {where}"

    def summary(self) -> str:
        """One line for the task log; the staleness judgement of max_model_age_days when it has one, the shadow's
        standing against the champion when there is one, and the night's ML Test Score once computed."""
        setting = ((self.details.get("decision") or {}).get("details") or {}).get("staleness", {}).get("setting")
        shadow = (((self.details.get("decision") or {}).get("details") or {}).get("shadow") or {}).get("summary")
        setting = "; ".join(x for x in (setting, findings_clause(self.details), shadow) if x)  # cost; shadow.py
        score = summary_text(self.details.get("ml_test_score"))  # set by record_night (nightly.score_run)
        return (f"{self.logical_date}: rows {self.rows_in}, drift share {self.drift_share}, reason "
                f"{self.retrain_reason}, decision {self.decision}, champion v{self.champion_version}, "
                f"published {self.rows_published}" + (f"; {setting}" if setting else "")
                + (f"; {score}" if score else ""))


def build_run_record(spec: DatasetSpec, *, day: dt.date, dag_run_id: str, states: dict[str, str],
                     snapshot: SnapshotStep | None, validation: ValidationStep | None, drift: DriftStep | None,
                     decision: Decision | None, trained: TrainingStep | None, verdict: VerdictStep | None,
                     published: PublishStep | None, started_at: dt.datetime | None, finished_at: dt.datetime,
                     params: dict[str, Any] | None = None, scored: ScoringStep | None = None,
                     record_task: str = "record_run", errors: dict[str, dict] | None = None,
                     shards: Sequence[ShardStep] | None = None) -> RunRecord:
    """What happened tonight, from what each step handed on (None: the step did not run or failed; `shards`:
    what the score_shard tasks of a sharded night handed on), the run's parameters (`params`: note, dry_run and
    the rest, kept as the attempt's conf) and how the failed steps failed (`errors`: task id -> what it pushed;
    details.root_failure)."""
    failed = failed_tasks(states, besides=record_task)
    params = dict(params or {})
    return RunRecord(
        logical_date=day,
        dag_run_id=dag_run_id,
        rows_in=snapshot.current.rows if snapshot else None,
        validation_passed=_field(validation, "passed"),
        drift_share=_field(drift, "share"),
        retrain_reason=_field(decision, "reason"),
        decision=run_outcome(failed, verdict, scored),
        champion_version=_champion(verdict, drift, scored),
        challenger_version=_field(trained, "version"),
        champion_metric=_field(verdict, "champion"),
        challenger_metric=_field(verdict, "challenger"),
        metric_name=spec.promotion.metric,
        rows_published=_field(published, "rows", 0),
        started_at=started_at,
        finished_at=finished_at,
        note=params.get("note") or None,
        details={"failed_tasks": failed, "task_states": states, "validation_failure": _field(validation, "failure"),
                 "root_failure": root_failures(states, errors, besides=record_task),
                 "drifted": _field(drift, "drifted"), "decision": decision.to_dict() if decision else {},
                 "drift_columns": _field(drift, "details", {}).get("columns"),  # per feature: the health heatmap
                 "training": _training(trained),  # tonight's challenger, as the ML Test Score judges it
                 "feature_benefit": _field(verdict, "feature_benefit"),  # each feature's benefit (benefit.py)
                 "example_trace": _field(verdict, "example_trace"),  # one row through the model (trace.py)
                 "reports": _report_urls(validation, drift, verdict),  # the health page links each night to them
                 "verdict": _field(verdict, "checks"), "policy": _field(verdict, "policy_note"),
                 "serving": _serving(scored, shards)},  # environment, round trip and skew (skew.before_scoring)
        dry_run=bool(params.get("dry_run")),
        conf=params,
    )


def _serving(scored: ScoringStep | None, shards: Sequence[ShardStep] | None) -> dict[str, Any] | None:
    """The score step's serving checks, with its shards' when the night was scored in shards."""
    from include.nightshift.skew import sharded_night_checks

    checks = _field(scored, "checks")
    if checks is None or not shards:
        return checks
    return sharded_night_checks(checks, [(s.shard, s.checks) for s in shards if s is not None])


def _training(trained: TrainingStep | None) -> dict[str, Any]:
    """Tonight's challenger for the ML Test Score (test_score.py; {} when none was trained): its version, family,
    training key and whether it was reused (tonight's fit reproduced an existing version's scores)."""
    if trained is None:
        return {}
    return {"version": trained.version, "family": trained.family, "training_key": trained.training_key,
            "reused": trained.reused, "train_rows": trained.train_rows, "holdout_rows": trained.holdout_rows,
            "sampled_from": trained.sampled_from, "holdout_sampled_from": trained.holdout_sampled_from}


def _champion(verdict: VerdictStep | None, drift: DriftStep | None, scored: ScoringStep | None) -> int | None:
    """The champion before the night's verdict: the gate's, else the one drift compared against, else the
    one that scored (a night whose watch steps failed was still served by a champion)."""
    if verdict is not None:
        return verdict.champion_version
    return next((v for v in (_field(drift, "champion_version"), _field(scored, "model_version")) if v is not None),
                None)


def _report_urls(validation: ValidationStep | None, drift: DriftStep | None,
                 verdict: VerdictStep | None) -> dict[str, str]:
    """The night's report pages by name (nightly.run_reports), kept in the record for the health page."""
    from include.nightshift.nightly import run_reports  # nightly imports this module

    return run_reports(validation, drift, verdict)


def _field(step: StepOutput | None, name: str, default: Any = None) -> Any:
    """A field of a step's output, or `default` when the step did not run."""
    return default if step is None else getattr(step, name)
