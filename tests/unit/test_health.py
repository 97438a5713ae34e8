"""The model-health page: history read from a real warehouse, plots and tables checked in the page.

Nine nights go through the real run-history, predictions and audit tables: a cold start (v1
promoted), quiet nights, a drift night that promotes v2, a drifted night that rejects v3, a
rollback to v1 by hand, two nights never recorded (a gap), quiet nights again, then, months
later, the night of the day the DAG was switched on: it failed (no source rows) and its record
names no champion. The page must keep the nights with data, name v1 as serving and mark the
failed night.
"""

from __future__ import annotations

import base64
import datetime as dt
import math
import re
import struct
from html.parser import HTMLParser

import numpy as np
import pytest
from psycopg import sql

from include.nightshift import audit
from include.nightshift import warehouse as wh
from include.nightshift.artifacts import ArtifactStore
from include.nightshift.health import (HEATMAP_CAP, drift_ratio, health_charts, health_page_html, read_events,
                                     read_history, read_outputs, write_health_page)
from include.nightshift.reports import png_data_uri
from include.nightshift.rollback import refresh_health_page

DAY0 = dt.date(2026, 1, 1)
EVIL = "<img src=x onerror=alert(1)>"
# (day offset, decision, reason, drift share, champion before, challenger, challenger metric, realised)
NIGHTS = [
    (0, "promoted", "no_champion", None, None, 1, 0.81, None),
    (1, "skipped", None, 0.10, 1, None, None, 0.80),
    (2, "skipped", None, 0.05, 1, None, None, 0.79),
    (3, "skipped", None, 0.10, 1, None, None, 0.78),
    (4, "promoted", "drift", 0.40, 1, 2, 0.83, 0.74),
    (5, "rejected", "drift", 0.30, 2, 3, 0.79, 0.82),
    # the rollback to v1 happens here; days 6 and 7 were never recorded
    (8, "skipped", None, 0.10, 1, None, None, 0.78),
    (9, "skipped", None, 0.15, 1, None, None, 0.78),
    # switched on months later: the scheduled night finds no rows and fails
    (300, "failed", None, None, None, None, None, None),
]
ROLLBACK_AFTER = 6  # nights recorded before the rollback
FAILED = len(NIGHTS) - 1  # the failed night's slot
SERVED = ["v1"] * 4 + ["v2"] * 2 + ["v1"] * 2 + ["–"]
ROWS = 20  # published rows per night with data
SCHEDULED = "scheduled__2026-01-10T00:00:00+00:00"  # night 7's run id: characters a URL must escape


def day(i: int) -> dt.date:
    return DAY0 + dt.timedelta(days=NIGHTS[i][0])


def run_id(i: int) -> str:
    return SCHEDULED if i == 7 else f"night-{i}"


def scores(i: int) -> list[float]:
    """Night i's published scores: spread wider each night (output drift to see)."""
    return [round(j / (ROWS - 1) * (0.5 + 0.05 * i), 6) for j in range(ROWS)]


def drift_columns(share: float | None, drifted_night: bool) -> dict | None:
    """Three features as the drift step records them: two distances and a p-value test."""
    if share is None:
        return None
    p_value = 0.01 if drifted_night else 0.5
    return {"tenure_months": {"method": "Wasserstein distance (normed)", "score": share, "threshold": 0.1,
                              "drifted": share >= 0.1},
            "region": {"method": "Jensen-Shannon distance", "score": 0.05, "threshold": 0.1, "drifted": False},
            "support_calls_30d": {"method": "K-S p_value", "score": p_value, "threshold": 0.05,
                                  "drifted": p_value < 0.05}}


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


def record_nights(conn, spec, indexes, finished_base: dt.datetime) -> None:
    """pipeline_runs rows as record_run writes them (details with the decision, drift columns and reports),
    and the predictions of every night that published."""
    for i in indexes:
        _, decision, reason, drift, champion, challenger, challenger_metric, realised = NIGHTS[i]
        holdout = None if i in (0, FAILED) else (0.83 if i in (4, 5) else 0.81)  # the serving champion's
        failed = decision == "failed"
        folder = f"file:///store/reports/{spec.name}/{day(i)}/{run_id(i)}"
        wh.upsert_run(conn, spec, {
            "logical_date": day(i), "dag_run_id": run_id(i), "rows_in": 0 if failed else 1000 + i,
            "validation_passed": not failed, "drift_share": drift, "retrain_reason": reason, "decision": decision,
            "champion_version": champion, "challenger_version": challenger, "challenger_metric": challenger_metric,
            "metric_name": "roc_auc", "rows_published": 0 if failed else ROWS,
            "finished_at": finished_base + dt.timedelta(minutes=i),
            "details": {"decision": {"details": {
                "realised_metric": realised, "champion_holdout_metric": holdout,
                "realised_interval": None if realised is None else [realised - 0.02, realised + 0.02]}},
                "drift_columns": drift_columns(drift, i in (4, 5)),
                "reports": {} if failed else {"validation": f"{folder}/validation/current/validation.html",
                                              **({"drift": f"{folder}/drift.html"} if drift is not None else {}),
                                              **({"evaluation": f"{folder}/evaluation.html"} if challenger else {})}},
        })
        if not failed:
            publish(conn, spec, i, challenger if decision == "promoted" else champion)


