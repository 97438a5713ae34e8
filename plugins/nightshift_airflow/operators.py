"""One operator per MLOps step: read the context and connections, call the core, push small metadata.

Operators are thin on purpose (the core in include/nightshift holds the logic and is tested
without Airflow). Heavy libraries are imported inside `execute`, never at module level,
because the DAG processor imports this module every time it parses a DAG file.
XCom carries only JSON-safe dicts of paths, hashes, counts and metrics.
"""

from __future__ import annotations

import datetime as dt
import inspect
import json
import logging
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from airflow.providers.standard.operators.branch import BaseBranchOperator
from airflow.sdk import BaseOperator

from nightshift_airflow import runtime
from nightshift_airflow.links import (DriftReportLink, EvaluationReportLink, HealthPageLink,
                                     LabelledValidationReportLink, ValidationReportLink)
from nightshift_airflow.notifiers import configured_notifiers, notify

log = logging.getLogger(__name__)

# XCom keys holding the artifact-store address of a task's report (its extra links read them).
REPORT_URL = "report_url"
HEALTH_URL = "health_url"
HEALTH_DAYS = 90  # nights on the model-health page
REPORT_KEYS = {"current": REPORT_URL, "labelled": "labelled_report_url"}

# Task ids the steps find each other by; the DAG factory uses the same names.
SNAPSHOT, VALIDATE, DRIFT, MONITOR, DECIDE = "snapshot", "validate", "drift", "monitor", "decide"
TRAIN, SKIP_TRAINING, EVALUATE, SCORE, PUBLISH, RECORD = (
    "train", "no_retrain_needed", "evaluate", "score", "publish", "record_run")


class NightshiftOperator(BaseOperator):
    """Base for the steps: every step is about one dataset spec and one run date.

    :param spec_path: path of the dataset spec YAML (templated).
    """

    template_fields: Sequence[str] = ("spec_path",)
    ui_color = "#e8f0fe"

    def __init__(self, *, spec_path: str, **kwargs: Any) -> None:
        kwargs.setdefault("doc_md", inspect.cleandoc(type(self).__doc__ or ""))  # the task's docs in the UI
        super().__init__(**kwargs)
        self.spec_path = spec_path

    @cached_property
    def spec(self):
        from include.nightshift.spec import load_spec

        return load_spec(self.spec_path)

    @staticmethod
    def pull(context: Any, task_id: str) -> dict | None:
        return context["ti"].xcom_pull(task_ids=task_id)

    @staticmethod
    def param(context: Any, name: str, default: Any = None) -> Any:
        return (context.get("params") or {}).get(name, default)

    def record_champion_change(self, change: dict | None = None) -> bool:
        """One row in <schema>.champion_changes, the table created if missing (no change: only that).

        False when the row was there already (a retried task). Promotions and rollbacks both
        write through here, so the audit table has one writer and one shape.
        """
        from include.nightshift import audit

        conn = runtime.postgres_connection(self.spec.warehouse.connection_id)
        try:
            audit.ensure_audit(conn, self.spec)
            return audit.record_change(conn, self.spec, change) if change else False
        finally:
            conn.close()


class SnapshotOperator(NightshiftOperator):
    """Freeze the night's rows (and yesterday's newly labelled rows) as content-hashed Parquet."""

    ui_color = "#dbeafe"

    def execute(self, context: Any) -> dict:
        from include.nightshift.snapshot import SourceSchemaError, take_snapshot

        spec, store, day = self.spec, runtime.artifact_store(), runtime.run_date(context)
        conn = runtime.postgres_connection(spec.source.connection_id)
        try:
            current = take_snapshot(conn, store, spec, day)
            labelled = take_snapshot(conn, store, spec, day - dt.timedelta(days=spec.label.delay_days), labelled=True)
        except SourceSchemaError as exc:  # retrying would not bring the column back
            raise AirflowFailException(str(exc)) from exc
        finally:
            conn.close()
        log.info("snapshot %s: %d rows, sha256 %s", day, current.rows, current.sha256)
        log.info("labelled snapshot %s: %d rows, sha256 %s", labelled.day, labelled.rows, labelled.sha256)
        return {"day": day.isoformat(), "current": current.to_dict(), "labelled": labelled.to_dict()}


