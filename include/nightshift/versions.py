"""The warehouse's model_versions table kept in step with the registry and the audit table.

A prediction row names its model version; this table says what that version is: the MLflow run
that trained it, its training window and the snapshots (by hash) it learnt from, its holdout
metrics against the champion and the baseline, whether the gate blessed it, and when it served.

- The nightly evaluate step writes the version it judged (record_judged), after the gate and any
  promotion, from the step outputs it already holds (no registry tag is parsed: tags are for
  people in the MLflow UI, and may change shape).
- The serving period (champion_from/to) is derived from champion_changes whenever the alias moved
  (sync_serving: after a promotion, a rollback, an outside move); a version that served but was
  never judged by Nightshift (made champion in MLflow by hand, or before this table existed) gets
  a row with what the registry knows of it (run, night, family), blessed left NULL.
- Every write is an upsert on (model_name, version): a rerun or a retry writes the same row.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import TYPE_CHECKING, Any

from psycopg import Connection

from include.nightshift import warehouse

if TYPE_CHECKING:
    from include.nightshift.artifacts import ArtifactStore
    from include.nightshift.registry import Registry
    from include.nightshift.spec import DatasetSpec
    from include.nightshift.steps import TrainingStep, VerdictStep

log = logging.getLogger(__name__)


def windows(spec: DatasetSpec, holdout_end: dt.date) -> dict[str, dt.date]:
    """The training window and holdout of a version whose holdout ends on `holdout_end` (the days
    training.split_train_holdout cuts: holdout_days ending there, window_days just before)."""
    t = spec.training
    holdout_from = holdout_end - dt.timedelta(days=t.holdout_days - 1)
    return {"train_from": holdout_from - dt.timedelta(days=t.window_days), "train_to": holdout_from - dt.timedelta(days=1),
            "holdout_from": holdout_from, "holdout_to": holdout_end}


def judged_row(spec: DatasetSpec, trained: TrainingStep, verdict: VerdictStep, *, night: dt.date,
               snapshot_hashes: list[str]) -> dict[str, Any]:
    """The model_versions row of a version the nightly gate judged."""
    overall = (verdict.evaluation or {}).get("overall")
    return {"model_name": spec.model_name, "version": trained.version, "run_id": trained.run_id,
            "family": trained.family, "trained_for": night, "dag_run_id": verdict.dag_run_id,
            **windows(spec, trained.holdout_end), "snapshot_sha256": snapshot_hashes,
            "metric_name": verdict.metric, "holdout_metric": verdict.challenger,
            "champion_metric": verdict.champion, "baseline_metric": verdict.baseline,
            "holdout_metrics": overall if isinstance(overall, dict) else None,
            "blessed": bool(verdict.promote), "verdict": verdict.policy_note}


def snapshot_hashes(store: ArtifactStore, trained: TrainingStep) -> list[str]:
    """The sha256 of every labelled snapshot of the version's window and holdout (its manifest), by day."""
    refs = json.loads(store.read_text(trained.snapshots_url))
    return [r["sha256"] for r in sorted(refs, key=lambda r: r["day"])]


def record_judged(conn: Connection, store: ArtifactStore, registry: Registry, spec: DatasetSpec,
                  trained: TrainingStep, verdict: VerdictStep, *, night: dt.date) -> None:
    """Write the judged version's row, then the serving periods (the gate may just have promoted it).

    A shadow judged on realised labels (shadow.py) keeps the row of the night that trained it: only its
    blessing and tonight's verdict are written."""
    warehouse.ensure_warehouse(conn, spec)
    if trained.shadow:
        row = {"model_name": spec.model_name, "version": trained.version, "blessed": bool(verdict.promote),
               "verdict": verdict.policy_note}
    else:
        row = judged_row(spec, trained, verdict, night=night, snapshot_hashes=snapshot_hashes(store, trained))
    warehouse.upsert_model_version(conn, spec, row)
    sync_serving(conn, registry, spec)


def sync_serving(conn: Connection, registry: Registry, spec: DatasetSpec) -> list[int]:
    """champion_from/to from champion_changes; a served version without a row gets one from the registry.
    Returns the versions added."""
    warehouse.ensure_warehouse(conn, spec)
    added = warehouse.refresh_champion_periods(conn, spec, spec.model_name)
    for version in added:
        warehouse.upsert_model_version(conn, spec, registry_row(registry, spec, version))
    if added:
        log.info("%s.%s: added v%s, which served but were never judged here", spec.warehouse.schema,
                 warehouse.MODEL_VERSIONS, ", v".join(map(str, added)))
    return added


def registry_row(registry: Registry, spec: DatasetSpec, version: int) -> dict[str, Any]:
    """What the registry says of a version Nightshift did not judge (None-safe: it may have been deleted)."""
    from include.nightshift.registry import BLESSED_TAG, DAG_RUN_TAG, FAMILY_TAG, GATE_TAG, RUN_DATE_TAG

    try:
        info = registry.version(spec.model_name, version)
    except Exception as exc:  # noqa: BLE001 - a deleted version keeps its row, without a run
        log.warning("%s v%s: not in the registry (%s): its model_versions row has no run", spec.model_name,
                    version, type(exc).__name__)
        return {"model_name": spec.model_name, "version": version}
    night = info.tags.get(RUN_DATE_TAG)
    return {"model_name": spec.model_name, "version": version, "run_id": info.run_id,
            "family": info.tags.get(FAMILY_TAG), "trained_for": dt.date.fromisoformat(night) if night else None,
            "dag_run_id": info.tags.get(DAG_RUN_TAG),
            # passed_gate: blessed, once champion through Nightshift, or a verdict that passed; False only
            # when a verdict refused it; never judged (made champion by hand): unknown
            "blessed": True if info.passed_gate else (
                False if info.tags.get(BLESSED_TAG) == "false" or info.tags.get(GATE_TAG) == "failed" else None)}


def version_choices(registry: Registry, model_name: str) -> dict[str, Any]:
    """What the rollback form's "Version to restore" may name: the version serving, and every other version
    with whether a rollback may restore it (the rule Registry.rollback applies: ModelVersionInfo.passed_gate),
    newest first. From the registry alone, at the moment it is asked (the rollback DAG's form is built when
    the DAG file is parsed, which must not call MLflow: the form links here instead)."""
    from include.nightshift.registry import FAMILY_TAG, RUN_DATE_TAG

    champion = registry.champion(model_name)
    serving = None if champion is None else champion.version
    rows = []
    for info in reversed(registry.versions(model_name)):
        restorable = info.passed_gate and info.version != serving
        why = ("serving now" if info.version == serving else
               "passed the promotion gate once" if restorable else "never passed the promotion gate")
        rows.append({"version": info.version, "serving": info.version == serving, "restorable": restorable,
                     "why": why, "trained_for": info.tags.get(RUN_DATE_TAG) or "–",  # – : not trained by a night
                     "family": info.tags.get(FAMILY_TAG) or "",
                     "registered": info.created_at, "champion_since": info.champion_since,
                     "rolled_back_from": info.rolled_back_from, "run_id": info.run_id})
    return {"model_name": model_name, "serving": serving, "champion": champion, "versions": rows,
            "restorable": [r["version"] for r in rows if r["restorable"]]}
