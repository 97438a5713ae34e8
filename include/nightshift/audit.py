"""The audit table: one row per change of the production model (promotion or rollback).

The registry's tags say the same on each model version; this table is the one place a
consumer can read the whole history with SQL (who, why, when, from which version to which).
A retried task writes nothing twice: (event, dag_run_id) is unique and the first row wins.
"""

from __future__ import annotations

import json
from typing import Any

from psycopg2 import sql

CHANGES = "champion_changes"
EVENTS = ("promote", "rollback")

_COLUMNS = {
    "event": ("text NOT NULL", "promote (through the nightly gate) or rollback (by hand)."),
    "model_name": ("text NOT NULL", "MLflow registered model."),
    "from_version": ("integer", "Champion before the change (NULL: there was none)."),
    "to_version": ("integer NOT NULL", "Champion after the change."),
    "actor": ("text NOT NULL", "Who: the Airflow user who triggered a rollback, or nightshift for a promotion."),
    "reason": ("text NOT NULL", "Why: the rollback's reason, or the promotion's gate/policy note."),
    "dag_run_id": ("text NOT NULL", "The Airflow DAG run that made the change."),
    "changed_at": ("timestamptz NOT NULL DEFAULT now()", "When."),
    "details": ("jsonb", "Anything else worth keeping (metrics, requested version, ...)."),
}


def _table(spec: Any) -> sql.Composed:
    return sql.Identifier(spec.warehouse.schema, CHANGES)


def ensure_audit(conn: Any, spec: Any) -> None:
    """Create the table when missing (safe to run again)."""
    table = _table(spec)
    columns = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, (t, _) in _COLUMNS.items())
    with conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass(format('%%I.%%I', %s::text, %s::text)) IS NOT NULL",
                    (spec.warehouse.schema, CHANGES))
        if cur.fetchone()[0]:
            return
        cur.execute("SELECT pg_advisory_xact_lock(hashtext('nightshift.audit'))")
        cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(spec.warehouse.schema)))
        cur.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} ({}, UNIQUE (event, dag_run_id))").format(table, columns))
        cur.execute(sql.SQL("COMMENT ON TABLE {} IS {}").format(
            table, sql.Literal(f"Every change of the {spec.model_name} champion: promotions and rollbacks.")))
        for name, (_, comment) in _COLUMNS.items():
            cur.execute(sql.SQL("COMMENT ON COLUMN {}.{} IS {}").format(table, sql.Identifier(name), sql.Literal(comment)))


def record_change(conn: Any, spec: Any, change: dict[str, Any]) -> bool:
    """Insert one change; False when this run already recorded it (a retry)."""
    if change.get("event") not in EVENTS:
        raise ValueError(f"audit event must be one of {EVENTS}, got {change.get('event')!r}")
    names = [n for n in _COLUMNS if n != "changed_at" and n in change]
    values = [json.dumps(change[n], default=str) if n == "details" else change[n] for n in names]
    query = sql.SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT (event, dag_run_id) DO NOTHING").format(
        _table(spec), sql.SQL(", ").join(map(sql.Identifier, names)), sql.SQL(", ").join(sql.Placeholder() * len(names)))
    with conn, conn.cursor() as cur:
        cur.execute(query, values)
        return cur.rowcount == 1


def changes(conn: Any, spec: Any) -> list[dict[str, Any]]:
    """The whole history, oldest first."""
    with conn, conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT {} FROM {} ORDER BY changed_at, to_version").format(
            sql.SQL(", ").join(map(sql.Identifier, _COLUMNS)), _table(spec)))
        return [dict(zip(_COLUMNS, row)) for row in cur.fetchall()]