class ValidateOperator(NightshiftOperator):
    """Run the spec's Great Expectations suite; a failure stops the run before anything is trained or published."""

    ui_color = "#fde68a"
    operator_extra_links = (ValidationReportLink(), LabelledValidationReportLink())

    def execute(self, context: Any) -> dict:
        from include.nightshift import warehouse
        from include.nightshift.snapshot import SnapshotRef, read_snapshot
        from include.nightshift.validation import validate_snapshot

        spec, store = self.spec, runtime.artifact_store()
        snap = self.pull(context, SNAPSHOT)
        day = dt.date.fromisoformat(snap["day"])
        conn = runtime.postgres_connection(spec.warehouse.connection_id)
        try:
            warehouse.ensure_warehouse(conn, spec)
            recent = warehouse.recent_row_counts(conn, spec, day, spec.validation.row_norm_days)
        finally:
            conn.close()

        results = {}
        for kind, labelled in (("current", False), ("labelled", True)):
            ref = SnapshotRef.from_dict(snap[kind])
            if labelled and ref.rows == 0:
                continue  # no labels yet (the first night): nothing to hold to account
            with store.staging_dir() as tmp:
                result = validate_snapshot(
                    read_snapshot(store, ref), spec, day=dt.date.fromisoformat(ref.day), labelled=labelled,
                    recent_row_counts=recent if not labelled else (), report_dir=tmp / kind)
                report_url = self._keep_report(store, tmp / kind, result.report_path, spec.name, snap["day"], kind)
            message = result.message().replace(str(result.report_path), str(report_url))
            results[kind] = {**result.to_dict(), "report_path": report_url}
            if report_url:
                context["ti"].xcom_push(key=REPORT_KEYS[kind], value=report_url)
            log.info("validation of %s snapshot %s: %s; report %s", kind, ref.day,
                     "passed" if result.success else "FAILED", report_url)
            if not result.success:
                context["ti"].xcom_push(key="failure", value={"snapshot": kind, "message": message})
                notify("validation_failed", f"{spec.name} {kind} snapshot of {ref.day} failed validation",
                       context, details={"failures": [f"{f.column}: {f.details}" for f in result.failures][:20],
                                        "report": report_url})
                raise AirflowFailException(f"validation failed for the {kind} snapshot of {ref.day}: {message}")
        return {"passed": True, "rows": snap["current"]["rows"], "results": results}

    @staticmethod
    def _keep_report(store, folder, report_path: str | None, dataset: str, day: str, kind: str) -> str | None:
        """Copy the report folder into the artifact store; return the address of its entry page."""
        if not folder.exists():
            return None
        base = ("reports", dataset, day, "validation", kind)
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            store.put_file(path, store.url(*base, str(path.relative_to(folder))))
        return store.url(*base, str(Path(report_path).relative_to(folder))) if report_path else None


class DriftOperator(NightshiftOperator):
    """Compare the night's features with the champion's reference sample (Evidently)."""

    ui_color = "#fbcfe8"
    operator_extra_links = (DriftReportLink(),)

    def execute(self, context: Any) -> dict:
        from include.nightshift.drift import measure_drift
        from include.nightshift.snapshot import read_snapshot

        spec, store, registry = self.spec, runtime.artifact_store(), runtime.registry()
        champion = registry.champion(spec.model_name)
        if champion is None:
            log.info("no champion yet: nothing to compare against")
            return {"share": None, "champion_version": None}
        snap = self.pull(context, SNAPSHOT)
        current = read_snapshot(store, snap["current"]["url"], columns=spec.feature_names)
        reference = registry.load_reference(champion.run_id)
        url = store.url("reports", spec.name, snap["day"], "drift.html")
        with store.staging_dir() as tmp:
            result = measure_drift(current, reference, spec, html_path=tmp / "drift.html")
            store.put_file(tmp / "drift.html", url)
        context["ti"].xcom_push(key=REPORT_URL, value=url)
        out = {**result.to_dict(), "report_path": url, "champion_version": champion.version}
        log.info("drift share %.3f (threshold %.3f); drifted: %s; report %s", result.share,
                 spec.drift.share_threshold, ", ".join(result.drifted) or "none", url)
        if result.share >= spec.drift.share_threshold:
            notify("drift", f"{spec.name} {snap['day']}: {result.share:.0%} of the features drifted "
                            f"(threshold {spec.drift.share_threshold:.0%})", context,
                   details={"share": result.share, "drifted": result.drifted, "report": url})
        return out


