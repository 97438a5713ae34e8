"""Rolling the champion back: which versions may be restored, and re-publishing with them.

"Previous champion" is the most recent earlier champion that was not itself rolled back
from: with promotions v1, v3, v5 the previous of v5 is v3; after rolling back to v3 the
previous is v1 (v5 is out); after a later promotion of v7 it is v3 again. A version may be
restored only if it exists and passed the promotion gate once (it was promoted, or its
verdict says the gate passed); a rejected challenger never qualifies.

Tags first, alias last (as promotion does): if anything fails half-way, `champion` still
names a version whose tags say why. The rollback is keyed by its id (the Airflow run id), so
a retried task finds its own earlier work on the tags and does not roll back a second time.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from psycopg2 import sql

from include.nightshift import warehouse
from include.nightshift.registry import BLESSED_TAG, CHAMPION, PROMOTED_AT_TAG, Registry, VERDICT_PREFIX

ROLLBACK_PREFIX = "nightshift.rollback."  # on the version restored: at, by, reason, from, id
ROLLED_BACK_PREFIX = "nightshift.rolled_back."  # on the version rolled back from: at, by, reason, to


class RollbackRefused(ValueError):
    """The requested rollback is not allowed (unknown version, never blessed, nothing to go back to)."""


@dataclass(frozen=True)
class RollbackResult:
    from_version: int | None
    to_version: int
    changed: bool


def _versions(registry: Registry, model_name: str) -> dict[int, dict[str, str]]:
    found = registry.client.search_model_versions(f"name = '{model_name}'")
    return {int(mv.version): dict(mv.tags) for mv in found}


def passed_gate_once(tags: dict[str, str]) -> bool:
    return PROMOTED_AT_TAG in tags or tags.get(BLESSED_TAG) == "true" or tags.get(f"{VERDICT_PREFIX}promote") == "true"


def previous_champion(registry: Registry, model_name: str) -> int | None:
    """The most recent earlier champion not rolled back from (see the module docstring)."""
    current = registry.champion(model_name)
    if current is None:
        return None
    versions = _versions(registry, model_name)
    since = versions[current.version].get(PROMOTED_AT_TAG, "")
    earlier = [(tags[PROMOTED_AT_TAG], v) for v, tags in versions.items()
               if v != current.version and PROMOTED_AT_TAG in tags and tags[PROMOTED_AT_TAG] < since
               and f"{ROLLED_BACK_PREFIX}at" not in tags]
    return max(earlier)[1] if earlier else None


def rollback(registry: Registry, model_name: str, *, to_version: int | None, actor: str, reason: str,
             rollback_id: str) -> RollbackResult:
    """Point `champion` at `to_version` (None: the previous champion); idempotent per rollback_id."""
    if not reason or not reason.strip():
        raise RollbackRefused("a rollback needs a reason")
    versions = _versions(registry, model_name)
    done = next((v for v, tags in versions.items() if tags.get(f"{ROLLBACK_PREFIX}id") == rollback_id), None)
    current = registry.champion(model_name)
    if done is not None:  # a retry of this very rollback: finish it (the alias may not have moved yet)
        origin = versions[done].get(f"{ROLLBACK_PREFIX}from")
        if current is None or str(current.version) == origin:
            registry.client.set_registered_model_alias(model_name, CHAMPION, str(done))
        return RollbackResult(int(origin) if origin else None, done, True)
    if current is None:
        raise RollbackRefused(f"{model_name} has no champion: there is nothing to roll back")
    if to_version is None:
        to_version = previous_champion(registry, model_name)
        if to_version is None:
            raise RollbackRefused(f"{model_name} v{current.version} has no earlier champion to go back to; "
                                  "name the version to restore")
    if to_version not in versions:
        raise RollbackRefused(f"{model_name} has no version {to_version} (versions: {sorted(versions)})")
    if not passed_gate_once(versions[to_version]):
        raise RollbackRefused(f"{model_name} v{to_version} never passed the promotion gate "
                              f"({BLESSED_TAG}={versions[to_version].get(BLESSED_TAG, 'unset')}); refusing to restore it")
    if to_version == current.version:
        return RollbackResult(current.version, to_version, False)
    now = dt.datetime.now(dt.timezone.utc).isoformat()
    for key, value in {"at": now, "by": actor, "reason": reason, "to": to_version}.items():
        registry.client.set_model_version_tag(model_name, str(current.version), ROLLED_BACK_PREFIX + key, str(value))
    for key, value in {"at": now, "by": actor, "reason": reason, "from": current.version, "id": rollback_id}.items():
        registry.client.set_model_version_tag(model_name, str(to_version), ROLLBACK_PREFIX + key, str(value))
    registry.client.set_registered_model_alias(model_name, CHAMPION, str(to_version))
    return RollbackResult(current.version, to_version, True)


def latest_published(conn: Any, spec: Any) -> tuple[dt.date, str] | None:
    """The newest score_date of the predictions table and the snapshot it was scored from."""
    table = sql.Identifier(spec.warehouse.schema, warehouse.PREDICTIONS)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass(format('%%I.%%I', %s::text, %s::text)) IS NOT NULL",
                    (spec.warehouse.schema, warehouse.PREDICTIONS))
        if not cur.fetchone()[0]:
            return None
        cur.execute(sql.SQL("SELECT score_date, min(snapshot_sha256), count(DISTINCT snapshot_sha256) FROM {t} "
                            "WHERE score_date = (SELECT max(score_date) FROM {t}) GROUP BY score_date").format(t=table))
        row = cur.fetchone()
    if row is None:
        return None
    if row[2] != 1:
        raise ValueError(f"{spec.warehouse.schema}.predictions for {row[0]} mixes {row[2]} snapshots; cannot re-score it")
    return row[0], row[1]


def republish_latest(conn: Any, store: Any, registry: Registry, spec: Any, version: int,
                     dag_run_id: str) -> dict | None:
    """Re-score the latest published night with `version` and replace that partition (one transaction)."""
    from include.nightshift.scoring import score_snapshot

    found = latest_published(conn, spec)
    if found is None:
        return None
    day, sha = found
    snapshot_url = store.url("snapshots", spec.name, day.isoformat(), f"{sha}.parquet")
    if not store.exists(snapshot_url):
        raise FileNotFoundError(f"the snapshot {day} was scored from is gone from the artifact store: {snapshot_url}")
    out = store.url("predictions", spec.name, day.isoformat(), f"republish-v{version}-{sha[:12]}.parquet")
    score_snapshot(store, snapshot_url, out, spec, model=registry.load_model(spec.model_name, version),
                   model_version=version, snapshot_sha256=sha, dag_run_id=dag_run_id)
    with store.local_copy(out) as path:
        rows = warehouse.replace_partition(conn, spec, day, path)
    return {"score_date": day, "rows": rows, "model_version": version}
