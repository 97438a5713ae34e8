"""Warehouse I/O: the tables consumers read, written with COPY, one night at a time.

Plain psycopg 3 on a connection the caller opens and closes (the Airflow adapter gets it
from the stock PostgresHook), so the core stays testable without Airflow. One PostgreSQL
schema per spec (``spec.warehouse.schema``) holds:

- ``predictions``: one row per entity per score date, primary key (score_date, entity key);
- ``predictions_latest``: a view of the newest score date;
- ``predictions_shadow``: the same columns plus ``role``, written by a shadow version (a challenger
  scoring the same snapshot beside the champion, compared on realised labels): never served;
- ``pipeline_runs``: one row per logical date (the latest run of that night that was not a
  dry run), the run's summary and decision;
- ``run_attempts``: one row per DAG run (dry runs included, flagged), so a failed night that a
  rerun fixed stays on record;
- ``champion_changes``: the audit table, one row per promotion or rollback (audit.py writes it), and
  per move of the alias made outside Nightshift (``external``, found by external.py);
- ``model_versions``: one row per model version Nightshift judged or saw serving: its MLflow run,
  training window, snapshots, holdout metrics, whether the gate blessed it, and when it served
  (from champion_changes), so a prediction row joins to what made it;
- ``schema_version``: which of MIGRATIONS have been applied, so a later change reaches an
  existing warehouse by itself.

Why it is written this way:
- This module owns every statement of DDL: the tables are defined once, here, and a change
  to them is a new entry at the end of MIGRATIONS, never an edit of an old one.
- Every identifier from the spec goes through ``sql.Identifier``: a schema such as
  ``Churn_X`` must be that schema, never ``churn_x``, and nothing is formatted into SQL.
- Consumers read with their own role (``spec.warehouse.reader_role``): the pipeline's role
  owns and writes the tables and grants that role USAGE and SELECT, never more, so a
  consumer's query can neither change a night nor lock a publish out.
- A night is replaced as a whole (DELETE that date + COPY, one transaction, under an
  advisory lock): a rerun never duplicates, a crash never leaves half a night.
- Rows stream Parquet -> Arrow record batches -> CSV (pyarrow) -> one COPY FROM STDIN, each
  batch's CSV buffer handed to ``Copy.write`` as is; a worker thread makes the next batches
  (at most two ahead) while the server parses this one, so memory stays bounded by a few
  batches whatever the night's size; ``to_sql`` and row inserts are one to two orders of
  magnitude slower (benchmarks/bench_publish.py).
- Every function runs its statements inside ``conn.transaction()`` and leaves the connection
  idle: psycopg 3's ``with conn:`` would close the caller's connection.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from psycopg import Connection, Cursor, sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

if TYPE_CHECKING:
    from include.nightshift.spec import DatasetSpec

PREDICTIONS = "predictions"
PREDICTIONS_LATEST = "predictions_latest"
PREDICTIONS_SHADOW = "predictions_shadow"  # migration 13: a shadow version's predictions, never served
PREDICTIONS_STAGING = "predictions_staging"  # migration 14: shards of a night waiting for publish (never served)
PARTITIONED = (PREDICTIONS, PREDICTIONS_SHADOW)  # the tables replace_partition / clear_partition write
SHADOW_ROLES = ("shadow",)
_SHADOW_ROLE = ("text NOT NULL DEFAULT 'shadow' CHECK (role IN ({}))".format(", ".join(f"'{r}'" for r in SHADOW_ROLES)),
                "Which kind of unserved model scored the row: 'shadow' (a challenger scoring beside the champion, "
                "compared on realised labels; never in predictions)")
PIPELINE_RUNS = "pipeline_runs"
CHANGES = "champion_changes"
RUN_ATTEMPTS = "run_attempts"
SCHEMA_VERSION = "schema_version"
# What a run decided (pipeline_runs.decision, run_attempts.decision). no_model: no champion after
# the gate, so nothing could score the night. A value added here needs a migration that resets
# the CHECK of both tables (see _set_decisions); the tuples of past migrations stay as they were.
_DECISIONS_V1 = ("skipped", "promoted", "rejected", "failed")
_DECISIONS_V3 = (*_DECISIONS_V1, "no_model")
_DECISIONS_V6 = (*_DECISIONS_V3, "reproduced")
DECISIONS = _DECISIONS_V6
_DECISION_TEXT = ("skipped / promoted / rejected / failed / no_model (no champion after the gate: nothing scored) / "
                  "reproduced (the retrain rebuilt the serving champion bit for bit: nothing registered or promoted).")
_CHANGE_EVENTS_V2 = ("promote", "rollback")
CHANGE_EVENTS = (*_CHANGE_EVENTS_V2, "external")  # external: migration 8
_CHANGE_EVENT_TEXT = ("promote (the nightly gate moved the champion), rollback (a person moved it back through the "
                      "rollback DAG) or external (found moved outside Nightshift, e.g. in the MLflow UI: recorded by "
                      "the first run that saw it).")
MODEL_VERSIONS = "model_versions"
MODEL_STALENESS = "model_staleness"
BATCH_ROWS = 65_536  # rows per Arrow batch: about 12 MB of CSV; a publish holds at most three

KEY_TYPES: dict[str, pa.DataType] = {"bigint": pa.int64(), "integer": pa.int32(), "text": pa.string()}

# Columns of `predictions` after score_date and the entity key: name, SQL type, Arrow type (of
# the scoring step's Parquet file), comment. The one definition of the predictions contract.
PREDICTION_COLUMNS: tuple[tuple[str, str, pa.DataType, str], ...] = (
    ("score", "double precision", pa.float64(), "Model output: probability of the positive class (or the predicted value)."),
    ("predicted_label", "smallint", pa.int16(), "Predicted class: 1 when score >= the spec's decision threshold, else 0."),
    ("model_name", "text", pa.string(), "MLflow registered model that produced the score."),
    ("model_version", "integer", pa.int32(), "MLflow model version that produced the score (the champion at scoring time)."),
    ("snapshot_sha256", "text", pa.string(), "SHA-256 of the input snapshot Parquet file the row was scored from."),
    ("dag_run_id", "text", pa.string(), "Airflow DAG run that scored and published the row."),
    ("scored_at", "timestamptz", pa.timestamp("us", tz="UTC"), "When the row was scored."),
)
PREDICTION_INPUT_COLUMNS = tuple(c[0] for c in PREDICTION_COLUMNS)  # plus the entity key
# Task multiclass only: two more columns after scored_at. A warehouse has one task from its creation (no
# multiclass warehouse predates them), so they are part of the table as first created, not a migration:
# binary and regression tables keep exactly PREDICTION_COLUMNS. For a multiclass spec, `score` is the
# predicted class's probability and `predicted_label` is NULL.
MULTICLASS_COLUMNS: tuple[tuple[str, str, pa.DataType, str], ...] = (
    ("predicted_class", "text", pa.string(), "Task multiclass: the most probable class (one of the spec's label.classes)."),
    ("class_probabilities", "jsonb", pa.string(),
     "Task multiclass: every class's probability, {class: probability} (they sum to 1); score is the predicted one's."),
)


def prediction_columns(spec: DatasetSpec) -> tuple[tuple[str, str, pa.DataType, str], ...]:
    """The predictions table's columns after score_date and the entity key, for the spec's task."""
    return PREDICTION_COLUMNS + (MULTICLASS_COLUMNS if spec.task == "multiclass" else ())

_RUN_COLUMNS: dict[str, str] = {
    "logical_date": "date PRIMARY KEY",
    "dag_run_id": "text",
    "rows_in": "bigint",
    "validation_passed": "boolean",
    "drift_share": "double precision",
    "retrain_reason": "text",
    "decision": "text CHECK (decision IN ({}))".format(", ".join(f"'{d}'" for d in _DECISIONS_V1)),
    "champion_version": "integer",
    "challenger_version": "integer",
    "champion_metric": "double precision",
    "challenger_metric": "double precision",
    "metric_name": "text",
    "rows_published": "bigint",
    "started_at": "timestamptz",
    "finished_at": "timestamptz",
    "details": "jsonb",
    "note": "text",
}
RUN_COLUMNS = tuple(_RUN_COLUMNS)

# The audit table: name -> (SQL type, comment); append-only, keyed by CHANGE_KEY (see audit.py).
# As migration 2 created it; later columns are added by their own migration (CHANGE_COLUMNS has all).
_CHANGE_COLUMNS_V2: dict[str, tuple[str, str]] = {
    "event": ("text NOT NULL CHECK (event IN ({}))".format(", ".join(f"'{e}'" for e in _CHANGE_EVENTS_V2)),
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
_CHANGE_NIGHT = ("date", "The night the change belongs to: for a promotion, the logical date of the nightly run whose "
                 "gate promoted (its predictions are the new version's first); for a rollback, the latest published "
                 "night when it ran (the night it re-publishes with the restored version); NULL when there was none.")
# Migration 7: a change is recorded as an intent before the alias moves and marked done after (audit.py).
CHANGE_STATES = ("intent", "done", "abandoned")
_CHANGE_STATE = ("text NOT NULL DEFAULT 'done' CHECK (state IN ({}))".format(", ".join(f"'{s}'" for s in CHANGE_STATES)),
                 "intent: recorded before the alias moved; done: the alias moved (the version served); abandoned: "
                 "the alias never moved (found so by the next promotion or rollback). Rows before it: done.")
CHANGE_COLUMNS: dict[str, tuple[str, str]] = {**_CHANGE_COLUMNS_V2, "night": _CHANGE_NIGHT, "state": _CHANGE_STATE}
CHANGE_KEY = ("event", "dag_run_id", "to_version")

# model_versions (migration 9): name -> (SQL type, comment). One row per (model_name, version); the nightly
# evaluate step writes a version's facts (upsert_model_version), champion_from/to follow champion_changes
# (refresh_champion_periods, after every change of the alias).
MODEL_VERSION_COLUMNS: dict[str, tuple[str, str]] = {
    "model_name": ("text NOT NULL", "MLflow registered model (predictions.model_name)."),
    "version": ("integer NOT NULL", "MLflow model version (predictions.model_version)."),
    "run_id": ("text", "MLflow run that trained the version: its params, metrics, data hashes and reports."),
    "family": ("text", "Model family the holdout chose (xgboost, hist_gradient_boosting, logistic_regression, ...)."),
    "trained_for": ("date", "The night whose nightly run trained it (pipeline_runs.logical_date)."),
    "dag_run_id": ("text", "The Airflow DAG run that trained and judged it (last judged, for a reused version)."),
    "train_from": ("date", "First day of the training window (labelled days, source.timezone)."),
    "train_to": ("date", "Last day of the training window."),
    "holdout_from": ("date", "First day of the out-of-time holdout the gate judged it on."),
    "holdout_to": ("date", "Last day of the holdout."),
    "snapshot_sha256": ("text[]", "SHA-256 of every labelled snapshot (Parquet) of its training window and holdout."),
    "metric_name": ("text", "The promotion metric (spec promotion.metric)."),
    "holdout_metric": ("double precision", "Its holdout metric (metric_name) when judged."),
    "champion_metric": ("double precision", "The champion's metric on the same holdout then (NULL: no champion)."),
    "baseline_metric": ("double precision", "The simple baseline's metric on the same holdout."),
    "holdout_metrics": ("jsonb", "Every overall holdout metric of each role judged ({role: {metric: value}})."),
    "blessed": ("boolean", "Passed the promotion gate (once, at least); NULL: never judged by Nightshift "
                           "(e.g. registered and made champion by hand)."),
    "verdict": ("text", "What the gate and the run's policy made of it (gate passed, gate failed, policy ...)."),
    "champion_from": ("timestamptz", "When it last became champion (champion_changes.changed_at; NULL: never served)."),
    "champion_to": ("timestamptz", "When the next change replaced it (NULL: still serving, or never served)."),
    "updated_at": ("timestamptz NOT NULL DEFAULT now()", "When this row was last written."),
}
MODEL_VERSION_KEY = ("model_name", "version")

# model_staleness: one labelled day scored by one version (staleness.py fits the decay with age on them).
STALENESS_COLUMNS: dict[str, tuple[str, str]] = {
    "day": ("date NOT NULL", "The labelled day whose rows were scored (in source.timezone)."),
    "model_name": ("text NOT NULL", "The registered model."),
    "version": ("integer NOT NULL", "The version that scored them."),
    "age_days": ("double precision NOT NULL", "Nights between the night the version was trained for and the night "
                                              "that served the day's rows (the clock of max_model_age_days)."),
    "metric_name": ("text NOT NULL", "promotion.metric."),
    "metric": ("double precision", "The version's metric on the day's labelled rows (null: undefined there)."),
    "rows": ("bigint NOT NULL", "Labelled rows of the day."),
    "measured_by": ("text", "The DAG run that scored them (a rerun of the night replaces its rows)."),
}
STALENESS_KEY = ("day", "model_name", "version")

# task_costs (migration 11): what each step cost, per night, run and try (task_costs.py measures and reads them).
TASK_COSTS = "task_costs"
TASK_COST_COLUMNS: dict[str, tuple[str, str]] = {
    "night": ("date NOT NULL", "The night the run processed (its logical date)."),
    "dag_run_id": ("text NOT NULL", "The Airflow DAG run."),
    "task_id": ("text NOT NULL", "The step (snapshot, validate, train, score, ...)."),
    "try_number": ("integer NOT NULL", "The task's try (a retry or a cleared task measures again)."),
    "dry_run": ("boolean NOT NULL DEFAULT false", "A dry run's costs: real, but left out of the alert baselines."),
    "outcome": ("text", "How the step ended: success, skipped or failed (its cost up to the failure)."),
    "started_at": ("timestamptz", "When the step's execute began."),
    "wall_seconds": ("double precision NOT NULL", "Elapsed seconds of the step's execute."),
    "cpu_seconds": ("double precision", "CPU seconds (user + system) of the task's process during the step."),
    "rss_start_bytes": ("bigint", "Resident memory of the task's process when the step began."),
    "rss_peak_bytes": ("bigint", "Peak resident memory of the task's process during the step."),
    "rows": ("bigint", "Rows the step processed (from its output; NULL: a step that processes no rows)."),
    "rows_per_second": ("double precision", "rows / wall_seconds (NULL without rows)."),
    "recorded_at": ("timestamptz NOT NULL DEFAULT now()", "When record_run wrote the row."),
}
TASK_COST_KEY = ("night", "dag_run_id", "task_id", "try_number")

# ml_test_score (migration 12): the ML Test Score's 28 tests, per night (test_score.py judges them).
ML_TEST_SCORE = "ml_test_score"
TEST_SCORE_COLUMNS: dict[str, tuple[str, str]] = {
    "night": ("date NOT NULL", "The night the run processed (pipeline_runs.logical_date)."),
    "test": ("text NOT NULL", "The rubric's test: section.number (data.1 .. monitoring.7)."),
    "section": ("text NOT NULL", "data, model, infrastructure or monitoring (Breck et al. 2017)."),
    "number": ("smallint NOT NULL", "The test's number in its section, 1 to 7."),
    "title": ("text NOT NULL", "The test as the rubric names it."),
    "score": ("double precision NOT NULL", "1: run automatically tonight; 0.5: done by hand and documented; "
                                           "0: not run tonight (the evidence says why)."),
    "passed": ("boolean", "What tonight's check found (NULL: no pass/fail tonight, or not run)."),
    "evidence": ("jsonb", "The number and threshold tonight, or why the test could not run."),
    "dag_run_id": ("text", "The DAG run that judged it (the night's pipeline_runs row's run)."),
}
TEST_SCORE_KEY = ("night", "test")

# run_attempts (migration 4): name -> (SQL type, comment). One row per DAG run, keyed by dag_run_id; the
# pipeline_runs columns where they mean the same, plus what only an attempt has (dry_run, conf, failed_tasks).
ATTEMPT_COLUMNS: dict[str, tuple[str, str]] = {
    "dag_run_id": ("text PRIMARY KEY", "The Airflow DAG run; a retry of its record_run task updates this row."),
    "logical_date": ("date NOT NULL", "The night the run processed."),
    "decision": ("text NOT NULL CHECK (decision IN ({}))".format(", ".join(f"'{d}'" for d in _DECISIONS_V3)),
                 "skipped / promoted / rejected / failed / no_model (no champion after the gate: nothing scored)."),
    "failed_tasks": ("text[] NOT NULL DEFAULT '{}'", "Tasks that failed, or could not run because an upstream failed."),
    "dry_run": ("boolean NOT NULL DEFAULT false", "A dry run: trained and evaluated, nothing promoted or published."),
    "rows_in": ("bigint", "Rows in the night's snapshot."),
    "validation_passed": ("boolean", "Whether the night's data passed validation (NULL: it did not run)."),
    "drift_share": ("double precision", "Share of drifted features (NULL: no champion to compare with)."),
    "retrain_reason": ("text", "Why a challenger was trained (NULL: none was)."),
    "champion_version": ("integer", "The champion before the night's evaluation."),
    "challenger_version": ("integer", "The challenger trained by this run, if any."),
    "champion_metric": ("double precision", "The champion's holdout metric (metric_name)."),
    "challenger_metric": ("double precision", "The challenger's holdout metric (metric_name)."),
    "metric_name": ("text", "The promotion metric."),
    "rows_published": ("bigint NOT NULL DEFAULT 0", "Prediction rows this run published (0: none)."),
    "note": ("text", "The trigger's note."),
    "conf": ("jsonb", "The run's parameters (trigger form / conf, defaults filled in)."),
    "started_at": ("timestamptz", "When the DAG run started."),
    "finished_at": ("timestamptz", "When the run was recorded."),
    "details": ("jsonb", "As pipeline_runs.details: task states, verdict checks, validation failure, decision."),
}

JSON_COLUMNS = ("details", "conf")  # jsonb columns: a dict given for one is sent as JSON

_DDL_LOCK = int.from_bytes(hashlib.sha256(b"nightshift.warehouse.ddl").digest()[:8], "big", signed=True)


# ---------------------------------------------------------------- helpers


def table(spec: DatasetSpec, name: str) -> sql.Composed:
    """A relation of the spec's schema, quoted."""
    return sql.SQL("{}.{}").format(sql.Identifier(spec.warehouse.schema), sql.Identifier(name))


