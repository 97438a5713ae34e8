"""Bad input, caught on real nightly DAG runs: every corrupted source fails validation loudly and harmlessly.

One subprocess (run_nights.py) runs real `dag.test` nights on real PostgreSQL, MLflow and Airflow:
a cold start that promotes v1, then one night per case below, each on its own date. For each
case the SOURCE table is corrupted for real with SQL (a dropped or added column, a changed
column type, nulls, out-of-range values, duplicate keys, deleted rows, ...), the nightly DAG
runs for that date, then the source table is dropped and created again (undoing any schema
change). A last clean night shows the pipeline still scores and publishes after all of it.

Each case must: fail the DAG run; record the night in churn.pipeline_runs as decision 'failed'
with validation_passed false and a validation failure message naming the column and the rule;
publish no prediction for that date; leave v1 champion; register no new model version.

Not here, on purpose (kept in tests/unit/test_validation.py): a timestamp outside the day and a
null timestamp. The snapshot selects rows by `event_ts >= day AND event_ts < day + 1`, so neither
kind of row can come through the source query into a night's snapshot.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pytest

ROWS = 1000
COLD_START = dt.date(2026, 4, 1)


def iso(day: dt.date, offset: int = 0) -> str:
    return (day + dt.timedelta(days=offset)).isoformat()


def on(day: dt.date) -> str:
    """The SQL condition selecting one day's rows of the source."""
    return f"event_ts >= '{iso(day)}' AND event_ts < '{iso(day, 1)}'"


@dataclass(frozen=True)
class Case:
    """One way to break the source: the SQL that breaks it, and what the failure must say."""

    sql: str  # {day} and {prev} are replaced by the night's date and the day before
    column: str | None  # the column the message must name (None: a table-level rule)
    words: tuple[str, ...]  # words of the rule the message must contain
    labelled_prev: bool = False  # load the previous day with its labels (labels of D-1 are checked on night D)
    snapshot: str = "current"  # which snapshot the failure is on
    problems: int = 1  # failures in the message: the one broken thing, nothing left over from another case


# Not bad input since issue 12 (source mapping): an extra source column is ignored (only the spec's
# columns are read) and a timestamp without time zone is local time in source.timezone
# (tests/unit/test_source_mapping.py holds both).
CASES: dict[str, Case] = {
    "missing column": Case(
        "ALTER TABLE churn_events DROP COLUMN age", "age", ("is missing", "the spec requires it")),
    "numbers stored as text": Case(
        "ALTER TABLE churn_events ALTER COLUMN age TYPE text USING age::text", "age",
        ("column 'age': values of type str are not numeric",)),  # the snapshot's column is typed text
    "entity key stored as text": Case(
        "ALTER TABLE churn_events ALTER COLUMN customer_id TYPE text USING customer_id::text", "customer_id",
        ("are not integers", "entity_key.type bigint")),
    "feature entirely null": Case(
        "UPDATE churn_events SET tenure_months = NULL WHERE {on}", "tenure_months",
        (f"{ROWS} of {ROWS} values (100.00%) are null (never allowed)",)),
    "nulls above the allowed share": Case(
        "UPDATE churn_events SET satisfaction_score = NULL WHERE {on} AND customer_id <= 300",
        "satisfaction_score", ("are null (allowed: at most 20.00%)",)),
    "NaN in a numeric feature": Case(
        "UPDATE churn_events SET logins_30d = 'NaN' WHERE {on} AND customer_id <= 3", "logins_30d",
        ("3 of", "are null (never allowed)")),
    "values outside the spec range": Case(
        "UPDATE churn_events SET monthly_charges = -10 WHERE {on} AND customer_id <= 20", "monthly_charges",
        ("20 of", "outside [0, 500]", "e.g. -10.0")),
    "infinity": Case(
        "UPDATE churn_events SET data_usage_gb = 'Infinity' WHERE {on} AND customer_id <= 2", "data_usage_gb",
        ("are +/-inf (never allowed)", "outside [0, 5000]"), problems=2),
    "unseen category beyond the allowed share": Case(
        "UPDATE churn_events SET region = 'mars' WHERE {on} AND customer_id <= 50", "region",
        ("50 of", "are not among the spec's categories (allowed: at most 1.00% unseen)", "e.g. 'mars'")),
    "blank category": Case(
        "UPDATE churn_events SET plan = '' WHERE {on} AND customer_id <= 5", "plan",
        ("5 of", "are not among the spec's categories", "e.g. ''")),
    "duplicate entity keys": Case(
        "CREATE TEMP TABLE dup ON COMMIT DROP AS SELECT * FROM churn_events WHERE {on} AND customer_id <= 10; "
        "UPDATE dup SET event_ts = event_ts + interval '1 microsecond'; "
        "INSERT INTO churn_events SELECT * FROM dup",
        "customer_id", ("20 of", "are duplicated keys")),
    "null entity key": Case(
        "ALTER TABLE churn_events DROP CONSTRAINT churn_events_pkey; "
        "ALTER TABLE churn_events ALTER COLUMN customer_id DROP NOT NULL; "
        "UPDATE churn_events SET customer_id = NULL WHERE {on} AND customer_id <= 3",
        "customer_id", ("3 of", "are null (the entity key never is)")),
    "empty snapshot": Case(
        "DELETE FROM churn_events WHERE {on}", None, ("has 0 rows", "expected at least")),
    "row count far below the recent norm": Case(
        "DELETE FROM churn_events WHERE {on} AND customer_id > 300", None,
        ("has 300 rows", f"expected at least {ROWS // 2} rows", "min_row_ratio 0.5 x median")),
    "label outside {0, 1}": Case(
        "UPDATE churn_events SET churned = 2 WHERE event_ts >= '{prev}' AND event_ts < '{day}' AND customer_id <= 5",
        "churned", ("5 of", "are not 0 or 1", "e.g. 2"), labelled_prev=True, snapshot="labelled"),
    "missing label column": Case(
        "ALTER TABLE churn_events DROP COLUMN churned", "churned", ("is missing", "the spec requires it")),
    "missing entity key column": Case(
        "ALTER TABLE churn_events DROP COLUMN customer_id", "customer_id", ("is missing", "the spec requires it")),
}
NIGHTS = {name: COLD_START + dt.timedelta(days=2 * (i + 1)) for i, name in enumerate(CASES)}  # a free day between
# The control night runs last but is dated the free day right after the cold start: model age is
# counted in nights up to the run date, and the bad nights span about 40 of them (more than the
# spec's max_model_age_days), so a later date would rightly retrain instead of being a control.
CLEAN_NIGHT = COLD_START + dt.timedelta(days=1)
# Not bad input but a bad serving path (issue 14 part 4): the serving path builds monthly_charges its own way
# (injected by run_nights.py's skew_serving step) on a free day between the cases; the source is clean.
SKEW_NIGHT = COLD_START + dt.timedelta(days=3)


