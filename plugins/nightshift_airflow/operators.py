"""One operator per MLOps step: an adapter from Airflow to one function of include/nightshift/nightly.py.

An operator receives the upstream steps' outputs (XComArgs in the DAG file, resolved by Airflow
before `execute`), opens what the step needs, calls the core function and returns its typed
output as XCom. No rule of the pipeline lives here. Heavy libraries are imported inside
`execute`: the DAG processor imports this module every time it parses a DAG file.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from airflow.providers.standard.operators.branch import BaseBranchOperator
from airflow.sdk.bases.xcom import BaseXCom
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from nightshift_airflow import runtime
from nightshift_airflow.alias_watch import watch_alias
from nightshift_airflow.base import NightshiftOperator, alert, pushed_costs, pushed_errors
from nightshift_airflow.links import (DriftReportLink, EvaluationReportLink, HealthPageLink,
                                     LabelledValidationReportLink, ValidationReportLink)
from nightshift_airflow.notifiers import configured_notifiers

log = logging.getLogger(__name__)

# XCom keys holding the artifact-store address of a task's report (its extra links read them).
REPORT_URL = "report_url"
HEALTH_URL = "health_url"
REPORT_KEYS = {"current": REPORT_URL, "labelled": "labelled_report_url"}
HEALTH_DAYS = 90  # nights on the model-health page

LATER_MODEL_PARAM = "allow_later_model"  # history.LATER_MODEL_PARAM (not imported: the DAG processor parses this)

# Task ids; the DAG factory uses the same names.
SNAPSHOT, VALIDATE, DRIFT, MONITOR, DECIDE = "snapshot", "validate", "drift", "monitor", "decide"
TRAIN, SKIP_TRAINING, EVALUATE, SCORE, PUBLISH, RECORD = (
    "train", "no_retrain_needed", "evaluate", "score", "publish", "record_run")


class SnapshotOperator(NightshiftOperator):
    """Freeze the night's rows (and yesterday's newly labelled rows) as content-hashed Parquet."""

    ui_color = "#dbeafe"

    def execute(self, context: Any) -> dict:
        from include.nightshift.history import refuse_unasked_rerun
        from include.nightshift.nightly import take_night

        self.refuse_unknown_conf(context)  # before anything is read: no typo'd parameter, and a published
        with self.connect() as conn:  # night is rerun only when asked
            refuse_unasked_rerun(conn, self.spec, runtime.run_date(context), context["run_id"],
                                 params=context.get("params") or {})
        with runtime.source_reader(self.spec) as conn:  # a missing column fails at once (errors.py)
            snap = take_night(conn, runtime.artifact_store(), self.spec, runtime.run_date(context))
        for ref in (snap.current, snap.labelled):
            log.info("%s snapshot %s: %d rows, sha256 %s", "labelled" if ref.labelled else "night", ref.day,
                     ref.rows, ref.sha256)
        return snap.to_xcom()


class ValidateOperator(NightshiftOperator):
    """Run the spec's Great Expectations suite; a failure stops the run before anything is trained or published."""

    inputs = ("snapshot",)
    ui_color = "#fde68a"
    operator_extra_links = (ValidationReportLink(), LabelledValidationReportLink())

    def execute(self, context: Any) -> dict:
        from include.nightshift import warehouse
        from include.nightshift.nightly import validate_night, validation_alert

        snap = self.received()["snapshot"]
        with self.connect() as conn:
            warehouse.ensure_warehouse(conn, self.spec)
            recent = warehouse.recent_row_counts(conn, self.spec, snap.day, self.spec.validation.row_norm_days)
        result = validate_night(runtime.artifact_store(), self.spec, snap, recent, origin=runtime.origin(context))
        for kind, url in result.report_urls.items():
            context["ti"].xcom_push(key=REPORT_KEYS[kind], value=url)
        if result.passed:
            return result.to_xcom()
        # kept although the task fails: the run record names the failure
        context["ti"].xcom_push(key=BaseXCom.XCOM_RETURN_KEY, value=result.to_xcom())
        alert(context, "validation_failed", validation_alert(self.spec, result))
        raise AirflowFailException(result.error())


class DriftOperator(NightshiftOperator):
    """Current window's features and champion's scores vs the reference (Evidently), and the nights it lasted."""

    inputs = ("snapshot",)
    ui_color = "#fbcfe8"
    operator_extra_links = (DriftReportLink(),)

    def execute(self, context: Any) -> dict:
        from include.nightshift.nightly import measure_night_drift

        with runtime.source_reader(self.spec) as source, self.connect() as conn:
            watch_alias(context, conn, self.spec, night=runtime.run_date(context),  # moved in MLflow? (external.py)
                        dry_run=bool(self.param(context, "dry_run", False)))
            drift = measure_night_drift(source, conn, runtime.artifact_store(), runtime.registry(), self.spec,
                                        self.received()["snapshot"], origin=runtime.origin(context))
        context["ti"].xcom_push(key=REPORT_URL, value=drift.report_url)  # None: no report, no button
        return drift.to_xcom()