def _key(spec: DatasetSpec) -> tuple[str, str]:
    """The entity key's name and SQL type, refusing names that clash with our own columns."""
    name, kind = spec.entity_key.name, spec.entity_key.type
    if name == "score_date" or name in PREDICTION_INPUT_COLUMNS:
        raise ValueError(f"entity_key.name {name!r} clashes with a column of the predictions table")
    if kind not in KEY_TYPES:
        raise ValueError(f"entity_key.type {kind!r} is not one of {sorted(KEY_TYPES)}")
    return name, kind


def prediction_schema(spec: DatasetSpec) -> pa.Schema:
    """The Arrow schema of a predictions Parquet file (what scoring writes and publish reads)."""
    key_name, key_type = _key(spec)
    return pa.schema([(key_name, KEY_TYPES[key_type]), *((n, t) for n, _, t, _ in prediction_columns(spec))])


def _schema_lock_id(schema: str) -> int:
    """A stable int4 per schema, so that locks on different schemas never wait on each other."""
    return int.from_bytes(hashlib.sha256(schema.encode()).digest()[:4], "big", signed=True)


def _exists(cur: Cursor, spec: DatasetSpec, name: str) -> bool:
    cur.execute("SELECT to_regclass(format('%%I.%%I', %s::text, %s::text)) IS NOT NULL", (spec.warehouse.schema, name))
    return bool(cur.fetchone()[0])


