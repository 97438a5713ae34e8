"""The rollback steps: move `champion` back, record it, and optionally re-publish the latest night.

Thin like the nightly operators: the rules (which version may be restored, what "previous"
means: what served, by the audit table; the load check before the alias moves; the audit's
intent -> move -> done; idempotency) live in include/nightshift/registry.py and rollback.py.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from nightshift_airflow import runtime
from nightshift_airflow.alias_watch import watch_alias
from nightshift_airflow.notifiers import notify
from nightshift_airflow.base import NightshiftOperator

log = logging.getLogger(__name__)

ROLLBACK, REPUBLISH = "rollback", "republish_latest"


def actor(context: Any) -> str:
    """Who asked, as far as Airflow knows (audit.actor_of): the run's triggering user, and whether login is
    disabled in this Airflow (then every caller is "Anonymous")."""
    from airflow.sdk.configuration import conf

    from include.nightshift.audit import actor_of

    dag_run = context.get("dag_run")
    run_type = getattr(getattr(dag_run, "run_type", None), "value", getattr(dag_run, "run_type", None))
    login_disabled = "SimpleAuthManager" in conf.get("core", "auth_manager", fallback="") and conf.getboolean(
        "core", "simple_auth_manager_all_admins", fallback=False)
    return actor_of(getattr(dag_run, "triggering_user_name", None), run_type=run_type, login_disabled=login_disabled)


class RollbackOperator(NightshiftOperator):
    """Point `champion` at the previous champion or at a chosen, once-blessed version; audit who, why and when."""

    ui_color = "#fecaca"

    def execute(self, context: Any) -> dict:
        from include.nightshift.rollback import RollbackRefused, latest_night, run_rollback
        from include.nightshift.rollback import refresh_health_page

        self.refuse_unknown_conf(context)  # a typo'd "versoin" must not roll back to the previous champion
        spec, registry = self.spec, runtime.registry()
        version, reason = self.param(context, "version"), (self.param(context, "reason") or "").strip()
        who = actor(context)
        with self.connect() as conn:  # audit intent -> alias -> done (rollback.run_rollback); a no-op writes no row
            watch_alias(context, conn, spec, night=latest_night(conn, spec))  # first: a move made in MLflow
            try:
                result, change = run_rollback(conn, registry, spec, to_version=int(version) if version is not None
                                              else None, actor=who, reason=reason, rollback_id=context["run_id"])
            except RollbackRefused as exc:  # a refusal is an answer, not a transient error: no retry
                raise AirflowFailException(f"rollback of {spec.model_name} refused: {exc}") from exc
            refresh_health_page(conn, runtime.artifact_store(), spec)  # the header names the restored version
        left = f"v{result.from_version}" if result.from_version is not None else "no champion"
        message = (f"{spec.model_name}: champion rolled back {left} -> v{result.to_version} "
                   f"by {who}: {reason}" if result.changed else
                   f"{spec.model_name}: v{result.to_version} is already the champion; nothing moved")
        notify("rollback", message, context, details=change)
        log.info("%s", message)
        return {**change, "changed_at": result.at.isoformat(), "changed": result.changed,
                "night": change["night"] and change["night"].isoformat()}


class RepublishOperator(NightshiftOperator):
    """Re-score the latest published night with the restored champion and replace that partition.

    :param rolled_back: the rollback step's output (the version it restored).
    """

    inputs = ("rolled_back",)
    ui_color = "#fed7aa"

    def execute(self, context: Any) -> dict:
        from include.nightshift.rollback import refresh_health_page, republish_latest

        if self.param(context, "republish") is False:  # null (the form left it unset) = on, as the default
            raise AirflowSkipException("republish=false: the published predictions are left as they are")
        spec, store, registry = self.spec, runtime.artifact_store(), runtime.registry()
        with self.connect() as conn:
            done = republish_latest(conn, store, registry, spec, self.rolled_back["to_version"], context["run_id"])
            if done is not None:
                refresh_health_page(conn, store, spec)  # the night's output is now the restored model's
        if done is None:
            raise AirflowSkipException(f"nothing published yet in {spec.warehouse.schema}.predictions")
        log.info("re-published %s rows of %s with v%s", done["rows"], done["score_date"], done["model_version"])
        return {key: str(value) if key == "score_date" else value for key, value in done.items()}