def publish(conn, spec, i: int, version: int) -> None:
    predictions = sql.Identifier(spec.warehouse.schema, "predictions")
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(sql.SQL(
            "INSERT INTO {} (score_date, customer_id, score, predicted_label, model_name, model_version, "
            "snapshot_sha256, dag_run_id, scored_at) VALUES (%s, %s, %s, %s, %s, %s, 'sha', %s, now())").format(
            predictions),
            [(day(i), j, score, int(score >= 0.5), spec.model_name, version, run_id(i))
             for j, score in enumerate(scores(i))])


def change(spec, event, to_version, from_version, run_id, actor, reason) -> dict:
    return {"event": event, "model_name": spec.model_name, "from_version": from_version, "to_version": to_version,
            "actor": actor, "reason": reason, "dag_run_id": run_id}


@pytest.fixture
def recorded(pg_conn, churn_spec):
    """The nine nights, their predictions and three champion changes, in the real tables."""
    spec = churn_spec
    wh.ensure_warehouse(pg_conn, spec)
    audit.ensure_audit(pg_conn, spec)
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)
    record_nights(pg_conn, spec, range(ROLLBACK_AFTER), past)
    audit.record_change(pg_conn, spec, change(spec, "promote", 1, None, "night-0", "nightshift", "gate passed"))
    audit.record_change(pg_conn, spec, change(spec, "promote", 2, 1, "night-4", "nightshift", "gate passed"))
    audit.record_change(pg_conn, spec, change(spec, "rollback", 1, 2, "manual__rollback", "alice",
                                              f"bad scores {EVIL}"))
    # A promotion whose alias never moved (its run died after the intent): it must not be drawn.
    audit.record_intent(pg_conn, spec, change(spec, "promote", 9, 1, "night-killed", "nightshift", "gate passed"))
    future = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
    record_nights(pg_conn, spec, range(ROLLBACK_AFTER, len(NIGHTS)), future)
    return pg_conn


@pytest.fixture
def history(recorded, churn_spec):
    runs = read_history(recorded, churn_spec, days=90)
    return runs, read_events(recorded, churn_spec), read_outputs(recorded, churn_spec,
                                                                 [r["logical_date"] for r in runs])


def test_read_history_gives_the_newest_recorded_nights_not_a_calendar_window(history, recorded, churn_spec):
    runs, events, outputs = history

    # 90 nights up to the failed one (day 300) reach back to night 0 (day 0): recorded nights, not days.
    assert [r["logical_date"] for r in runs] == [day(i) for i in range(len(NIGHTS))]
    assert [r["realised_metric"] for r in runs] == [n[7] for n in NIGHTS]  # from the decision's details
    assert runs[4]["champion_holdout_metric"] == 0.83 and runs[4]["drift_share"] == 0.40
    assert [(e["event"], e["to_version"]) for e in events] == [("promote", 1), ("promote", 2), ("rollback", 1)]
    assert [r["logical_date"] for r in read_history(recorded, churn_spec, days=3)] == [day(6), day(7), day(8)]
    assert [r["logical_date"] for r in read_history(recorded, churn_spec, days=2, until=day(6) - dt.timedelta(days=1))
            ] == [day(4), day(5)]

    # What consumers read of each night: exact quantiles (percentile_cont), positive rate; the failed night none.
    assert sorted(outputs) == [day(i) for i in range(FAILED)]
    for i in range(FAILED):
        got, expected = outputs[day(i)], scores(i)
        assert got["rows"] == ROWS and got["mean"] == pytest.approx(np.mean(expected))
        assert got["quantiles"] == pytest.approx(list(np.percentile(expected, [10, 25, 50, 75, 90])))
        assert float(got["positive_rate"]) == pytest.approx(np.mean([s >= 0.5 for s in expected]))