def table_exists(conn: Connection, spec: DatasetSpec, name: str) -> bool:
    """Whether <schema>.<name> exists (readers answer "no history yet" rather than fail)."""
    with conn.transaction(), conn.cursor() as cur:
        return _exists(cur, spec, name)


# ---------------------------------------------------------------- DDL, versioned


def _prediction_ddl(spec: DatasetSpec, key_name: str, key_type: str) -> list[sql.Composable]:
    """The predictions columns (score_date, entity key, prediction_columns) with their NOT NULLs: shared by
    predictions and predictions_shadow, so that the two tables cannot drift apart."""
    return [
        sql.SQL("score_date date NOT NULL"),
        sql.SQL("{} {} NOT NULL").format(sql.Identifier(key_name), sql.SQL(key_type)),
        *(sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t, _, _ in prediction_columns(spec)),
    ]


def _prediction_comments(spec: DatasetSpec, key_name: str) -> dict[str, str]:
    """The comment of every predictions column (predictions_shadow reuses them)."""
    return {
        "score_date": ("The day of the rows scored: the DAG run's logical date plus the spec's scoring.horizon_days "
                       "(0 by default); one partition per date."),
        key_name: f"Entity key ({key_name}, from the dataset spec); unique within a score_date.",
        **{n: c for n, _, _, c in prediction_columns(spec)},
    }


def _create_predictions(cur: Cursor, spec: DatasetSpec, key_name: str, key_type: str) -> None:
    cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(spec.warehouse.schema)))
    predictions = table(spec, PREDICTIONS)
    columns = [
        *_prediction_ddl(spec, key_name, key_type),
        sql.SQL("PRIMARY KEY (score_date, {})").format(sql.Identifier(key_name)),
    ]
    cur.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(predictions, sql.SQL(", ").join(columns)))
    _check_key_column(cur, spec, key_name, key_type)
    _comment(cur, "TABLE", predictions, f"Nightly batch predictions of dataset {spec.name}: one row per entity per score_date.")
    for column, text in _prediction_comments(spec, key_name).items():
        _comment(cur, "COLUMN", sql.SQL("{}.{}").format(predictions, sql.Identifier(column)), text)

    view = table(spec, PREDICTIONS_LATEST)
    view_columns = sql.SQL(", ").join(sql.Identifier(c) for c in ("score_date", key_name,
                                                                   *(n for n, *_ in prediction_columns(spec))))
    cur.execute(sql.SQL(
        "CREATE OR REPLACE VIEW {view} AS SELECT {columns} FROM {table} "
        "WHERE score_date = (SELECT max(score_date) FROM {table})"
    ).format(view=view, columns=view_columns, table=predictions))
    _comment(cur, "VIEW", view, "The predictions of the newest score_date only.")

    runs = table(spec, PIPELINE_RUNS)
    run_columns = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in _RUN_COLUMNS.items())
    cur.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(runs, run_columns))
    _comment(cur, "TABLE", runs, f"One row per nightly run of dataset {spec.name}: inputs, checks, decision, output.")


def _create_changes(cur: Cursor, spec: DatasetSpec, key_name: str, key_type: str) -> None:
    changes = table(spec, CHANGES)
    columns = [sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, (t, _) in _CHANGE_COLUMNS_V2.items()]
    columns.append(sql.SQL("PRIMARY KEY ({})").format(sql.SQL(", ").join(map(sql.Identifier, CHANGE_KEY))))
    cur.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(changes, sql.SQL(", ").join(columns)))
    _comment(cur, "TABLE", changes, f"Every change of the {spec.model_name} champion: one row per promotion or rollback.")
    for name, (_, text) in _CHANGE_COLUMNS_V2.items():
        _comment(cur, "COLUMN", sql.SQL("{}.{}").format(changes, sql.Identifier(name)), text)


def _comment(cur: Cursor, kind: str, target: sql.Composable, text: str) -> None:
    cur.execute(sql.SQL("COMMENT ON {} {} IS {}").format(sql.SQL(kind), target, sql.Literal(text)))


def _set_decisions(cur: Cursor, spec: DatasetSpec, relation: str, decisions: tuple[str, ...]) -> None:
    """Replace the CHECK on <relation>.decision (named <relation>_decision_check, the name PostgreSQL
    gave the inline one of version 1) with one allowing `decisions`; idempotent."""
    target, name = table(spec, relation), sql.Identifier(f"{relation}_decision_check")
    allowed = sql.SQL(", ").join(map(sql.Literal, decisions))
    cur.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}").format(target, name))
    cur.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} CHECK (decision IN ({}))").format(target, name, allowed))


def _allow_no_model(cur: Cursor, spec: DatasetSpec, key_name: str, key_type: str) -> None:
    """pipeline_runs.decision may be no_model: a night with no champion after the gate."""
    _set_decisions(cur, spec, PIPELINE_RUNS, _DECISIONS_V3)
    _comment(cur, "COLUMN", sql.SQL("{}.decision").format(table(spec, PIPELINE_RUNS)),
             "skipped / promoted / rejected / failed / no_model (no champion after the gate: nothing scored).")


def _allow_reproduced(cur: Cursor, spec: DatasetSpec, key_name: str, key_type: str) -> None:
    """decision may be reproduced: a retrain on the champion's own snapshots, spec and code gives the
    champion back (same training key), which is neither a promotion nor a rejection."""
    for relation in (PIPELINE_RUNS, RUN_ATTEMPTS):
        _set_decisions(cur, spec, relation, _DECISIONS_V6)
        _comment(cur, "COLUMN", sql.SQL("{}.decision").format(table(spec, relation)), _DECISION_TEXT)


def _create_attempts(cur: Cursor, spec: DatasetSpec, key_name: str, key_type: str) -> None:
    """run_attempts: every DAG run's outcome, while pipeline_runs keeps the latest run of each night."""
    attempts = table(spec, RUN_ATTEMPTS)
    columns = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t))
                                 for n, (t, _) in ATTEMPT_COLUMNS.items())
    cur.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(attempts, columns))
    cur.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (logical_date)").format(
        sql.Identifier(f"{RUN_ATTEMPTS}_logical_date"), attempts))
    _comment(cur, "TABLE", attempts, f"Every DAG run of dataset {spec.name}, dry runs and reruns included: "
                                     "one row per dag_run_id, with its outcome.")
    for name, (_, text) in ATTEMPT_COLUMNS.items():
        _comment(cur, "COLUMN", sql.SQL("{}.{}").format(attempts, sql.Identifier(name)), text)


