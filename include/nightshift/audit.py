"""The audit table: one row per change of the production model (a promotion or a rollback).

The registry's tags say the same on each model version; ``<schema>.champion_changes`` is the
one place a consumer can read the whole history with SQL: which version replaced which, who
did it and why, from which Airflow run, and when.

- Append-only: a row, once written, is never updated. A retried task writes the same change
  again and nothing happens (ON CONFLICT DO NOTHING): the first attempt's row, with its
  time, stands.
- The key is (event, dag_run_id, to_version): a retry repeats the same change, while a
  nightly run that was cleared and ran again under the same run id and promoted another
  version made a second, real change, and keeps both rows.
- ``night`` names the night a change belongs to (promotion.promote, rollback.rollback_change
  say which night each kind of change takes), so a change joins pipeline_runs.logical_date
  and predictions.score_date.
- The table's DDL lives in warehouse.py with the rest of the warehouse (one versioned
  schema, one advisory lock); this module writes and reads its rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from psycopg import Connection, sql
from psycopg.rows import dict_row

from include.nightshift import warehouse

if TYPE_CHECKING:
    from include.nightshift.spec import DatasetSpec

CHANGES = warehouse.CHANGES
EVENTS = warehouse.CHANGE_EVENTS
COLUMNS = tuple(warehouse.CHANGE_COLUMNS)
KEY = warehouse.CHANGE_KEY
_REQUIRED = ("event", "model_name", "to_version", "actor", "reason", "dag_run_id")


def ensure_audit(conn: Connection, spec: DatasetSpec) -> None:
    """Make sure the audit table exists: it is part of the warehouse's schema (warehouse.MIGRATIONS)."""
    warehouse.ensure_warehouse(conn, spec)


def record_change(conn: Connection, spec: DatasetSpec, change: Mapping[str, Any]) -> bool:
    """Append one champion change; False when this change was recorded already (a retry).

    Keys are column names (COLUMNS); event, model_name, to_version, actor, reason and
    dag_run_id are required; changed_at defaults to now; details (a dict) is stored as jsonb.
    An unknown key is refused (a typo must not vanish). Needs ensure_audit() to have run.
    """
    unknown = [k for k in change if k not in warehouse.CHANGE_COLUMNS]
    if unknown:
        raise ValueError(f"record_change: unknown key {unknown[0]!r} (allowed: {', '.join(COLUMNS)})")
    missing = [k for k in _REQUIRED if change.get(k) is None or (isinstance(change[k], str) and not change[k].strip())]
    if missing:
        raise ValueError(f"record_change: {missing[0]!r} is required")
    if change["event"] not in EVENTS:
        raise ValueError(f"record_change: audit event must be one of {list(EVENTS)}, got {change['event']!r}")
    return warehouse.insert_row(conn, warehouse.table(spec, CHANGES), change, KEY, update=False) == 1


def changes(conn: Connection, spec: DatasetSpec) -> list[dict[str, Any]]:
    """The whole history, oldest first ([] when the table does not exist yet)."""
    if not warehouse.table_exists(conn, spec, CHANGES):
        return []
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql.SQL("SELECT {} FROM {} ORDER BY changed_at, to_version").format(
            sql.SQL(", ").join(map(sql.Identifier, COLUMNS)), warehouse.table(spec, CHANGES)))
        return cur.fetchall()