class MonitorOperator(NightshiftOperator):
    """The champion's realised quality on the rows whose labels arrived since the last run."""

    ui_color = "#fbcfe8"

    def execute(self, context: Any) -> dict:
        from include.nightshift.evaluation import metric_value
        from include.nightshift.snapshot import read_snapshot
        from include.nightshift.training import labels, predict_scores

        spec, store, registry = self.spec, runtime.artifact_store(), runtime.registry()
        champion = registry.champion(spec.model_name)
        labelled = self.pull(context, SNAPSHOT)["labelled"]
        if champion is None or labelled["rows"] == 0:
            return {"realised_metric": None, "rows": labelled["rows"], "champion_version": None}
        df = read_snapshot(store, labelled["url"])
        scores = predict_scores(registry.load_model(spec.model_name, champion.version), df, spec)
        value = metric_value(spec.promotion.metric, labels(df, spec), scores, spec.scoring.decision_threshold)
        holdout = champion.tags.get("verdict.challenger")  # its holdout metric when it was promoted
        log.info("champion v%s realised %s on %s (%d rows): %.4f (holdout %s)", champion.version,
                 spec.promotion.metric, labelled["day"], len(df), value, holdout)
        return {"realised_metric": None if value != value else float(value), "rows": len(df),
                "day": labelled["day"], "champion_version": champion.version,
                "champion_holdout_metric": float(holdout) if holdout else None}


class DecideOperator(NightshiftOperator, BaseBranchOperator):
    """Branch: train only when there is a reason; record the reason either way."""

    ui_color = "#ddd6fe"

    def choose_branch(self, context: Any) -> str:
        from include.nightshift.decide import decide

        spec, registry = self.spec, runtime.registry()
        champion = registry.champion(spec.model_name)
        drift, monitor = self.pull(context, DRIFT) or {}, self.pull(context, MONITOR) or {}
        age = None
        if champion is not None:
            promoted = registry.champion_promoted_at(spec.model_name) or champion.created_at
            age = (dt.datetime.now(dt.timezone.utc) - promoted).total_seconds() / 86400
        decision = decide(
            has_champion=champion is not None,
            drift_share=drift.get("share"),
            realised_metric=monitor.get("realised_metric"),
            champion_holdout_metric=monitor.get("champion_holdout_metric"),
            champion_age_days=age,
            force=bool(self.param(context, "force_retrain", False)),
            spec=spec,
        )
        context["ti"].xcom_push(key="decision", value=decision.to_dict())
        log.info("decision: %s", decision.details.get("summary", decision.reason))
        return TRAIN if decision.retrain else SKIP_TRAINING