def _add_change_night(cur: Cursor, spec: DatasetSpec, key_name: str, key_type: str) -> None:
    """champion_changes.night; promotions recorded before it get theirs from pipeline_runs (same run)."""
    changes, runs = table(spec, CHANGES), table(spec, PIPELINE_RUNS)
    cur.execute(sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS night {}").format(changes, sql.SQL(_CHANGE_NIGHT[0])))
    _comment(cur, "COLUMN", sql.SQL("{}.night").format(changes), _CHANGE_NIGHT[1])
    cur.execute(sql.SQL("UPDATE {c} SET night = r.logical_date FROM {r} r WHERE {c}.night IS NULL "
                        "AND {c}.event = 'promote' AND r.dag_run_id = {c}.dag_run_id").format(c=changes, r=runs))


def _add_change_state(cur: Cursor, spec: DatasetSpec, key_name: str, key_type: str) -> None:
    """champion_changes.state (intent / done / abandoned); every row written before it was a done change."""
    changes = table(spec, CHANGES)
    cur.execute(sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS state {}").format(changes, sql.SQL(_CHANGE_STATE[0])))
    _comment(cur, "COLUMN", sql.SQL("{}.state").format(changes), _CHANGE_STATE[1])


def _allow_external(cur: Cursor, spec: DatasetSpec, key_name: str, key_type: str) -> None:
    """champion_changes.event may be external: a move of the alias found made outside Nightshift. The
    CHECK of version 2 was inline, so PostgreSQL named it champion_changes_event_check; idempotent."""
    changes, name = table(spec, CHANGES), sql.Identifier(f"{CHANGES}_event_check")
    allowed = sql.SQL(", ").join(map(sql.Literal, CHANGE_EVENTS))
    cur.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}").format(changes, name))
    cur.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} CHECK (event IN ({}))").format(changes, name, allowed))
    _comment(cur, "COLUMN", sql.SQL("{}.event").format(changes), _CHANGE_EVENT_TEXT)


def _create_commented(cur: Cursor, target: sql.Composed, columns: Mapping[str, tuple[str, str]],
                      key: tuple[str, ...], text: str) -> None:
    """CREATE TABLE IF NOT EXISTS from {name: (SQL type, comment)} with its primary key, every column commented."""
    parts = [sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, (t, _) in columns.items()]
    parts.append(sql.SQL("PRIMARY KEY ({})").format(sql.SQL(", ").join(map(sql.Identifier, key))))
    cur.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(target, sql.SQL(", ").join(parts)))
    _comment(cur, "TABLE", target, text)
    for name, (_, comment) in columns.items():
        _comment(cur, "COLUMN", sql.SQL("{}.{}").format(target, sql.Identifier(name)), comment)


def _create_model_versions(cur: Cursor, spec: DatasetSpec, key_name: str, key_type: str) -> None:
    """model_versions: what made each version, and when it served; a prediction joins it on (model_name, version)."""
    _create_commented(cur, table(spec, MODEL_VERSIONS), MODEL_VERSION_COLUMNS, MODEL_VERSION_KEY,
                      f"Every version of {spec.model_name} Nightshift judged or saw serving: its run, data, holdout "
                      "metrics, gate and serving period.")


def _create_task_costs(cur: Cursor, spec: DatasetSpec, key_name: str, key_type: str) -> None:
    """task_costs: wall, CPU, memory and rows of each step, per night, run and try."""
    _create_commented(cur, table(spec, TASK_COSTS), TASK_COST_COLUMNS, TASK_COST_KEY,
                      f"What each step of {spec.dag_id} cost: wall and CPU seconds, peak memory and rows, "
                      "per night, DAG run and try (dry runs flagged).")


def _create_test_score(cur: Cursor, spec: DatasetSpec, key_name: str, key_type: str) -> None:
    """ml_test_score: each night's 28 tests of the ML Test Score, with their evidence."""
    _create_commented(cur, table(spec, ML_TEST_SCORE), TEST_SCORE_COLUMNS, TEST_SCORE_KEY,
                      f"The ML Test Score (Breck et al. 2017) of {spec.dag_id}, computed by each night about itself: "
                      "one row per night and test; a section's score is the sum, the final score the minimum.")


def _create_staleness(cur: Cursor, spec: DatasetSpec, key_name: str, key_type: str) -> None:
    """model_staleness: each labelled day scored by the champion and older blessed versions."""
    _create_commented(cur, table(spec, MODEL_STALENESS), STALENESS_COLUMNS, STALENESS_KEY,
                      f"How {spec.model_name}'s quality decays with age: each labelled day scored by the champion "
                      "and the newest blessed versions before it.")


def _create_predictions_shadow(cur: Cursor, spec: DatasetSpec, key_name: str, key_type: str) -> None:
    """predictions_shadow: the predictions columns plus role, for a version that scores beside the champion
    and is compared with it on realised labels, but is never served (no view, never in predictions)."""
    shadow = table(spec, PREDICTIONS_SHADOW)
    columns = [
        *_prediction_ddl(spec, key_name, key_type),
        sql.SQL("role {}").format(sql.SQL(_SHADOW_ROLE[0])),
        sql.SQL("PRIMARY KEY (score_date, {})").format(sql.Identifier(key_name)),
    ]
    cur.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(shadow, sql.SQL(", ").join(columns)))
    _comment(cur, "TABLE", shadow, f"Shadow predictions of dataset {spec.name}: a registered version other than the "
                                   "champion scoring the same nightly snapshot, one row per entity per score_date; "
                                   "kept to compare with the champion on realised labels, never served.")
    for column, text in {**_prediction_comments(spec, key_name), "role": _SHADOW_ROLE[1]}.items():
        _comment(cur, "COLUMN", sql.SQL("{}.{}").format(shadow, sql.Identifier(column)), text)


def _create_predictions_staging(cur: Cursor, spec: DatasetSpec, key_name: str, key_type: str) -> None:
    """predictions_staging: the predictions columns plus shard, where the shards of a sharded night land
    (scoring.shard_rows) until publish swaps them into predictions in one transaction (swap_staged).

    UNLOGGED: its rows can always be scored again, so they are not worth the write-ahead log; a crash
    empties it, and publish then finds rows missing and refuses. The shard number comes from the session
    (SET LOCAL nightshift.shard), so a shard's rows are COPYed exactly as a night's are to predictions."""
    staging = table(spec, PREDICTIONS_STAGING)
    columns = [
        *_prediction_ddl(spec, key_name, key_type),
        sql.SQL("shard integer NOT NULL DEFAULT current_setting('nightshift.shard')::integer"),
        sql.SQL("staged_at timestamptz NOT NULL DEFAULT now()"),
        sql.SQL("PRIMARY KEY (dag_run_id, score_date, {})").format(sql.Identifier(key_name)),
    ]
    cur.execute(sql.SQL("CREATE UNLOGGED TABLE IF NOT EXISTS {} ({})").format(staging, sql.SQL(", ").join(columns)))
    _comment(cur, "TABLE", staging, f"Shards of a night of dataset {spec.name} scored in parallel (scoring.shard_rows), "
                                    "per DAG run, until its publish moves them into predictions in one transaction. "
                                    "Not for consumers: read predictions.")


def _index_staging_by_shard(cur: Cursor, spec: DatasetSpec, key_name: str, key_type: str) -> None:
    """predictions_staging indexed by (dag_run_id, score_date, shard), which its DELETE and the swap look rows up
    by, instead of keyed by (dag_run_id, score_date, entity key).

    Why: every staged row went into a B-tree of every night's staged keys in random key order; as the night's
    shards landed each COPY slowed down (1M-row shards: 6.9, 10.9, 13.0 and 13.8 s, against 3.2-3.8 s with this
    index; at 10M rows a night, shards that staged last took twice as long). A night's keys are still unique:
    the swap inserts them into predictions, whose primary key (score_date, key) fails the swap's transaction on
    a duplicate, so nothing is published."""
    staging = table(spec, PREDICTIONS_STAGING)
    cur.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}").format(
        staging, sql.Identifier(f"{PREDICTIONS_STAGING}_pkey")))
    cur.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (dag_run_id, score_date, shard)").format(
        sql.Identifier(f"{PREDICTIONS_STAGING}_shard"), staging))


Migration = Callable[[Cursor, "DatasetSpec", str, str], None]

