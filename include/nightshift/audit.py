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
- Identifiers from the spec go through sql.Identifier; the DDL runs under the warehouse's
  DDL advisory lock, so it never races ensure_warehouse on CREATE SCHEMA.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from psycopg2 import sql
from psycopg2.extras import Json, RealDictCursor

from include.nightshift import warehouse

CHANGES = "champion_changes"
EVENTS = ("promote", "rollback")

# name -> (SQL type, comment)
_COLUMNS: dict[str, tuple[str, str]] = {
    "event": ("text NOT NULL CHECK (event IN ({}))".format(", ".join(f"'{e}'" for e in EVENTS)),
              "promote (the nightly gate moved the champion) or rollback (a person moved it back)."),
    "model_name": ("text NOT NULL", "MLflow registered model whose alias `champion` moved."),
    "from_version": ("integer", "Champion before the change (NULL: there was none)."),
    "to_version": ("integer NOT NULL", "Champion after the change."),
    "actor": ("text NOT NULL", "Who: the Airflow user who triggered a rollback, or nightshift for a promotion."),
    "reason": ("text NOT NULL", "Why: the rollback's reason, or the promotion's gate/policy note."),
    "dag_run_id": ("text NOT NULL", "The Airflow DAG run that made the change."),
    "changed_at": ("timestamptz NOT NULL DEFAULT now()", "When the change was recorded (or the time given)."),
    "details": ("jsonb", "Anything else worth keeping (metrics, requested version, rollback id, ...)."),
}
COLUMNS = tuple(_COLUMNS)
KEY = ("event", "dag_run_id", "to_version")
_REQUIRED = ("event", "model_name", "to_version", "actor", "reason", "dag_run_id")


def _table(spec: Any) -> sql.Composed:
    return sql.Identifier(spec.warehouse.schema, CHANGES)


def ensure_audit(conn: Any, spec: Any) -> None:
    """Create the schema and the table when missing; safe to run again and at the same time."""
    with conn, conn.cursor() as cur:
        if warehouse._table_exists(cur, spec, CHANGES):
            return
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (warehouse._DDL_LOCK,))
        cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(spec.warehouse.schema)))
        table = _table(spec)
        columns = [sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, (t, _) in _COLUMNS.items()]
        columns.append(sql.SQL("PRIMARY KEY ({})").format(sql.SQL(", ").join(map(sql.Identifier, KEY))))
        cur.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(table, sql.SQL(", ").join(columns)))
        cur.execute(sql.SQL("COMMENT ON TABLE {} IS {}").format(table, sql.Literal(
            f"Every change of the {spec.model_name} champion: one row per promotion or rollback.")))
        for name, (_, comment) in _COLUMNS.items():
            cur.execute(sql.SQL("COMMENT ON COLUMN {}.{} IS {}").format(
                table, sql.Identifier(name), sql.Literal(comment)))


def record_change(conn: Any, spec: Any, change: Mapping[str, Any]) -> bool:
    """Append one champion change; False when this change was recorded already (a retry).

    Keys are column names (COLUMNS); event, model_name, to_version, actor, reason and
    dag_run_id are required; changed_at defaults to now; details (a dict) is stored as jsonb.
    An unknown key is refused (a typo must not vanish). Needs ensure_audit() to have run.
    """
    unknown = [k for k in change if k not in _COLUMNS]
    if unknown:
        raise ValueError(f"record_change: unknown key {unknown[0]!r} (allowed: {', '.join(COLUMNS)})")
    missing = [k for k in _REQUIRED if change.get(k) is None or (isinstance(change[k], str) and not change[k].strip())]
    if missing:
        raise ValueError(f"record_change: {missing[0]!r} is required")
    if change["event"] not in EVENTS:
        raise ValueError(f"record_change: audit event must be one of {list(EVENTS)}, got {change['event']!r}")
    names = list(change)
    values = [Json(v) if k == "details" and v is not None else v for k, v in change.items()]
    query = sql.SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) DO NOTHING").format(
        _table(spec),
        sql.SQL(", ").join(map(sql.Identifier, names)),
        sql.SQL(", ").join(sql.Placeholder() * len(names)),
        sql.SQL(", ").join(map(sql.Identifier, KEY)),
    )
    with conn, conn.cursor() as cur:
        cur.execute(query, values)
        return cur.rowcount == 1


def changes(conn: Any, spec: Any) -> list[dict[str, Any]]:
    """The whole history, oldest first ([] when the table does not exist yet)."""
    with conn, conn.cursor() as cur:
        if not warehouse._table_exists(cur, spec, CHANGES):
            return []
    with conn, conn.cursor(cursor_factory=RealDictCursor) as cur:
        cur.execute(sql.SQL("SELECT {} FROM {} ORDER BY changed_at, to_version").format(
            sql.SQL(", ").join(map(sql.Identifier, COLUMNS)), _table(spec)))
        return [dict(row) for row in cur.fetchall()]
