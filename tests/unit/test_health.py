"""The model-health page: history read from a real warehouse, plots and tables checked in the page.

Eight nights go through the real run-history table and the real audit table: a cold start
(v1 promoted), quiet nights, a drift night that promotes v2, a drifted night that rejects
v3, a rollback to v1 by hand, then quiet nights again.
"""

from __future__ import annotations

import datetime as dt
import re
from html.parser import HTMLParser

import pytest
from psycopg2 import sql

from include.nightshift import audit
from include.nightshift import warehouse as wh
from include.nightshift.health import health_page_html, read_events, read_history, write_health_page

DAY0 = dt.date(2026, 1, 1)
EVIL = "<img src=x onerror=alert(1)>"
# night -> (decision, reason, drift share, champion before, challenger, challenger metric, realised)
NIGHTS = [
    ("promoted", "no_champion", None, None, 1, 0.81, None),
    ("skipped", None, 0.10, 1, None, None, 0.80),
    ("skipped", None, 0.05, 1, None, None, 0.79),
    ("skipped", None, 0.10, 1, None, None, 0.78),
    ("promoted", "drift", 0.40, 1, 2, 0.83, 0.74),
    ("rejected", "drift", 0.30, 2, 3, 0.79, 0.82),
    # the rollback to v1 happens here
    ("skipped", None, 0.10, 1, None, None, 0.78),
    ("skipped", None, 0.15, 1, None, None, 0.78),
]
ROLLBACK_AFTER = 6  # nights recorded before the rollback
SERVED = ["v1"] * 4 + ["v2"] * 2 + ["v1"] * 2


