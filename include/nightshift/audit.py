"""The audit table: one row per change of the production model (a promotion or a rollback).

The registry's tags say the same on each model version; ``<schema>.champion_changes`` is the
one place a consumer can read the whole history with SQL: which version replaced which, who
did it and why, from which Airflow run, and when.

- Append-only but for its state: a change is written as an ``intent`` before the alias moves
  and marked ``done`` once it moved (record_intent, finish); nothing else of a row is ever
  updated. An intent left behind (the task was killed, a connection dropped between the move
  and the mark) is settled by the next promotion or rollback of any run (promotion.repair_pending):
  ``done`` when the alias points at its version (the move happened), ``abandoned`` when it does
  not (the move never happened; it is not redone: the gate or the person that asked for it may
  be out of date by then, and a new run asks again). A retried task writes the same change
  again and nothing happens (ON CONFLICT DO NOTHING): the first attempt's row, with its
  time, stands.
- What served is read from here, never from registry tags: ``served`` (the done promote and
  rollback rows), ``previous_champion`` and ``last_served`` (a champion that vanished from
  MLflow is told apart from "never had one" by it).
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
ANONYMOUS = "Anonymous"  # the user Airflow's simple auth manager names everyone when login is disabled
DAG_TEST = "dag_test"  # the user Airflow records for `airflow dags test` and dag.test() (the local demo)


def actor_of(user: str | None, *, run_type: str | None = None, login_disabled: bool = False) -> str:
    """Who asked for a change, as the audit row's `actor`: what Airflow knows of the run's caller.

    Airflow records one name per run (`triggering_user_name`), and it means different things: a
    logged-in Airflow user (UI, REST API); everyone who could reach the UI or API, as "Anonymous",
    when login is disabled (`make ui`); the operating-system account that ran `airflow dags trigger`
    (the CLI does not log in, e.g. "root"); "dag_test" for `airflow dags test` and the demo. The
    cases Airflow lets us tell apart are spelled out; a run that is not manual says its kind.
    """
    name = (user or "").strip()
    if not name:
        said = "unknown (Airflow recorded no user)"
    elif name == ANONYMOUS and login_disabled:
        said = f"{ANONYMOUS} (login disabled: anyone who could reach the Airflow UI or API)"
    elif name == DAG_TEST:
        said = f"{DAG_TEST} (airflow dags test / the local demo, run on the Airflow machine)"
    else:
        said = name
    return said if run_type in (None, "", "manual") else f"{said} ({run_type} run)"


def ensure_audit(conn: Connection, spec: DatasetSpec) -> None:
    """Make sure the audit table exists: it is part of the warehouse's schema (warehouse.MIGRATIONS)."""
    warehouse.ensure_warehouse(conn, spec)


def record_change(conn: Connection, spec: DatasetSpec, change: Mapping[str, Any]) -> bool:
    """Append one champion change; False when this change was recorded already (a retry).

    Keys are column names (COLUMNS); event, model_name, to_version, actor, reason and
    dag_run_id are required; changed_at defaults to now; details (a dict) is stored as jsonb.
    An unknown key is refused (a typo must not vanish). Needs ensure_audit() to have run.
    """
    _check(change)
    return warehouse.insert_row(conn, warehouse.table(spec, CHANGES), change, KEY, update=False) == 1


def _check(change: Mapping[str, Any]) -> None:
    unknown = [k for k in change if k not in warehouse.CHANGE_COLUMNS]
    if unknown:
        raise ValueError(f"record_change: unknown key {unknown[0]!r} (allowed: {', '.join(COLUMNS)})")
    missing = [k for k in _REQUIRED if change.get(k) is None or (isinstance(change[k], str) and not change[k].strip())]
    if missing:
        raise ValueError(f"record_change: {missing[0]!r} is required")
    if change["event"] not in EVENTS:
        raise ValueError(f"record_change: audit event must be one of {list(EVENTS)}, got {change['event']!r}")


