"""Rolling the champion back, and re-publishing the latest night with the restored model.

What the rollback DAG's steps call. The registry side (which versions may be restored, the
tags, idempotency per rollback id) lives in Registry.rollback, next to promote(), so that every
move of the alias follows the same rule: tags first, alias last. This module adds the warehouse
side (run_rollback):

- "previous champion" is what actually served, read from the audit table
  (audit.previous_champion), never from tags;
- the target is loaded and scores the rows of the reference sample stored with it before
  anything is written (check_serves): a version whose artifacts are gone is refused, naming the
  model, the version and the artifact URI;
- intent -> move -> done in champion_changes, as a promotion does (promotion.promote), with the
  intents other runs left behind settled first.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from psycopg import Connection, sql

from include.nightshift import warehouse
from include.nightshift.artifacts import ArtifactStore, safe_name
from include.nightshift.registry import Registry, RollbackRefused, RollbackResult
from include.nightshift.spec import DatasetSpec

__all__ = ["ModelUnavailable", "RollbackRefused", "RollbackResult", "check_serves", "latest_night", "latest_published",
           "refresh_health_page", "republish_latest", "rollback", "rollback_change", "run_rollback"]

log = logging.getLogger(__name__)

SAMPLE_ROWS = 50  # rows of the reference sample a target scores before the alias moves


class ModelUnavailable(RollbackRefused):
    """A version that cannot load or score: refused before the alias moves, naming where its model should be."""


def check_serves(registry: Registry, spec: DatasetSpec, version: int) -> int:
    """Load `version` and score the first SAMPLE_ROWS rows of the reference sample stored with it; the rows scored.

    Any failure (MLflow's "No such artifact", a missing file, an unpicklable model, NaN scores) is
    ModelUnavailable naming the model, the version, its run and the model's artifact URI.
    """
    import numpy as np

    from include.nightshift.training import predict_scores

    found = registry.client.get_model_version(spec.model_name, str(int(version)))
    uri = registry.client.get_model_version_download_uri(spec.model_name, str(int(version)))
    where = f"{spec.model_name} v{version} (run {found.run_id}, model artifacts at {uri or found.source})"
    try:
        model = registry.load_model(spec.model_name, version)
        sample = registry.load_reference(found.run_id).head(SAMPLE_ROWS)
        scores = predict_scores(model, sample, spec)
    except Exception as exc:  # every cause means the same: this version cannot serve
        raise ModelUnavailable(f"{where} cannot serve: it does not load or score its reference sample "
                               f"({type(exc).__name__}: {exc})") from exc
    if len(scores) == 0 or not np.all(np.isfinite(scores)):
        raise ModelUnavailable(f"{where} cannot serve: {len(scores)} reference rows scored, not all finite")
    _reproduces(registry, spec, model, found.run_id, int(version), where)
    return len(scores)


def _reproduces(registry: Registry, spec: DatasetSpec, model: Any, run_id: str, version: int, where: str) -> None:
    """The version gives its logged training scores back on this environment (skew.verify_round_trip, the check
    every nightly score step runs on the champion); ModelUnavailable when it does not. A version registered
    before it logged them has nothing to compare: it is restored on the reference sample's check alone."""
    from include.nightshift.skew import load_serving_check, verify_round_trip

    trip = verify_round_trip(model, load_serving_check(registry, run_id), spec, version)
    if trip["passed"] is False:
        raise ModelUnavailable(f"{where} cannot serve: {trip['summary']}")
    log.info("rollback target: %s", trip["summary"])


def run_rollback(conn: Connection, registry: Registry, spec: DatasetSpec, *, to_version: int | None, actor: str,
                 reason: str, rollback_id: str) -> tuple[RollbackResult, dict[str, Any]]:
    """The rollback DAG's step: settle old intents, resolve the target from what served, check that it serves,
    record the intent, move the alias, mark it done; (result, its audit row).

    A retry (same rollback_id) adopts its own intent: after the move it finds the id on the target
    (Registry.rollback resumes) and marks the row done; before the move it checks and moves again.
    A no-op (the target already serves) writes no row. Nothing on this path is caught.
    """
    from include.nightshift import audit
    from include.nightshift.promotion import repair_pending

    audit.ensure_audit(conn, spec)
    repair_pending(registry, conn, spec, this_run=rollback_id)

    def before_move(from_version: int, target: Any, at: dt.datetime) -> None:
        check_serves(registry, spec, target.version)
        planned = RollbackResult(spec.model_name, from_version, target.version, True, rollback_id, at)
        change = rollback_change(conn, spec, planned, actor=actor, reason=reason, requested=to_version,
                                 dag_run_id=rollback_id)
        if audit.record_intent(conn, spec, change) == "abandoned":
            raise RollbackRefused(f"rollback {rollback_id!r} of {spec.model_name} to v{target.version} was marked "
                                  "abandoned by a later change: start a new rollback")

    with warehouse.serving_lock(conn, spec):  # waits for a nightly publish that checked the champion to write
        result = registry.rollback(
            spec.model_name, to_version=to_version, actor=actor, reason=reason, rollback_id=rollback_id,
            previous=lambda current: audit.previous_champion(conn, spec, spec.model_name, current),
            before_move=before_move)
    change = rollback_change(conn, spec, result, actor=actor, reason=reason, requested=to_version,
                             dag_run_id=rollback_id)
    if result.changed:
        audit.record_intent(conn, spec, change)  # a rollback begun before intents existed: its row now
        if audit.finish(conn, spec, change, "done") != "done":
            raise RuntimeError(f"{spec.warehouse.schema}.{audit.CHANGES}: the rollback {rollback_id!r} of "
                               f"{spec.model_name} to v{result.to_version} moved the alias but its row was abandoned")
    from include.nightshift.versions import sync_serving

    sync_serving(conn, registry, spec)  # model_versions.champion_from/to follow the audit table
    return result, change


def refresh_health_page(conn: Connection, store: ArtifactStore, spec: DatasetSpec) -> str | None:
    """Regenerate the model-health page after a rollback (its header names the serving version, and a
    re-published night its output); the page's address, None if it failed: a page problem is logged, it
    never fails a rollback that moved the alias."""
    from include.nightshift.health import NIGHTS
    from include.nightshift.nightly import write_health_page

    try:
        return write_health_page(conn, store, spec, NIGHTS)
    except Exception:
        log.exception("the model-health page of %s could not be written after the rollback", spec.name)
        return None


def rollback(registry: Registry, model_name: str, *, to_version: int | None, actor: str, reason: str,
             rollback_id: str) -> RollbackResult:
    """Point `champion` at to_version (None: the previous champion); see Registry.rollback."""
    return registry.rollback(model_name, to_version=to_version, actor=actor, reason=reason, rollback_id=rollback_id)


def latest_night(conn: Connection, spec: DatasetSpec) -> dt.date | None:
    """The newest score_date of <schema>.predictions (None: nothing published yet)."""
    if not warehouse.table_exists(conn, spec, warehouse.PREDICTIONS):
        return None
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT max(score_date) FROM {}").format(warehouse.table(spec, warehouse.PREDICTIONS)))
        return cur.fetchone()[0]


def rollback_change(conn: Connection, spec: DatasetSpec, result: RollbackResult, *, actor: str, reason: str,
                    requested: Any, dag_run_id: str) -> dict[str, Any]:
    """The audit row of a rollback (the shape a promotion writes).

    Its night is the latest published night when the rollback ran: the night the republish step
    re-scores with the restored version, so the change belongs to the predictions it first shows
    up in (with republish off, that night keeps the old scores and the next nightly run is the
    first with the restored version). Not the rollback run's own date: a manual run has no night
    of its own, and changed_at already says when it happened. None when nothing was published.
    """
    return {"event": "rollback", "model_name": spec.model_name, "from_version": result.from_version,
            "to_version": result.to_version, "actor": actor, "reason": reason, "dag_run_id": dag_run_id,
            "changed_at": result.at, "night": latest_night(conn, spec),
            "details": {"requested_version": requested, "rollback_id": result.rollback_id, "resumed": result.resumed}}


def latest_published(conn: Connection, spec: DatasetSpec) -> tuple[dt.date, str] | None:
    """The newest score_date of <schema>.predictions and the snapshot (sha256) it was scored from.

    None when nothing was ever published (no table, or no rows). A night is published from
    one snapshot; anything else is refused rather than guessed.
    """
    if not warehouse.table_exists(conn, spec, warehouse.PREDICTIONS):
        return None
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(sql.SQL(
            "SELECT score_date, array_agg(DISTINCT snapshot_sha256) FROM {t} "
            "WHERE score_date = (SELECT max(score_date) FROM {t}) GROUP BY score_date"
        ).format(t=warehouse.table(spec, warehouse.PREDICTIONS)))
        row = cur.fetchone()
    if row is None:
        return None
    day, hashes = row
    if len(hashes) != 1 or hashes[0] is None:
        raise ValueError(f"{spec.warehouse.schema}.{warehouse.PREDICTIONS} for {day} was scored from "
                         f"snapshot_sha256 {hashes}, not from one snapshot: cannot re-score it")
    return day, hashes[0]


def republish_latest(conn: Connection, store: ArtifactStore, registry: Registry, spec: DatasetSpec, version: int,
                     dag_run_id: str) -> dict[str, Any] | None:
    """Re-score the latest published night with `version` and replace that partition.

    The night is scored again from the very snapshot it was published from (found by the
    rows' snapshot_sha256 under snapshots/<dataset>/<date>/), chunk by chunk as the nightly
    score step does, and the partition is replaced in one transaction (replace_partition):
    readers see the old night or the new one. Same rows, same entities: only the scores, the
    model version, the run id and scored_at change.

    `version` must be the champion: predictions only ever come from the champion, and a
    promotion that happened since the rollback must not be overwritten with an older model.
    Returns {score_date (a date), rows, model_version, snapshot_sha256}, or None when nothing
    was ever published.
    """
    with warehouse.serving_lock(conn, spec):  # the champion checked below is the one that writes
        return _republish(conn, store, registry, spec, int(version), dag_run_id)


def _serving_checks(store: ArtifactStore, registry: Registry, spec: DatasetSpec, champion: Any, model: Any,
                    snapshot_url: str, sha: str, day: dt.date) -> Any:
    """The nightly score step's checks before the restored version re-scores the night (skew.before_scoring): the
    round trip of its logged training scores on this environment, then the feature paths while it scores;
    ServingSkew leaves the published night as it was."""
    import pyarrow.parquet as pq

    from include.nightshift.skew import before_scoring
    from include.nightshift.snapshot import SnapshotRef

    with store.open(snapshot_url) as handle:
        rows = pq.ParquetFile(handle).metadata.num_rows
    ref = SnapshotRef(url=snapshot_url, sha256=sha, rows=rows, day=day.isoformat(), labelled=False)
    return before_scoring(store, registry, spec, ref, champion, model)


def _republish(conn: Connection, store: ArtifactStore, registry: Registry, spec: DatasetSpec, version: int,
               dag_run_id: str) -> dict[str, Any] | None:
    from include.nightshift.scoring import score_snapshot  # xgboost/sklearn: only when needed

    champion = registry.champion(spec.model_name)
    if champion is None or champion.version != int(version):
        now = "no champion" if champion is None else f"v{champion.version} is"
        raise RollbackRefused(f"{spec.model_name} v{version} is not the champion ({now}): "
                              "not re-publishing predictions with it")
    found = latest_published(conn, spec)
    if found is None:
        return None
    day, sha = found
    snapshot_url = store.url("snapshots", spec.name, day.isoformat(), f"{sha}.parquet")
    if not store.exists(snapshot_url):
        raise FileNotFoundError(
            f"the snapshot {spec.warehouse.schema}.{warehouse.PREDICTIONS} of {day} was scored from "
            f"(snapshot_sha256 {sha}) is gone from the artifact store: {snapshot_url}; the published night "
            "is left as it is (re-run the nightly DAG for that date to rebuild it)")
    out = store.url("predictions", spec.name, day.isoformat(), f"republish-{safe_name(dag_run_id)}-v{int(version)}.parquet")
    model = registry.load_model(spec.model_name, version)
    watch = _serving_checks(store, registry, spec, champion, model, snapshot_url, sha, day)
    score_snapshot(store, snapshot_url, out, spec, model=model, model_version=int(version), snapshot_sha256=sha,
                   dag_run_id=dag_run_id, watch=watch)
    with store.local_copy(out) as path:
        rows = warehouse.replace_partition(conn, spec, day, path)
    return {"score_date": day, "rows": rows, "model_version": int(version), "snapshot_sha256": sha}
