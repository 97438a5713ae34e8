"""The run's one row of history (``<schema>.pipeline_runs``), built from the steps' outputs.

Pure: no database, no Airflow. The record_run task gathers the steps' typed outputs and the
task states, calls build_run_record, and writes the result with warehouse.upsert_run.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from include.nightshift.decide import Decision
from include.nightshift.spec import DatasetSpec
from include.nightshift.steps import (DriftStep, PublishStep, SnapshotStep, StepOutput, TrainingStep,
                                      ValidationStep, VerdictStep)

FAILED_STATES = ("failed", "upstream_failed")


def run_outcome(failed_tasks: list[str], verdict: VerdictStep | None) -> str:
    """failed, promoted, rejected or skipped (no challenger tonight): pipeline_runs.decision."""
    if failed_tasks:
        return "failed"
    if verdict is not None:
        return "promoted" if verdict.promoted else "rejected"
    return "skipped"


def failed_tasks(states: dict[str, str], *, besides: str) -> list[str]:
    """The tasks that failed (or could not run because an upstream failed), sorted."""
    return sorted(t for t, s in states.items() if s in FAILED_STATES and t != besides)


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

    def row(self) -> dict[str, Any]:
        """The values as the warehouse takes them (dates and times as Python objects)."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    def summary(self) -> str:
        return (f"{self.logical_date}: rows {self.rows_in}, drift share {self.drift_share}, reason "
                f"{self.retrain_reason}, decision {self.decision}, champion v{self.champion_version}, "
                f"published {self.rows_published}")


def build_run_record(spec: DatasetSpec, *, day: dt.date, dag_run_id: str, states: dict[str, str],
                     snapshot: SnapshotStep | None, validation: ValidationStep | None, drift: DriftStep | None,
                     decision: Decision | None, trained: TrainingStep | None, verdict: VerdictStep | None,
                     published: PublishStep | None, started_at: dt.datetime | None, finished_at: dt.datetime,
                     note: str | None, record_task: str = "record_run") -> RunRecord:
    """What happened tonight, from what each step handed on (None: the step did not run or failed)."""
    failed = failed_tasks(states, besides=record_task)
    return RunRecord(
        logical_date=day,
        dag_run_id=dag_run_id,
        rows_in=snapshot.current.rows if snapshot else None,
        validation_passed=_field(validation, "passed"),
        drift_share=_field(drift, "share"),
        retrain_reason=_field(decision, "reason"),
        decision=run_outcome(failed, verdict),
        champion_version=verdict.champion_version if verdict else _field(drift, "champion_version"),
        challenger_version=_field(trained, "version"),
        champion_metric=_field(verdict, "champion"),
        challenger_metric=_field(verdict, "challenger"),
        metric_name=spec.promotion.metric,
        rows_published=_field(published, "rows", 0),
        started_at=started_at,
        finished_at=finished_at,
        note=note or None,
        details={"failed_tasks": failed, "task_states": states, "validation_failure": _field(validation, "failure"),
                 "drifted": _field(drift, "drifted"), "decision": decision.to_dict() if decision else {},
                 "verdict": _field(verdict, "checks"), "policy": _field(verdict, "policy_note")},
    )


def _field(step: StepOutput | None, name: str, default: Any = None) -> Any:
    """A field of a step's output, or `default` when the step did not run."""
    return default if step is None else getattr(step, name)
