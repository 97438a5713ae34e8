"""Whole nightly DAG runs over simulated nights, on real PostgreSQL, a real MLflow registry and real Airflow.

One sequence of nights, each changing the source for real, checked against the warehouse
and the registry afterwards:
  night 1  cold start            -> trains, promotes v1
  night 2  quiet                 -> skips training, publishes with v1
  night 3  forced retrain on a training window whose labels were scrambled
                                 -> a worse challenger, rejected; v1 stays champion
  night 4  corrupt source rows   -> validation fails, nothing published, run recorded as failed
  night 5  covariate drift starts -> drift detected on one night only (drift.persist_nights is 2) and
                                    no measured quality drop: recorded and shown, not acted on, no alert
  night 6  the drift persists    -> retrains for reason "drift", and alerts
  night 5 again (rerun)          -> still exactly one row per entity, one pipeline_runs row
  night 5, a dry run forcing a retrain and a promotion
                                 -> a challenger is trained and evaluated, but nothing is
                                    promoted, published, registered in MLflow or written to
                                    pipeline_runs; its reports sit in its own run folder, beside
                                    those of the run that published the night
Every night with a champion records the realised metric of the labelled days it never saw, with
its bootstrap interval and calibration, and the drift of the champion's scores.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

ROWS = 2000
N = [dt.date(2026, 3, 1) + dt.timedelta(days=i) for i in range(6)]


def d(day: dt.date, offset: int = 0) -> str:
    return (day + dt.timedelta(days=offset)).isoformat()


def scramble_labels(first: str, last_exclusive: str) -> str:
    return ("UPDATE churn_events SET churned = (hashtext(customer_id::text || event_ts::text) & 1) "
            f"WHERE event_ts >= '{first}' AND event_ts < '{last_exclusive}'")


PLAN = {
    "rows": ROWS,
    "covariate_from": d(N[4]),
    "steps": [
        {"load_days": {"from": d(N[0], -18), "to": d(N[0], -1), "labels": True}},
        {"load_days": {"from": d(N[0]), "to": d(N[0])}},
        {"run": {"day": d(N[0])}},
        {"load_days": {"from": d(N[1]), "to": d(N[1])}}, {"reveal": d(N[0])},
        {"champion_environment": {"xgboost": "1.7.0"}},  # v1 "was trained" with another xgboost than tonight's
        {"run": {"day": d(N[1])}},
        {"champion_environment": {}},
        {"load_days": {"from": d(N[2]), "to": d(N[2])}}, {"reveal": d(N[1])},
        # Night 3 trains on N3-17 .. N3-4 and holds out N3-3 .. N3-1: scramble only the training part.
        {"sql": scramble_labels(d(N[2], -17), d(N[2], -3))},
        {"run": {"day": d(N[2]), "conf": {"force_retrain": True, "note": "scrambled labels"}}},
        *[{"reveal": d(N[2], -k)} for k in range(4, 18)],  # the source is fixed again
        {"load_days": {"from": d(N[3]), "to": d(N[3])}}, {"reveal": d(N[2])},
        {"sql": f"UPDATE churn_events SET age = 150 WHERE event_ts >= '{d(N[3])}' AND customer_id <= 300"},
        {"run": {"day": d(N[3])}},
        {"load_days": {"from": d(N[3]), "to": d(N[3])}}, {"reveal": d(N[3])},  # the source is fixed again
        {"load_days": {"from": d(N[4]), "to": d(N[4])}},
        {"run": {"day": d(N[4])}},
        {"load_days": {"from": d(N[5]), "to": d(N[5])}}, {"reveal": d(N[4])},
        {"run": {"day": d(N[5])}},
        # someone moves the champion alias in the MLflow UI; the next run finds it (and a dry run after records nothing)
        {"move_alias": {}},
        # a published night, asked for again; night 6 may have promoted a model trained after it
        {"run": {"day": d(N[4]), "conf": {"note": "rerun", "rerun_published": True, "allow_later_model": True}}},
        {"run": {"day": d(N[4]), "conf": {"note": "dry", "dry_run": True, "force_retrain": True,
                                           "promotion_policy": "force"}}},
    ],
}


@pytest.fixture(scope="module")
def nights(run_plan, tmp_path_factory):
    home = tmp_path_factory.mktemp("nightshift")
    runs, warehouse = run_plan(PLAN, home)
    return {"runs": runs, "home": home, "warehouse": warehouse}


def run_reports(nights, run: dict, top: str = "reports") -> Path:
    """The folder of one DAG run's reports of its night (artifacts.run_folder)."""
    from include.nightshift.artifacts import run_folder

    return nights["home"] / "artifacts" / Path(*run_folder("churn", run["day"], run["run_id"], top=top))