class TrainOperator(NightshiftOperator):
    """Train a challenger (and the baseline) on the labelled window; log and register it in MLflow."""

    ui_color = "#bbf7d0"

    def execute(self, context: Any) -> dict:
        import numpy as np

        from include.nightshift import training
        from include.nightshift.drift import reference_sample
        from include.nightshift.snapshot import manifest, read_snapshots, take_snapshot

        spec, store, registry = self.spec, runtime.artifact_store(), runtime.registry()
        day = runtime.run_date(context)
        end = day - dt.timedelta(days=spec.label.delay_days)
        days = [end - dt.timedelta(days=i) for i in range(spec.training.window_days + spec.training.holdout_days)]
        conn = runtime.postgres_connection(spec.source.connection_id)
        try:
            refs = [take_snapshot(conn, store, spec, d, labelled=True) for d in days]
        finally:
            conn.close()
        train_df, holdout_df = training.split_train_holdout(read_snapshots(store, refs), spec, end)
        if len(train_df) < spec.training.min_rows or len(holdout_df) == 0:
            raise AirflowFailException(
                f"not enough labelled rows to train: {len(train_df)} training rows (training.min_rows "
                f"{spec.training.min_rows}) and {len(holdout_df)} holdout rows in the {len(days)} days up to {end}")

        seed = spec.training.seed
        model = training.fit(training.build_model(spec), train_df, spec)
        baseline = training.fit(training.build_baseline(spec), train_df, spec)
        holdout_scores = training.predict_scores(model, holdout_df, spec)
        decision = self.pull_decision(context)
        info = registry.log_challenger(
            model, baseline, spec=spec, train_df=train_df, reference=reference_sample(train_df, spec),
            params={"seed": seed, "window_days": spec.training.window_days,
                    "holdout_days": spec.training.holdout_days, **spec.training.params},
            metrics={"train_rows": len(train_df), "holdout_rows": len(holdout_df)},
            tags={"nightshift.dag_run_id": context["run_id"], "nightshift.run_date": day.isoformat(),
                  "nightshift.retrain_reason": str(decision.get("reason")),
                  "nightshift.snapshots": manifest(refs)[:5000]},
        )
        holdout_url = store.url("holdout", spec.name, day.isoformat(), f"v{info.version}.npz")
        with store.staging_dir() as tmp:
            np.savez(tmp / "holdout.npz", scores=holdout_scores)
            store.put_file(tmp / "holdout.npz", holdout_url)
            (tmp / "snapshots.json").write_text(manifest(refs))
            refs_url = store.put_file(tmp / "snapshots.json", store.url("holdout", spec.name, day.isoformat(),
                                                                         f"v{info.version}-snapshots.json"))
        log.info("trained challenger v%s on %d rows (%d held out, days %s..%s)", info.version, len(train_df),
                 len(holdout_df), days[-1], end)
        return {"version": info.version, "run_id": info.run_id, "train_rows": len(train_df),
                "holdout_rows": len(holdout_df), "holdout_end": end.isoformat(), "holdout_scores_url": holdout_url,
                "snapshots_url": refs_url}

    def pull_decision(self, context: Any) -> dict:
        return context["ti"].xcom_pull(task_ids=DECIDE, key="decision") or {}