class MonitorOperator(NightshiftOperator):
    """The champion's realised quality, with an interval and calibration, on the recent labelled days it never saw."""

    inputs = ("snapshot",)
    ui_color = "#fbcfe8"

    def execute(self, context: Any) -> dict:
        from include.nightshift.nightly import monitor_night

        with runtime.source_reader(self.spec) as source, self.connect() as conn:
            return monitor_night(source, conn, runtime.artifact_store(), runtime.registry(), self.spec,
                                 self.received()["snapshot"], context["run_id"],
                                 dry_run=bool(self.param(context, "dry_run", False)),
                                 shadow_version=self.param(context, "shadow_version", None)).to_xcom()


class DecideOperator(NightshiftOperator, BaseBranchOperator):
    """Branch: train only when there is a reason; the decision and its reason are the task's output."""

    inputs = ("drift", "monitor")
    ui_color = "#ddd6fe"

    def execute(self, context: Any) -> dict:
        from include.nightshift.nightly import decide_night, drift_alert

        decision = decide_night(runtime.registry(), self.spec, runtime.run_date(context), **self.received(),
                                force=bool(self.param(context, "force_retrain", False)))
        alert(context, "drift", drift_alert(self.spec, runtime.run_date(context), decision))  # only drift acted on
        output = decision.to_xcom()
        context["ti"].xcom_push(key=BaseXCom.XCOM_RETURN_KEY, value=output)  # do_branch ends the task by raising
        self.do_branch(context, TRAIN if decision.retrain else SKIP_TRAINING)
        return output


class TrainOperator(NightshiftOperator):
    """Train a challenger (and the baseline) on the labelled window; log and register it in MLflow
    (a dry run keeps it in the artifact store instead: MLflow is left as it was)."""

    inputs = ("decision",)
    ui_color = "#bbf7d0"

    def execute(self, context: Any) -> dict:
        from include.nightshift.nightly import train_challenger

        # too few rows, or one class: more labels, not a retry, will change it (errors.py: permanent)
        with runtime.source_reader(self.spec) as conn, runtime.dask_client(self.spec) as cluster:  # engine dask
            return train_challenger(conn, runtime.artifact_store(), runtime.registry(), self.spec,
                                    runtime.run_date(context), self.received()["decision"], context["run_id"],
                                    dry_run=bool(self.param(context, "dry_run", False)), cluster=cluster).to_xcom()


class EvaluateOperator(NightshiftOperator):
    """Champion, challenger and baseline on the same out-of-time holdout; promote only through the gate.

    The night's validation and drift reports go onto the challenger's MLflow run beside the evaluation's.
    """

    inputs = ("trained", "validation", "drift")
    ui_color = "#bbf7d0"
    operator_extra_links = (EvaluationReportLink(),)

    def execute(self, context: Any) -> dict:
        from include.nightshift.nightly import judge_challenger, run_reports, settle_verdict, verdict_alerts
        from include.nightshift.versions import record_judged

        if self.received()["trained"] is None:  # train failed; its failure is the night's, not this step's
            raise AirflowSkipException("no challenger to judge: train did not finish")
        configured_notifiers()  # a bad alert setting fails here, before the alias can move
        got, registry, policy = self.received(), runtime.registry(), self.param(context, "promotion_policy", "auto")
        with self.connect() as conn:  # the audit table tells a vanished champion from none (nightly.lost_champion)
            verdict = judge_challenger(
                runtime.artifact_store(), registry, self.spec, got["trained"], day=runtime.run_date(context),
                policy=policy, dry_run=bool(self.param(context, "dry_run", False)), conn=conn,
                origin=runtime.origin(context), reports=run_reports(got["validation"], got["drift"]))
            context["ti"].xcom_push(key=REPORT_URL, value=verdict.report_url)
            replaced = settle_verdict(registry, conn, self.spec, verdict, night=runtime.run_date(context))
            if not self.param(context, "dry_run", False):  # the warehouse's model_versions row (versions.py)
                record_judged(conn, runtime.artifact_store(), registry, self.spec, got["trained"], verdict,
                              night=runtime.run_date(context))
        for event, found in verdict_alerts(self.spec, verdict, replaced):  # a promotion; a vanished champion
            alert(context, event, found)
        log.info("report: %s", verdict.report_url)
        return verdict.to_xcom()


