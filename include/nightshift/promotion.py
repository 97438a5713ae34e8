"""Whether tonight's challenger becomes champion, and the move itself with its audit row.

The gate (evaluation.gate) says whether a challenger earned promotion; the run's policy (a
trigger parameter) says what to do with that answer. The move of the alias and the audit
row that records it are one step here, so that neither can happen without the other being
attempted and no error on the way is swallowed.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from psycopg import Connection

from include.nightshift import audit
from include.nightshift.evaluation import Verdict
from include.nightshift.spec import DatasetSpec

if TYPE_CHECKING:
    from include.nightshift.registry import Registry
    from include.nightshift.steps import VerdictStep

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
    """Move `champion` to the challenger and append its audit row; returns the version replaced.

    The audit table is created before the alias moves (a warehouse that cannot take the row
    fails the step while production is untouched); the row is written right after the move,
    and an error there propagates: the run fails, naming it, instead of going green with a
    new champion and no record of it.

    `night` (champion_changes.night) is the logical date of the run whose gate promoted; when the
    caller does not give it, the challenger's own night (its nightshift.run_date tag, set by the run
    that trained it, which is the run that judged it: train and evaluate are one DAG run).
    """
    audit.ensure_audit(conn, spec)
    if night is None:
        night = registry.version(spec.model_name, verdict.challenger_version).trained_for
    replaced = registry.promote(spec.model_name, verdict.challenger_version, verdict.tags())
    audit.record_change(conn, spec, promotion_change(spec, verdict, replaced, night))
    return replaced


def promotion_change(spec: DatasetSpec, verdict: "VerdictStep", replaced: int | None,
                     night: dt.date | None = None) -> dict[str, Any]:
    """The audit row of a promotion (the same shape a rollback writes)."""
    return {"event": "promote", "model_name": spec.model_name, "from_version": replaced,
            "to_version": verdict.challenger_version, "actor": "nightshift", "reason": verdict.policy_note,
            "dag_run_id": verdict.dag_run_id, "night": night,
            "details": {"policy": verdict.policy, "metric": spec.promotion.metric,
                        "champion": verdict.champion, "challenger": verdict.challenger}}


def promotion_alert(spec: DatasetSpec, verdict: "VerdictStep", replaced: int | None) -> tuple[str, dict[str, Any]]:
    """The alert of a promotion: which version serves now, which it replaced, and why."""
    return (f"{spec.model_name}: v{verdict.challenger_version} promoted to champion (was v{replaced}; "
            f"{verdict.policy_note})", promotion_change(spec, verdict, replaced))
