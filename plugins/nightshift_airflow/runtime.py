"""What an operator needs from Airflow at run time, derived in one place.

The run's date, the artifact store and the MLflow registry are read here so that every
operator sees the same values: a run triggered through the REST API with a null logical
date still has a date (from `run_after`), and settings come from Airflow Variables (or
their AIRFLOW_VAR_* environment form), never from code.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)

ARTIFACT_ROOT_VARIABLE = "nightshift_artifact_root"
TRACKING_URI_VARIABLE = "nightshift_mlflow_tracking_uri"
MLFLOW_ARTIFACTS_VARIABLE = "nightshift_mlflow_artifact_root"
MLFLOW_UI_VARIABLE = "nightshift_mlflow_ui_url"  # optional: where a person opens MLflow (for links in reports)


class SettingMissing(RuntimeError):
    """A setting the pipeline cannot run without is not configured."""


class ConnectionFailed(RuntimeError):
    """A database named by an Airflow connection could not be reached or refused the login.

    The message names the connection id (and host), which the driver's own error does not.
    """


def retry_delay() -> dt.timedelta:
    """Wait before a task's first retry: env NIGHTSHIFT_RETRY_DELAY_SECONDS (default 60); tests set it low."""
    return dt.timedelta(seconds=float(os.environ.get("NIGHTSHIFT_RETRY_DELAY_SECONDS", "60")))


def run_date(context: Any) -> dt.date:
    """The day a run processes: its `run_date` param, else the data interval's start, else the
    logical date, else the day before `run_after` (an API run with a null logical date).

    A run_date in the future is refused (history.RunRefused) by every task that asks, record_run
    included: such a run writes nothing."""
    params = context.get("params") or {}
    if params.get("run_date"):
        from include.nightshift.history import refuse_future

        return refuse_future(dt.date.fromisoformat(str(params["run_date"])), dt.datetime.now(dt.timezone.utc).date())
    for key in ("data_interval_start", "logical_date"):
        if context.get(key) is not None:
            return context[key].date()
    run_after = getattr(context.get("dag_run"), "run_after", None)
    if run_after is None:
        raise SettingMissing("cannot tell the run's date: no run_date param, data interval, logical date or run_after")
    return run_after.date() - dt.timedelta(days=1)


def task_states(context: Any) -> dict[str, str]:
    """Task id -> state of every task in this run ({} when Airflow cannot say, which is logged)."""
    ti = context["ti"]
    try:
        found = ti.get_task_states(dag_id=ti.dag_id, run_ids=[context["run_id"]])
        return {k: str(v) for k, v in (found.get(context["run_id"]) or {}).items()}
    except Exception as exc:  # the state API is an Airflow-3 feature; say so rather than guess silently
        log.warning("could not read task states (%s); judging from the steps' outputs", exc)
        return {}


NEVER_RAN = {"upstream_failed", "removed"}  # states of a step that pushed nothing


def unsettled_outputs(context: Any, refs: dict[str, Any]) -> dict[str, Any]:
    """The outputs, among `refs` (name -> XComArg), of upstream steps that did not succeed, read
    without Airflow's "XCom not found" ERROR line.

    Why: Airflow resolves an XComArg with a GET that logs "XCom not found" at ERROR level when the
    step pushed nothing (skipped, upstream failed, or failed before returning), which put error
    lines into successful tasks' logs (record_run, score). A step that never ran (upstream failed)
    has no output: None without asking. A failed or skipped step may have pushed one (validate
    pushes its result then fails; score pushes a no-model record then skips): it is read as the
    list of every value pushed, which answers empty instead of 404. A step that succeeded is left
    out (Airflow resolves it), and so is everything when the states are unknown.

    A mapped step (score_shard) is always read here, as the list of what its instances pushed (empty when
    it was skipped: no instance), whatever their states.
    """
    from airflow.sdk import XComArg

    plain = {name: ref for name, ref in refs.items()
             if isinstance(ref, XComArg) and hasattr(ref, "operator") and hasattr(ref, "key")}
    if not plain or "ti" not in context:
        return {}
    states = task_states(context)
    if not states:
        return {}
    out: dict[str, Any] = {}
    for name, ref in plain.items():
        if getattr(ref.operator, "is_mapped", False):
            out[name] = pushed_values(context, ref.operator.task_id, ref.key)
            continue
        state = states.get(ref.operator.task_id, "")
        if state != "success":
            out[name] = None if state in NEVER_RAN else pushed_value(context, ref.operator.task_id, ref.key)
    return out


def pushed_value(context: Any, task_id: str, key: str) -> Any:
    """What `task_id` pushed under `key` in this run, or None; never logs a missing XCom as an error."""
    values = pushed_values(context, task_id, key)
    return values[0] if values else None


def pushed_values(context: Any, task_id: str, key: str) -> list[Any]:
    """Everything `task_id` pushed under `key` in this run (a mapped task: each instance's), [] for nothing."""
    from airflow.sdk.bases.xcom import BaseXCom

    ti = context["ti"]
    return list(BaseXCom.get_all(key=key, dag_id=ti.dag_id, task_id=task_id, run_id=context["run_id"]) or [])


def variable(name: str, default: str | None = None) -> str:
    from airflow.sdk import Variable

    value = Variable.get(name, default=None)
    if value in (None, ""):
        value = os.environ.get(name.upper(), default)
    if value in (None, ""):
        raise SettingMissing(f"Airflow Variable {name!r} is not set (see airflow_settings.yaml)")
    return value