def test_page_keeps_the_nights_with_data_names_the_serving_version_and_marks_the_failed_night(
        history, churn_spec, tmp_path):
    runs, events, outputs = history
    path = write_health_page(tmp_path / "health.html", churn_spec, runs, events, outputs=outputs)
    text = (tmp_path / "health.html").read_text(encoding="utf-8")
    tables = Tables(text)
    charts = health_charts(churn_spec, runs, events, outputs)

    assert path == str(tmp_path / "health.html")
    assert "<svg" not in text
    for figure_id in ("drift", "features", "metric", "scores", "rate", "rows", "versions"):
        image = figure_image(text, figure_id)
        assert image["src"].startswith("data:image/png;base64,") and image["alt"]
        png = base64.b64decode(image["src"].removeprefix("data:image/png;base64,"), validate=True)
        width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and width > 400 and height > 100
        assert image["src"] == png_data_uri(charts[figure_id])  # the picture is the figure checked below

    # The header names what serves now (the rollback's v1), although the newest night recorded none.
    serving = re.search(r'<p id="serving"[^>]*>(.*?)</p>', text, re.S).group(1)
    assert "champion v1" in serving and "rollback" in serving and "alice" in serving
    assert tables["runs"][0][1]["champion"] == "–"
    assert "Last night: <span class=\"fail\">failed</span>; 1 failed night(s)" in text

    # Every plot has one slot per recorded night (no calendar: day 300 sits next to day 9), the failed
    # night marked with an X in its slot, and dotted lines where nights are missing.
    for figure_id, fig in charts.items():
        ax = fig.axes[0]
        assert ax.get_xlim() == (-0.5, len(NIGHTS) - 0.5), figure_id
        (failed,) = drawn(ax, "failed")
        assert [x for x, _ in failed.get_offsets()] == [FAILED], figure_id
        assert len(drawn(ax, "failed-band")) == 1
        assert sorted(line.get_xdata()[0] for line in drawn(ax, "gap")) == [ROLLBACK_AFTER - 0.5, FAILED - 0.5]

    threshold = float(churn_spec.drift.share_threshold)
    drift = charts["drift"].axes[0]
    (line,) = drawn(drift, "threshold")
    assert set(line.get_ydata()) == {threshold}
    (above,) = drawn(drift, "above")
    assert len(above.get_offsets()) == 2 and all(y >= threshold for _, y in above.get_offsets())
    (share,) = drawn(drift, "share")
    assert [i for i, y in enumerate(share.get_ydata()) if not math.isnan(y)] == list(range(1, FAILED))
    assert "7 night(s) measured, 2 at or above the threshold" in figure_image(text, "drift")["alt"]

    metric = charts["metric"].axes[0]
    assert all(drawn(metric, g) for g in ("realised", "realised-interval", "holdout", "decay-limit", "floor"))
    assert "No realised metric recorded yet" not in text

    versions = charts["versions"].axes[0]
    (promotes,), (rollbacks,), (served,) = (drawn(versions, g) for g in ("promotes", "rollbacks", "served"))
    assert list(served.get_xdata()) == list(range(len(NIGHTS)))
    assert [x for x, _ in promotes.get_offsets()] == [0, 4]  # on the nights that promoted, not on an edge
    assert [tuple(o) for o in rollbacks.get_offsets()] == [(ROLLBACK_AFTER - 0.5, 1)]  # between nights 5 and 6
    assert ("v1 for 4 night(s), then v2 for 2 night(s), then v1 for 2 night(s), then – for 1 night(s); "
            "2 promotion(s), 1 rollback(s)" in figure_image(text, "versions")["alt"])

    changes = tables["events"]
    assert [(c["event"], c["from"], c["to"], c["by"]) for _, c in changes] == [
        ("rollback", "v2", "v1", "alice"), ("promote", "v1", "v2", "nightshift"),
        ("promote", "–", "v1", "nightshift")]
    assert changes[0][0] == "fail" and changes[0][1]["why"] == f"bad scores {EVIL}"
    assert EVIL not in text  # escaped, read back as written above

    assert [(p["version"], p["nights"]) for _, p in tables["periods"]] == [
        ("–", "1"), ("v1", "2"), ("v2", "2"), ("v1", "4")]
    nights = tables["runs"]
    assert [n["champion"] for _, n in reversed(nights)] == SERVED
    assert [cls for cls, _ in nights] == ["fail"] + [""] * FAILED
    assert [n["drift share"] for _, n in reversed(nights)] == ["–", *(f"{n[3]:.4f}" for n in NIGHTS[1:-1]), "–"]
    assert nights[-1][1]["decision"] == "promoted" and nights[-1][1]["challenger"] == "v1"
    assert "://" not in text and "<script" not in text


def test_heatmap_of_feature_drift_against_each_threshold(history, churn_spec):
    runs, events, outputs = history
    ax = health_charts(churn_spec, runs, events, outputs)["features"].axes[0]

    (image,) = drawn(ax, "feature-drift")
    grid = image.get_array()
    # Spec order of the features, one column per night; not measured (cold start, failed night) is masked.
    assert [t.get_text() for t in ax.get_yticklabels()] == ["tenure_months", "support_calls_30d", "region"]
    assert grid.shape == (3, len(NIGHTS)) and list(grid.mask[:, 0]) == [True] * 3 and all(grid.mask[:, FAILED])
    shares = [n[3] for n in NIGHTS[1:FAILED]]
    assert list(grid[0, 1:FAILED]) == pytest.approx([min(max(s / 0.1, 1 / HEATMAP_CAP), HEATMAP_CAP) for s in shares])
    # A p-value drifts below its threshold: 0.05 / 0.01 = 5, capped; 0.05 / 0.5 = 0.1, floored.
    assert list(grid[1, 1:FAILED]) == pytest.approx([1 / HEATMAP_CAP] * 3 + [HEATMAP_CAP] * 2 + [1 / HEATMAP_CAP] * 2)
    assert all(v == 0.5 for v in grid[2, 1:FAILED])
    (dots,) = drawn(ax, "drifted-cells")  # Evidently's own verdicts
    assert sorted(map(tuple, dots.get_offsets())) == sorted(
        [(i, 0) for i in range(1, FAILED) if NIGHTS[i][3] >= 0.1] + [(4, 1), (5, 1)])

    assert drift_ratio({"score": 0.2, "threshold": 0.1, "drifted": True}) == 2  # a distance
    assert drift_ratio({"score": 0.2, "threshold": 0.05, "drifted": False}) == 0.25  # a p-value
    assert drift_ratio({"score": 1.0, "threshold": 0.0, "drifted": True}) == HEATMAP_CAP  # all null on a side
    assert drift_ratio({"score": None, "threshold": 0.1, "drifted": False}) is None