class EvaluateOperator(NightshiftOperator):
    """Champion, challenger and baseline on the same out-of-time holdout; promote only through the gate."""

    ui_color = "#bbf7d0"
    operator_extra_links = (EvaluationReportLink(),)

    def execute(self, context: Any) -> dict:
        import numpy as np

        from include.nightshift import training
        from include.nightshift.evaluation import evaluate, gate
        from include.nightshift.snapshot import SnapshotRef, read_snapshots

        spec, store, registry = self.spec, runtime.artifact_store(), runtime.registry()
        configured_notifiers()  # a bad alert setting fails here, before the alias can move
        trained = self.pull(context, TRAIN)
        end = dt.date.fromisoformat(trained["holdout_end"])
        refs = [SnapshotRef.from_dict(r) for r in json.loads(store.read_text(trained["snapshots_url"]))]
        _, holdout = training.split_train_holdout(read_snapshots(store, refs), spec, end)
        y = training.labels(holdout, spec)

        challenger = registry.load_model(spec.model_name, trained["version"])  # loaded back from the registry
        scores = {"challenger": training.predict_scores(challenger, holdout, spec),
                  "baseline": training.predict_scores(registry.load_baseline(trained["run_id"]), holdout, spec)}
        with store.open(trained["holdout_scores_url"]) as handle:
            in_memory = np.load(handle)["scores"]
        champion = registry.champion(spec.model_name)
        if champion is not None and champion.version != trained["version"]:
            scores["champion"] = training.predict_scores(registry.load_model(spec.model_name, champion.version),
                                                         holdout, spec)
        evaluation = evaluate(holdout, y, scores, spec)
        verdict = gate(evaluation, spec.promotion, challenger_scores=scores["challenger"],
                       roundtrip_equal=bool(np.array_equal(in_memory, scores["challenger"])))
        promote, why = self._policy(context, verdict)
        record = {**verdict.to_dict(), "policy": self.param(context, "promotion_policy", "auto"),
                  "dag_run_id": context["run_id"], "champion_version": champion.version if champion else None,
                  "challenger_version": trained["version"], "promoted": promote, "policy_note": why}
        url = self._write_report(context, evaluation, record, trained)  # before anything moves
        if promote:
            self.record_champion_change()  # the warehouse must take the audit row before the alias moves
            replaced = registry.promote(spec.model_name, trained["version"], record)
            self._announce_promotion(context, record, replaced)
        else:
            registry.record_verdict(spec.model_name, trained["version"], record)
        log.info("verdict for v%s: %s (%s)\n%s", trained["version"], "PROMOTED" if promote else "not promoted",
                 why, verdict.message())
        log.info("report: %s", url)
        return {**record, "evaluation": evaluation, "report_path": url}

    def _write_report(self, context: Any, evaluation: dict, record: dict, trained: dict) -> str:
        """evaluation.html (+ .json) in the artifact store; it, the drift and the validation reports on the
        challenger's MLflow run, so the run in MLflow holds every page its promotion was decided on."""
        from include.nightshift.reports import evaluation_report_html

        spec, store, day = self.spec, runtime.artifact_store(), runtime.run_date(context).isoformat()
        title = f"{spec.name} {day}: challenger v{trained['version']}"
        url = store.url("reports", spec.name, day, "evaluation.html")
        store.put_text(json.dumps({"evaluation": evaluation, "verdict": record}, indent=2, default=str),
                       store.url("reports", spec.name, day, "evaluation.json"))
        with store.staging_dir() as tmp:
            (tmp / "evaluation.html").write_text(evaluation_report_html(evaluation, record, title, spec=spec))
            store.put_file(tmp / "evaluation.html", url)
            runtime.registry().log_artifact(trained["run_id"], tmp / "evaluation.html", "reports")
        for task, key, folder in ((DRIFT, REPORT_URL, "reports"), (VALIDATE, REPORT_KEYS["current"], "reports/validation"),
                                  (VALIDATE, REPORT_KEYS["labelled"], "reports/validation_labelled")):
            found = context["ti"].xcom_pull(task_ids=task, key=key)  # the night's other reports, beside it
            if found and store.exists(found):
                with store.local_copy(found) as local:
                    runtime.registry().log_artifact(trained["run_id"], local, folder)
        context["ti"].xcom_push(key=REPORT_URL, value=url)
        return url

    def _announce_promotion(self, context: Any, record: dict, replaced: int | None) -> None:
        """The champion changed: one row in the audit table (as rollbacks write) and an alert.

        The promotion has happened (its tags say who, why and when): failing the task now
        would record a run as failed whose champion did change, so a failure here is logged.
        """
        try:
            self._record_promotion(context, record, replaced)
        except Exception:
            log.exception("promotion of v%s is done but its audit row or alert failed", record["challenger_version"])

    def _record_promotion(self, context: Any, record: dict, replaced: int | None) -> None:
        spec = self.spec
        change = {"event": "promote", "model_name": spec.model_name, "from_version": replaced,
                  "to_version": record["challenger_version"], "actor": "nightshift",
                  "reason": record["policy_note"], "dag_run_id": context["run_id"],
                  "details": {"policy": record["policy"], "metric": spec.promotion.metric,
                              "champion": record.get("champion"), "challenger": record.get("challenger")}}
        self.record_champion_change(change)
        notify("promotion", f"{spec.model_name}: v{record['challenger_version']} promoted to champion "
                            f"(was v{replaced}; {record['policy_note']})", context, details=change)

    def _policy(self, context: Any, verdict) -> tuple[bool, str]:
        """The run's promotion policy on top of the gate: `never` and dry runs never promote;
        `force` overrides the relative checks but never the absolute floor or the sanity checks."""
        policy = self.param(context, "promotion_policy", "auto")
        if self.param(context, "dry_run", False):
            return False, "dry run: nothing is promoted"
        if policy == "never":
            return False, "promotion_policy=never"
        if policy == "force":
            hard = [c for c in verdict.checks if c.name in ("thresholds", "finite", "floor", "roundtrip") and not c.passed]
            return (not hard, "promotion_policy=force" if not hard else "force refused: " + hard[0].detail)
        return verdict.promote, "gate passed" if verdict.promote else "gate failed"


