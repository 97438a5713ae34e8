"""A move of the `champion` alias made outside Nightshift: found, recorded once, and alerted.

Anyone who may edit the registered model in MLflow (its UI, its client, its REST API) can point
`champion` at any version, with no gate and no audit row. Nightshift cannot stop that from
inside the pipeline (the deployed stack restricts who may edit the model: README, "Rolling
back"), but it can notice it: every nightly run (its drift step, before anything is decided or
scored) and every rollback (before the alias moves) compares the alias with the last change the
audit table recorded (audit.last_served). When they differ, the move is written to
champion_changes as an ``external`` row, from the version that last served to the one the alias
names, and an alert goes out.

- Recorded once: the check runs under the serving lock and reads the audit table again there, so
  two runs that look at once write one row; a rerun or retry then finds the alias in line with
  the last row and writes nothing.
- Not a move: an intent of a promotion or rollback that has moved the alias but is not marked
  done yet (promotion.repair_pending settles it); no champion at all (a vanished champion is the
  gate's champion check, nightly.lost_champion).
- Who and when are unknown to Nightshift: the actor says so, changed_at is when it was found,
  and details keep what MLflow says (the registered model's last update time, which an alias
  change sets, and whether the version ever passed the gate).
- A dry run reports the move but writes nothing (it leaves the warehouse as it was).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

from psycopg import Connection

from include.nightshift import audit, warehouse

if TYPE_CHECKING:
    from include.nightshift.registry import ModelVersionInfo, Registry
    from include.nightshift.spec import DatasetSpec

log = logging.getLogger(__name__)

EVENT = "external"
ACTOR = "unknown (outside Nightshift)"
ALERT_EVENT = "external_change"  # notifiers.EVENTS


def moved_outside(conn: Connection, spec: DatasetSpec, champion: ModelVersionInfo | None) -> int | None | bool:
    """False when the alias agrees with the audit table; else the version that last served (None: none did).

    An intent whose version the alias names is a promotion or rollback in flight (or interrupted
    after its move), not an outside move.
    """
    if champion is None:
        return False
    last = audit.last_served(conn, spec, spec.model_name)
    if last == champion.version:
        return False
    if any(row["to_version"] == champion.version for row in audit.pending(conn, spec, spec.model_name)):
        return False
    return last


def external_change(spec: DatasetSpec, champion: ModelVersionInfo, last: int | None, *, dag_run_id: str,
                    night: dt.date | None, modified_at: dt.datetime | None) -> dict[str, Any]:
    """The audit row of an outside move (the shape promotions and rollbacks write)."""
    gate = "passed the promotion gate once" if champion.passed_gate else "never passed the promotion gate"
    return {"event": EVENT, "model_name": spec.model_name, "from_version": last, "to_version": champion.version,
            "actor": ACTOR, "dag_run_id": dag_run_id, "night": night, "state": "done",
            "reason": f"the alias 'champion' was moved outside Nightshift (v{champion.version} {gate}); "
                      "found by this run",
            "details": {"passed_gate": champion.passed_gate, "champion_run_id": champion.run_id,
                        "registered_model_last_updated": modified_at and modified_at.isoformat()}}


def _last_updated(registry: Registry, model_name: str) -> dt.datetime | None:
    """When MLflow last changed the registered model (setting an alias does): a bound on when it moved."""
    stamp = getattr(registry.client.get_registered_model(model_name), "last_updated_timestamp", None)
    return dt.datetime.fromtimestamp(stamp / 1000, dt.UTC) if stamp else None


def check_external_move(conn: Connection, registry: Registry, spec: DatasetSpec, *, dag_run_id: str,
                        night: dt.date | None, record: bool = True) -> dict[str, Any] | None:
    """Compare the alias with the last audit row; an outside move is recorded (`record`) and returned as its
    row, None when there was none. Under the serving lock: no promotion, rollback or publish is half-way."""
    audit.ensure_audit(conn, spec)
    with warehouse.serving_lock(conn, spec):
        champion = registry.champion(spec.model_name)
        last = moved_outside(conn, spec, champion)
        if last is False:
            return None
        change = external_change(spec, champion, last, dag_run_id=dag_run_id, night=night,
                                 modified_at=_last_updated(registry, spec.model_name))
        if record:
            audit.record_change(conn, spec, change)
    log.warning("%s: the champion alias names v%s, but %s.%s last recorded %s: it was moved outside Nightshift%s",
                spec.model_name, champion.version, spec.warehouse.schema, audit.CHANGES,
                "no champion" if last is None else f"v{last}", "" if record else " (dry run: not recorded)")
    return change


def external_alert(spec: DatasetSpec, change: dict[str, Any] | None, *, recorded: bool = True) -> tuple[str, dict] | None:
    """The alert of an outside move (None: there was none): which version serves now, which it replaced."""
    if change is None:
        return None
    was = "no champion" if change["from_version"] is None else f"v{change['from_version']}"
    warning = "" if change["details"]["passed_gate"] else "; it NEVER passed the promotion gate"
    where = f"recorded in {spec.warehouse.schema}.{audit.CHANGES}" if recorded else "dry run: not recorded"
    return (f"{spec.model_name}: champion moved outside Nightshift, {was} -> v{change['to_version']}{warning} "
            f"({where}; roll back with the rollback DAG if it was not meant)",
            {k: change[k] for k in ("model_name", "from_version", "to_version", "night", "details")})