def case_steps(name: str, case: Case) -> list[dict]:
    day = NIGHTS[name]
    steps = [{"load_days": {"from": iso(day, -1), "to": iso(day, -1), "labels": True}}] if case.labelled_prev else []
    return [
        *steps,
        {"load_days": {"from": iso(day), "to": iso(day)}},
        {"sql": case.sql.format(on=on(day), day=iso(day), prev=iso(day, -1))},
        {"run": {"day": iso(day), "conf": {"note": name}}},
        {"recreate_source": True},  # undo the damage, schema changes included
    ]


PLAN = {
    "rows": ROWS,
    "steps": [
        {"load_days": {"from": iso(COLD_START, -18), "to": iso(COLD_START, -1), "labels": True}},
        {"load_days": {"from": iso(COLD_START), "to": iso(COLD_START)}},
        {"run": {"day": iso(COLD_START)}},
        {"recreate_source": True},
        *(step for name, case in CASES.items() for step in case_steps(name, case)),
        {"load_days": {"from": iso(SKEW_NIGHT), "to": iso(SKEW_NIGHT)}},
        {"skew_serving": {"feature": "monthly_charges", "factor": 1.5}},
        {"run": {"day": iso(SKEW_NIGHT), "conf": {"note": "skewed serving feature"}}},
        {"skew_serving": {}},
        {"recreate_source": True},
        {"load_days": {"from": iso(CLEAN_NIGHT, -1), "to": iso(CLEAN_NIGHT, -1), "labels": True}},
        {"load_days": {"from": iso(CLEAN_NIGHT), "to": iso(CLEAN_NIGHT)}},
        {"run": {"day": iso(CLEAN_NIGHT), "conf": {"note": "clean night after the bad ones"}}},
    ],
}


@pytest.fixture(scope="module")
def nights(run_plan, tmp_path_factory):
    home = tmp_path_factory.mktemp("nightshift-bad-input")
    runs, warehouse = run_plan(PLAN, home)
    return {"runs": {r["day"]: r for r in runs}, "home": home, "warehouse": warehouse}


def query(nights, text, args=()):
    with nights["warehouse"].cursor() as cur:
        cur.execute(text, args)
        return cur.fetchall()


