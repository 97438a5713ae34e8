"""Run records the warehouse could not take yet: kept in the artifact store, written by the next run.

When record_run cannot reach the warehouse (the connection refused, the server gone mid-write),
the night's RunRecord is kept as one JSON file per DAG run under
``pending_records/<dataset>/<dag run id>.json`` (written atomically, like every artifact) and the
task fails naming the warehouse connection. Every later record_night first writes the pending
records, oldest first, each in one transaction (its run_attempts row and, unless it was a dry
run, its pipeline_runs row), and deletes a file only after that transaction committed.

Written twice, a record changes nothing: run_attempts is keyed by dag_run_id and pipeline_runs by
logical_date, both upserted. pipeline_runs keeps the latest non-dry run of each night: a pending
record whose night already has a row from a LATER run (started after it) goes to run_attempts only.

Plain Python on a psycopg connection and an ArtifactStore: no Airflow.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

from psycopg import Connection, sql

from include.nightshift.artifacts import ArtifactStore, safe_name
from include.nightshift.run_record import RunRecord
from include.nightshift.spec import DatasetSpec

log = logging.getLogger(__name__)

FOLDER = "pending_records"
_EPOCH = dt.datetime.min.replace(tzinfo=dt.timezone.utc)


def pending_folder(store: ArtifactStore, spec: DatasetSpec) -> str:
    """The address of the spec's pending records folder."""
    return store.url(FOLDER, safe_name(spec.name))


def pending_url(store: ArtifactStore, spec: DatasetSpec, dag_run_id: str) -> str:
    """Where the pending record of one DAG run is kept (a retry of record_run overwrites its own file)."""
    return store.url(FOLDER, safe_name(spec.name), f"{safe_name(dag_run_id)}.json")


def keep_pending(store: ArtifactStore, spec: DatasetSpec, record: RunRecord) -> str:
    """Keep a record the warehouse could not take; its address. All or nothing for readers."""
    url = pending_url(store, spec, record.dag_run_id)
    store.put_text(json.dumps(record.to_xcom(), sort_keys=True, default=str), url)
    log.warning("run record of %s (%s) kept at %s until the warehouse takes it", record.logical_date,
                record.dag_run_id, url)
    return url


def unreachable_message(spec: DatasetSpec, record: RunRecord, url: str, error: BaseException) -> str:
    """Why record_run failed when the warehouse could not be reached: the connection, where the record
    is kept, and what the run itself had come to (the tasks that failed first, then those that could not run)."""
    schema, states = spec.warehouse.schema, record.details.get("task_states") or {}
    failed = [t for t in record.details.get("failed_tasks") or [] if states.get(t) != "upstream_failed"]
    blocked = [t for t in record.details.get("failed_tasks") or [] if t not in failed]
    outcome = f"decision {record.decision}" + "".join(
        f"; {label}: {', '.join(tasks)}" for label, tasks in (("failed", failed), ("could not run", blocked)) if tasks)
    return (f"the run record could not be written: the warehouse (Airflow connection "
            f"{spec.warehouse.connection_id!r}) is unreachable ({' '.join(str(error).split())}). The record of "
            f"{record.logical_date} (run {record.dag_run_id}; {outcome}) is kept at {url} and will be written to "
            f"{schema}.run_attempts and {schema}.pipeline_runs by the next run of {spec.dag_id} that reaches the "
            f"warehouse")


def pending_records(store: ArtifactStore, spec: DatasetSpec) -> list[tuple[str, RunRecord]]:
    """(address, record) of every pending record of the spec, oldest run first."""
    found = []
    for path in store.list(pending_folder(store, spec)):
        if not path.endswith(".json"):
            continue  # a temp file of a write in progress, or something a person left
        url = store.url(FOLDER, safe_name(spec.name), path.rsplit("/", 1)[-1])
        found.append((url, RunRecord.from_xcom(json.loads(store.read_text(url)))))
    return sorted(found, key=lambda item: (_started(item[1]), item[1].dag_run_id))


def write_pending(conn: Connection, store: ArtifactStore, spec: DatasetSpec) -> list[str]:
    """Write every pending record (oldest first), each in one transaction, deleting its file once that
    committed; the DAG run ids written. Needs ensure_warehouse() to have run. An error stops here and
    is raised: the records not yet written stay pending."""
    written = []
    for url, record in pending_records(store, spec):
        night = write_record(conn, spec, record)
        store.fs.rm(store._path(url))
        written.append(record.dag_run_id)
        log.info("pending run record of %s (%s) written to run_attempts%s; %s removed", record.logical_date,
                 record.dag_run_id, "" if not night else " and pipeline_runs", url)
    return written


def write_record(conn: Connection, spec: DatasetSpec, record: RunRecord) -> bool:
    """Write one record in one transaction: its run_attempts row, and its pipeline_runs row unless it
    was a dry run or the night already holds a later run's row; whether pipeline_runs was written."""
    from include.nightshift import task_costs, warehouse

    with conn.transaction():
        warehouse.record_attempt(conn, spec, record.attempt_row())
        task_costs.record_costs(conn, spec, record)  # its steps' costs too
        if record.dry_run:
            return False
        later = later_run(conn, spec, record)
        if later is not None:
            log.info("%s.pipeline_runs keeps %s for %s: a later run than %s", spec.warehouse.schema, later,
                     record.logical_date, record.dag_run_id)
            return False
        warehouse.upsert_run(conn, spec, record.row())
        return True


def later_run(conn: Connection, spec: DatasetSpec, record: RunRecord) -> str | None:
    """The DAG run id of the night's pipeline_runs row if it is another run that started after `record`'s
    (locked until the transaction ends), else None."""
    from include.nightshift import warehouse

    query = sql.SQL("SELECT dag_run_id, started_at, finished_at FROM {} WHERE logical_date = %s FOR UPDATE").format(
        warehouse.table(spec, warehouse.PIPELINE_RUNS))
    with conn.cursor() as cur:
        cur.execute(query, (record.logical_date,))
        row = cur.fetchone()
    if row is None or row[0] == record.dag_run_id:
        return None
    theirs = _moment(row[1] or row[2])
    return row[0] if theirs > _started(record) else None


def _started(record: RunRecord) -> dt.datetime:
    """When the record's run started (its recording time when unknown), for ordering runs."""
    return _moment(record.started_at or record.finished_at)


def _moment(value: Any) -> dt.datetime:
    if value is None:
        return _EPOCH
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