def test_output_drift_score_distribution_and_positive_rate_per_night(history, churn_spec):
    runs, events, outputs = history
    charts = health_charts(churn_spec, runs, events, outputs)

    scores_ax, rate_ax = charts["scores"].axes[0], charts["rate"].axes[0]
    (median,), (mean,) = drawn(scores_ax, "score-median"), drawn(scores_ax, "score-mean")
    assert list(median.get_ydata()[:FAILED]) == pytest.approx([np.median(scores(i)) for i in range(FAILED)])
    assert list(mean.get_ydata()[:FAILED]) == pytest.approx([np.mean(scores(i)) for i in range(FAILED)])
    assert math.isnan(median.get_ydata()[FAILED])  # the failed night published nothing
    assert drawn(scores_ax, "score-band-80") and drawn(scores_ax, "score-band-50")
    (rate,) = drawn(rate_ax, "positive-rate")
    assert list(rate.get_ydata()[:FAILED]) == pytest.approx(
        [np.mean([s >= 0.5 for s in scores(i)]) for i in range(FAILED)])
    assert rate.get_ydata()[FAILED - 1] > rate.get_ydata()[0]  # the output drifted upwards


def test_each_night_links_to_its_reports_and_its_airflow_run(history, churn_spec):
    runs, events, outputs = history
    text = health_page_html(churn_spec, runs, events, outputs=outputs)
    rows = re.findall(r"<tr class=\"[^\"]*\"><td[^>]*><a class=\"night\".*?</tr>", text, re.S)
    links = [{(dict(a).get("class"), dict(a)["href"]) for tag, a in Tags(row).tags if tag == "a"} for row in rows]

    night4 = links[len(NIGHTS) - 1 - 4]
    folder = "2026-01-05/night-4"
    assert night4 == {("night", "2026-01-05/"), ("report", f"{folder}/validation/current/validation.html"),
                      ("report", f"{folder}/drift.html"), ("report", f"{folder}/evaluation.html"),
                      ("airflow-run", "../../../dags/nightshift_churn/runs/night-4")}
    night7 = links[len(NIGHTS) - 1 - 7]
    assert ("airflow-run", "../../../dags/nightshift_churn/runs/scheduled__2026-01-10T00%3A00%3A00%2B00%3A00") \
        in night7
    # Resolved from the page's address in the reports app, the run link lands on the Airflow UI's run page.
    from urllib.parse import urljoin, unquote
    page = "http://airflow.example/nightshift/reports/churn/health.html"
    assert unquote(urljoin(page, dict(night7)["airflow-run"])) == \
        f"http://airflow.example/dags/nightshift_churn/runs/{SCHEDULED}"
    assert 'target="_blank" rel="noopener"' in text  # out of the UI's frame, into a tab of its own
    failed = links[0]
    assert {kind for kind, _ in failed} == {"night", "airflow-run"}  # no report written, still its run


def test_a_rollback_regenerates_the_page_with_the_restored_version(recorded, churn_spec, tmp_path, monkeypatch,
                                                                    caplog):
    store = ArtifactStore(tmp_path / "store")
    url = refresh_health_page(recorded, store, churn_spec)
    assert url == store.url("reports", "churn", "health.html")
    before = store.read_text(url)
    assert "champion v1" in re.search(r'<p id="serving"[^>]*>(.*?)</p>', before, re.S).group(1)

    audit.record_change(recorded, churn_spec, change(churn_spec, "rollback", 2, 1, "manual__rollback_2", "bob",
                                                     "v1 was worse"))
    refresh_health_page(recorded, store, churn_spec)
    serving = re.search(r'<p id="serving"[^>]*>(.*?)</p>', store.read_text(url), re.S).group(1)
    assert "champion v2" in serving and "bob" in serving

    # A page that cannot be written never fails the rollback: logged, None.
    def broken(*_, **__):
        raise RuntimeError("injected: pipeline_runs unreadable")

    monkeypatch.setattr("include.nightshift.health.read_history", broken)
    with caplog.at_level("ERROR"):
        assert refresh_health_page(recorded, store, churn_spec) is None
    assert "could not be written after the rollback" in caplog.text and "injected" in caplog.text