# (version, description, step): applied in order, each once, under the DDL advisory lock, and
# recorded in <schema>.schema_version. A step must be idempotent (IF NOT EXISTS, OR REPLACE):
# a warehouse made before versioning has no schema_version table and is taken from version 0,
# and a relation dropped by hand is repaired by running the steps again. Add a change (a new
# column, say) as a new last entry; never edit an entry a warehouse may have applied.
MIGRATIONS: tuple[tuple[int, str, Migration], ...] = (
    (1, "predictions, predictions_latest, pipeline_runs", _create_predictions),
    (2, "champion_changes (the audit table)", _create_changes),
    (3, "pipeline_runs.decision allows no_model", _allow_no_model),
    (4, "run_attempts (every DAG run's outcome)", _create_attempts),
    (5, "champion_changes.night", _add_change_night),
    (6, "decision allows reproduced", _allow_reproduced),
    (7, "champion_changes.state (intent, done, abandoned)", _add_change_state),
    (8, "champion_changes.event allows external", _allow_external),
    (9, "model_versions (what made each version, and when it served)", _create_model_versions),
    (10, "model_staleness (each labelled day scored by versions of several ages)", _create_staleness),
    (11, "task_costs (wall, CPU, memory and rows of each step)", _create_task_costs),
    (12, "ml_test_score (the ML Test Score's 28 tests per night)", _create_test_score),
    (13, "predictions_shadow (a shadow version's predictions, never served)", _create_predictions_shadow),
    (14, "predictions_staging (the shards of a night, until publish swaps them in)", _create_predictions_staging),
    (15, "predictions_staging indexed by shard, not keyed by entity", _index_staging_by_shard),
)
# Every relation the migrations create: the fast path checks them, the reader is granted them.
RELATIONS = (PREDICTIONS, PREDICTIONS_LATEST, PIPELINE_RUNS, CHANGES, RUN_ATTEMPTS, SCHEMA_VERSION, MODEL_VERSIONS,
             MODEL_STALENESS, TASK_COSTS, ML_TEST_SCORE, PREDICTIONS_SHADOW, PREDICTIONS_STAGING)


def _version(cur: Cursor, spec: DatasetSpec) -> int:
    if not _exists(cur, spec, SCHEMA_VERSION):
        return 0
    cur.execute(sql.SQL("SELECT coalesce(max(version), 0) FROM {}").format(table(spec, SCHEMA_VERSION)))
    return int(cur.fetchone()[0])


def _migrate(cur: Cursor, spec: DatasetSpec, key_name: str, key_type: str) -> None:
    """Bring the schema to the last of MIGRATIONS; re-runs every step when a relation is missing."""
    cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(spec.warehouse.schema)))
    versions = table(spec, SCHEMA_VERSION)
    cur.execute(sql.SQL(
        "CREATE TABLE IF NOT EXISTS {} (version integer PRIMARY KEY, description text NOT NULL, "
        "applied_at timestamptz NOT NULL DEFAULT now())").format(versions))
    _comment(cur, "TABLE", versions, "Schema changes applied to this warehouse by the pipeline (warehouse.MIGRATIONS).")
    current = _version(cur, spec)
    repair = not all(_exists(cur, spec, name) for name in RELATIONS)
    for version, description, step in MIGRATIONS:
        if version > current or repair:
            step(cur, spec, key_name, key_type)
            cur.execute(sql.SQL("INSERT INTO {} (version, description) VALUES (%s, %s) ON CONFLICT DO NOTHING")
                        .format(versions), (version, description))


def ensure_warehouse(conn: Connection, spec: DatasetSpec) -> None:
    """Create or upgrade the schema's relations; safe to run again and at the same time.

    CREATE ... IF NOT EXISTS alone still races (two sessions can both decide to create and
    one fails on a catalog unique index), so the DDL runs under a transaction-scoped
    advisory lock. An existing `predictions` table whose entity key differs from the spec
    is refused rather than silently kept.

    When the warehouse is at the last version with every relation present (every task after
    the first night) no DDL runs at all: CREATE OR REPLACE VIEW takes an exclusive lock on
    the view, and a publish must not queue behind a consumer's long query on predictions_latest.

    With ``warehouse.reader_role`` set, that role gets read access (see _grant_read); a
    role that does not exist is refused before anything is created.
    """
    key_name, key_type = _key(spec)
    reader = _reader_role(conn, spec)
    latest = MIGRATIONS[-1][0]
    with conn.transaction(), conn.cursor() as cur:
        ready = all(_exists(cur, spec, name) for name in RELATIONS) and _version(cur, spec) >= latest
        if ready and (reader is None or _reader_can_read(cur, spec, reader)):
            _check_contract(cur, spec, key_name, key_type)
            return
        cur.execute("SELECT pg_advisory_xact_lock(%s::bigint)", (_DDL_LOCK,))
        if _exists(cur, spec, PREDICTIONS):
            _check_key_column(cur, spec, key_name, key_type)
        _migrate(cur, spec, key_name, key_type)
        _check_contract(cur, spec, key_name, key_type)  # after the migrations: they may add columns
        if reader is not None:
            _grant_read(cur, spec, reader)


def _reader_role(conn: Connection, spec: DatasetSpec) -> str | None:
    """spec.warehouse.reader_role, checked against the server: it must exist, and be neither
    the role the pipeline writes with nor a superuser (either could write)."""
    reader = getattr(spec.warehouse, "reader_role", None)
    if reader is None:
        return None
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SELECT rolsuper, rolname = current_user FROM pg_roles WHERE rolname = %s", (reader,))
        row = cur.fetchone()
    setting = f"warehouse.reader_role of spec {spec.name!r}"
    if row is None:
        raise ValueError(f"{setting}: role {reader!r} does not exist on the warehouse server; "
                         f"create it (CREATE ROLE \"{reader}\" LOGIN PASSWORD ...) or remove the setting")
    superuser, is_writer = row
    if is_writer:
        raise ValueError(f"{setting}: {reader!r} is the role the pipeline writes with; name a separate read-only role")
    if superuser:
        raise ValueError(f"{setting}: {reader!r} is a superuser, which can write anything; name a read-only role")
    return reader


def _reader_can_read(cur: Cursor, spec: DatasetSpec, reader: str) -> bool:
    """Whether the reader already has every grant _grant_read gives (so nothing needs to run)."""
    cur.execute(
        """
        SELECT has_schema_privilege(%(role)s, n.oid, 'USAGE')
           AND bool_and(has_table_privilege(%(role)s, c.oid, 'SELECT'))
           AND EXISTS (
               SELECT 1 FROM pg_default_acl d, aclexplode(d.defaclacl) a
               WHERE d.defaclnamespace = n.oid AND d.defaclrole = (SELECT oid FROM pg_roles WHERE rolname = current_user)
                 AND d.defaclobjtype = 'r' AND a.privilege_type = 'SELECT'
                 AND a.grantee = (SELECT oid FROM pg_roles WHERE rolname = %(role)s))
        FROM pg_namespace n JOIN pg_class c ON c.relnamespace = n.oid
        WHERE n.nspname = %(schema)s AND c.relname::text = ANY(%(names)s::text[])
        GROUP BY n.oid
        """,
        {"role": reader, "schema": spec.warehouse.schema, "names": list(RELATIONS)},
    )
    row = cur.fetchone()
    return bool(row and row[0])