class ScoreOperator(NightshiftOperator):
    """Score the night's population with the champion, chunk by chunk (bounded memory)."""

    ui_color = "#fed7aa"

    def execute(self, context: Any) -> dict:
        from include.nightshift.scoring import score_snapshot

        spec, store, registry = self.spec, runtime.artifact_store(), runtime.registry()
        champion = registry.champion(spec.model_name)
        if champion is None:
            raise AirflowSkipException("no champion model: nothing to score tonight")
        snap = self.pull(context, SNAPSHOT)
        day = snap["day"]
        url = store.url("predictions", spec.name, day, f"{_safe(context['run_id'])}.parquet")
        rows = score_snapshot(
            store, snap["current"]["url"], url, spec,
            model=registry.load_model(spec.model_name, champion.version), model_version=champion.version,
            snapshot_sha256=snap["current"]["sha256"], dag_run_id=context["run_id"])
        log.info("scored %d rows with %s v%s -> %s", rows, spec.model_name, champion.version, url)
        return {"url": url, "rows": rows, "model_version": champion.version, "day": day}


class PublishOperator(NightshiftOperator):
    """Replace the night's partition of the predictions table in one transaction (COPY)."""

    ui_color = "#fecaca"

    def execute(self, context: Any) -> dict:
        from include.nightshift import warehouse

        if self.param(context, "dry_run", False):
            raise AirflowSkipException("dry run: nothing is published")
        spec, store = self.spec, runtime.artifact_store()
        scored = self.pull(context, SCORE)
        conn = runtime.postgres_connection(spec.warehouse.connection_id)
        try:
            warehouse.ensure_warehouse(conn, spec)
            with store.local_copy(scored["url"]) as path:
                rows = warehouse.replace_partition(conn, spec, dt.date.fromisoformat(scored["day"]), path)
        finally:
            conn.close()
        log.info("published %d rows to %s.predictions for %s", rows, spec.warehouse.schema, scored["day"])
        return {"rows": rows, "day": scored["day"], "model_version": scored["model_version"]}