def test_read_history_new_columns_and_no_table(pg_conn, churn_spec):
    assert read_history(pg_conn, churn_spec, days=7) == []  # no table yet: no history
    assert read_events(pg_conn, churn_spec) == []
    assert read_outputs(pg_conn, churn_spec, [DAY0]) == {}
    with pytest.raises(ValueError, match="days"):
        read_history(pg_conn, churn_spec, days=0)

    wh.ensure_warehouse(pg_conn, churn_spec)
    assert read_history(pg_conn, churn_spec, days=7) == []
    record_nights(pg_conn, churn_spec, range(len(NIGHTS)), dt.datetime.now(dt.timezone.utc))

    # A column added later (realised_metric) comes back and wins over the details where it is set;
    # nights recorded before it existed keep the decision's copy.
    runs_table = sql.Identifier(churn_spec.warehouse.schema, "pipeline_runs")
    with pg_conn.transaction(), pg_conn.cursor() as cur:
        cur.execute(sql.SQL("ALTER TABLE {} ADD COLUMN realised_metric double precision").format(runs_table))
        cur.execute(sql.SQL("UPDATE {} SET realised_metric = 0.5 WHERE logical_date > %s").format(runs_table),
                    (day(3),))
    realised = [r["realised_metric"] for r in read_history(pg_conn, churn_spec, days=30)]
    assert realised == [n[7] for n in NIGHTS[:4]] + [0.5] * (len(NIGHTS) - 4)


def test_empty_history_says_no_runs_yet(churn_spec):
    text = health_page_html(churn_spec, [], [], generated_at=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))

    assert 'id="no-runs"' in text and "No runs yet" in text and "churn.pipeline_runs" in text
    assert "<svg" not in text and "<img" not in text and "No promotion or rollback recorded" in text
    assert "Serving now: champion –" in text


def test_plain_dicts_without_realised_metric_and_bad_events(churn_spec):
    runs = [{"logical_date": "2026-01-02", "decision": "skipped", "drift_share": 0.1, "champion_version": 1,
             "rows_published": 10},
            {"logical_date": dt.datetime(2026, 1, 1, 3, tzinfo=dt.timezone.utc), "decision": "promoted",
             "challenger_version": 1, "rows_published": 10}]
    events = [{"event": "promote", "version": 1, "at": "2026-01-01T05:00:00+00:00", "by": "nightshift",
               "reason": "gate passed"},
              # The alias moved in the MLflow UI, found by the second night's run (alias watch).
              {"event": "external", "version": 2, "from_version": 1, "at": "2026-01-02T01:00:00+00:00",
               "by": "mlflow", "reason": "moved outside Nightshift", "dag_run_id": "second"}]
    runs[0]["dag_run_id"] = "second"
    text = health_page_html(churn_spec, runs, events)
    assert "Serving now: champion v2" in text and Tables(text)["events"][0] == ("fail", {
        "when": "2026-01-02 01:00 UTC", "event": "external", "from": "v1", "to": "v2", "by": "mlflow",
        "why": "moved outside Nightshift"})
    (externals,) = drawn(health_charts(churn_spec, runs, events)["versions"].axes[0], "externals")
    assert [tuple(o) for o in externals.get_offsets()] == [(1, 2)]  # on the night whose run found it
    assert "No realised metric recorded yet" in text and "No per-feature drift score recorded yet" in text
    assert "No published rows in the predictions table" in text
    assert [n["night"] for _, n in Tables(text)["runs"]] == ["2026-01-02", "2026-01-01"]  # sorted, newest first

    with pytest.raises(ValueError, match=r"event 0: event must be one of .*'demote'"):
        health_page_html(churn_spec, runs, [{"event": "demote", "version": 1, "at": "2026-01-01"}])
    with pytest.raises(ValueError, match="run 0: logical_date is required"):
        health_page_html(churn_spec, [{"decision": "skipped"}])


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_output_of_other_tasks(task):
    """Multiclass: each predicted class's share per night; regression: the mean predicted value."""
    from pathlib import Path

    from include.nightshift.spec import load_spec

    name = {"multiclass": "flights_status", "regression": "flights_delay"}[task]
    spec = load_spec(Path(__file__).parents[2] / "examples" / name / f"{name}.yaml")
    runs = [{"logical_date": DAY0 + dt.timedelta(days=i), "decision": "skipped", "champion_version": 1,
             "rows_published": 10} for i in range(2)]
    outputs = {DAY0: {"rows": 10, "mean": 3.0, "quantiles": [1, 2, 3, 4, 5],
                      "class_shares": {"on_time": 0.7, "late": 0.3}},
               DAY0 + dt.timedelta(days=1): {"rows": 10, "mean": 5.0, "quantiles": [2, 3, 4, 5, 6],
                                             "class_shares": {"on_time": 0.4, "late": 0.5, "cancelled": 0.1}}}
    ax = health_charts(spec, runs, [], outputs)["rate"].axes[0]
    text = health_page_html(spec, runs, [], outputs=outputs)
    if task == "multiclass":
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert legend == list(spec.label.classes)  # stacked in the spec's order
        heights = {c: [round(r.get_height(), 9) for r in drawn(ax, f"class-share-{c}")] for c in legend}
        assert heights == {"on_time": [0.7, 0.4], "late": [0.3, 0.5], "very_late": [0, 0], "cancelled": [0, 0.1]}
        assert "cancelled 10.0%" in text
    else:
        (mean,) = drawn(ax, "mean-prediction")
        assert list(mean.get_ydata()) == [3.0, 5.0]
        assert "Mean predicted value" in text and "mean prediction" in text