def _grant_read(cur: Cursor, spec: DatasetSpec, reader: str) -> None:
    """For the reader role: USAGE on the schema, SELECT on every table and view in it, and
    SELECT on those the writer creates there later (default privileges). Nothing else: no
    write, no DDL, no row locks.

    Idempotent (GRANT of a held privilege is a no-op); run under the DDL advisory lock, since
    two sessions updating the same ACL at once fail with "tuple concurrently updated".
    A GRANT by a role that does not own the tables only warns, so the result is checked.
    """
    role, schema = sql.Identifier(reader), sql.Identifier(spec.warehouse.schema)
    cur.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, role))
    cur.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(schema, role))
    cur.execute(sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT SELECT ON TABLES TO {}").format(schema, role))
    if not _reader_can_read(cur, spec, reader):
        raise ValueError(
            f"warehouse.reader_role of spec {spec.name!r}: could not grant {reader!r} read access to schema "
            f"{spec.warehouse.schema!r}: the pipeline's role must own its schema and tables")


def _check_contract(cur: Cursor, spec: DatasetSpec, key_name: str, key_type: str) -> None:
    """Refuse a warehouse schema made for another spec: another entity key, or another task (its
    predictions columns, or the metric its nights were judged by). A spec switched between tasks over
    the same schema would otherwise publish regression values beside last week's probabilities."""
    from include.nightshift.spec import TASK_METRICS

    _check_key_column(cur, spec, key_name, key_type)
    cur.execute("SELECT attname FROM pg_attribute WHERE attrelid = format('%%I.%%I', %s::text, %s::text)::regclass "
                "AND attnum > 0 AND NOT attisdropped", (spec.warehouse.schema, PREDICTIONS))
    found = {row[0] for row in cur.fetchall()} - {"score_date", key_name}
    wanted = {name for name, _, _, _ in prediction_columns(spec)}
    where = f"warehouse.schema {spec.warehouse.schema!r}"
    if found != wanted:
        raise ValueError(f"{where} was made for another task: its {PREDICTIONS} table has {sorted(found - wanted)} "
                         f"and lacks {sorted(wanted - found)} for task {spec.task}; point warehouse.schema at a new "
                         "schema (the old one keeps its history)")
    if _exists(cur, spec, PIPELINE_RUNS):
        cur.execute(sql.SQL("SELECT metric_name FROM {} WHERE metric_name IS NOT NULL ORDER BY logical_date DESC "
                            "LIMIT 1").format(table(spec, PIPELINE_RUNS)))
        row = cur.fetchone()
        if row is not None and row[0] not in TASK_METRICS[spec.task]:
            raise ValueError(f"{where} holds nights judged by {row[0]}, a metric of another task than {spec.task} "
                             "(the spec's task); point warehouse.schema at a new schema (the old one keeps its "
                             "history)")


def _check_key_column(cur: Cursor, spec: DatasetSpec, key_name: str, key_type: str) -> None:
    cur.execute(
        "SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
        "WHERE a.attrelid = format('%%I.%%I', %s::text, %s::text)::regclass AND a.attname = %s AND NOT a.attisdropped",
        (spec.warehouse.schema, PREDICTIONS, key_name),
    )
    row = cur.fetchone()
    if row is None or row[0] != key_type:
        found = "no such column" if row is None else row[0]
        raise ValueError(
            f"{spec.warehouse.schema}.{PREDICTIONS} exists with a different entity key: "
            f"spec says {key_name} {key_type}, table has {found}"
        )


# ---------------------------------------------------------------- predictions


def _partitioned(relation: str) -> str:
    """`relation` if replace_partition / clear_partition may write it, else a ValueError naming it."""
    if relation not in PARTITIONED:
        raise ValueError(f"relation {relation!r} is not a predictions table (one of {', '.join(PARTITIONED)})")
    return relation


def _partition_lock(spec: DatasetSpec, relation: str, score_date: dt.date) -> tuple[int, int]:
    """The two-key advisory lock of one score_date of one table: (schema, date) for predictions, as it always
    was; a key of its own for the shadow table, so a shadow publish never waits on the champion's."""
    schema = spec.warehouse.schema
    first = _schema_lock_id(schema) if relation == PREDICTIONS else _schema_lock_id(f"{schema}\x00{relation}")
    return first, score_date.toordinal()


def replace_partition(conn: Connection, spec: DatasetSpec, score_date: dt.date, predictions_path: str | Path, *,
                      relation: str = PREDICTIONS) -> int:
    """Replace one score_date's rows of `relation` (predictions, or predictions_shadow for a shadow version)
    with those of a Parquet file, all or nothing; returns rows written.

    One transaction: an advisory lock on (schema, date) so two publishes of the same night
    queue instead of colliding on the primary key, DELETE of the date, then a single COPY fed
    batch by batch. Any error rolls back (the previous rows stay) and is re-raised as it
    was raised (an Arrow cast error stays that error: psycopg 3 ends the COPY with CopyFail).
    scored_at may be tz-aware (any zone) or naive UTC; the session's TimeZone does not matter.
    The COPY names the predictions columns only: predictions_shadow.role takes its default.
    Needs ensure_warehouse() to have run.
    """
    target = table(spec, _partitioned(relation))
    parquet, columns = _predictions_file(spec, predictions_path)  # opened first: a missing file fails before any DELETE
    copy = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
        target, sql.SQL(", ").join(sql.Identifier(c) for c in ("score_date", *columns))
    )
    rows = 0
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s::integer, %s::integer)", _partition_lock(spec, relation, score_date))
        cur.execute("SET LOCAL TimeZone = 'UTC'")  # naive timestamps in the CSV are UTC
        cur.execute(sql.SQL("DELETE FROM {} WHERE score_date = %s").format(target), (score_date,))
        with cur.copy(copy) as stream:
            for data, n in _ahead(_csv_chunks(parquet, columns, _csv_schema(spec), score_date)):
                stream.write(memoryview(data))
                rows += n
    return rows


def stage_shard(conn: Connection, spec: DatasetSpec, score_date: dt.date, predictions_path: str | Path, *,
                dag_run_id: str, shard: int) -> int:
    """Put one shard's predictions (a Parquet file of this run) into predictions_staging; returns rows staged.

    One transaction that first deletes what an earlier try of the same shard of the same run staged, so a
    retried shard replaces its own rows and nothing else. Consumers never see staging (swap_staged moves
    a whole night at once). Needs ensure_warehouse() to have run.
    """
    staging = table(spec, PREDICTIONS_STAGING)
    parquet, columns = _predictions_file(spec, predictions_path)
    copy = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
        staging, sql.SQL(", ").join(sql.Identifier(c) for c in ("score_date", *columns)))
    rows = 0
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SELECT set_config('nightshift.shard', %s, true)", (str(int(shard)),))
        cur.execute("SET LOCAL TimeZone = 'UTC'")
        cur.execute(sql.SQL("DELETE FROM {} WHERE dag_run_id = %s AND score_date = %s AND shard = %s").format(staging),
                    (dag_run_id, score_date, shard))
        with cur.copy(copy) as stream:
            for data, n in _ahead(_csv_chunks(parquet, columns, _csv_schema(spec), score_date)):
                stream.write(memoryview(data))
                rows += n
    return rows


def swap_staged(conn: Connection, spec: DatasetSpec, score_date: dt.date, *, dag_run_id: str, shards: int,
                rows: int) -> int:
    """Replace score_date's partition of predictions with this run's staged shards, all or nothing.

    The same transaction and advisory lock as replace_partition; it refuses (and rolls back, the published
    night untouched) unless staging holds exactly `rows` rows from shards 0..shards-1 of this run. Then it
    removes this run's staged rows, and rows any run staged more than two days ago (a run that died
    before its publish). Needs ensure_warehouse() to have run.
    """
    target, staging = table(spec, PREDICTIONS), table(spec, PREDICTIONS_STAGING)
    key_name, _ = _key(spec)
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in ("score_date", key_name,
                                                              *(n for n, *_ in prediction_columns(spec))))
    mine = (dag_run_id, score_date)
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s::integer, %s::integer)",
                    _partition_lock(spec, PREDICTIONS, score_date))
        cur.execute(sql.SQL("SELECT count(*), count(DISTINCT shard), min(shard), max(shard) FROM {} "
                            "WHERE dag_run_id = %s AND score_date = %s").format(staging), mine)
        found, distinct, low, high = cur.fetchone()
        if (found, distinct, low, high) != (rows, shards, 0, shards - 1):
            raise ValueError(f"{spec.warehouse.schema}.{PREDICTIONS_STAGING} holds {found} rows from {distinct} "
                             f"shard(s) of run {dag_run_id} for {score_date}, not the {rows} rows of shards "
                             f"0..{shards - 1} that scored it: nothing is published (score the night again)")
        cur.execute(sql.SQL("DELETE FROM {} WHERE score_date = %s").format(target), (score_date,))
        cur.execute(sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} WHERE dag_run_id = %s AND score_date = %s")
                    .format(target, columns, columns, staging), mine)
        cur.execute(sql.SQL("DELETE FROM {} WHERE (dag_run_id = %s AND score_date = %s) "
                            "OR staged_at < now() - interval '2 days'").format(staging), mine)
    return rows


def _predictions_file(spec: DatasetSpec, predictions_path: str | Path) -> tuple[pq.ParquetFile, tuple[str, ...]]:
    """A predictions Parquet file, opened (so a missing file fails before any DELETE), and the columns
    it is written from; a ValueError naming the columns it lacks."""
    key_name, _ = _key(spec)
    parquet = pq.ParquetFile(predictions_path, pre_buffer=False)
    columns = (key_name, *(n for n, *_ in prediction_columns(spec)))
    missing = [c for c in columns if c not in parquet.schema_arrow.names]
    if missing:
        raise ValueError(f"{predictions_path}: missing column(s) {missing}")
    return parquet, columns