class ScoreOperator(NightshiftOperator):
    """Score the night's population with the champion, chunk by chunk (bounded memory); above
    scoring.shard_rows, choose and check the champion and leave the rows to the score_shard tasks.

    Runs whatever happened to the retrain branch (a failed train leaves the champion serving), and
    only when the night's rows passed validation.
    """

    inputs = ("snapshot", "validation")
    ui_color = "#fed7aa"

    def execute(self, context: Any) -> dict:
        from include.nightshift.environment import environment_alert
        from include.nightshift.nightly import NoModel, score_night
        from include.nightshift.skew import ServingSkew

        got = self.received()
        if got["validation"] is None or not got["validation"].passed:  # that step's failure fails the run
            raise AirflowSkipException("the night's rows did not pass validation: nothing is scored")
        try:
            scored = score_night(runtime.artifact_store(), runtime.registry(), self.spec, got["snapshot"],
                                 context["run_id"], dry_run=bool(self.param(context, "dry_run", False)),
                                 allow_later_model=bool(self.param(context, LATER_MODEL_PARAM, False)))
            alert(context, "dependency_change", environment_alert(self.spec.name, scored.checks))  # libraries moved
            return scored.to_xcom()
        except ServingSkew as exc:  # the serving path does not reproduce training (skew.py): nothing is published
            alert(context, "dependency_change", environment_alert(self.spec.name, exc.checks))
            raise
        except NoModel as exc:  # no champion after the gate: alerted, recorded no_model, fails unless the spec allows
            context["ti"].xcom_push(key=BaseXCom.XCOM_RETURN_KEY, value=exc.scored.to_xcom())  # for the run record
            alert(context, "no_model", exc.alert)
            raise (AirflowSkipException if exc.allowed else AirflowFailException)(str(exc)) from exc


class PublishOperator(NightshiftOperator):
    """Replace the night's partition of the predictions table in one transaction (COPY), with the champion serving now."""

    inputs = ("scored", "snapshot")
    ui_color = "#fecaca"

    def execute(self, context: Any) -> dict:
        from include.nightshift.nightly import publish_night

        if self.param(context, "dry_run", False):
            raise AirflowSkipException("dry run: nothing is published")
        got = self.received()
        if got["scored"] is None or got["scored"].no_model:  # score skipped (its shards too): nothing to publish
            raise AirflowSkipException("nothing was scored tonight: nothing is published")
        with self.connect() as conn:  # under the serving lock; re-scores if the champion moved since score
            return publish_night(conn, runtime.artifact_store(), runtime.registry(), self.spec, got["scored"],
                                 got["snapshot"], context["run_id"],
                                 allow_later_model=bool(self.param(context, LATER_MODEL_PARAM, False))).to_xcom()


class RecordRunOperator(NightshiftOperator):
    """Record the run (run_attempts) and the night (pipeline_runs; not for a dry run); fail the run if a step failed."""

    inputs = ("snapshot", "validation", "drift", "decision", "trained", "verdict", "scored", "shards", "published")
    ui_color = "#e5e7eb"
    operator_extra_links = (HealthPageLink(),)

    def execute(self, context: Any) -> dict:
        import psycopg

        from include.nightshift.environment import shard_environment_alert
        from include.nightshift.nightly import record_night, run_reports
        from include.nightshift.pending_records import keep_pending, unreachable_message
        from include.nightshift.run_record import build_run_record
        from include.nightshift.task_costs import night_alert

        got, states = self.received(), runtime.task_states(context)
        record = build_run_record(
            self.spec, day=runtime.run_date(context), dag_run_id=context["run_id"], states=states,
            **got, started_at=getattr(context.get("dag_run"), "start_date", None), params=context.get("params"),
            finished_at=dt.datetime.now(dt.timezone.utc), record_task=self.task_id,
            errors=pushed_errors(context, [t for t, s in states.items() if s == "failed"]))  # the root causes
        record.details["costs"] = {"tasks": pushed_costs(context, list(states))}  # judged by record_night (task_costs)
        store = runtime.artifact_store()
        try:
            with self.connect() as conn:
                health_url = record_night(conn, store, self.spec, record, health_days=HEALTH_DAYS)
        except (runtime.ConnectionFailed, psycopg.OperationalError) as exc:  # kept; the next run writes it
            raise AirflowFailException(unreachable_message(self.spec, record, keep_pending(store, self.spec, record),
                                                           exc)) from exc
        alert(context, "task_costs", night_alert(self.spec, record))  # a step slower or bigger than its norm
        alert(context, "dependency_change", shard_environment_alert(self.spec.name, record.details.get("serving")))
        if health_url:
            context["ti"].xcom_push(key=HEALTH_URL, value=health_url)
        log.info("run summary: %s", record.summary())
        for name, url in {**run_reports(got["validation"], got["drift"], got["verdict"]),
                          "model health": health_url}.items():  # last in the log, for a reader of the UI
            if url:
                log.info("report %s: %s", name, url)
        if record.error(self.spec):
            raise AirflowFailException(record.error(self.spec))
        return {"decision": record.decision, "summary": record.summary()}