def record_intent(conn: Connection, spec: DatasetSpec, change: Mapping[str, Any]) -> str:
    """Write a change as an intent, before the alias moves; returns the state of its row.

    A retry of the same change (same key) finds its row: 'intent' (the first attempt stopped
    somewhere before its mark) or 'done' (it completed) is returned as it stands.
    """
    _check(change)
    row = {**change, "state": "intent"}
    warehouse.insert_row(conn, warehouse.table(spec, CHANGES), row, KEY, update=False)
    return _state(conn, spec, change)


def finish(conn: Connection, spec: DatasetSpec, change: Mapping[str, Any], state: str = "done") -> str:
    """Mark the intent of `change` done (the alias moved) or abandoned; returns the row's state after.

    Only an intent changes; a done row stays done (a retry). A change with no row at all is an
    error naming it: there is no intent to finish.
    """
    if state not in ("done", "abandoned"):
        raise ValueError(f"finish: state must be 'done' or 'abandoned', got {state!r}")
    where = sql.SQL(" AND ").join(sql.SQL("{} = %s").format(sql.Identifier(k)) for k in KEY)
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(sql.SQL("UPDATE {} SET state = %s WHERE {} AND state = 'intent'").format(
            warehouse.table(spec, CHANGES), where), [state, *(change[k] for k in KEY)])
    found = _state(conn, spec, change)
    if found is None:
        raise LookupError(f"{spec.warehouse.schema}.{CHANGES}: no row for {change['event']} of "
                          f"{change['model_name']} v{change['to_version']} by {change['dag_run_id']}: nothing to finish")
    return found


def _state(conn: Connection, spec: DatasetSpec, change: Mapping[str, Any]) -> str | None:
    where = sql.SQL(" AND ").join(sql.SQL("{} = %s").format(sql.Identifier(k)) for k in KEY)
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT state FROM {} WHERE {}").format(warehouse.table(spec, CHANGES), where),
                    [change[k] for k in KEY])
        row = cur.fetchone()
    return None if row is None else row[0]


def pending(conn: Connection, spec: DatasetSpec, model_name: str) -> list[dict[str, Any]]:
    """The intents of a model not yet settled, oldest first."""
    return [r for r in changes(conn, spec) if r["model_name"] == model_name and r["state"] == "intent"]


def served(conn: Connection, spec: DatasetSpec, model_name: str) -> list[dict[str, Any]]:
    """The completed changes of a model (state done), oldest first: each to_version served from its changed_at."""
    return [r for r in changes(conn, spec) if r["model_name"] == model_name and r["state"] == "done"]


def last_served(conn: Connection, spec: DatasetSpec, model_name: str) -> int | None:
    """The version the last completed change put in production (None: the model never had a champion)."""
    done = served(conn, spec, model_name)
    return done[-1]["to_version"] if done else None


def previous_champion(conn: Connection, spec: DatasetSpec, model_name: str, current: int) -> int | None:
    """The version a rollback without a target goes back to, from what actually served.

    Among the versions other than `current` that a completed change made champion, leaving out
    those a completed rollback moved away from after they last became champion, the one that
    became champion most recently. So with v1, v3, v5 promoted the previous champion is v3; after
    a rollback to v3 it is v1 (v5 was rolled back from); after v7 is promoted next it is v3 again.
    A promotion that never completed (an intent, abandoned) never counts, whatever its tags say.
    """
    became: dict[int, int] = {}
    left: dict[int, int] = {}
    for i, row in enumerate(served(conn, spec, model_name)):
        became[row["to_version"]] = i
        if row["event"] == "rollback" and row["from_version"] is not None:
            left[row["from_version"]] = i
    candidates = [v for v, i in became.items() if v != current and left.get(v, -1) < i]
    return max(candidates, key=lambda v: became[v], default=None)


def changes(conn: Connection, spec: DatasetSpec) -> list[dict[str, Any]]:
    """The whole history, oldest first ([] when the table does not exist yet)."""
    if not warehouse.table_exists(conn, spec, CHANGES):
        return []
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql.SQL("SELECT {} FROM {} ORDER BY changed_at, to_version").format(
            sql.SQL(", ").join(map(sql.Identifier, COLUMNS)), warehouse.table(spec, CHANGES)))
        return cur.fetchall()
