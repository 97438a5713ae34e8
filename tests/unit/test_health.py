"""The model-health page: history read from a real warehouse, plots and tables checked in the page.

Eight nights go through the real run-history table and the real audit table: a cold start
(v1 promoted), quiet nights, a drift night that promotes v2, a drifted night that rejects
v3, a rollback to v1 by hand, then quiet nights again.
"""

from __future__ import annotations

import base64
import datetime as dt
import math
import re
import struct
from html.parser import HTMLParser

import matplotlib.dates as mdates
import pytest
from psycopg import sql

from include.nightshift import audit
from include.nightshift import warehouse as wh
from include.nightshift.health import (health_charts, health_page_html, read_events, read_history,
                                     write_health_page)
from include.nightshift.reports import png_data_uri

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


def figure_image(text: str, figure_id: str) -> dict[str, str]:
    """The attributes of the one <img> inside <figure id=figure_id>."""
    match = re.search(rf'<figure id="{figure_id}">(.*?)</figure>', text, re.S)
    assert match, f"no figure {figure_id}"
    images = [dict(attrs) for tag, attrs in Tags(match.group(1)).tags if tag == "img"]
    assert len(images) == 1, images
    return images[0]


class Tags(HTMLParser):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, list[tuple[str, str]]]] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, attrs))


def drawn(ax, gid: str) -> list:
    """The artists of a plot that carry `gid` (lines, marker sets, bar sets)."""
    return [a for a in ax.get_children() if a.get_gid() == gid]


def record_nights(conn, spec, nights, first: int, finished_base: dt.datetime) -> None:
    for i, (decision, reason, drift, champion, challenger, challenger_metric, realised) in nights:
        holdout = None if i == 0 else (0.83 if i in (4, 5) else 0.81)  # the serving champion's
        wh.upsert_run(conn, spec, {
            "logical_date": DAY0 + dt.timedelta(days=i), "dag_run_id": f"night-{i}", "rows_in": 1000 + i,
            "validation_passed": True, "drift_share": drift, "retrain_reason": reason, "decision": decision,
            "champion_version": champion, "challenger_version": challenger, "challenger_metric": challenger_metric,
            "metric_name": "roc_auc", "rows_published": 1000 + i,
            "finished_at": finished_base + dt.timedelta(minutes=i - first),
            "details": {"decision": {"details": {
                "realised_metric": realised, "champion_holdout_metric": holdout,
                "realised_interval": None if realised is None else [realised - 0.02, realised + 0.02]}}},
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
    # A promotion whose alias never moved (its run died after the intent): it must not be drawn.
    audit.record_intent(pg_conn, spec, change(spec, "promote", 9, 1, "night-killed", "nightshift", "gate passed"))
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
    charts = health_charts(churn_spec, runs, events)

    assert path == str(tmp_path / "health.html")
    assert "<svg" not in text
    for figure_id in ("drift", "metric", "rows", "versions"):
        image = figure_image(text, figure_id)
        assert image["src"].startswith("data:image/png;base64,") and image["alt"]
        png = base64.b64decode(image["src"].removeprefix("data:image/png;base64,"), validate=True)
        width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and width > 400 and height > 100
        assert image["src"] == png_data_uri(charts[figure_id])  # the picture is the figure checked below

    # The threshold is drawn, level, between the nights below it and those at or above it.
    threshold = float(churn_spec.drift.share_threshold)
    drift = charts["drift"].axes[0]
    (line,) = drawn(drift, "threshold")
    assert set(line.get_ydata()) == {threshold}
    assert line.get_label() == f"threshold {threshold:g} (drift.share_threshold)"
    (above,) = drawn(drift, "above")
    assert len(above.get_offsets()) == 2 and all(y >= threshold for _, y in above.get_offsets())
    (share,) = drawn(drift, "share")
    shares = [y for y in share.get_ydata() if not math.isnan(y)]
    assert len(shares) == len(NIGHTS) - 1  # the cold-start night has no drift share
    assert sum(y < threshold for y in shares) == len(NIGHTS) - 1 - 2
    assert "7 night(s) measured, 2 at or above the threshold" in figure_image(text, "drift")["alt"]

    metric = charts["metric"].axes[0]
    assert all(drawn(metric, g) for g in ("realised", "realised-interval", "holdout", "decay-limit", "floor"))
    (band,) = drawn(metric, "realised-interval")
    assert band.get_label() == "realised, 95% interval"
    assert "No realised metric recorded yet" not in text

    versions = charts["versions"].axes[0]
    (promotes,), (rollbacks,), (served,) = (drawn(versions, g) for g in ("promotes", "rollbacks", "served"))
    assert len(promotes.get_offsets()) == 2 and len(rollbacks.get_offsets()) == 1
    # The rollback sits between the night before it and the night after it.
    night_x = mdates.date2num(served.get_xdata())  # one marker per night
    assert len(night_x) == len(NIGHTS)
    rollback_x = rollbacks.get_offsets()[0][0]
    assert night_x[ROLLBACK_AFTER - 1] < rollback_x < night_x[ROLLBACK_AFTER]
    assert ("v1 for 4 night(s), then v2 for 2 night(s), then v1 for 2 night(s); 2 promotion(s), 1 rollback(s)"
            in figure_image(text, "versions")["alt"])

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
    with pg_conn.transaction(), pg_conn.cursor() as cur:
        cur.execute(sql.SQL("ALTER TABLE {} ADD COLUMN realised_metric double precision").format(runs_table))
        cur.execute(sql.SQL("UPDATE {} SET realised_metric = 0.5 WHERE logical_date > %s").format(runs_table),
                    (DAY0 + dt.timedelta(days=3),))
    realised = [r["realised_metric"] for r in read_history(pg_conn, churn_spec, days=30)]
    assert realised == [n[6] for n in NIGHTS[:4]] + [0.5] * (len(NIGHTS) - 4)


def test_empty_history_says_no_runs_yet(churn_spec):
    text = health_page_html(churn_spec, [], [], generated_at=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))

    assert 'id="no-runs"' in text and "No runs yet" in text and "churn.pipeline_runs" in text
    assert "<svg" not in text and "<img" not in text and "No promotion or rollback recorded" in text


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


def test_markup_in_recorded_values_is_text_on_the_page(churn_spec):
    runs = [{"logical_date": "2026-01-01", "decision": EVIL, "retrain_reason": EVIL, "champion_version": 1,
             "rows_published": 5}]
    text = health_page_html(churn_spec, runs, [{"event": "promote", "version": 1, "at": "2026-01-01T01:00:00+00:00",
                                                "by": EVIL, "reason": EVIL}])
    tables = Tables(text)

    assert EVIL not in text and "<script" not in text
    (_, night), = tables["runs"]
    assert (night["decision"], night["retrain reason"]) == (EVIL, EVIL)  # read back as written: text, not markup
    (_, change), = tables["events"]
    assert (change["by"], change["why"]) == (EVIL, EVIL)
    assert f"Last night: {EVIL.replace('<', '&lt;').replace('>', '&gt;')};" in text
