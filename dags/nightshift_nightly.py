"""The nightly retraining DAG, one per dataset spec in include/specs/.

    snapshot -> validate -> [drift, monitor] -> decide --(no reason)--> no_retrain_needed --\
                                                     \--(reason)--> train -> evaluate ---> score -> plan_shards -> [score_shard] -> publish -> record_run

score_shard is mapped over the night's shards when it has more rows than scoring.shard_rows (else skipped).

The champion serves whatever happens on the way: once validate has passed, score runs when the
retrain branch is done, in any state (a failed drift, monitor, decide, train or evaluate is
recorded and alerted, and fails the run, but tonight's predictions are still published), and
decide still runs when one of drift and monitor failed (so force_retrain is not blocked).

Wiring only: the steps are operators in plugins/nightshift_airflow, the logic is in
include/nightshift. Adding a data set means adding a spec file; nothing here changes.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, Asset, Param, TaskGroup, chain
from airflow.timetables.interval import CronDataIntervalTimetable

from include.nightshift.spec import DatasetSpec, SpecError, load_specs, specs_dir
from nightshift_airflow import operators as ops
from nightshift_airflow import runtime
from nightshift_airflow.notifiers import TaskFailureNotifier
from nightshift_airflow.shard_operator import SCORE_SHARD, ScoreShardOperator, plan_shards

log = logging.getLogger(__name__)

DEFAULT_ARGS = {
    "owner": "nightshift",
    "retries": 2,
    # Seconds before the first retry (doubling after): env NIGHTSHIFT_RETRY_DELAY_SECONDS, default 60.
    "retry_delay": runtime.retry_delay(),
    "retry_exponential_backoff": True,
    "max_retry_delay": dt.timedelta(minutes=10),
    "on_failure_callback": TaskFailureNotifier(),
}

def switch(default: bool, **kwargs: object) -> Param:
    """A yes/no param. Typed boolean-or-null because Airflow's trigger form marks every param whose type
    does not allow null as required (an on/off switch cannot be "missing"); the steps read null as off."""
    return Param(default, type=["boolean", "null"], **kwargs)


PARAMS = {
    "force_retrain": switch(False, title="Force retrain",
                           description="Train a challenger tonight even if nothing calls for it."),
    "promotion_policy": Param("auto", type="string", enum=["auto", "never", "force"], title="Promotion policy",
                              description="auto: promote only through the gate. never: evaluate but keep the champion. "
                                          "force: promote even if it does not beat the champion (the absolute floor and "
                                          "sanity checks still apply)."),
    "dry_run": switch(False, title="Dry run",
                     description="Run every step but publish, promote and register nothing (the challenger is judged "
                                 "from the artifact store; MLflow is left as it was)."),
    "note": Param(None, type=["null", "string"], maxLength=500, title="Note",
                  description="Why this run was triggered; kept in the run history (pipeline_runs.note)."),
    # A text field, not format="date": the form would render a date picker in the browser's locale
    # (mm/dd/yyyy in en-US) while the REST API, the CLI and this description speak YYYY-MM-DD.
    "run_date": Param(None, type=["null", "string"], pattern=r"^\d{4}-\d{2}-\d{2}$", title="Run date",
                      description="The day to process, typed as YYYY-MM-DD (e.g. 2026-02-12), not in the future. "
                                  "Empty: the run's data interval."),
    "rerun_published": switch(False, title="Re-run a published night",
                             description="Process a night that already has published predictions again. Its "
                                         "predictions and pipeline_runs row are replaced only if this run publishes; "
                                         "both runs stay in run_attempts. Off: such a run is refused before "
                                         "anything is read."),
    "shadow_version": Param(None, type=["null", "integer"], minimum=1, title="Shadow version",
                            description="A registered version of the model to score every night beside the champion, "
                                        "unserved (predictions_shadow), until realised labels promote it "
                                        "(shadow_wins) or another promotion retires it. Empty: keep the current "
                                        "shadow, if any."),
    "allow_later_model": switch(False, title="Score with a later model",
                               description="Allow scoring a past night with a champion trained on a later night "
                                           "(it has seen data the night could not know). Off: refused."),
}


def predictions_asset(spec: DatasetSpec) -> Asset:
    return Asset(name=f"{spec.warehouse.schema}.predictions", uri=f"warehouse://{spec.warehouse.schema}/predictions",
                 group="nightshift")


def nightly_dag(spec: DatasetSpec) -> DAG:
    common = {"spec_path": spec.path}
    with DAG(
        dag_id=spec.dag_id,
        description=spec.description,
        schedule=CronDataIntervalTimetable(spec.schedule, timezone="UTC"),
        start_date=dt.datetime.combine(spec.start_date, dt.time(), tzinfo=dt.timezone.utc),
        catchup=False,
        max_active_runs=1,
        default_args=DEFAULT_ARGS,
        params=PARAMS,
        tags=["nightshift", "retraining", spec.name],
        doc_md=_doc(spec),
    ) as dag:
        with TaskGroup("ingest", prefix_group_id=False, tooltip="Freeze the night's rows and check them") as ingest:
            snapshot = ops.SnapshotOperator(task_id=ops.SNAPSHOT, **common)
            validate = ops.ValidateOperator(task_id=ops.VALIDATE, snapshot=snapshot.output, **common)
        with TaskGroup("watch", prefix_group_id=False, tooltip="Drift of the inputs, realised quality of the champion") as watch:
            drift = ops.DriftOperator(task_id=ops.DRIFT, snapshot=snapshot.output, **common)
            monitor = ops.MonitorOperator(task_id=ops.MONITOR, snapshot=snapshot.output, **common)
        decide = ops.DecideOperator(task_id=ops.DECIDE, drift=drift.output, monitor=monitor.output,
                                    trigger_rule="all_done_min_one_success", **common)  # needs validate, not both watchers
        with TaskGroup("retrain", prefix_group_id=False, tooltip="Only when there is a reason") as retrain:
            train = ops.TrainOperator(task_id=ops.TRAIN, decision=decide.output, **common)
            evaluate = ops.EvaluateOperator(task_id=ops.EVALUATE, trained=train.output, validation=validate.output,
                                            drift=drift.output, retries=0,  # a failed drift only loses its report
                                            trigger_rule="all_done_min_one_success", **common)
        skip = EmptyOperator(task_id=ops.SKIP_TRAINING,
                             doc_md="The branch taken when nothing calls for a new model: the champion scores tonight.")
        with TaskGroup("serve", prefix_group_id=False, tooltip="Score with the champion and publish") as serve:
            score = ops.ScoreOperator(task_id=ops.SCORE, snapshot=snapshot.output, validation=validate.output,
                                      trigger_rule="all_done", **common)  # runs unless validation did not pass
            shards = ScoreShardOperator.partial(  # one task per shard of a large night; skipped when none
                task_id=SCORE_SHARD, scored=score.output, snapshot=snapshot.output, **common,
            ).expand(shard=plan_shards(score.output))
            publish = ops.PublishOperator(task_id=ops.PUBLISH, scored=score.output, snapshot=snapshot.output,
                                          outlets=[predictions_asset(spec)], trigger_rule="none_failed_min_one_success",
                                          **common)  # after the shards, if any
            shards >> publish
        record = ops.RecordRunOperator(
            task_id=ops.RECORD, trigger_rule="all_done", retries=0, **common,
            snapshot=snapshot.output, validation=validate.output, drift=drift.output, decision=decide.output,
            trained=train.output, verdict=evaluate.output, scored=score.output, shards=shards.output,
            published=publish.output)

        chain(ingest, watch, decide, [retrain, skip], serve, record)
        validate >> decide
    return dag


def invalid_spec_dag(path: Path, error: SpecError) -> DAG:
    """A broken spec (or one clashing with another file) shows up in the UI as a DAG that explains
    itself, without hiding the good ones. Every line of the error already names the file."""
    from airflow.providers.standard.operators.python import PythonOperator

    with DAG(dag_id=f"nightshift_invalid_{path.stem}", schedule=None, tags=["nightshift", "invalid-spec"],
             doc_md=f"### Invalid dataset spec `{path.name}`\n\n```\n{error}\n```", default_args={"retries": 0}) as dag:
        PythonOperator(task_id="explain", python_callable=_refuse, op_args=[str(error)])
    return dag


def _refuse(message: str) -> None:
    raise SpecError(message)


def _connection(spec: DatasetSpec) -> str:
    return "" if spec.source.kind == "files" else f" (connection `{spec.source.connection_id}`)"


def _doc(spec: DatasetSpec) -> str:
    p = spec.promotion
    return f"""\
