"""A move of the champion alias made outside Nightshift (as the MLflow UI makes it) is found by comparing the
alias with the last audit row, recorded once as an `external` change, alerted, and counted as what served.

Real PostgreSQL and a real MLflow registry (SQLite store); the alias is moved with MLflow's own client call.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime as dt
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from include.nightshift import audit, warehouse
from include.nightshift.external import ACTOR, check_external_move, external_alert
from include.nightshift.promotion import repair_pending

ROOT = Path(__file__).resolve().parents[2]
_names = itertools.count(1)
NIGHT = dt.date(2026, 3, 4)


@pytest.fixture
def spec(churn_spec, registry, pg_conn, tmp_path):
    """A model of its own with versions 1..3; v1 then v2 promoted by Nightshift (alias and audit rows)."""
    name = f"ext{next(_names)}"
    spec = dataclasses.replace(churn_spec, name=name,
                               warehouse=dataclasses.replace(churn_spec.warehouse, schema=name, reader_role=None))
    registry.client.create_registered_model(spec.model_name)
    for _ in range(3):
        registry.client.create_model_version(spec.model_name, source=str(tmp_path))
    audit.ensure_audit(pg_conn, spec)
    for before, version in ((None, 1), (1, 2)):
        registry.promote(spec.model_name, version, {"promote": True})
        audit.record_change(pg_conn, spec, {"event": "promote", "model_name": spec.model_name, "from_version": before,
                                            "to_version": version, "actor": "nightshift", "reason": "gate passed",
                                            "dag_run_id": f"night_{version}"})
    return spec


def _move_in_mlflow(registry, spec, version: int) -> None:
    """What the MLflow UI's "Add/Edit alias" does: one call to the registry, nothing else."""
    registry.client.set_registered_model_alias(spec.model_name, "champion", str(version))


def _rows(conn, spec) -> list[tuple]:
    return [(r["event"], r["from_version"], r["to_version"], r["dag_run_id"]) for r in audit.changes(conn, spec)]


def test_an_alias_where_nightshift_left_it_is_not_a_move(registry, spec, pg_conn):
    assert check_external_move(pg_conn, registry, spec, dag_run_id="night_3", night=NIGHT) is None
    assert [r[0] for r in _rows(pg_conn, spec)] == ["promote", "promote"]


def test_a_move_in_mlflow_is_recorded_once_as_external_and_alerted(registry, spec, pg_conn):
    _move_in_mlflow(registry, spec, 3)

    found = check_external_move(pg_conn, registry, spec, dag_run_id="scheduled__night_3", night=NIGHT)
    again = check_external_move(pg_conn, registry, spec, dag_run_id="scheduled__night_3", night=NIGHT)  # a retry
    rerun = check_external_move(pg_conn, registry, spec, dag_run_id="manual__rerun", night=NIGHT)  # another run

    assert (found["from_version"], found["to_version"]) == (2, 3)
    assert again is None and rerun is None
    assert _rows(pg_conn, spec)[-1] == ("external", 2, 3, "scheduled__night_3")
    assert len(_rows(pg_conn, spec)) == 3
    (row,) = [r for r in audit.changes(pg_conn, spec) if r["event"] == "external"]
    assert (row["actor"], row["state"], row["night"]) == (ACTOR, "done", NIGHT)
    assert row["details"]["passed_gate"] is False and row["details"]["registered_model_last_updated"]
    assert audit.last_served(pg_conn, spec, spec.model_name) == 3  # it is what serves now

    text, facts = external_alert(spec, found)
    assert "moved outside Nightshift, v2 -> v3" in text and "NEVER passed the promotion gate" in text
    assert (facts["from_version"], facts["to_version"]) == (2, 3)


