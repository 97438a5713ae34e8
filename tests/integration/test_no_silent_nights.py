"""No silent nights, on real nightly DAG runs: a night with no model is recorded, alerted and (by
default) fails; every attempt of a night stays on record after a rerun fixed it.

One subprocess (run_nights.py) runs real `dag.test` nights on real PostgreSQL, MLflow and Airflow,
on a copy of the churn spec in a specs folder of its own (so that one run can allow a night
without predictions). Small on purpose (300 rows a day, four runs):

1. cold start, labels of the history scrambled: the first challenger cannot reach the promotion
   floor, so after the gate there is no champion. scoring.allow_no_predictions is false: the run
   FAILS, is recorded as decision no_model, alerts (event no_model), publishes nothing;
2. the same night again with allow_no_predictions true: no_model, alerted, and the run is green;
3. the labels restored, the same night again: a challenger is promoted and the night published;
4. the next night as a dry run: an attempt flagged dry_run, no pipeline_runs row;
5. the published night once more, without rerun_published: refused before anything is read, the
   night's predictions and pipeline_runs row left as they were (issue 11 item 9);
6. every label of the source set to 0, the next night with force_retrain: train fails (one class),
   but the champion still scores and publishes the night; the run fails and says why (item 6);
7. a night in the future: refused by every task, nothing recorded;
8. a run whose conf has a key no parameter declares: refused before anything is read, naming it.

Then pipeline_runs holds one row for the night (the promoted rerun) and run_attempts all three
attempts, the two without predictions included; champion_changes names the night of the promotion.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ROWS = 300  # 14 training days x 300 clears training.min_rows (2000); the holdout has 900
NIGHT = dt.date(2026, 5, 1)
NEXT = NIGHT + dt.timedelta(days=1)
FUTURE = dt.date(2099, 1, 1)
ONE_CLASS = "UPDATE churn_events SET churned = 0 WHERE churned IS NOT NULL"
# Labels that carry no signal (about 20% positive, by a hash of the row): no model can reach the floor.
SCRAMBLE = ("UPDATE churn_events SET churned = (abs(hashtext(customer_id::text || event_ts::text)) % 5 = 0)::int "
            "WHERE churned IS NOT NULL")
ALERT = "nightshift no_model:"


def iso(day: dt.date, offset: int = 0) -> str:
    return (day + dt.timedelta(days=offset)).isoformat()


def spec_copy(folder: Path) -> Path:
    """churn.yaml with scoring.allow_no_predictions written out as false (then flipped by the plan)."""
    text = (ROOT / "include" / "specs" / "churn.yaml").read_text()
    text = re.sub(r"\n  allow_no_predictions:[^\n]*", "", text)
    text = text.replace("\nscoring:\n", "\nscoring:\n  allow_no_predictions: false\n", 1)
    folder.mkdir()
    path = folder / "churn.yaml"
    path.write_text(text)
    return path


def plan(spec: Path) -> dict:
    history = {"load_days": {"from": iso(NIGHT, -18), "to": iso(NIGHT, -1), "labels": True}}
    allow = ["allow_no_predictions: false", "allow_no_predictions: true"]
    return {
        "rows": ROWS, "spec": str(spec), "specs_dir": str(spec.parent),
        "steps": [
            history, {"load_days": {"from": iso(NIGHT), "to": iso(NIGHT)}}, {"sql": SCRAMBLE},
            {"run": {"day": iso(NIGHT), "conf": {"note": "no model, not allowed"}}},
            {"edit_spec": {"path": str(spec), "replace": allow}},
            {"run": {"day": iso(NIGHT), "conf": {"note": "no model, allowed"}}},
            {"edit_spec": {"path": str(spec), "replace": allow[::-1]}},
            {"recreate_source": True}, history, {"load_days": {"from": iso(NIGHT), "to": iso(NEXT)}},
            {"run": {"day": iso(NIGHT), "conf": {"note": "labels fixed"}}},
            {"reveal": iso(NIGHT)},
            {"run": {"day": iso(NEXT), "conf": {"note": "dry", "dry_run": True}}},
            {"run": {"day": iso(NIGHT), "conf": {"note": "unasked rerun"}}},
            {"sql": ONE_CLASS},
            {"run": {"day": iso(NEXT), "conf": {"note": "one-class retrain", "force_retrain": True}}},
            {"run": {"day": FUTURE.isoformat(), "conf": {"note": "future"}}},
            {"run": {"day": iso(NEXT, 1), "conf": {"note": "typo", "typo_param": 1}}},
        ],
    }


@pytest.fixture(scope="module")
def nights(run_plan, tmp_path_factory):
    home = tmp_path_factory.mktemp("nightshift-no-silent-nights")
    runs, warehouse = run_plan(plan(spec_copy(home / "specs")), home)
    assert len(runs) == 8, runs
    return {"runs": runs, "warehouse": warehouse, "log": Path(runs[0]["log"]).read_text()}


def query(nights, text, args=()):
    with nights["warehouse"].cursor() as cur:
        cur.execute(text, args)
        return cur.fetchall()


def attempt(nights, run: dict) -> dict:
    cols = ("logical_date", "decision", "failed_tasks", "dry_run", "rows_published", "note", "conf", "details")
    rows = query(nights, f"SELECT {', '.join(cols)} FROM churn.run_attempts WHERE dag_run_id = %s", (run["run_id"],))
    assert len(rows) == 1, (run, rows)
    return dict(zip(cols, rows[0]))


def published(nights, day: dt.date) -> int:
    return query(nights, "SELECT count(*) FROM churn.predictions WHERE score_date = %s", (day,))[0][0]


def test_no_champion_after_the_gate_fails_the_run_alerts_and_is_recorded_no_model(nights):
    first = nights["runs"][0]
    assert (first["state"], first["champion"]) == ("failed", None), first
    row = attempt(nights, first)
    assert (row["decision"], row["failed_tasks"], row["rows_published"], row["dry_run"]) == (
        "no_model", ["plan_shards", "publish", "score", "score_shard"], 0, False), row  # score failed, the rest never ran
    states = row["details"]["task_states"]
    assert (states["evaluate"], states["score"], states["publish"]) == ("success", "failed", "upstream_failed")
    assert [c["name"] for c in row["details"]["verdict"] if not c["passed"]][:1] == ["floor"]  # why: the gate
    assert ALERT in nights["log"]
    assert "scoring.allow_no_predictions is false: the run fails" in nights["log"]  # the score task's error


def test_allowed_by_the_spec_a_night_without_a_model_is_green_but_still_recorded_and_alerted(nights):
    second = nights["runs"][1]
    assert (second["state"], second["champion"]) == ("success", None), second
    row = attempt(nights, second)
    assert (row["decision"], row["failed_tasks"], row["rows_published"]) == ("no_model", [], 0), row
    assert row["details"]["task_states"]["score"] == "skipped"
    assert row["details"]["task_states"]["publish"] == "skipped"  # not run with nothing scored (nor its shards)
    assert nights["log"].count(ALERT) == 2  # one alert per night without predictions, none after the fix


def test_a_rerun_that_fixed_the_night_publishes_and_pipeline_runs_keeps_only_it(nights):
    fixed = nights["runs"][2]
    assert fixed["state"] == "success" and fixed["champion"] is not None, fixed
    assert published(nights, NIGHT) == ROWS
    assert query(nights, "SELECT dag_run_id, decision, rows_published, note FROM churn.pipeline_runs "
                         "WHERE logical_date = %s", (NIGHT,)) == [(fixed["run_id"], "promoted", ROWS, "labels fixed")]


def test_run_attempts_keeps_every_attempt_of_the_night_even_those_a_rerun_fixed(nights):
    first, second, fixed, _, unasked = nights["runs"][:5]
    assert query(nights, "SELECT dag_run_id, decision FROM churn.run_attempts WHERE logical_date = %s "
                         "ORDER BY finished_at", (NIGHT,)) == [
        (first["run_id"], "no_model"), (second["run_id"], "no_model"), (fixed["run_id"], "promoted"),
        (unasked["run_id"], "failed")]  # the refused rerun too
    # The README's example: every attempt that left consumers without predictions, fixed since or not.
    assert query(nights, "SELECT a.dag_run_id FROM churn.run_attempts a JOIN churn.pipeline_runs r USING (logical_date) "
                         "WHERE a.decision IN ('failed', 'no_model') AND NOT a.dry_run AND r.decision = 'promoted' "
                         "ORDER BY a.finished_at") == [(first["run_id"],), (second["run_id"],), (unasked["run_id"],)]
    assert attempt(nights, second)["conf"]["note"] == "no model, allowed"


def test_a_dry_run_is_an_attempt_flagged_dry_and_not_a_night(nights):
    dry = nights["runs"][3]
    assert dry["state"] == "success", dry
    row = attempt(nights, dry)
    assert (row["logical_date"], row["dry_run"], row["rows_published"], row["conf"]["dry_run"]) == (NEXT, True, 0, True)
    later = nights["runs"][5]  # the next run of that night, which published it: the dry run wrote nothing there
    assert query(nights, "SELECT dag_run_id FROM churn.pipeline_runs WHERE logical_date = %s", (NEXT,)) == [
        (later["run_id"],)]
    assert query(nights, "SELECT DISTINCT dag_run_id FROM churn.predictions WHERE score_date = %s", (NEXT,)) == [
        (later["run_id"],)]


def test_champion_changes_names_the_night_of_the_promotion(nights):
    fixed = nights["runs"][2]
    assert query(nights, "SELECT event, to_version, dag_run_id, night FROM churn.champion_changes") == [
        ("promote", fixed["champion"], fixed["run_id"], NIGHT)]


def test_a_published_night_is_not_rerun_unless_the_run_asks(nights):
    fixed, unasked = nights["runs"][2], nights["runs"][4]
    assert unasked["state"] == "failed", unasked
    row = attempt(nights, unasked)
    assert row["decision"] == "failed" and "snapshot" in row["failed_tasks"], row
    assert query(nights, "SELECT dag_run_id, decision, rows_published FROM churn.pipeline_runs "
                         "WHERE logical_date = %s", (NIGHT,)) == [(fixed["run_id"], "promoted", ROWS)]
    assert query(nights, "SELECT DISTINCT dag_run_id FROM churn.predictions WHERE score_date = %s",
                 (NIGHT,)) == [(fixed["run_id"],)]
    log = Path(unasked["log"]).read_text()
    assert f"night {NIGHT} was already published by run {fixed['run_id']!r}" in log and "rerun_published=true" in log


def test_a_failed_retrain_leaves_the_champion_serving_the_night(nights):
    champion, broken = nights["runs"][2]["champion"], nights["runs"][5]
    assert (broken["state"], broken["champion"]) == ("failed", champion), broken
    row = attempt(nights, broken)
    states = row["details"]["task_states"]
    assert (states["train"], states["score"], states["publish"]) == ("failed", "success", "success"), states
    assert (row["decision"], row["rows_published"]) == ("failed", ROWS), row
    assert query(nights, "SELECT DISTINCT model_version FROM churn.predictions WHERE score_date = %s",
                 (NEXT,)) == [(champion,)]


def test_a_night_in_the_future_is_refused_and_records_nothing(nights):
    future = nights["runs"][6]
    assert future["state"] == "failed", future
    assert query(nights, "SELECT count(*) FROM churn.run_attempts WHERE logical_date = %s", (FUTURE,)) == [(0,)]
    assert query(nights, "SELECT count(*) FROM churn.pipeline_runs WHERE logical_date = %s", (FUTURE,)) == [(0,)]
    assert f"run_date {FUTURE} is in the future" in Path(future["log"]).read_text()


def test_an_unknown_conf_key_fails_the_run_before_anything_is_read(nights):
    typo = nights["runs"][7]
    assert typo["state"] == "failed", typo
    row = attempt(nights, typo)
    assert row["details"]["task_states"]["snapshot"] == "failed" and row["rows_published"] == 0
    assert "unknown run parameter 'typo_param' in the run's conf" in Path(typo["log"]).read_text()
    assert query(nights, "SELECT count(*) FROM churn.predictions WHERE score_date = %s", (NEXT + dt.timedelta(days=1),)) == [(0,)]