### Nightly retraining: `{spec.name}`

{spec.description}

- **Source**: {spec.source.described}{_connection(spec)}, one day of `{spec.timestamp}` ({spec.source.timezone}) per run.
- **Model**: MLflow `{spec.model_name}`, alias `champion`.
- **Retrain when**: no champion, drift share >= {spec.drift.share_threshold}, realised {p.metric} decays,
  champion older than {p.max_model_age_days} days, or the run asks (`force_retrain`).
- **Promote when**: {p.metric} >= {p.floor}, beats the champion by {p.min_improvement}, no slice of
  {', '.join(p.slice_columns) or '(none)'} worse by more than {p.slice_tolerance}, beats the baseline, same
  predictions after a registry round trip.
- **Publishes**: `{spec.warehouse.schema}.predictions` (one row per `{spec.entity_key.name}` per day),
  `{spec.warehouse.schema}.predictions_latest`, `{spec.warehouse.schema}.pipeline_runs` (one row per night),
  `{spec.warehouse.schema}.run_attempts` (every run).
- **No model after the gate**: recorded `no_model` and alerted; the run
  {'stays green' if spec.scoring.allow_no_predictions else 'fails'} (`scoring.allow_no_predictions`).

Spec: `{Path(spec.path).name}`.
"""


# load_specs also refuses specs that share a name or a warehouse schema: each of them becomes an
# invalid-spec DAG naming the others, rather than one DAG silently replacing another.
for _path, _loaded in load_specs(specs_dir()):
    if isinstance(_loaded, SpecError):
        log.error("invalid dataset spec %s: %s", _path, _loaded)
        _dag = invalid_spec_dag(_path, _loaded)
    else:
        _dag = nightly_dag(_loaded)
    globals()[_dag.dag_id] = _dag