def read_log(run: dict) -> str:
    from pathlib import Path

    return Path(run["log"]).read_text(errors="replace")


def query(nights, text, args=()):
    with nights["warehouse"].cursor() as cur:
        cur.execute(text, args)
        return cur.fetchall()


def history(nights) -> dict[str, dict]:
    rows = query(nights, "SELECT logical_date, decision, retrain_reason, drift_share, validation_passed, "
                         "champion_version, challenger_version, challenger_metric, rows_published, details "
                         "FROM churn.pipeline_runs ORDER BY logical_date")
    keys = ("decision", "reason", "drift", "valid", "champion", "challenger", "challenger_metric", "published",
            "details")
    return {r[0].isoformat(): dict(zip(keys, r[1:])) for r in rows}


def test_every_night_ran_and_only_the_corrupt_one_failed(nights):
    states = [(r["day"], r["state"]) for r in nights["runs"]]
    assert [s for _, s in states] == ["success", "success", "success", "failed", "success", "success", "success",
                                      "success"], states


def test_cold_start_trains_and_promotes(nights):
    first = history(nights)[d(N[0])]
    assert (first["decision"], first["reason"], first["challenger"]) == ("promoted", "no_champion", 1)
    assert first["challenger_metric"] >= 0.70
    assert nights["runs"][0]["champion"] == 1


def test_quiet_night_skips_training(nights):
    quiet = history(nights)[d(N[1])]
    assert quiet["decision"] == "skipped" and quiet["reason"] is None and quiet["challenger"] is None
    assert quiet["drift"] is not None and quiet["drift"] < 0.25
    assert quiet["published"] == ROWS


def test_every_recorded_night_has_its_28_ml_test_scores_and_the_final_is_the_lowest_section(nights):
    """ML Test Score (issue 14 part 1): 28 rows per recorded night, written by the run whose pipeline_runs row
    speaks for the night (the rerun of night 5, not the dry run after it), whose details keep the same section
    sums; a test that did not run that night scores 0 (no challenger on the quiet night) and says why."""
    from include.nightshift.test_score import NO_CHALLENGER, SECTIONS

    runs = {night: row for night, row in history(nights).items()}
    table = query(nights, "SELECT night, test, section, score, passed, evidence, dag_run_id FROM churn.ml_test_score")
    recorded = dict(query(nights, "SELECT logical_date, dag_run_id FROM churn.pipeline_runs"))
    for night, run in runs.items():
        rows = [r for r in table if r[0].isoformat() == night]
        assert len(rows) == 28 and {r[6] for r in rows} == {recorded[dt.date.fromisoformat(night)]}, night
        kept = run["details"]["ml_test_score"]
        sums = {s: sum(r[3] for r in rows if r[2] == s) for s in SECTIONS}
        assert kept["sections"] == sums and kept["final"] == min(sums.values()), (night, kept, sums)
    score = {(r[0].isoformat(), r[1]): r for r in table}
    quiet, judged = score[(d(N[1]), "model.5")], score[(d(N[2]), "model.5")]
    # a simpler model: every night with labels, the champion against its baseline on the rows it served ...
    assert quiet[3] == 1.0 and quiet[5]["served"]["rows"] == ROWS and "holdout" not in quiet[5], quiet
    # ... and on a training night the challenger against its own on the holdout too
    assert judged[3] == 1.0 and judged[4] in (True, False) and "baseline" in judged[5]["holdout"], judged
    assert score[(d(N[3]), "data.1")][4] is False  # the corrupt night: the suite ran and failed
    benefit = score[(d(N[2]), "data.2")]  # the night that trained: each feature shuffled on the holdout
    assert benefit[3] == 1.0 and len(benefit[5]["benefit"]) == benefit[5]["features"] > 0, benefit
    assert score[(d(N[1]), "data.2")][5]["not_run"] == NO_CHALLENGER
    traced = score[(d(N[2]), "infrastructure.5")]  # one holdout row through each stage of the challenger
    assert (traced[3], traced[4], traced[5]["stages"][0]) == (1.0, True, "input"), traced
    bias = score[(d(N[1]), "model.7")]  # the quiet night's champion, on the labelled days it never saw
    assert bias[3] == 1.0 and bias[5]["slices"] >= 2 and bias[5]["tolerance"] == 0.03, bias
    dry = nights["runs"][-1]
    assert "ML Test Score" in read_log(dry)  # computed and said, never written for a dry run
    assert "ML Test Score" in read_log(nights["runs"][1]).split("run summary:")[-1]