def test_a_dry_run_reports_the_move_and_writes_nothing(registry, spec, pg_conn):
    _move_in_mlflow(registry, spec, 1)
    found = check_external_move(pg_conn, registry, spec, dag_run_id="manual__dry", night=NIGHT, record=False)
    assert (found["from_version"], found["to_version"]) == (2, 1)
    assert "not recorded" in external_alert(spec, found, recorded=False)[0]
    assert "NEVER" not in external_alert(spec, found)[0]  # v1 served through the gate
    assert [r[0] for r in _rows(pg_conn, spec)] == ["promote", "promote"]


def test_a_promotion_in_flight_is_not_an_outside_move(registry, spec, pg_conn):
    """The intent is written, the alias moved, the row not yet marked done (or the task died there)."""
    change = {"event": "promote", "model_name": spec.model_name, "from_version": 2, "to_version": 3,
              "actor": "nightshift", "reason": "gate passed", "dag_run_id": "night_3"}
    audit.record_intent(pg_conn, spec, change)
    _move_in_mlflow(registry, spec, 3)
    assert check_external_move(pg_conn, registry, spec, dag_run_id="other", night=NIGHT) is None
    repair_pending(registry, pg_conn, spec)  # the next change settles it: done
    assert _rows(pg_conn, spec)[-1] == ("promote", 2, 3, "night_3")


def test_no_champion_is_not_an_outside_move(registry, spec, pg_conn):
    registry.client.delete_registered_model_alias(spec.model_name, "champion")  # lost_champion's case
    assert check_external_move(pg_conn, registry, spec, dag_run_id="night_3", night=NIGHT) is None


def test_two_runs_looking_at_once_record_one_row(registry, spec, pg_conn, pg_uri):
    _move_in_mlflow(registry, spec, 3)

    def look(run_id: str):
        with psycopg.connect(pg_uri, autocommit=True) as conn:
            return check_external_move(conn, registry, spec, dag_run_id=run_id, night=NIGHT)

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        found = list(pool.map(look, ["nightly_run", "rollback_run"]))
    assert sum(f is not None for f in found) == 1
    assert [r[0] for r in _rows(pg_conn, spec)] == ["promote", "promote", "external"]


def test_a_rollback_without_a_target_undoes_the_outside_move(registry, spec, pg_conn):
    """The external row is what served: the previous champion of the version it set is the one before it."""
    _move_in_mlflow(registry, spec, 3)
    check_external_move(pg_conn, registry, spec, dag_run_id="night_3", night=NIGHT)
    assert audit.previous_champion(pg_conn, spec, spec.model_name, 3) == 2


def test_an_existing_warehouse_accepts_external_rows_after_the_migration(registry, spec, pg_conn):
    """A warehouse at version 7 (CHECK of promote, rollback only) is upgraded by the next ensure_warehouse."""
    table = warehouse.table(spec, warehouse.CHANGES)
    with pg_conn.transaction(), pg_conn.cursor() as cur:
        cur.execute(psycopg.sql.SQL("ALTER TABLE {} DROP CONSTRAINT champion_changes_event_check").format(table))
        cur.execute(psycopg.sql.SQL("ALTER TABLE {} ADD CONSTRAINT champion_changes_event_check "
                                    "CHECK (event IN ('promote', 'rollback'))").format(table))
        cur.execute(psycopg.sql.SQL("DELETE FROM {} WHERE version >= 8").format(
            warehouse.table(spec, warehouse.SCHEMA_VERSION)))
    _move_in_mlflow(registry, spec, 3)
    assert check_external_move(pg_conn, registry, spec, dag_run_id="night_3", night=NIGHT) is not None
    assert _rows(pg_conn, spec)[-1][0] == "external"


# --- what the rollback form may restore (the "Model versions" page) ---------------------------------------


