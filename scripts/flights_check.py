"""Judge a replay of the flights data set from outside: the published scores against baselines
computed here, independently of Nightshift's code.

Reads only what a consumer and the data's owner can read: `flights.predictions` and
`flights.pipeline_runs` / `champion_changes` in the warehouse, and the outcomes in the source
table. The baselines are rebuilt here with scikit-learn and pandas, each night from the same
labelled days the pipeline could see (the 28 days up to the night), for the flights the night
scored:
- a logistic regression retrained every night on those days (one-hot carrier, origin and
  destination; scaled distance, hours and weekday);
- a per-group rate: the share of disrupted flights per (origin, scheduled departure hour) over
  those days, shrunk towards the overall rate (20 pseudo-flights), as a score.
Pooled ROC AUC over every published row, with a 95% interval for the served model from a
bootstrap over nights (rows of one night are not independent of each other).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pandas as pd
import psycopg
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

WINDOW_DAYS = 28
CATEGORICAL = ["carrier", "origin", "dest"]
NUMERIC = ["distance", "sched_dep_hour", "sched_arr_hour", "day_of_week"]
SHRINK = 20.0
BOOTSTRAP = 1000


def published(warehouse: psycopg.Connection) -> pd.DataFrame:
    with warehouse.cursor() as cur:
        cur.execute("SELECT score_date, flight_id, score, model_version FROM flights.predictions")
        return pd.DataFrame(cur.fetchall(), columns=["score_date", "flight_id", "score", "model_version"])


def flights(source: psycopg.Connection, first: dt.date, last: dt.date) -> pd.DataFrame:
    """Every flight of the UTC days first..last, with its UTC day and outcome."""
    with source.cursor() as cur:
        cur.execute("SELECT flight_id, (sched_dep_ts AT TIME ZONE 'UTC')::date AS day, carrier, origin, dest, "
                    "distance, sched_dep_hour, sched_arr_hour, day_of_week, disrupted FROM public.nyc_flights "
                    "WHERE sched_dep_ts >= %s AND sched_dep_ts < %s",
                    (dt.datetime.combine(first, dt.time(), dt.timezone.utc),
                     dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), dt.timezone.utc)))
        names = [d.name for d in cur.description]
        return pd.DataFrame(cur.fetchall(), columns=names)


def _logistic(train: pd.DataFrame, target: pd.DataFrame) -> np.ndarray:
    prep = ColumnTransformer([("c", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL),
                              ("n", StandardScaler(), NUMERIC)])
    model = make_pipeline(prep, LogisticRegression(max_iter=2000))
    model.fit(train[CATEGORICAL + NUMERIC], train["disrupted"].astype(int))
    return model.predict_proba(target[CATEGORICAL + NUMERIC])[:, 1]


def _group_rate(train: pd.DataFrame, target: pd.DataFrame) -> np.ndarray:
    overall = float(train["disrupted"].mean())
    groups = train.groupby(["origin", "sched_dep_hour"])["disrupted"].agg(["sum", "count"])
    rate = (groups["sum"] + SHRINK * overall) / (groups["count"] + SHRINK)
    keys = pd.MultiIndex.from_frame(target[["origin", "sched_dep_hour"]])
    return rate.reindex(keys).fillna(overall).to_numpy(dtype=float)


def baselines(source: psycopg.Connection, score_dates: list[dt.date]) -> pd.DataFrame:
    """Both baselines' scores for every flight of each score date, from the days the night before could see."""
    first, last = min(score_dates) - dt.timedelta(days=WINDOW_DAYS + 1), max(score_dates)
    rows = flights(source, first, last)
    out = []
    for day in sorted(score_dates):
        night = day - dt.timedelta(days=1)  # the night that scored `day` (scoring.horizon_days 1)
        train = rows[(rows["day"] > night - dt.timedelta(days=WINDOW_DAYS)) & (rows["day"] <= night)]
        target = rows[rows["day"] == day]
        out.append(target.assign(score_date=day, logistic=_logistic(train, target),
                                 group_rate=_group_rate(train, target)))
    return pd.concat(out, ignore_index=True)


def _block_interval(frame: pd.DataFrame, column: str, seed: int = 0) -> tuple[float, float]:
    """95% interval of the pooled AUC, resampling whole nights."""
    rng = np.random.default_rng(seed)
    days = frame["score_date"].unique()
    by_day = {d: frame.index[frame["score_date"] == d] for d in days}
    values = []
    for _ in range(BOOTSTRAP):
        idx = np.concatenate([by_day[d] for d in rng.choice(days, size=len(days))])
        sample = frame.loc[idx]
        values.append(roc_auc_score(sample["disrupted"], sample[column]))
    return float(np.quantile(values, 0.025)), float(np.quantile(values, 0.975))


def judge(warehouse: psycopg.Connection, source: psycopg.Connection) -> dict[str, Any]:
    """Pooled AUC of the served scores and both baselines on the same published flights."""
    served = published(warehouse)
    dates = sorted(set(served["score_date"]))
    frame = served.merge(baselines(source, dates), on=["score_date", "flight_id"], how="inner")
    assert len(frame) == len(served), "every published flight must be in the source"
    auc = {name: float(roc_auc_score(frame["disrupted"], frame[name])) for name in ("score", "logistic", "group_rate")}
    low, high = _block_interval(frame.reset_index(drop=True), "score")
    return {"nights_published": len(dates), "rows": len(frame), "positive_rate": float(frame["disrupted"].mean()),
            "mean_score": float(frame["score"].mean()), "served_auc": auc["score"], "served_interval": [low, high],
            "logistic_auc": auc["logistic"], "group_rate_auc": auc["group_rate"],
            "versions_served": sorted(int(v) for v in frame["model_version"].unique())}


def history(warehouse: psycopg.Connection) -> dict[str, Any]:
    """What the pipeline decided, night by night, from its own run history."""
    with warehouse.cursor() as cur:
        cur.execute("SELECT logical_date, decision, retrain_reason, drift_share, champion_version, "
                    "challenger_version FROM flights.pipeline_runs ORDER BY logical_date")
        runs = cur.fetchall()
        cur.execute("SELECT count(*) FROM flights.champion_changes WHERE event = 'promote'")
        promotions = cur.fetchone()[0]
    reasons: dict[str, int] = {}
    for run in runs:
        if run[2]:
            reasons[run[2]] = reasons.get(run[2], 0) + 1
    return {"nights": len(runs), "decisions": {d: sum(1 for r in runs if r[1] == d) for d in {r[1] for r in runs}},
            "retrain_reasons": reasons, "promotions": promotions,
            "nights_table": [{"night": r[0].isoformat(), "decision": r[1], "reason": r[2], "drift_share": r[3],
                              "champion": r[4], "challenger": r[5]} for r in runs]}