class RecordRunOperator(NightshiftOperator):
    """Write the run's one row of history (whatever happened; a dry run writes none), then fail the run if a step failed."""

    ui_color = "#e5e7eb"
    operator_extra_links = (HealthPageLink(),)

    def execute(self, context: Any) -> dict:
        from include.nightshift import warehouse

        spec, ti = self.spec, context["ti"]
        states = self._states(context)
        failed = sorted(t for t, s in states.items() if s in ("failed", "upstream_failed") and t != self.task_id)
        snap = self.pull(context, SNAPSHOT) or {}
        validation = self.pull(context, VALIDATE)
        drift = self.pull(context, DRIFT) or {}
        decision = ti.xcom_pull(task_ids=DECIDE, key="decision") or {}
        trained = self.pull(context, TRAIN) or {}
        verdict = self.pull(context, EVALUATE) or {}
        published = self.pull(context, PUBLISH) or {}
        failure = ti.xcom_pull(task_ids=VALIDATE, key="failure")

        if failed:
            outcome = "failed"
        elif verdict:
            outcome = "promoted" if verdict.get("promoted") else "rejected"
        else:
            outcome = "skipped"
        day = runtime.run_date(context)
        dag_run = context.get("dag_run")
        dry_run = bool(self.param(context, "dry_run", False))
        run = {
            "logical_date": day,
            "dag_run_id": context["run_id"],
            "rows_in": (snap.get("current") or {}).get("rows"),
            "validation_passed": True if validation else (False if failure else None),
            "drift_share": drift.get("share"),
            "retrain_reason": decision.get("reason"),
            "decision": outcome,
            "champion_version": verdict.get("champion_version", drift.get("champion_version")),
            "challenger_version": trained.get("version"),
            "champion_metric": verdict.get("champion"),
            "challenger_metric": verdict.get("challenger"),
            "metric_name": spec.promotion.metric,
            "rows_published": published.get("rows", 0),
            "started_at": getattr(dag_run, "start_date", None),
            "finished_at": dt.datetime.now(dt.timezone.utc),
            "note": self.param(context, "note") or None,
            "details": {"failed_tasks": failed, "task_states": states, "validation_failure": failure,
                        "drifted": drift.get("drifted"), "decision": decision, "verdict": verdict.get("checks"),
                        "policy": verdict.get("policy_note")},
        }
        conn = runtime.postgres_connection(spec.warehouse.connection_id)
        try:
            warehouse.ensure_warehouse(conn, spec)
            if dry_run:  # the history is of what was published: a rehearsal must not overwrite the night's row
                log.info("dry run: %s.pipeline_runs left as it was", spec.warehouse.schema)
            else:
                warehouse.upsert_run(conn, spec, run)
            health_url = self._write_health_page(context, conn, day)
        finally:
            conn.close()
        summary = (f"{day}: rows {run['rows_in']}, drift share {run['drift_share']}, reason {run['retrain_reason']}, "
                   f"decision {outcome}, champion v{run['champion_version']}, published {run['rows_published']}")
        log.info("run summary: %s", summary)
        for name, url in self._reports(context).items():  # the reports, last in the log, for a reader of the UI
            log.info("report %s: %s", name, url)
        if health_url:
            log.info("model health page: %s", health_url)
        if failed:
            raise AirflowFailException(f"run failed at {', '.join(failed)}; recorded in "
                                       f"{spec.warehouse.schema}.pipeline_runs")
        return {"decision": outcome, "summary": summary}

    def _write_health_page(self, context: Any, conn: Any, day: dt.date) -> str | None:
        """Regenerate reports/<dataset>/health.html from the warehouse's history, newest night included.

        The run's row is already written; a page that cannot be drawn is logged, not raised,
        so a plotting problem never turns a good night into a failed one.
        """
        from include.nightshift.health import read_events, read_history, write_health_page

        spec, store = self.spec, runtime.artifact_store()
        url = store.url("reports", spec.name, "health.html")
        try:
            runs = read_history(conn, spec, HEALTH_DAYS)
            events = read_events(conn, spec)
            with store.staging_dir() as tmp:
                write_health_page(tmp / "health.html", spec, runs, events)
                store.put_file(tmp / "health.html", url)
        except Exception:
            log.exception("the model-health page for %s could not be written", day)
            return None
        context["ti"].xcom_push(key=HEALTH_URL, value=url)
        return url

    @staticmethod
    def _reports(context: Any) -> dict[str, str]:
        ti, found = context["ti"], {}
        for name, task, key in (("validation", VALIDATE, REPORT_URL), ("validation of labels", VALIDATE, REPORT_KEYS["labelled"]),
                                ("drift", DRIFT, REPORT_URL), ("evaluation", EVALUATE, REPORT_URL)):
            url = ti.xcom_pull(task_ids=task, key=key)
            if url:
                found[name] = url
        return found

    def _states(self, context: Any) -> dict[str, str]:
        ti = context["ti"]
        try:
            found = ti.get_task_states(dag_id=ti.dag_id, run_ids=[context["run_id"]])
            return {k: str(v) for k, v in (found.get(context["run_id"]) or {}).items()}
        except Exception as exc:  # the state API is an Airflow-3 feature; say so rather than guess silently
            log.warning("could not read task states (%s); judging from XComs", exc)
            return {}


def _safe(run_id: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in run_id)
