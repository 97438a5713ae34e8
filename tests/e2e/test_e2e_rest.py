"""The deployed path, end to end: a real Airflow (api-server, scheduler, dag-processor, LocalExecutor,
PostgreSQL metadata) runs the DAGs triggered through the Airflow 3 REST API (/api/v2).

In order, as in a real deployment: the first night (cold start), a refused bad conf, a backfill
over the first nights and its rerun, two triggers of one night at once, a rollback.
"""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple

import pytest

from .airflow_stack import USERNAME, Api
from .scenario import D1, D2, D3, FIRST_NOTE, FIRST_RUN, NIGHTLY, ROLLBACK, ROWS

pytestmark = pytest.mark.e2e

MODEL = "nightshift_churn"


def query(conn, text: str, args: tuple = ()) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(text, args)
        return cur.fetchall()


class Prediction(NamedTuple):
    score: bytes  # the float8 as stored: equal means equal to the last bit
    label: int
    model_version: int
    snapshot_sha256: str
    dag_run_id: str


def partition(conn, day: dt.date) -> dict[int, Prediction]:
    """One night's predictions by customer."""
    rows = query(conn, "SELECT customer_id, float8send(score), predicted_label, model_version, snapshot_sha256, "
                       "dag_run_id FROM churn.predictions WHERE score_date = %s", (day,))
    return {r[0]: Prediction(bytes(r[1]), *r[2:]) for r in rows}


def made_by(night: dict[int, Prediction]) -> set[tuple[int, str]]:
    """The (model version, run) pairs that wrote a night: one pair when one run wrote it all."""
    return {(p.model_version, p.dag_run_id) for p in night.values()}


def counts(conn, day: dt.date) -> tuple[int, int]:
    return query(conn, "SELECT count(*), count(DISTINCT customer_id) FROM churn.predictions WHERE score_date = %s",
                 (day,))[0]


def history(conn, day: dt.date) -> list[dict]:
    cols = ("dag_run_id", "decision", "champion_version", "challenger_version", "rows_published", "note")
    rows = query(conn, f"SELECT {', '.join(cols)} FROM churn.pipeline_runs WHERE logical_date = %s", (day,))
    return [dict(zip(cols, r)) for r in rows]


def version_trained_by(registry, run_id: str) -> int:
    found = registry.client.search_model_versions(f"name = '{MODEL}' and tag.`nightshift.dag_run_id` = '{run_id}'")
    assert len(found) == 1, f"{run_id} registered {len(found)} versions"
    return int(found[0].version)


def without_run_id(night: dict[int, Prediction]) -> dict[int, tuple]:
    return {key: p._replace(dag_run_id=None) for key, p in night.items()}


def when(timestamp: str) -> dt.datetime:
    return dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))


# --- (a) a run triggered with a conf ------------------------------------------------------------


def test_triggered_night_succeeds_promotes_v1_and_publishes_with_its_note(first_night, api, warehouse, registry):
    assert first_night["state"] == "success", api.task_states(NIGHTLY, FIRST_RUN)
    assert first_night["conf"]["note"] == FIRST_NOTE and first_night["triggering_user_name"] == USERNAME
    assert registry.champion(MODEL).version == 1
    assert counts(warehouse, D1) == (ROWS, ROWS)
    assert made_by(partition(warehouse, D1)) == {(1, FIRST_RUN)}
    (run,) = history(warehouse, D1)
    assert (run["dag_run_id"], run["decision"], run["challenger_version"], run["note"]) == (
        FIRST_RUN, "promoted", 1, FIRST_NOTE)


# --- (b) a conf the trigger form's schema refuses ------------------------------------------------


def test_invalid_conf_is_refused_naming_the_param(api: Api):
    response = api.trigger_response(NIGHTLY, {"promotion_policy": "sometimes"}, run_id="e2e_refused")
    assert response.status_code == 400, response.text
    assert "promotion_policy" in response.json()["detail"] and "sometimes" in response.json()["detail"]
    assert api.request("GET", f"/dags/{NIGHTLY}/dagRuns/e2e_refused").status_code == 404


# --- (d) backfill: the same tables as night by night, never a duplicate --------------------------