def test_worse_challenger_is_not_promoted(nights):
    forced = history(nights)[d(N[2])]
    assert (forced["decision"], forced["reason"]) == ("rejected", "forced")
    assert forced["challenger"] == 2
    assert nights["runs"][2]["champion"] == 1
    failed = [c for c in forced["details"]["verdict"] if not c["passed"]]
    assert failed, "a rejected challenger must name the checks it failed"
    from mlflow import MlflowClient

    uri = f"sqlite:///{nights['home'] / 'mlflow' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert client.get_model_version("nightshift_churn", "2").tags.get("nightshift.blessed") == "false"
    run_id = client.get_model_version("nightshift_churn", "2").run_id
    reports = {a.path for folder in ("reports", "reports/validation", "reports/validation_labelled")
               for a in client.list_artifacts(run_id, folder) if not a.is_dir}
    assert reports == {"reports/evaluation.html", "reports/drift.html", "reports/validation/validation.html",
                       "reports/validation_labelled/validation.html"}  # every page the decision was made on
    metrics = client.get_run(run_id).data.metrics  # the holdout numbers are run metrics MLflow can chart
    assert {"holdout_roc_auc_challenger", "holdout_roc_auc_champion", "holdout_roc_auc_baseline"} <= set(metrics)
    assert {"slice_plan.basic_roc_auc_challenger", "slice_plan.basic_roc_auc_champion"} <= set(metrics)  # per slice
    assert client.get_run(run_id).info.run_name == f"churn {d(N[2])} forced"  # what happened, in MLflow's list
    plotted = {a.path for a in client.list_artifacts(run_id, "evaluation")}
    assert {"evaluation/roc.png", "evaluation/lift.png", "evaluation/evaluation.json"} <= plotted
    version = client.get_model_version("nightshift_churn", "2")
    assert version.description.startswith("**NOT PROMOTED**") and "**FAILED**" in version.description
    assert len(version.tags) <= 8 and not any(k.startswith("verdict.") for k in version.tags)  # a handful, no blob
    assert len(client.get_run(run_id).inputs.dataset_inputs) == 17  # 14 training + 3 holdout snapshots
    page = (run_reports(nights, nights["runs"][2]) / "evaluation.html").read_text()  # the run's own folder
    assert "plan" in page and "not recorded by the gate" not in page  # each slice as the gate recorded it
    assert page.count('src="data:image/png;base64,') == 6 and 'alt="ROC curve: challenger AUC ' in page  # plots


def test_corrupt_source_fails_validation_and_publishes_nothing(nights):
    bad = history(nights)[d(N[3])]
    assert bad["decision"] == "failed" and bad["valid"] is False and bad["published"] == 0
    assert "age" in bad["details"]["validation_failure"]["message"]
    assert query(nights, "SELECT count(*) FROM churn.predictions WHERE score_date = %s", (N[3],)) == [(0,)]
    assert nights["runs"][3]["champion"] == 1


def test_drift_on_one_night_is_recorded_not_acted_on(nights):
    first = history(nights)[d(N[4])]  # the rerun's row: still one drifted night after a failed one
    assert first["drift"] >= 0.25 and first["reason"] is None and first["decision"] == "skipped"
    evidence = first["details"]["decision"]["details"]
    assert evidence["drift_detected"] is True and evidence["drift_persisted_nights"] == 1
    assert evidence["drift_acted"] is False and evidence["quality_drop"] is not True
    assert "recorded, not acted on" in evidence["summary"]
    first_run = nights["runs"][4]
    assert first_run["day"] == d(N[4]) and "features drifted (threshold" not in read_log(first_run)  # no alert