def test_markup_in_recorded_values_is_text_on_the_page(churn_spec):
    runs = [{"logical_date": "2026-01-01", "decision": EVIL, "retrain_reason": EVIL, "champion_version": 1,
             "rows_published": 5, "dag_run_id": EVIL, "details": {"reports": {EVIL: f"s3://b/reports/churn/{EVIL}"}}}]
    text = health_page_html(churn_spec, runs, [{"event": "promote", "version": 1, "at": "2026-01-01T01:00:00+00:00",
                                                "by": EVIL, "reason": EVIL}])
    tables = Tables(text)

    assert EVIL not in text and "<script" not in text
    (_, night), = tables["runs"]
    assert (night["decision"], night["retrain reason"], night["Airflow run"], night["reports"]) == (EVIL,) * 4
    (_, change), = tables["events"]
    assert (change["by"], change["why"]) == (EVIL, EVIL)
    assert f"Last night: {EVIL.replace('<', '&lt;').replace('>', '&gt;')}. Generated" in text


def test_the_staleness_curve_shows_the_decay_and_the_recommended_age_from_model_staleness(history, recorded,
                                                                                         churn_spec):
    """Issue 14 part 3 on the page: each labelled day scored by a fresh and an older version; the older one
    loses 0.004 of roc_auc per night of age, so realised_tolerance 0.05 is reached at about 12.5 nights,
    against max_model_age_days 30 (looser than the recommendation: the page says so)."""
    from include.nightshift.health import read_staleness, staleness_chart
    from include.nightshift.staleness import AgePoint, recommend_for

    spec = churn_spec
    assert read_staleness(recorded, spec) == []  # the table exists (migration 10), no day yet: no section
    rows = []
    for i in range(10):
        labelled, older_by = dt.date(2026, 3, 1) + dt.timedelta(days=i), 3 + i
        jitter = 0.001 * ((-1) ** i)
        rows += [{"day": labelled, "model_name": spec.model_name, "version": 5, "age_days": 1.0, "rows": 500,
                  "metric_name": spec.promotion.metric, "metric": 0.80, "measured_by": f"r{i}"},
                 {"day": labelled, "model_name": spec.model_name, "version": 2, "age_days": 1.0 + older_by, "rows": 500,
                  "metric_name": spec.promotion.metric, "metric": 0.80 - 0.004 * older_by + jitter,
                  "measured_by": f"r{i}"}]
    wh.record_staleness(recorded, spec, rows)
    found = read_staleness(recorded, spec)
    assert len(found) == 20 and {r["version"] for r in found} == {2, 5}

    runs, events, outputs = history
    text = health_page_html(spec, runs, events, outputs=outputs, staleness=found)
    image = figure_image(text, "staleness")
    assert image["src"].startswith("data:image/png;base64,")
    cadence = recommend_for(spec, [AgePoint(r["day"], r["version"], r["age_days"], r["metric"], r["rows"])
                                   for r in found])
    assert 11 < cadence.recommended_max_age < 14, cadence
    assert f"Recommended maximum age {cadence.recommended_max_age:.1f} nights" in image["alt"]
    assert "promotion.max_model_age_days 30 is looser than" in text and "10 labelled day(s), 2 version(s)" in text

    ax = staleness_chart(spec, [AgePoint(r["day"], r["version"], r["age_days"], r["metric"], r["rows"])
                                for r in found], cadence).axes[0]
    assert len(drawn(ax, "staleness-pairs")[0].get_offsets()) == 10  # one older-version point per day
    assert drawn(ax, "staleness-fit") and drawn(ax, "staleness-tolerance") and drawn(ax, "staleness-recommended")

    few = health_page_html(spec, runs, events, outputs=outputs, staleness=found[:8])  # 4 days: under min_days 7
    assert "No recommendation yet: 4 labelled day(s) scored by two versions of different ages; 7 needed." in few
    assert 'id="staleness"' not in health_page_html(spec, runs, events, outputs=outputs)


# --- issue 14 part 2: the shadow against the champion; part 4/6: what the serving checks found ----------------


def shadow_evidence(version: int, champion: int, days: list[tuple[str, float | None, float | None]], *,
                    won: int = 0, wins: bool = False) -> dict:
    """A night's shadow evidence as the decide step keeps it (details.decision.details.shadow)."""
    return {"version": version, "champion_version": champion, "metric": "roc_auc", "greater_is_better": True,
            "min_nights": 3, "min_improvement": 0.0,
            "days": [{"day": d, "rows": 900, "champion": c, "shadow": s,
                      "gain": None if c is None or s is None else s - c, "beats": c is not None and s is not None and s > c}
                     for d, c, s in days],
            "nights_won": won, "wins": wins, "summary": f"v{version} against v{champion}: won {won} of 3",
            "verdict": None}


def shadow_night(night: str, shadow: dict, **more) -> dict:
    return {"logical_date": night, "decision": "skipped", "champion_version": 5, "rows_published": 10,
            "dag_run_id": f"n-{night}", "details": {"decision": {"details": {"shadow": shadow}}, **more}}