def artifact_store():
    from include.nightshift.artifacts import ArtifactStore

    return ArtifactStore(variable(ARTIFACT_ROOT_VARIABLE))


def registry():
    from include.nightshift import quiet
    from include.nightshift.registry import Registry

    quiet.adopt_mlflow_loggers()  # mlflow is imported now: its messages go to the task log, not stderr
    artifacts = None
    try:
        artifacts = variable(MLFLOW_ARTIFACTS_VARIABLE)
    except SettingMissing:
        pass
    return Registry(variable(TRACKING_URI_VARIABLE), artifact_location=artifacts)


def origin(context: Any):
    """The run's Origin for the pages it writes: its page in the Airflow UI (`[api] base_url`, else
    root-relative) and the MLflow UI's address (Variable nightshift_mlflow_ui_url, else the tracking URI
    when it is http(s), else none: the MLflow run id is shown as text)."""
    from airflow.sdk.configuration import conf

    from include.nightshift.reports import Origin, airflow_run_url

    try:
        ui = variable(MLFLOW_UI_VARIABLE)
    except SettingMissing:
        tracking = variable(TRACKING_URI_VARIABLE)
        ui = tracking if tracking.startswith(("http://", "https://")) else None
    return Origin(context["run_id"], airflow_run_url(conf.get("api", "base_url", fallback=None),
                                                     context["dag"].dag_id, context["run_id"]), ui)


def postgres_connection(conn_id: str):
    """A psycopg 3 connection for an Airflow connection id; the caller closes it.

    The stock PostgresHook opens it (Airflow connections, extras such as sslmode, IAM), and
    hands out psycopg 3 because Airflow 3 brings SQLAlchemy 2. Sessions are named
    ``nightshift`` (pg_stat_activity.application_name, so an operator of the database can
    find the pipeline's sessions) unless the connection's extra sets application_name or options.
    """
    import psycopg
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    hook = PostgresHook(postgres_conn_id=conn_id)
    named = {"application_name", "options"} & set(hook.connection.extra_dejson)
    if not named:
        hook = PostgresHook(postgres_conn_id=conn_id, options="-c application_name=nightshift")
    try:
        conn = hook.get_conn()
    except psycopg.OperationalError as exc:
        where = f"{hook.connection.host or 'localhost'}:{hook.connection.port or 5432}/{hook.connection.schema or ''}"
        raise ConnectionFailed(f"connection {conn_id!r} ({where}) failed: {str(exc).strip()}") from exc
    if not isinstance(conn, psycopg.Connection):
        conn.close()
        raise RuntimeError(f"connection {conn_id!r}: the Postgres provider opened {type(conn).__module__}, not psycopg 3 "
                           "(it needs SQLAlchemy 2 and psycopg installed)")
    return conn


@contextlib.contextmanager
def source_reader(spec: Any) -> Iterator[Any]:
    """`with source_reader(spec) as source`: the reader of the spec's source (include/nightshift/sources.py),
    its connection closed at the end.

    Kind postgres: a psycopg connection (postgres_connection), read with ADBC. Kind sql: the connection
    id's own hook (`BaseHook.get_connection(id).get_hook()`: any provider whose hook is a common-sql
    DbApiHook), with that hook's placeholder and identifier escape format. Kind files: no connection
    (fsspec finds credentials as usual: environment, instance profile).
    """
    from include.nightshift import sources

    kind = spec.source.kind
    if kind == "files":
        yield sources.FilesReader()
        return
    if kind == "postgres":
        with contextlib.closing(postgres_connection(spec.source.connection_id)) as conn:
            yield sources.PostgresReader(conn)
        return
    hook = sql_hook(spec.source.connection_id)
    with contextlib.closing(hook.get_conn()) as conn:
        yield sources.SqlReader(conn, quote=hook.escape_word_format, placeholder=hook.placeholder)


@contextlib.contextmanager
def dask_client(spec: Any) -> Iterator[Any]:
    """`with dask_client(spec) as cluster`: None unless training.engine is dask; then a distributed.Client on the
    scheduler the Airflow connection training.dask_connection_id names (host and port; schema: the protocol,
    tcp by default), closed at the end."""
    if spec.training.engine != "dask":
        yield None
        return
    from airflow.sdk import BaseHook
    from distributed import Client

    conn_id = spec.training.dask_connection_id
    found = BaseHook.get_connection(conn_id)
    if not found.host:
        raise ValueError(f"training.dask_connection_id {conn_id!r}: the connection names no host (the Dask "
                         "scheduler's address goes in its host and port)")
    with Client(f"{found.schema or 'tcp'}://{found.host}:{found.port or 8786}", timeout="30s") as client:
        yield client


def sql_hook(conn_id: str) -> Any:
    """The common-sql hook of an Airflow connection (its provider's DbApiHook subclass)."""
    from airflow.providers.common.sql.hooks.sql import DbApiHook
    from airflow.sdk import BaseHook

    hook = BaseHook.get_connection(conn_id).get_hook()
    if not isinstance(hook, DbApiHook):
        raise SettingMissing(f"connection {conn_id!r} ({type(hook).__name__}) has no DB-API hook: source.kind sql "
                             "needs a database provider built on common-sql (postgres, sqlite, mysql, ...)")
    return hook