def test_drift_that_persists_retrains_for_drift_and_alerts(nights):
    drifted = history(nights)[d(N[5])]
    assert drifted["reason"] == "drift" and drifted["drift"] >= 0.25
    assert drifted["decision"] in ("promoted", "rejected") and drifted["challenger"] is not None
    evidence = drifted["details"]["decision"]["details"]
    assert evidence["drift_persisted_nights"] == 2 and evidence["persist_nights"] == 2
    assert evidence["drift_windows"]["current_days"] == [d(N[5])]
    assert evidence["summary"].startswith("retrain (drift): drift share")
    assert "features drifted (threshold 25%), 2 night(s) in a row" in read_log(nights["runs"][5])


def test_realised_quality_is_pooled_over_unseen_days_with_an_interval(nights):
    # v1 was trained on night 1 (holdout ends the day before): night 2 sees one unseen labelled day,
    # night 6 (labels up to night 5) pools five, at most promotion.realised_window_days (7)
    quiet = history(nights)[d(N[1])]["details"]["decision"]["details"]
    assert quiet["realised_days"] == [d(N[0])] and quiet["realised_rows"] == ROWS
    low, high = quiet["realised_interval"]
    assert low < quiet["realised_metric"] < high and quiet["realised_confidence"] == 0.95
    assert 0 < quiet["realised_brier"] < 0.25 and 0 <= quiet["realised_ece"] < 0.2
    late = history(nights)[d(N[5])]["details"]["decision"]["details"]
    assert late["realised_days"] == [d(N[k]) for k in range(5)] and late["realised_rows"] == 5 * ROWS
    low_late, high_late = late["realised_interval"]
    # Five days pooled, resampled by day then row (quality.py): the days differ (covariate drift from night 5),
    # so the interval spans their spread rather than shrinking with the rows; tests/unit/test_quality.py holds
    # the width rules (alike days narrow like rows, differing days widen).
    assert low_late < late["realised_metric"] < high_late and high_late - low_late < 0.2
    cold = history(nights)[d(N[0])]["details"]["decision"]["details"]
    assert cold["realised_metric"] is None and cold["realised_interval"] is None  # no champion yet


def test_prediction_drift_is_recorded_as_evidence(nights):
    for night in (N[1], N[5]):
        output = history(nights)[d(night)]["details"]["decision"]["details"]["prediction_drift"]
        assert set(output) == {"method", "score", "threshold", "drifted"} and output["score"] is not None


def test_one_row_per_entity_per_night_and_one_history_row_per_date(nights):
    per_day = query(nights, "SELECT score_date, count(*), count(DISTINCT customer_id) FROM churn.predictions "
                            "GROUP BY score_date ORDER BY score_date")
    assert [(r[0].isoformat(), r[1], r[2]) for r in per_day] == [
        (d(n), ROWS, ROWS) for n in (N[0], N[1], N[2], N[4], N[5])]
    assert sorted(history(nights)) == [d(n) for n in N]
    latest = query(nights, "SELECT DISTINCT score_date FROM churn.predictions_latest")
    assert latest == [(N[5],)]