SHADOW_NIGHTS = [
    shadow_night("2026-01-10", {}),  # no shadow yet
    shadow_night("2026-01-11", shadow_evidence(7, 5, [("2026-01-09", 0.80, 0.81)], won=1)),
    # the next night measures 01-09 again (more labels arrived): its value is the one drawn
    shadow_night("2026-01-12", shadow_evidence(7, 5, [("2026-01-09", 0.78, 0.84), ("2026-01-10", 0.79, 0.82)], won=2)),
    shadow_night("2026-01-13", shadow_evidence(8, 5, [("2026-01-11", 0.80, None), ("2026-01-12", 0.81, 0.83)],
                                               won=3, wins=True)),
]


def test_the_shadow_chart_draws_champion_and_shadow_per_labelled_day_and_the_newest_evidence(churn_spec):
    from include.nightshift.health import shadow_chart, shadow_points

    text = health_page_html(churn_spec, SHADOW_NIGHTS)
    image = figure_image(text, "shadow")
    assert image["src"].startswith("data:image/png;base64,")
    assert "on 4 labelled day(s) from 2026-01-09 to 2026-01-12" in image["alt"] and "1 night(s) the shadow won" in \
        image["alt"]
    (cls, newest), = Tables(text)["shadow-evidence"]
    assert (newest["night"], newest["shadow"], newest["champion"], newest["nights won"], newest["promotion"]) == (
        "2026-01-13", "v8", "v5", "3 of 3", "yes: shadow_wins") and cls == "pass"
    assert newest["summary"] == "v8 against v5: won 3 of 3"
    assert 'id="no-shadow"' not in text

    points = shadow_points(SHADOW_NIGHTS)
    assert [(p["day"].isoformat(), p["champion"], p["shadow"], p["night"].isoformat()) for p in points] == [
        ("2026-01-09", 0.78, 0.84, "2026-01-12"), ("2026-01-10", 0.79, 0.82, "2026-01-12"),
        ("2026-01-11", 0.80, None, "2026-01-13"), ("2026-01-12", 0.81, 0.83, "2026-01-13")]
    ax = shadow_chart(churn_spec, SHADOW_NIGHTS).axes[0]
    (champion,) = drawn(ax, "champion-v5")  # one champion all along: one line over the four days
    assert [d.isoformat() for d in champion.get_xdata()] == ["2026-01-09", "2026-01-10", "2026-01-11", "2026-01-12"]
    assert list(champion.get_ydata()) == [0.78, 0.79, 0.80, 0.81]  # 01-09 once, with the newer night's 0.78
    (v7,), (v8,) = drawn(ax, "shadow-v7"), drawn(ax, "shadow-v8")  # another shadow version: a line of its own
    assert list(v7.get_ydata()) == [0.84, 0.82] and [d.isoformat() for d in v8.get_xdata()] == ["2026-01-11",
                                                                                                 "2026-01-12"]
    assert math.isnan(v8.get_ydata()[0]) and v8.get_ydata()[1] == 0.83
    assert {t.get_text() for t in ax.get_legend().get_texts()} >= {"champion v5", "shadow v7", "shadow v8"}
    (won,) = drawn(ax, "shadow-won")  # the night v8 won promotion
    assert [d.isoformat() for d in won.get_xdata()] == ["2026-01-13", "2026-01-13"]
    assert len(drawn(ax, "shadow-beats")[0].get_offsets()) == 3  # the days the shadow was ahead


def test_a_shadow_not_measured_is_shown_without_a_chart_and_no_shadow_says_so(churn_spec):
    waiting = [shadow_night("2026-01-10", {"version": 7, "champion_version": 5,
                                           "not_measured": "no labelled day since the shadow began"})]
    from include.nightshift.health import shadow_chart

    text = health_page_html(churn_spec, waiting)
    assert 'id="shadow"' not in text
    with pytest.raises(ValueError, match="no labelled day was compared"):
        shadow_chart(churn_spec, waiting)
    (_, row), = Tables(text)["shadow-evidence"]
    assert (row["shadow"], row["nights won"], row["summary"]) == ("v7", "–",
                                                                  "not measured: no labelled day since the shadow began")

    plain = health_page_html(churn_spec, [shadow_night("2026-01-10", {}), {"logical_date": "2026-01-11"}])
    assert re.search(r'<p id="no-shadow" class="note">No night of these 2 had a shadow', plain)
    assert 'id="shadow"' not in plain and "shadow-evidence" not in plain


