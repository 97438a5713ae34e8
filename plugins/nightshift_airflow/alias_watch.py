"""The steps' side of external.py: look for a move of the `champion` alias made outside Nightshift, record it
once in champion_changes (event external) and alert (event external_change).

Called first thing by the nightly drift step and the rollback step, on the warehouse connection they
already hold. A dry run looks and alerts but records nothing (external.check_external_move).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from nightshift_airflow import runtime
from nightshift_airflow.base import alert

if TYPE_CHECKING:
    from psycopg import Connection

    from include.nightshift.spec import DatasetSpec


def watch_alias(context: Any, conn: Connection, spec: DatasetSpec, *, night: dt.date | None,
                dry_run: bool = False) -> dict[str, Any] | None:
    """Check the alias against the last audit row; the external row found (None: the alias is where Nightshift left it)."""
    from include.nightshift.external import ALERT_EVENT, check_external_move, external_alert
    from include.nightshift.versions import sync_serving

    registry = runtime.registry()
    change = check_external_move(conn, registry, spec, dag_run_id=context["run_id"], night=night, record=not dry_run)
    if change is not None and not dry_run:
        sync_serving(conn, registry, spec)  # the version found serving gets its row and period
    alert(context, ALERT_EVENT, external_alert(spec, change, recorded=not dry_run))
    return change