def clear_partition(conn: Connection, spec: DatasetSpec, score_date: dt.date, relation: str) -> int:
    """Delete one score_date's rows of `relation` (predictions or predictions_shadow); returns rows deleted.

    For a night published without a shadow: a rerun that no longer has one must not leave the shadow
    rows of an earlier run of the same night beside the champion's new ones. Under the same advisory
    lock as replace_partition of that table and date. Needs ensure_warehouse() to have run.
    """
    target = table(spec, _partitioned(relation))
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s::integer, %s::integer)", _partition_lock(spec, relation, score_date))
        cur.execute(sql.SQL("DELETE FROM {} WHERE score_date = %s").format(target), (score_date,))
        return cur.rowcount


def _ahead(chunks: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """The same items, made by a worker thread at most `depth` ahead of the consumer.

    pyarrow makes CSV without the GIL, so the next batch is made while this one is sent and
    parsed by the server; the bound keeps memory at a few batches whatever the night's size.
    An error in the worker is raised here, in order.
    """
    import queue
    import threading

    done = object()
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def work() -> None:
        try:
            for item in chunks:
                while not stop.is_set():
                    try:
                        items.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            items.put((done, None))
        except BaseException as exc:  # handed to the consumer, raised there
            items.put((done, exc))

    worker = threading.Thread(target=work, name="nightshift-csv", daemon=True)
    worker.start()
    try:
        while True:
            item, error = items.get()
            if error is not None:
                raise error
            if item is done:
                return
            yield item
    finally:
        stop.set()
        worker.join()


def _csv_schema(spec: DatasetSpec) -> pa.Schema:
    """The Arrow types the CSV is written from: casting first turns e.g. a bool label into 0/1.

    scored_at is written as naive UTC wall time and read under SET LOCAL TimeZone = 'UTC':
    pyarrow formats tz-aware timestamps about 20x slower (most of a publish's time otherwise).
    """
    schema = prediction_schema(spec)
    index = schema.get_field_index("scored_at")
    return schema.set(index, pa.field("scored_at", pa.timestamp("us")))


def _csv_chunks(
    parquet: pq.ParquetFile, columns: tuple[str, ...], target: pa.Schema, score_date: dt.date
) -> Iterator[tuple[pa.Buffer, int]]:
    """CSV bytes (no header) per record batch, with score_date prepended, and the batch's row count."""
    options = pa_csv.WriteOptions(include_header=False)
    for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=list(columns)):
        arrays = _conform(pa.Table.from_batches([batch]).select(list(columns)), target)
        arrays = arrays.add_column(0, "score_date", pa.repeat(score_date, arrays.num_rows))
        sink = pa.BufferOutputStream()  # Arrow memory, handed on without a copy
        pa_csv.write_csv(arrays, sink, options)
        yield sink.getvalue(), arrays.num_rows


def _conform(arrays: pa.Table, target: pa.Schema) -> pa.Table:
    """Cast to the target types; overflow stays an error, sub-microsecond time is truncated (PostgreSQL keeps us).

    A tz-aware timestamp becomes its UTC wall time; a naive one is taken to be UTC already.
    """
    columns = [arrays.column(f.name).cast(f.type, safe=not pa.types.is_timestamp(f.type)) for f in target]
    return pa.Table.from_arrays(columns, schema=target)


# ---------------------------------------------------------------- run history


def insert_row(conn: Connection, target: sql.Composable, row: Mapping[str, Any], key: tuple[str, ...], *,
               update: bool, update_when: sql.Composable | None = None) -> int:
    """INSERT one row (`details` and `conf` dicts as jsonb); on a conflict over `key`, update the other
    columns given (update; only where `update_when` holds, if given) or keep the existing row; returns
    the number of rows written (0 or 1)."""
    names = list(row)
    values = [Jsonb(v) if k in JSON_COLUMNS and v is not None else v for k, v in row.items()]
    updates = [n for n in names if n not in key] if update else []
    conflict = sql.SQL("DO UPDATE SET {}").format(sql.SQL(", ").join(
        sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(n)) for n in updates)) if updates else sql.SQL("DO NOTHING")
    if updates and update_when is not None:
        conflict = sql.SQL("{} WHERE {}").format(conflict, update_when)
    query = sql.SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) {}").format(
        target,
        sql.SQL(", ").join(map(sql.Identifier, names)),
        sql.SQL(", ").join(sql.Placeholder() * len(names)),
        sql.SQL(", ").join(map(sql.Identifier, key)),
        conflict,
    )
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(query, values)
        return cur.rowcount


def upsert_run(conn: Connection, spec: DatasetSpec, run: Mapping[str, Any]) -> bool:
    """Insert or update the row of run["logical_date"], setting only the keys given; False when the
    night's row was kept.

    A rerun of the same date overwrites its row instead of adding one, except that a row whose
    run published predictions is only replaced by a run that published too: a rerun that failed
    (or published nothing) leaves the row that describes the predictions consumers read, and is
    kept in run_attempts. An unknown key is a ValueError (a typo must not vanish). `details` (a
    dict) is stored as jsonb and replaced whole, so a rerun drops stale entries.
    """
    unknown = [k for k in run if k not in _RUN_COLUMNS]
    if unknown:
        raise ValueError(f"upsert_run: unknown key {unknown[0]!r} (allowed: {', '.join(RUN_COLUMNS)})")
    if run.get("logical_date") is None:
        raise ValueError("upsert_run: 'logical_date' is required")
    target = table(spec, PIPELINE_RUNS)
    published_first = sql.SQL("coalesce({t}.rows_published, 0) = 0 OR coalesce(EXCLUDED.rows_published, 0) > 0 "
                              "OR {t}.dag_run_id IS NOT DISTINCT FROM EXCLUDED.dag_run_id").format(t=target)
    return insert_row(conn, target, run, ("logical_date",), update=True, update_when=published_first) == 1


SERVING_LOCK_CLASS = 0x4E53  # "NS": the first key of the two-key advisory lock, the schema's id the second


@contextmanager
def serving_lock(conn: Connection, spec: DatasetSpec) -> Iterator[None]:
    """Held while the champion alias moves (promotion, rollback) or a night is written with the champion
    (publish, republish), so that these never interleave for one spec's warehouse schema: a publish
    that checked the champion writes before the alias can move, and a rollback waits for it.

    A session-level advisory lock: held across the caller's transactions, released by the server
    if the process dies.
    """
    key = (SERVING_LOCK_CLASS, _schema_lock_id(spec.warehouse.schema))
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s, %s)", key)
    try:
        yield
    finally:
        if not conn.broken and not conn.closed:  # a lost session has lost its locks already
            with conn.transaction(), conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(%s, %s)", key)


def record_attempt(conn: Connection, spec: DatasetSpec, attempt: Mapping[str, Any]) -> None:
    """Insert or update the run_attempts row of attempt["dag_run_id"] (one per DAG run).

    Written for every run, dry runs included: pipeline_runs keeps the latest run of a night,
    this table keeps them all, so a failure that a rerun fixed is still on record. A retry of
    the record task rewrites its own row, never adds one. Unknown keys are refused, as in upsert_run.
    """
    unknown = [k for k in attempt if k not in ATTEMPT_COLUMNS]
    if unknown:
        raise ValueError(f"record_attempt: unknown key {unknown[0]!r} (allowed: {', '.join(ATTEMPT_COLUMNS)})")
    missing = [k for k in ("dag_run_id", "logical_date", "decision") if attempt.get(k) is None]
    if missing:
        raise ValueError(f"record_attempt: {missing[0]!r} is required")
    insert_row(conn, table(spec, RUN_ATTEMPTS), attempt, ("dag_run_id",), update=True)


def attempts(conn: Connection, spec: DatasetSpec, night: dt.date | None = None) -> list[dict[str, Any]]:
    """Every run_attempts row (of one night, if given), oldest first; [] when there is no table yet."""
    if not table_exists(conn, spec, RUN_ATTEMPTS):
        return []
    where = sql.SQL("WHERE logical_date = %s") if night else sql.SQL("")
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql.SQL("SELECT * FROM {} {} ORDER BY finished_at, dag_run_id").format(
            table(spec, RUN_ATTEMPTS), where), (night,) if night else ())
        return cur.fetchall()


def recent_row_counts(conn: Connection, spec: DatasetSpec, before: dt.date, days: int) -> list[int]:
    """rows_in of the last `days` validated runs before `before`, newest first ([] when none).

    The row-count norm compares tonight with recent good nights only: a night that failed
    validation must not drag the norm down. No table yet (first run) means no history.
    """
    with conn.transaction(), conn.cursor() as cur:
        if not _exists(cur, spec, PIPELINE_RUNS):
            return []
        cur.execute(
            sql.SQL("SELECT rows_in FROM {} WHERE logical_date < %s AND validation_passed AND rows_in IS NOT NULL "
                    "ORDER BY logical_date DESC LIMIT %s").format(table(spec, PIPELINE_RUNS)),
            (before, days),
        )
        return [int(r[0]) for r in cur.fetchall()]


