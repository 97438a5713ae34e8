"""Whether tonight's challenger becomes champion, and the move itself with its audit row.

The gate (evaluation.gate) says whether a challenger earned promotion; the run's policy (a
trigger parameter) says what to do with that answer. The move of the alias and the audit
row that records it are one step here, so that neither can happen without the other being
attempted and no error on the way is swallowed.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

from psycopg import Connection

from include.nightshift import audit, warehouse
from include.nightshift.evaluation import Verdict
from include.nightshift.spec import DatasetSpec

if TYPE_CHECKING:
    from include.nightshift.registry import Registry
    from include.nightshift.steps import VerdictStep

log = logging.getLogger(__name__)

POLICIES = ("auto", "never", "force")
# Checks that no policy overrides: a model that fails one of these must never serve.
HARD_CHECKS = ("thresholds", "finite", "floor", "roundtrip")


def apply_policy(verdict: Verdict, policy: str, *, dry_run: bool) -> tuple[bool, str]:
    """(promote?, why) for the gate's verdict under the run's promotion policy.

    `auto` follows the gate. `never` and dry runs never promote. `force` overrides the relative
    checks (beat the champion, the baseline, every slice) but never the absolute floor or the
    sanity checks (HARD_CHECKS): a forced model is still a sane one.
    """
    if policy not in POLICIES:
        raise ValueError(f"promotion_policy must be one of {list(POLICIES)}, got {policy!r}")
    if dry_run:
        return False, "dry run: nothing is promoted"
    if policy == "never":
        return False, "promotion_policy=never"
    if policy == "force":
        hard = [c for c in verdict.checks if c.name in HARD_CHECKS and not c.passed]
        return (False, "force refused: " + hard[0].detail) if hard else (True, "promotion_policy=force")
    return verdict.promote, "gate passed" if verdict.promote else "gate failed"


def promote(registry: "Registry", conn: Connection, spec: DatasetSpec, verdict: "VerdictStep", *,
            night: dt.date | None = None) -> int | None:
    """Move `champion` to the challenger, audited intent -> move -> done; returns the version replaced.

    1. Intents other runs left behind are settled first (repair_pending).
    2. The audit row is written as an intent before the alias moves: a warehouse that cannot
       take it fails the step while production is untouched.
    3. The alias moves (registry.promote: reasons, alias, then the serving tags).
    4. The row is marked done. An error there propagates (the run fails, naming it); the intent
       stays and the next promotion or rollback finds the alias on its version and marks it done.
    Nothing on this path is caught. The challenger was loaded back from the registry and scored
    on the holdout just before (the gate's roundtrip check, nightly.judge_challenger): a version
    that cannot load never reaches this step.

    `night` (champion_changes.night) is the logical date of the run whose gate promoted; when the
    caller does not give it, the challenger's own night (its nightshift.run_date tag, set by the run
    that trained it, which is the run that judged it: train and evaluate are one DAG run).
    """
    from include.nightshift.registry import REPLACED_VERSION_TAG

    audit.ensure_audit(conn, spec)
    repair_pending(registry, conn, spec, this_run=verdict.dag_run_id)
    if night is None:
        night = registry.version(spec.model_name, verdict.challenger_version).trained_for
    current = registry.champion(spec.model_name)
    expected = None if current is None else current.version
    if expected == verdict.challenger_version:  # a retry after the move: the predecessor it recorded
        replaced = current.tags.get(REPLACED_VERSION_TAG)
        own = [r for r in audit.pending(conn, spec, spec.model_name)
               if r["dag_run_id"] == verdict.dag_run_id and r["to_version"] == verdict.challenger_version]
        expected = int(replaced) if replaced else (own[0]["from_version"] if own else None)
    change = promotion_change(spec, verdict, expected, night)
    if audit.record_intent(conn, spec, change) == "abandoned":
        raise RuntimeError(f"{spec.warehouse.schema}.{audit.CHANGES}: the promotion of {spec.model_name} "
                           f"v{verdict.challenger_version} by {verdict.dag_run_id} was marked abandoned (the alias had "
                           "not moved and another change came first): not moving it now; trigger a new run")
    with warehouse.serving_lock(conn, spec):  # never between a publish's champion check and its write
        replaced = registry.promote(spec.model_name, verdict.challenger_version, verdict.tags())
    audit.finish(conn, spec, change, "done")
    return expected if replaced is None else replaced


def repair_pending(registry: "Registry", conn: Connection, spec: DatasetSpec, *,
                   this_run: str | None = None) -> list[tuple[dict[str, Any], str]]:
    """Settle the intents left by interrupted promotions and rollbacks; [(row, state given)].

    An intent whose version the alias points at moved: it is marked done (a promotion's serving
    tags, written after the alias, are completed too). One whose version the alias does not point
    at never moved, or was moved away from by a later change; either way it is marked abandoned, and
    not redone: its gate or its requester may be out of date. Intents of `this_run` are left to the
    run itself (a retry adopts its own intent and completes it). Every settlement is logged; no
    error is caught.
    """
    current = registry.champion(spec.model_name)
    settled = []
    for row in audit.pending(conn, spec, spec.model_name):
        if this_run is not None and row["dag_run_id"] == this_run:
            continue
        moved = current is not None and current.version == row["to_version"]
        if moved and row["event"] == "promote":
            registry.mark_promoted(spec.model_name, row["to_version"], replaced=row["from_version"],
                                   at=row["changed_at"].astimezone(dt.UTC).isoformat())
        state = audit.finish(conn, spec, row, "done" if moved else "abandoned")
        log.warning("%s.%s: the %s of %s v%s by %s was left as an intent; the alias %s it: marked %s",
                    spec.warehouse.schema, audit.CHANGES, row["event"], spec.model_name, row["to_version"],
                    row["dag_run_id"], "points at" if moved else "does not point at", state)
        settled.append((row, state))
    return settled


def promotion_change(spec: DatasetSpec, verdict: "VerdictStep", replaced: int | None,
                     night: dt.date | None = None) -> dict[str, Any]:
    """The audit row of a promotion (the same shape a rollback writes)."""
    return {"event": "promote", "model_name": spec.model_name, "from_version": replaced,
            "to_version": verdict.challenger_version, "actor": "nightshift", "reason": verdict.policy_note,
            "dag_run_id": verdict.dag_run_id, "night": night,
            "details": {"policy": verdict.policy, "metric": spec.promotion.metric,
                        "champion": verdict.champion, "challenger": verdict.challenger,
                        # what the numbers were measured on: the holdout, or a shadow's realised labels (shadow.py)
                        "basis": verdict.evaluation.get("basis", "holdout"),
                        "labelled_days": [d["day"] for d in verdict.evaluation.get("days", [])]}}


def promotion_alert(spec: DatasetSpec, verdict: "VerdictStep", replaced: int | None) -> tuple[str, dict[str, Any]]:
    """The alert of a promotion: which version serves now, which it replaced, and why."""
    was = "no champion before" if replaced is None else f"was v{replaced}"
    return (f"{spec.model_name}: v{verdict.challenger_version} promoted to champion ({was}; "
            f"{verdict.policy_note})", promotion_change(spec, verdict, replaced))