def test_every_served_night_re_verifies_its_champion_and_finds_no_skew(nights):
    """Issue 14 parts 4 and 6, on every night that scored: the champion reproduced the scores it gave its logged
    training sample through the serving path on tonight's environment (unchanged since training), and a sample of
    tonight's rows fed the model the same features as the training path would; evidence in details.serving. On night
    2 v1's record says another xgboost (run_nights.py champion_environment): the change is reported and alerted."""
    from importlib.metadata import version

    from include.nightshift.spec import load_spec

    features = set(load_spec(Path(__file__).resolve().parents[2] / "include/specs/churn.yaml").feature_names)
    for day, night in history(nights).items():
        serving = night["details"].get("serving")
        if night["decision"] == "failed":  # validation failed: nothing scored, nothing checked
            assert serving is None, day
            continue
        trip, env, skew = serving["round_trip"], serving["environment"], serving["skew"]
        assert trip["passed"] is True and trip["max_difference"] <= 1e-9 and trip["rows"] == 256, (day, trip)
        if day == d(N[1]):  # the night v1's recorded xgboost differs from tonight's: reported, and re-verified
            assert env["changes"] == [{"name": "xgboost", "recorded": "1.7.0", "now": version("xgboost")}], env
            continue
        assert env["changes"] == [] and env["summary"].endswith("unchanged since training"), (day, env)
        assert skew["passed"] is True and skew["findings"] == [] and skew["rows"] == ROWS, (day, skew)
        assert skew["training_statistics"] == "recorded" and set(skew["against_training"]) == features, day
    log = read_log(nights["runs"][1])
    assert "reproduced its 256 logged training scores through the serving path" in log
    assert (f"nightshift dependency_change: churn: the libraries on the prediction path changed since the champion "
            f"was trained (v1: changed since training: xgboost 1.7.0 -> {version('xgboost')}); re-verified on "
            "tonight's environment by the serving round trip") in log, log[-3000:]
    assert "dependency_change" not in read_log(nights["runs"][2])  # v1's record restored: nothing to report


def test_every_prediction_names_the_champion_of_its_run(nights):
    last_run_per_day = {r["day"]: r for r in nights["runs"] if r["state"] == "success" and not r["conf"].get("dry_run")}
    rows = query(nights, "SELECT score_date, model_version, dag_run_id, snapshot_sha256, count(*) "
                         "FROM churn.predictions GROUP BY 1, 2, 3, 4")
    assert len(rows) == 5  # one model version, one run and one snapshot per night
    for score_date, version, run_id, sha, _ in rows:
        run = last_run_per_day[score_date.isoformat()]
        assert (version, run_id) == (run["champion"], run["run_id"])
        assert len(sha) == 64


def test_dry_run_trains_and_evaluates_but_changes_nothing_a_consumer_sees(nights):
    *_, rerun, dry = nights["runs"]
    assert dry["conf"]["dry_run"] and dry["state"] == "success"
    assert dry["champion"] == rerun["champion"]  # promotion_policy=force, yet nothing promoted
    published = query(nights, "SELECT DISTINCT model_version, dag_run_id FROM churn.predictions WHERE score_date = %s",
                      (N[4],))
    assert published == [(rerun["champion"], rerun["run_id"])]  # the rerun's night, untouched
    recorded = query(nights, "SELECT dag_run_id, note FROM churn.pipeline_runs WHERE logical_date = %s", (N[4],))
    assert recorded == [(rerun["run_id"], "rerun")]
    from mlflow import MlflowClient

    uri = f"sqlite:///{nights['home'] / 'mlflow' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    # MLflow as it was: the dry run registered no version and started no run (its challenger was kept in the
    # artifact store and judged there); every version was registered by a run that was not a dry run
    versions = client.search_model_versions("name = 'nightshift_churn'")
    assert {v.tags.get("nightshift.dag_run_id") for v in versions} <= {r["run_id"] for r in nights["runs"][:-1]}
    experiments = [e.experiment_id for e in client.search_experiments()]
    assert client.search_runs(experiments, f"tags.`nightshift.dag_run_id` = '{dry['run_id']}'") == []
    assert (run_reports(nights, dry, top="dry_runs") / "challenger.zip").is_file()


def test_reports_are_kept_per_run_and_the_index_names_the_run_that_published_each_night(nights):
    first, *_, rerun, dry = [r for r in nights["runs"] if r["day"] == d(N[4])]
    published, dried = run_reports(nights, rerun), run_reports(nights, dry)
    assert (published / "drift.html").is_file() and (run_reports(nights, first) / "drift.html").is_file()
    assert (dried / "evaluation.html").is_file() and not (published / "evaluation.html").exists()  # no retrain
    kept = [p.stat().st_mtime for p in published.rglob("*") if p.is_file()]
    assert kept and max(kept) < min(p.stat().st_mtime for p in dried.rglob("*") if p.is_file())  # left as it was
    index = json.loads((nights["home"] / "artifacts" / "reports" / "churn" / "nights.json").read_text())
    night = next(n for n in index["nights"] if n["night"] == d(N[4]))
    assert (night["status"], night["run"]["run"]) == ("published", rerun["run_id"])
    assert [(r["run"], r["status"]) for r in night["runs"]] == [(dry["run_id"], "dry run"),
                                                                (first["run_id"], "replaced")]
    failed = next(n for n in index["nights"] if n["night"] == d(N[3]))
    assert (failed["status"], failed["run"]["run"]) == ("failed", nights["runs"][3]["run_id"])