def test_the_skew_table_lists_the_nights_whose_serving_checks_found_something_newest_first(churn_spec):
    clean = {"environment": {"recorded": True, "changes": [], "summary": "v5: unchanged since training"},
             "round_trip": {"passed": True, "rows": 200, "max_difference": 0.0, "tolerance": 1e-9},
             "skew": {"rows": 500, "tolerance": 1e-6, "findings": [], "passed": True,
                      "against_training": {"tenure_months": {"null_share": 0.0, "training_null_share": 0.0,
                                                             "null_share_flagged": False,
                                                             "outside_training_range": True}}}}
    skewed = {**clean, "skew": {**clean["skew"], "passed": False, "findings": [
        {"feature": "monthly_charges", "statistics": {"mean": [64.5, 6450.0], "max": [118.7, 11870.0]}}]}}
    changed = {**clean, "environment": {"recorded": True, "summary": "v5: changed", "changes": [
        {"name": "xgboost", "recorded": "3.0.1", "now": "3.1.0"}]},
        "round_trip": {"passed": False, "rows": 200, "max_difference": 0.0004, "tolerance": 1e-9}}
    failed = {"root_failure": [{"task": "score", "message": "ServingSkew: the serving path does not reproduce "
                                                            "training: v5 ..."}]}
    runs = [{"logical_date": "2026-02-01", "details": {"serving": clean}},
            {"logical_date": "2026-02-02", "details": {"serving": skewed}},
            {"logical_date": "2026-02-03", "details": {"serving": clean}},
            {"logical_date": "2026-02-04", "champion_version": 5, "details": {"serving": changed}},
            {"logical_date": "2026-02-05", "decision": "failed", "details": failed}]
    text = health_page_html(churn_spec, runs)
    rows = [(cls, r["night"], r["check"], r["feature / library"], r["evidence"]) for cls, r in Tables(text)["skew-findings"]]
    assert [r[1:4] for r in rows] == [("2026-02-05", "score failed", "score"),
                                      ("2026-02-04", "dependency change", "xgboost"),
                                      ("2026-02-04", "round trip", "v5"),
                                      ("2026-02-02", "skew", "monthly_charges")]
    assert rows[1][4] == "3.0.1 at training, 3.1.0 tonight"
    assert rows[2][4] == "largest difference 0.0004 (tolerance 1e-09, 200 rows)"
    assert rows[3][4] == ("mean: training path 64.5, serving path 6450; max: training path 118.7, serving path "
                          "11870 (skew.tolerance 1e-06, 500 rows)") and rows[3][0] == "fail"
    assert "2026-02-01" not in {r[1] for r in rows} and "2026-02-03" not in {r[1] for r in rows}  # clean nights
    assert "3 night(s) found something" in text

    quiet = health_page_html(churn_spec, [runs[0], runs[2]])
    assert re.search(r'<p id="no-skew" class="note">No finding: on the 2 night\(s\) of these 2', quiet)
    assert "skew-findings" not in quiet


def test_a_sharded_nights_findings_name_the_shard_that_found_them(churn_spec):
    """skew.sharded_night_checks tags what a shard's worker found with its shard; the page says which."""
    from include.nightshift.skew import sharded_night_checks

    score = {"environment": {"recorded": True, "changes": [], "summary": "v5: unchanged since training"},
             "round_trip": {"passed": True, "rows": 200, "max_difference": 0.0, "tolerance": 1e-9}}
    shard = {"environment": {"recorded": True, "changes": [{"name": "numpy", "recorded": "2.3.0", "now": "2.4.0"}]},
             "round_trip": {"passed": True, "max_difference": 0.0},
             "skew": {"rows": 300, "tolerance": 1e-6, "passed": False, "against_training": {},
                      "findings": [{"feature": "age", "statistics": {"mean": [40.0, 41.0]}}]}}
    serving = sharded_night_checks(score, [(3, shard)])
    text = health_page_html(churn_spec, [{"logical_date": "2026-02-01", "details": {"serving": serving}}])
    rows = {r["check"]: r["evidence"] for _, r in Tables(text)["skew-findings"]}
    assert rows["dependency change"] == "2.3.0 at training, 2.4.0 tonight (on shard 3's worker)"
    assert rows["skew"].startswith("shard 3: mean: training path 40, serving path 41")


def test_shadow_and_serving_evidence_reach_the_page_through_the_warehouse(pg_conn, churn_spec):
    """The same nights written to pipeline_runs (details as jsonb) and read back by read_history."""
    wh.ensure_warehouse(pg_conn, churn_spec)
    skewed = {"skew": {"rows": 50, "tolerance": 1e-6, "findings": [
        {"feature": "region", "statistics": {"share[north]": [0.25, 0.5]}}]}}
    for i, night in enumerate(SHADOW_NIGHTS):
        details = {**night["details"], **({"serving": skewed} if i == 1 else {})}
        wh.upsert_run(pg_conn, churn_spec, {"logical_date": dt.date.fromisoformat(night["logical_date"]),
                                            "dag_run_id": night["dag_run_id"], "decision": "skipped",
                                            "champion_version": 5, "details": details})
    runs = read_history(pg_conn, churn_spec)
    text = health_page_html(churn_spec, runs)
    assert "on 4 labelled day(s) from 2026-01-09 to 2026-01-12" in figure_image(text, "shadow")["alt"]
    (_, newest), = Tables(text)["shadow-evidence"]
    assert (newest["night"], newest["nights won"]) == ("2026-01-13", "3 of 3")
    (_, finding), = Tables(text)["skew-findings"]
    assert (finding["night"], finding["feature / library"], finding["evidence"]) == (
        "2026-01-11", "region", "share[north]: training path 0.25, serving path 0.5 (skew.tolerance 1e-06, 50 rows)")