def recorded(nights, day: dt.date) -> dict:
    rows = query(nights, "SELECT decision, validation_passed, rows_published, challenger_version, retrain_reason, "
                         "note, details FROM churn.pipeline_runs WHERE logical_date = %s", (day,))
    assert len(rows) == 1, f"no single pipeline_runs row for {day}: {rows}"
    keys = ("decision", "valid", "published", "challenger", "reason", "note", "details")
    return dict(zip(keys, rows[0]))


def test_cold_start_promoted_v1_and_published(nights):
    run = nights["runs"][iso(COLD_START)]
    assert (run["state"], run["champion"]) == ("success", 1), run
    first = recorded(nights, COLD_START)
    assert (first["decision"], first["challenger"], first["published"]) == ("promoted", 1, ROWS)


@pytest.mark.parametrize("name", list(CASES))
def test_corrupt_source_fails_validation_naming_column_and_rule(nights, name):
    case, day = CASES[name], NIGHTS[name]
    run = nights["runs"][iso(day)]
    assert run["state"] == "failed", run
    row = recorded(nights, day)
    assert row["note"] == name
    assert (row["decision"], row["valid"], row["published"]) == ("failed", False, 0), row
    failure = row["details"]["validation_failure"]
    assert failure and failure["snapshot"] == case.snapshot, row["details"]
    message = failure["message"]
    assert f"Snapshot validation failed: {case.problems} problem(s)" in message, message
    if case.column is not None:
        assert f"'{case.column}'" in message, message
    for words in case.words:
        assert words in message, message
    assert "could not run" not in message, message
    states = row["details"]["task_states"]
    assert (states.get("snapshot"), states.get("validate")) == ("success", "failed"), states


@pytest.mark.parametrize("name", list(CASES))
def test_corrupt_source_publishes_nothing_and_keeps_the_champion(nights, name):
    day = NIGHTS[name]
    assert query(nights, "SELECT count(*) FROM churn.predictions WHERE score_date = %s", (day,)) == [(0,)]
    row = recorded(nights, day)
    assert row["challenger"] is None and row["reason"] is None
    assert nights["runs"][iso(day)]["champion"] == 1


def test_no_model_version_was_registered_after_v1(nights):
    from mlflow import MlflowClient

    uri = f"sqlite:///{nights['home'] / 'mlflow' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    versions = client.search_model_versions("name = 'nightshift_churn'")
    assert [str(v.version) for v in versions] == ["1"]
    assert str(client.get_model_version_by_alias("nightshift_churn", "champion").version) == "1"


def test_clean_night_after_the_bad_ones_publishes_with_v1(nights):
    """The control: the source was restored and the pipeline still works, so 'nothing published' above
    means the bad input was stopped, not that publishing was broken."""
    run = nights["runs"][iso(CLEAN_NIGHT)]
    assert (run["state"], run["champion"]) == ("success", 1), run
    clean = recorded(nights, CLEAN_NIGHT)
    assert (clean["decision"], clean["valid"], clean["published"]) == ("skipped", True, ROWS), clean
    assert query(nights, "SELECT count(*), min(model_version), max(model_version) FROM churn.predictions "
                         "WHERE score_date = %s", (CLEAN_NIGHT,)) == [(ROWS, 1, 1)]
    assert sorted(query(nights, "SELECT logical_date FROM churn.pipeline_runs WHERE decision = 'failed'")) == \
        sorted((d,) for d in [*NIGHTS.values(), SKEW_NIGHT])


def test_a_skewed_serving_feature_fails_the_score_step_before_anything_is_published(nights):
    """Training/serving skew (skew.py): v1 no longer reproduces the scores it gave its logged training sample
    through tonight's serving path, so the score step fails, naming the version and the largest difference,
    and publish never runs; the champion stays, and the clean night after it publishes again."""
    run = nights["runs"][iso(SKEW_NIGHT)]
    assert (run["state"], run["champion"]) == ("failed", 1), run
    row = recorded(nights, SKEW_NIGHT)
    assert (row["decision"], row["valid"], row["published"], row["note"]) == (
        "failed", True, 0, "skewed serving feature"), row
    states = row["details"]["task_states"]
    assert (states["score"], states["publish"]) == ("failed", "upstream_failed"), states
    [root] = row["details"]["root_failure"]
    assert root["task"] == "score", root
    assert "nightshift_churn v1 does not reproduce the scores it gave its fixed training sample" in root["message"]
    assert "largest difference" in root["message"] and "nothing is published" in root["message"], root
    assert query(nights, "SELECT count(*) FROM churn.predictions WHERE score_date = %s", (SKEW_NIGHT,)) == [(0,)]