def test_an_alias_moved_in_mlflow_is_found_by_the_next_nightly_run_recorded_once_and_alerted(nights):
    """The nightly drift step compares the alias with the last audit row before anything reads the champion."""
    from include.nightshift.external import ACTOR

    *_, night6, rerun, dry = nights["runs"]
    assert rerun["champion"] != night6["champion"]  # moved between them, and not moved back by Nightshift
    rows = query(nights, "SELECT event, from_version, to_version, actor, state, night, dag_run_id "
                         "FROM churn.champion_changes WHERE event = 'external'")
    assert rows == [("external", night6["champion"], rerun["champion"], ACTOR, "done", N[4], rerun["run_id"])]
    log = read_log(rerun)
    moved = f"v{night6['champion']} -> v{rerun['champion']}"
    assert f"nightshift external_change: nightshift_churn: champion moved outside Nightshift, {moved}" in log, log[-3000:]
    served = query(nights, "SELECT DISTINCT model_version FROM churn.predictions WHERE score_date = %s", (N[4],))
    assert served == [(rerun["champion"],)]  # the night rerun after the move is served by the version found


# record_run writes the rows; no_retrain_needed is an EmptyOperator; plan_shards (a plain task) only counts shards
UNMEASURED = {"record_run", "no_retrain_needed", "plan_shards"}


def test_every_step_that_ran_has_its_cost_per_night_run_and_try(nights):
    """task_costs (issue 14 part 5): each step that ran (not record_run, which writes them; not the no-retrain
    EmptyOperator) has a row per run, a failed one too; snapshot's rows are the night's rows; dry runs flagged;
    the night's record keeps the measures and the findings."""
    attempts = query(nights, "SELECT dag_run_id, logical_date, rows_in, dry_run, details FROM churn.run_attempts")
    assert len(attempts) == len(nights["runs"])
    for run_id, night, rows_in, dry_run, details in attempts:
        ran = {t for t, s in details["task_states"].items() if s in ("success", "failed", "skipped")} - UNMEASURED
        costs = {r[0]: r[1:] for r in query(nights, "SELECT task_id, wall_seconds, rss_peak_bytes, rss_start_bytes, "
                                                   "cpu_seconds, rows, outcome, dry_run, try_number FROM churn.task_costs "
                                                   "WHERE dag_run_id = %s AND night = %s", (run_id, night))}
        executed = {t for t, s in details["task_states"].items() if s in ("success", "failed")} - UNMEASURED
        assert executed <= set(costs) <= ran, (run_id, sorted(executed), sorted(costs))
        for task, (wall, peak, start, cpu, rows, outcome, dry, try_number) in costs.items():
            assert wall > 0 and peak >= start > 0 and cpu >= 0 and try_number >= 1, (run_id, task)
            assert dry is dry_run
            assert outcome == "failed" if details["task_states"][task] == "failed" else outcome in ("success", "skipped")
        assert rows_in and costs["snapshot"][4] == rows_in
        assert set(details["costs"]["tasks"]) == set(costs) and isinstance(details["costs"]["findings"], list)
    failed_night = query(nights, "SELECT outcome, rows FROM churn.task_costs WHERE night = %s AND task_id = 'validate'",
                         (N[3],))
    assert ("failed", None) in failed_night  # the corrupt night's validate: its cost up to the failure
    publishes = query(nights, "SELECT c.outcome, c.rows, c.rows_per_second, r.rows_published FROM churn.task_costs c "
                              "JOIN churn.pipeline_runs r ON r.dag_run_id = c.dag_run_id WHERE c.task_id = 'publish'")
    scored = [row[1:] for row in publishes if row[0] == "success"]
    assert scored and all(rows == published and rate > 0 for rows, rate, published in scored)
    # a night with nothing scored (a dry run, no model): publish skips itself, has its cost row, publishes nothing
    assert all(row[1:] == (None, None, 0) for row in publishes if row[0] == "skipped"), publishes