class Tables(HTMLParser):
    """Every table by id: a list of rows, each (row class, {header: cell text})."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.raw: dict[str, list[tuple[str, list[str]]]] = {}
        self._table = self._cell = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._table = attrs.get("id")
            self.raw[self._table] = []
        elif tag == "tr" and self._table:
            self.raw[self._table].append((attrs.get("class", ""), []))
        elif tag in ("td", "th") and self._table:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.raw[self._table][-1][1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def __getitem__(self, table_id: str) -> list[tuple[str, dict[str, str]]]:
        (_, header), *body = self.raw[table_id]
        return [(cls, dict(zip(header, cells))) for cls, cells in body]


def figure(text: str, figure_id: str) -> str:
    match = re.search(rf'<figure id="{figure_id}">(.*?)</figure>', text, re.S)
    assert match, f"no figure {figure_id}"
    return match.group(1)


def record_nights(conn, spec, nights, first: int, finished_base: dt.datetime) -> None:
    for i, (decision, reason, drift, champion, challenger, challenger_metric, realised) in nights:
        holdout = None if i == 0 else (0.83 if i in (4, 5) else 0.81)  # the serving champion's
        wh.upsert_run(conn, spec, {
            "logical_date": DAY0 + dt.timedelta(days=i), "dag_run_id": f"night-{i}", "rows_in": 1000 + i,
            "validation_passed": True, "drift_share": drift, "retrain_reason": reason, "decision": decision,
            "champion_version": champion, "challenger_version": challenger, "challenger_metric": challenger_metric,
            "metric_name": "roc_auc", "rows_published": 1000 + i,
            "finished_at": finished_base + dt.timedelta(minutes=i - first),
            "details": {"decision": {"details": {"realised_metric": realised, "champion_holdout_metric": holdout}}},
        })


def change(spec, event, to_version, from_version, run_id, actor, reason) -> dict:
    return {"event": event, "model_name": spec.model_name, "from_version": from_version, "to_version": to_version,
            "actor": actor, "reason": reason, "dag_run_id": run_id}


@pytest.fixture
def history(pg_conn, churn_spec):
    """The eight nights and three champion changes, recorded in the real tables."""
    spec = churn_spec
    wh.ensure_warehouse(pg_conn, spec)
    audit.ensure_audit(pg_conn, spec)
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)
    record_nights(pg_conn, spec, list(enumerate(NIGHTS))[:ROLLBACK_AFTER], 0, past)
    audit.record_change(pg_conn, spec, change(spec, "promote", 1, None, "night-0", "nightshift", "gate passed"))
    audit.record_change(pg_conn, spec, change(spec, "promote", 2, 1, "night-4", "nightshift", "gate passed"))
    audit.record_change(pg_conn, spec, change(spec, "rollback", 1, 2, "manual__rollback", "alice",
                                              f"bad scores {EVIL}"))
    future = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
    record_nights(pg_conn, spec, list(enumerate(NIGHTS))[ROLLBACK_AFTER:], ROLLBACK_AFTER, future)
    return read_history(pg_conn, spec, days=30), read_events(pg_conn, spec)


def test_read_history_gives_every_night_with_the_monitors_numbers(history):
    runs, events = history

    assert [r["logical_date"] for r in runs] == [DAY0 + dt.timedelta(days=i) for i in range(len(NIGHTS))]
    assert [r["realised_metric"] for r in runs] == [n[6] for n in NIGHTS]  # from the decision's details
    assert runs[4]["champion_holdout_metric"] == 0.83 and runs[4]["drift_share"] == 0.40
    assert [(e["event"], e["to_version"]) for e in events] == [("promote", 1), ("promote", 2), ("rollback", 1)]


def test_page_plots_threshold_versions_and_events(history, churn_spec, tmp_path):
    runs, events = history
    path = write_health_page(tmp_path / "health.html", churn_spec, runs, events)
    text = (tmp_path / "health.html").read_text(encoding="utf-8")
    tables = Tables(text)

    assert path == str(tmp_path / "health.html")
    for figure_id in ("drift", "metric", "rows", "versions"):
        assert "<svg" in figure(text, figure_id)

    # The threshold is drawn, level, between the nights below it and those at or above it.
    drift = figure(text, "drift")
    threshold = re.search(r'<g id="drift-threshold">\s*<path d="M [\d.]+ ([\d.]+)\s+L [\d.]+ ([\d.]+)', drift)
    assert threshold and threshold.group(1) == threshold.group(2)
    level = float(threshold.group(1))
    above = re.search(r'<g id="drift-above">(.*?)</g>\s*</g>', drift, re.S).group(1)
    above_y = [float(y) for y in re.findall(r'<use [^>]*y="([\d.]+)"', above)]
    assert len(above_y) == 2 and all(y < level for y in above_y)  # SVG y grows downwards
    share_path = re.search(r'<g id="drift-share">\s*<path d="([^"]+)"', drift).group(1)
    share_y = [float(y) for y in re.findall(r"[ML] [\d.]+ ([\d.]+)", share_path)]
    assert len(share_y) == len(NIGHTS) - 1  # the cold-start night has no drift share
    assert sum(y > level for y in share_y) == len(NIGHTS) - 1 - 2
    assert f"threshold {churn_spec.drift.share_threshold:g} (drift.share_threshold)" in drift

    metric = figure(text, "metric")
    assert all(f'id="metric-{g}"' in metric for g in ("realised", "holdout", "decay-limit", "floor"))
    assert "No realised metric recorded yet" not in text

    versions = figure(text, "versions")
    assert 'id="versions-promotes"' in versions and 'id="versions-rollbacks"' in versions
    promotes = re.search(r'<g id="versions-promotes">(.*?)</g>\s*</g>', versions, re.S).group(1)
    rollbacks = re.search(r'<g id="versions-rollbacks">(.*?)</g>\s*</g>', versions, re.S).group(1)
    assert promotes.count("<use ") == 2 and rollbacks.count("<use ") == 1
    # The rollback sits between the night before it and the night after it.
    served = re.search(r'<g id="versions-served">(.*?)</g>\s*</g>', versions, re.S).group(1)
    night_x = [float(x) for x in re.findall(r'<use [^>]*x="([\d.]+)"', served)]  # one marker per night
    assert len(night_x) == len(NIGHTS)
    rollback_x = float(re.search(r'<use [^>]*x="([\d.]+)"', rollbacks).group(1))
    assert night_x[ROLLBACK_AFTER - 1] < rollback_x < night_x[ROLLBACK_AFTER]

    changes = tables["events"]
    assert [(c["event"], c["from"], c["to"], c["by"]) for _, c in changes] == [
        ("rollback", "v2", "v1", "alice"), ("promote", "v1", "v2", "nightshift"),
        ("promote", "–", "v1", "nightshift")]
    assert changes[0][0] == "fail" and changes[0][1]["why"] == f"bad scores {EVIL}"
    assert EVIL not in text  # escaped, read back as written above

    assert [(p["version"], p["nights"]) for _, p in tables["periods"]] == [("v1", "2"), ("v2", "2"), ("v1", "4")]
    nights = tables["runs"]
    assert [n["champion"] for _, n in reversed(nights)] == SERVED
    assert [n["drift share"] for _, n in reversed(nights)] == ["–", *(f"{n[2]:.4f}" for n in NIGHTS[1:])]
    assert nights[-1][1]["decision"] == "promoted" and nights[-1][1]["challenger"] == "v1"
    assert "://" not in text and "<script" not in text


def test_read_history_window_new_columns_and_no_table(pg_conn, churn_spec):
    assert read_history(pg_conn, churn_spec, days=7) == []  # no table yet: no history
    assert read_events(pg_conn, churn_spec) == []
    with pytest.raises(ValueError, match="days"):
        read_history(pg_conn, churn_spec, days=0)

    wh.ensure_warehouse(pg_conn, churn_spec)
    assert read_history(pg_conn, churn_spec, days=7) == []
    record_nights(pg_conn, churn_spec, list(enumerate(NIGHTS)), 0, dt.datetime.now(dt.timezone.utc))
    last = DAY0 + dt.timedelta(days=len(NIGHTS) - 1)
    assert [r["logical_date"] for r in read_history(pg_conn, churn_spec, days=3)] == [
        last - dt.timedelta(days=2), last - dt.timedelta(days=1), last]
    assert [r["logical_date"] for r in read_history(pg_conn, churn_spec, days=2, until=DAY0 + dt.timedelta(days=1))] \
        == [DAY0, DAY0 + dt.timedelta(days=1)]

    # A column added later (realised_metric) comes back and wins over the details where it is set;
    # nights recorded before it existed keep the decision's copy.
    runs_table = sql.Identifier(churn_spec.warehouse.schema, "pipeline_runs")
    with pg_conn, pg_conn.cursor() as cur:
        cur.execute(sql.SQL("ALTER TABLE {} ADD COLUMN realised_metric double precision").format(runs_table))
        cur.execute(sql.SQL("UPDATE {} SET realised_metric = 0.5 WHERE logical_date > %s").format(runs_table),
                    (DAY0 + dt.timedelta(days=3),))
    realised = [r["realised_metric"] for r in read_history(pg_conn, churn_spec, days=30)]
    assert realised == [n[6] for n in NIGHTS[:4]] + [0.5] * (len(NIGHTS) - 4)


def test_empty_history_says_no_runs_yet(churn_spec):
    text = health_page_html(churn_spec, [], [], generated_at=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))

    assert 'id="no-runs"' in text and "No runs yet" in text and "churn.pipeline_runs" in text
    assert "<svg" not in text and "No promotion or rollback recorded" in text


def test_plain_dicts_without_realised_metric_and_bad_events(churn_spec):
    runs = [{"logical_date": "2026-01-02", "decision": "skipped", "drift_share": 0.1, "champion_version": 1,
             "rows_published": 10},
            {"logical_date": dt.datetime(2026, 1, 1, 3, tzinfo=dt.timezone.utc), "decision": "promoted",
             "challenger_version": 1, "rows_published": 10}]
    text = health_page_html(churn_spec, runs, [{"event": "promote", "version": 1, "at": "2026-01-01T05:00:00+00:00",
                                                "by": "nightshift", "reason": "gate passed"}])
    assert "No realised metric recorded yet" in text
    assert [n["night"] for _, n in Tables(text)["runs"]] == ["2026-01-02", "2026-01-01"]  # sorted, newest first

    with pytest.raises(ValueError, match=r"event 0: event must be one of .*'demote'"):
        health_page_html(churn_spec, runs, [{"event": "demote", "version": 1, "at": "2026-01-01"}])
    with pytest.raises(ValueError, match="run 0: logical_date is required"):
        health_page_html(churn_spec, [{"decision": "skipped"}])