def test_version_choices_name_the_serving_version_and_those_a_rollback_accepts(registry, spec, pg_conn):
    from include.nightshift.reports import render
    from include.nightshift.versions import version_choices

    _move_in_mlflow(registry, spec, 3)  # v3 never passed the gate, yet serves: the page says both
    choices = version_choices(registry, spec.model_name)

    assert choices["serving"] == 3 and choices["restorable"] == [2, 1]
    assert [(r["version"], r["serving"], r["restorable"], r["why"]) for r in choices["versions"]] == [
        (3, True, False, "serving now"), (2, False, True, "passed the promotion gate once"),
        (1, False, True, "passed the promotion gate once")]
    page = render("models.html", title="Model versions", when="now", **choices)
    assert "Serving: v3" in page and "May be restored: v2, v1" in page

    registry.client.set_registered_model_alias(spec.model_name, "champion", "2")
    registry.client.set_model_version_tag(spec.model_name, "3", "nightshift.blessed", "false")
    registry.client.delete_registered_model_alias(spec.model_name, "champion")
    choices = version_choices(registry, spec.model_name)
    assert choices["serving"] is None and choices["restorable"] == [2, 1]
    assert "No version is serving" in render("models.html", title="Model versions", when="now", **choices)
    assert version_choices(registry, "nightshift_no_such_model")["versions"] == []


def test_the_rollback_form_links_to_the_page_and_never_asks_mlflow_when_parsed():
    """The version field's markdown links to the DAG's page; the DAG file imports no MLflow (parse time)."""
    code = ("import sys, json; import dags.nightshift_rollback as d; "
            "p = d.nightshift_churn_rollback.params.get_param('version'); "
            "print(json.dumps([p.description, p.schema['description_md'], 'mlflow' in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'plugins'}"})
    assert out.returncode == 0, out.stderr[-2000:]
    description, markdown, mlflow_imported = json.loads(out.stdout.strip().splitlines()[-1])
    assert description is None  # Airflow's form renders description_md only when description is unset
    assert "/nightshift/models/nightshift_churn_rollback)" in markdown
    assert mlflow_imported is False


# --- the model_versions row of a judged version -----------------------------------------------------------


def test_a_judged_version_s_window_is_the_days_training_cut(churn_spec):
    """versions.windows names exactly the days training.split_train_holdout puts in training and holdout."""
    import pandas as pd

    from include.nightshift import training
    from include.nightshift.demo_data import generate_day
    from include.nightshift.steps import TrainingStep, VerdictStep
    from include.nightshift.versions import judged_row, windows

    end, days = training.training_days(churn_spec, NIGHT)
    data = pd.concat([generate_day(d, 20) for d in sorted(days + [end + dt.timedelta(days=1)])], ignore_index=True)
    train, holdout = training.split_train_holdout(data, churn_spec, end)
    got = windows(churn_spec, end)

    def day(frame: pd.DataFrame) -> pd.Series:
        return frame[churn_spec.timestamp].dt.tz_convert(churn_spec.source.timezone).dt.date

    assert (got["train_from"], got["train_to"]) == (day(train).min(), day(train).max())
    assert (got["holdout_from"], got["holdout_to"]) == (day(holdout).min(), day(holdout).max())

    trained = TrainingStep(version=4, run_id="r4", train_rows=len(train), holdout_rows=len(holdout), holdout_end=end,
                           holdout_scores_url="x", snapshots_url="y", family="xgboost")
    verdict = VerdictStep(promote=False, metric="roc_auc", challenger=0.71, champion=0.74, baseline=0.69,
                          message="REJECT", checks=[], policy="force", dag_run_id="manual__4", champion_version=2,
                          challenger_version=4, promoted=True, policy_note="promotion_policy=force",
                          evaluation={"overall": {"challenger": {"roc_auc": 0.71}}})
    row = judged_row(churn_spec, trained, verdict, night=NIGHT, snapshot_hashes=["a", "b"])
    assert (row["blessed"], row["verdict"], row["holdout_metric"], row["champion_metric"]) == (
        False, "promotion_policy=force", 0.71, 0.74)  # forced through: served, yet never blessed by the gate
    assert row["holdout_metrics"] == {"challenger": {"roc_auc": 0.71}} and row["trained_for"] == NIGHT