def test_backfill_over_past_nights_matches_nightly_runs_and_rerun_changes_nothing(first_night, api, warehouse):
    assert first_night["state"] == "success"
    nightly_d1 = partition(warehouse, D1)

    # reprocess "none": D1 already ran (the first night) and is left alone; D2 is run.
    backfill = api.backfill(NIGHTLY, D1, D2, reprocess="none", conf={"note": "e2e backfill"})
    runs = api.wait_backfill(NIGHTLY, backfill)
    assert [(r["logical_date"][:10], r["state"]) for r in runs] == [(str(D1), "success"), (str(D2), "success")]
    d1_run, d2_run = runs
    assert (d1_run["dag_run_id"], d1_run["end_date"]) == (FIRST_RUN, first_night["end_date"])
    assert d2_run["run_type"] == "backfill"
    assert partition(warehouse, D1) == nightly_d1
    backfilled_d2 = partition(warehouse, D2)
    assert counts(warehouse, D2) == (ROWS, ROWS)
    assert made_by(backfilled_d2) == {(1, d2_run["dag_run_id"])}

    # reprocess "completed": both nights run again; every score is the same to the last bit.
    # Published nights are reprocessed only when the run says so (rerun_published; issue 11 item 9).
    again = api.backfill(NIGHTLY, D1, D2, reprocess="completed", conf={"note": "e2e backfill again",
                                                                       "rerun_published": True})
    reruns = api.wait_backfill(NIGHTLY, again)
    assert [r["state"] for r in reruns] == ["success", "success"]
    assert when(reruns[0]["end_date"]) > when(d1_run["end_date"])  # D1 really ran again
    for day, before in ((D1, nightly_d1), (D2, backfilled_d2)):
        assert counts(warehouse, day) == (ROWS, ROWS)
        assert without_run_id(partition(warehouse, day)) == without_run_id(before)
        (run,) = history(warehouse, day)
        assert run["note"] == "e2e backfill again" and run["rows_published"] == ROWS
    assert query(warehouse, "SELECT count(*) FROM churn.predictions WHERE score_date NOT IN (%s, %s, %s)",
                 (D1, D2, D3)) == [(0,)]


# --- (c) two triggers of one night at once -------------------------------------------------------


def test_two_triggers_at_once_queue_and_leave_one_row_per_entity_and_one_champion(twin_runs, api, warehouse,
                                                                                    registry):
    first, second = twin_runs
    assert [r["state"] for r in twin_runs] == ["success", "success"], [
        api.task_states(NIGHTLY, r["dag_run_id"]) for r in twin_runs]
    assert when(second["start_date"]) >= when(first["end_date"])  # queued, not run side by side
    # The first registers and promotes; the second trains on the same snapshots, spec and code, finds that
    # version under the same training key and reuses it: one version, one champion, no duplicate.
    first_version = version_trained_by(registry, first["dag_run_id"])
    found = registry.client.search_model_versions(
        f"name = '{MODEL}' and tag.`nightshift.dag_run_id` = '{second['dag_run_id']}'")
    assert found == [], f"the second trigger registered {[v.version for v in found]}"
    champion = registry.champion(MODEL).version
    assert champion == first_version
    assert counts(warehouse, D3) == (ROWS, ROWS)
    assert made_by(partition(warehouse, D3)) == {(champion, second["dag_run_id"])}
    (run,) = history(warehouse, D3)
    assert (run["dag_run_id"], run["decision"], run["challenger_version"], run["note"]) == (
        second["dag_run_id"], "reproduced", champion, second["dag_run_id"])


# --- (f) rollback through the REST API -----------------------------------------------------------


def test_rollback_restores_the_previous_champion_audits_and_republishes(twin_runs, api, warehouse, registry):
    dags = {d["dag_id"] for d in api.get("/dags", params={"limit": 100})["dags"]}
    assert ROLLBACK in dags, f"the rollback DAG {ROLLBACK} is not deployed (dags: {sorted(dags)})"
    api.unpause(ROLLBACK)  # in case it was parsed after the stack came up
    bad = api.trigger_response(ROLLBACK, {"version": None, "republish": True}, run_id="e2e_rollback_no_reason")
    assert bad.status_code == 400 and "reason" in bad.json()["detail"], bad.text

    current = registry.champion(MODEL).version
    (previous,) = query(warehouse, "SELECT from_version FROM churn.champion_changes WHERE event = 'promote' "
                                   "AND dag_run_id = %s", (twin_runs[0]["dag_run_id"],))[0]  # before the twins
    reason = "e2e: the new champion misbehaves"
    api.trigger(ROLLBACK, {"version": None, "reason": reason, "republish": True}, run_id="e2e_rollback")
    (run,) = api.wait(ROLLBACK, ["e2e_rollback"])
    assert run["state"] == "success", api.task_states(ROLLBACK, "e2e_rollback")

    assert registry.champion(MODEL).version == previous
    audit = query(warehouse, "SELECT event, model_name, from_version, to_version, actor, reason FROM "
                             "churn.champion_changes WHERE dag_run_id = %s", ("e2e_rollback",))
    assert audit == [("rollback", MODEL, current, previous, USERNAME, reason)]
    assert counts(warehouse, D3) == (ROWS, ROWS)  # the latest night, re-scored by the restored model
    assert made_by(partition(warehouse, D3)) == {(previous, "e2e_rollback")}