def runs(conn: Connection, spec: DatasetSpec, days: int, until: dt.date | None = None) -> list[dict[str, Any]]:
    """Every column of the pipeline_runs rows of the `days` nights up to `until` (default: the
    newest night recorded), oldest first; [] when there is no table or no row yet.

    ``SELECT *`` on purpose: a column added by a later migration reaches the caller unchanged.
    """
    runs_table = table(spec, PIPELINE_RUNS)
    with conn.transaction():
        with conn.cursor() as cur:
            if not _exists(cur, spec, PIPELINE_RUNS):
                return []
            if until is None:
                cur.execute(sql.SQL("SELECT max(logical_date) FROM {}").format(runs_table))
                until = cur.fetchone()[0]
                if until is None:
                    return []
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(sql.SQL("SELECT * FROM {} WHERE logical_date > %s AND logical_date <= %s "
                                "ORDER BY logical_date").format(runs_table), (until - dt.timedelta(days=days), until))
            return cur.fetchall()


# ---------------------------------------------------------------- model versions


def upsert_model_version(conn: Connection, spec: DatasetSpec, row: Mapping[str, Any]) -> None:
    """Insert or update the model_versions row of (row["model_name"], row["version"]), setting the keys given.

    A version judged again (a rerun, or a reused version) keeps ``blessed`` true once it was: the
    column says it passed the gate once, which is what a rollback asks of a version. An unknown
    key is refused (a typo must not vanish). champion_from/to are refresh_champion_periods' own.
    """
    _check_model_version(row)
    values = {**row, "updated_at": dt.datetime.now(dt.timezone.utc)}
    if isinstance(values.get("holdout_metrics"), Mapping):
        values["holdout_metrics"] = Jsonb(values["holdout_metrics"])
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(_model_version_upsert(spec, list(values)), list(values.values()))


def _check_model_version(row: Mapping[str, Any]) -> None:
    """Refuse a key model_versions does not have (or the serving period, which the audit table decides)."""
    settable = [k for k in MODEL_VERSION_COLUMNS if k not in ("champion_from", "champion_to")]
    unknown = [k for k in row if k not in settable]
    if unknown:
        raise ValueError(f"upsert_model_version: unknown key {unknown[0]!r} (allowed: {', '.join(settable)})")
    missing = [k for k in MODEL_VERSION_KEY if row.get(k) is None]
    if missing:
        raise ValueError(f"upsert_model_version: {missing[0]!r} is required")


def _model_version_upsert(spec: DatasetSpec, names: list[str]) -> sql.Composed:
    """INSERT ... ON CONFLICT (model_name, version) DO UPDATE the columns given; blessed stays true once true."""
    target = table(spec, MODEL_VERSIONS)
    updates = [sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(n)) for n in names
               if n not in MODEL_VERSION_KEY and n != "blessed"]
    if "blessed" in names:
        updates.append(sql.SQL("blessed = CASE WHEN {t}.blessed THEN true ELSE EXCLUDED.blessed END").format(t=target))
    return sql.SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) DO UPDATE SET {}").format(
        target, sql.SQL(", ").join(map(sql.Identifier, names)), sql.SQL(", ").join(sql.Placeholder() * len(names)),
        sql.SQL(", ").join(map(sql.Identifier, MODEL_VERSION_KEY)), sql.SQL(", ").join(updates))


def refresh_champion_periods(conn: Connection, spec: DatasetSpec, model_name: str) -> list[int]:
    """Bring model_versions.champion_from/champion_to in line with champion_changes (its done rows); the
    versions that had no row yet (they served, but Nightshift never judged them: made champion outside
    it, or before this table) get a row of their own: returned, so the caller can fill in their run.

    champion_from is when the version last became champion; champion_to when the change after that
    one replaced it (NULL while it serves). Idempotent: run it again and nothing changes.
    """
    target, changes = table(spec, MODEL_VERSIONS), table(spec, CHANGES)
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(sql.SQL(
            "INSERT INTO {t} (model_name, version) SELECT DISTINCT model_name, to_version FROM {c} "
            "WHERE model_name = %(m)s AND state = 'done' ON CONFLICT DO NOTHING RETURNING version"
        ).format(t=target, c=changes), {"m": model_name})
        added = sorted(r[0] for r in cur.fetchall())
        cur.execute(sql.SQL(
            "WITH served AS (SELECT to_version, changed_at, lead(changed_at) OVER (ORDER BY changed_at, to_version) "
            "AS until FROM {c} WHERE model_name = %(m)s AND state = 'done'), "
            "latest AS (SELECT DISTINCT ON (to_version) to_version, changed_at, until FROM served "
            "ORDER BY to_version, changed_at DESC) "
            "UPDATE {t} m SET champion_from = l.changed_at, champion_to = l.until, updated_at = now() FROM latest l "
            "WHERE m.model_name = %(m)s AND m.version = l.to_version "
            "AND (m.champion_from, m.champion_to) IS DISTINCT FROM (l.changed_at, l.until)"
        ).format(t=target, c=changes), {"m": model_name})
    return added


def model_versions(conn: Connection, spec: DatasetSpec, model_name: str | None = None) -> list[dict[str, Any]]:
    """The model_versions rows (of one model, if given), newest version first; [] when there is no table yet."""
    if not table_exists(conn, spec, MODEL_VERSIONS):
        return []
    where = sql.SQL("WHERE model_name = %s") if model_name else sql.SQL("")
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql.SQL("SELECT * FROM {} {} ORDER BY model_name, version DESC").format(
            table(spec, MODEL_VERSIONS), where), (model_name,) if model_name else ())
        return cur.fetchall()


# ---------------------------------------------------------------- model_staleness


def record_staleness(conn: Connection, spec: DatasetSpec, rows: list[Mapping[str, Any]]) -> None:
    """Insert or replace the (day, model, version) rows given: a rerun of a night measures them again."""
    with conn.transaction():
        for row in rows:
            unknown = [k for k in row if k not in STALENESS_COLUMNS]
            if unknown:
                raise ValueError(f"record_staleness: unknown key {unknown[0]!r} (allowed: {', '.join(STALENESS_COLUMNS)})")
            insert_row(conn, table(spec, MODEL_STALENESS), row, STALENESS_KEY, update=True)


def staleness_history(conn: Connection, spec: DatasetSpec, until: dt.date, days: int) -> list[dict[str, Any]]:
    """The model_staleness rows of the `days` labelled days up to `until`, of the spec's model and metric."""
    query = sql.SQL("SELECT day, version, age_days, metric, rows FROM {} WHERE model_name = %s AND metric_name = %s "
                    "AND day <= %s AND day > %s ORDER BY day, version").format(table(spec, MODEL_STALENESS))
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, (spec.model_name, spec.promotion.metric, until, until - dt.timedelta(days=days)))
        return cur.fetchall()


# ---------------------------------------------------------------- ml_test_score


def record_test_score(conn: Connection, spec: DatasetSpec, night: dt.date, rows: list[Mapping[str, Any]]) -> None:
    """Replace the night's rows of ml_test_score with `rows` (one transaction): the night's latest recorded run
    speaks for it, as in pipeline_runs."""
    target = table(spec, ML_TEST_SCORE)
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(sql.SQL("DELETE FROM {} WHERE night = %s").format(target), (night,))
        for row in rows:
            unknown = [k for k in row if k not in TEST_SCORE_COLUMNS]
            if unknown:
                raise ValueError(f"record_test_score: unknown key {unknown[0]!r} (allowed: "
                                 f"{', '.join(TEST_SCORE_COLUMNS)})")
            names = list(row)
            columns = sql.SQL(", ").join(map(sql.Identifier, names))
            cur.execute(sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                target, columns, sql.SQL(", ").join(sql.Placeholder() * len(names))),
                [Jsonb(v) if k == "evidence" else v for k, v in row.items()])


def ml_test_scores(conn: Connection, spec: DatasetSpec, night: dt.date | None = None) -> list[dict[str, Any]]:
    """ml_test_score's rows (of `night`, or every night), by night and the rubric's order."""
    where = sql.SQL("WHERE night = %s") if night else sql.SQL("")
    order = sql.SQL("ORDER BY night, array_position(ARRAY['data', 'model', 'infrastructure', 'monitoring'], section), "
                    "number")
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql.SQL("SELECT * FROM {} {} {}").format(table(spec, ML_TEST_SCORE), where, order),
                    (night,) if night else ())
        return cur.fetchall()
