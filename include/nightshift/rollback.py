"""Rolling the champion back, and re-publishing the latest night with the restored model.

What the rollback DAG's steps call. The registry side (which versions may be restored, what
"previous champion" means, the tags, idempotency per rollback id) lives in
Registry.rollback / Registry.previous_champion, next to promote(), so that every move of the
alias follows the same rule: tags first, alias last. This module adds the warehouse side.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from psycopg import Connection, sql

from include.nightshift import warehouse
from include.nightshift.artifacts import ArtifactStore, safe_name
from include.nightshift.registry import Registry, RollbackRefused, RollbackResult
from include.nightshift.spec import DatasetSpec

__all__ = ["RollbackRefused", "RollbackResult", "latest_night", "latest_published", "republish_latest", "rollback",
           "rollback_change"]


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
    score_snapshot(store, snapshot_url, out, spec, model=registry.load_model(spec.model_name, version),
                   model_version=int(version), snapshot_sha256=sha, dag_run_id=dag_run_id)
    with store.local_copy(out) as path:
        rows = warehouse.replace_partition(conn, spec, day, path)
    return {"score_date": day, "rows": rows, "model_version": int(version), "snapshot_sha256": sha}
