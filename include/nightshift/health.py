"""The model-health page of one data set: how the nights went, on one static page.

Four plots over the recent nights, each an inline SVG drawn by matplotlib (no script, nothing
fetched: the page opens offline and from any URL, like the other reports):

- drift share, with the spec's threshold drawn (nights at or above it marked);
- the champion's realised metric on the rows whose labels arrived that night, with the
  champion's holdout metric, the decay limit (holdout minus ``promotion.realised_tolerance``)
  and the floor: the lines the retrain decision compares it with;
- rows published;
- which version was champion each night, with promotions and rollbacks marked;

then the champion changes, the champion periods and every night in a table.

Inputs are plain dicts so the page can be fed from anywhere: ``read_history`` gives the
run rows of ``<schema>.pipeline_runs``, ``read_events`` the rows of
``<schema>.champion_changes`` (audit.py). A run dict uses these keys (missing keys are
treated as unknown):

- ``logical_date`` (date, datetime or ISO string): the night; the only required key;
- ``decision`` (skipped / promoted / rejected / failed), ``retrain_reason``;
- ``drift_share`` (float or None: no champion to compare with);
- ``realised_metric``, ``champion_holdout_metric`` (float or None): the monitor's numbers;
  when a key is absent they are read from ``details["decision"]["details"]``, where the
  decide step records them;
- ``champion_version`` (the champion before the night's evaluation),
  ``challenger_version``, ``champion_metric``, ``challenger_metric``;
- ``rows_in``, ``rows_published``; ``dag_run_id``, ``finished_at`` (to place champion
  changes between nights); ``details`` (dict).

An event dict: ``event`` ('promote' or 'rollback'), the new version as ``to_version`` (or
``version``), ``from_version``, when as ``changed_at`` (or ``at``), who as ``actor`` (or
``by``), ``reason``, ``dag_run_id``.
"""

from __future__ import annotations

import datetime as dt
import io
import math
import re
from pathlib import Path
from typing import Any

from psycopg2 import sql

from include.nightshift import audit, warehouse
from include.nightshift.reports import MISSING, esc, num, page, status, table

EVENTS = ("promote", "rollback")
MONITOR_KEYS = ("realised_metric", "champion_holdout_metric")
HALF_DAY = dt.timedelta(hours=12)
COLORS = {"line": "#1f4e9c", "threshold": "#b00020", "above": "#b00020", "holdout": "#137333",
          "limit": "#b45309", "floor": "#6b7280", "bars": "#6b8fd6", "promote": "#137333", "rollback": "#b00020"}


# --------------------------------------------------------------------------- reading


def read_history(conn: Any, spec: Any, days: int, *, until: dt.date | None = None) -> list[dict[str, Any]]:
    """The run rows of the `days` nights up to `until` (default: the newest night recorded), oldest first.

    Every column of ``<schema>.pipeline_runs`` comes back (a column added later, such as
    realised_metric, without a change here); ``realised_metric`` and
    ``champion_holdout_metric`` come from their own columns when recorded there, else from
    the decision's details (where the decide step keeps them). No table yet means no history: [].
    """
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise ValueError(f"read_history: days must be a positive integer, got {days!r}")
    runs = sql.Identifier(spec.warehouse.schema, warehouse.PIPELINE_RUNS)
    with conn, conn.cursor() as cur:
        if not warehouse._table_exists(cur, spec, warehouse.PIPELINE_RUNS):
            return []
        if until is None:
            cur.execute(sql.SQL("SELECT max(logical_date) FROM {}").format(runs))
            until = cur.fetchone()[0]
            if until is None:
                return []
        cur.execute(sql.SQL("SELECT * FROM {} WHERE logical_date > %s AND logical_date <= %s "
                            "ORDER BY logical_date").format(runs), (until - dt.timedelta(days=days), until))
        names = [c.name for c in cur.description]
        rows = [dict(zip(names, row)) for row in cur.fetchall()]
    for row in rows:
        for key in MONITOR_KEYS:
            row[key] = _monitored(row, key)
    return rows


def _monitored(run: dict[str, Any], key: str) -> Any:
    """A monitor number: its own column when recorded, else the decide step's copy in details."""
    if run.get(key) is not None:
        return run[key]
    return (((run.get("details") or {}).get("decision") or {}).get("details") or {}).get(key)


def read_events(conn: Any, spec: Any) -> list[dict[str, Any]]:
    """Every champion change (audit.champion_changes rows), oldest first; [] before the first one."""
    return audit.changes(conn, spec)


# --------------------------------------------------------------------------- normalising


def _day(value: Any, what: str) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value[:10])
        except ValueError:
            pass
    raise ValueError(f"{what}: {value!r} is not a date")


def _moment(value: Any, what: str) -> dt.datetime:
    """A naive UTC datetime (what matplotlib plots), from a datetime, date or ISO string."""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{what}: {value!r} is not a date or time") from None
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.timezone.utc).replace(tzinfo=None) if value.tzinfo else value
    if isinstance(value, dt.date):
        return dt.datetime.combine(value, dt.time())
    raise ValueError(f"{what}: {value!r} is not a date or time")


def _float(value: Any) -> float | None:
    try:
        value = None if value is None else float(value)
    except (TypeError, ValueError):
        return None
    return value if value is not None and math.isfinite(value) else None


def _int(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def _runs(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One plain record per night, oldest first, with the version that served it.

    The version that scored a night is the challenger on a promotion night (the evaluate step
    moves the alias before scoring) and the recorded champion otherwise.
    """
    out = []
    for i, run in enumerate(runs):
        if run.get("logical_date") is None:
            raise ValueError(f"run {i}: logical_date is required")
        promoted = run.get("decision") == "promoted"
        out.append({
            **run,
            "day": _day(run["logical_date"], f"run {i} logical_date"),
            "drift_share": _float(run.get("drift_share")),
            **{key: _float(_monitored(run, key)) for key in MONITOR_KEYS},
            "rows_published": _int(run.get("rows_published")),
            "served_version": _int(run.get("challenger_version") if promoted else run.get("champion_version")),
        })
    return sorted(out, key=lambda r: r["day"])


def _events(events: list[dict[str, Any]], runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Events with their kind checked and a position on the nights' axis.

    A change made by a nightly run sits on that night; any other (a rollback) sits just before
    the first night that finished after it, or after the last night: the wall clock of a
    simulated or backfilled night says nothing about where it belongs.
    """
    by_run = {r.get("dag_run_id"): r["day"] for r in runs if r.get("dag_run_id")}
    finished = [(_moment(r["finished_at"], "finished_at"), r["day"]) for r in runs if r.get("finished_at")]
    out = []
    for i, e in enumerate(events):
        kind = e.get("event")
        if kind not in EVENTS:
            raise ValueError(f"event {i}: event must be one of {EVENTS}, got {kind!r}")
        at = _moment(e.get("changed_at", e.get("at")), f"event {i} changed_at")
        if e.get("dag_run_id") in by_run:
            x = _moment(by_run[e["dag_run_id"]], "night")
        elif finished:
            later = [day for end, day in finished if end >= at]
            x = _moment(min(later), "night") - HALF_DAY if later else _moment(runs[-1]["day"], "night") + HALF_DAY
        else:
            x = at
        out.append({"event": kind, "version": _int(e.get("to_version", e.get("version"))),
                    "from_version": _int(e.get("from_version")), "at": at, "x": x,
                    "by": e.get("actor", e.get("by")), "reason": e.get("reason")})
    return sorted(out, key=lambda e: e["at"])


# --------------------------------------------------------------------------- plots


def _svg(fig: Any, prefix: str) -> str:
    """The figure as inline SVG: no XML prolog or DOCTYPE, no namespace URLs, ids made unique per plot.

    Inline SVG in HTML needs no xmlns (the HTML parser puts it in the SVG namespace), and
    several plots on one page must not share ids such as ``axes_1``.
    """
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight",
                metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    text = buffer.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", text, count=2)
    text = re.sub(r'(\bid="|href="#|url\(#)([^")]+)', lambda m: f"{m.group(1)}{prefix}-{m.group(2)}", text)
    return text.replace("<svg", f'<svg role="img" aria-label="{esc(prefix)}"', 1)


def _axes(title: str, x_range: tuple[dt.datetime, dt.datetime]):
    import matplotlib.dates as mdates
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 2.6))
    ax = fig.add_subplot()
    ax.set_title(title, loc="left", fontsize=11)
    ax.set_xlim(*x_range)
    locator = mdates.AutoDateLocator(maxticks=12)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.grid(True, color="#e5e7eb", linewidth=0.6)
    return fig, ax


def _legend(ax: Any) -> None:
    """Beside the plot, not over the data."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)


def _nan(values: list[float | None]) -> list[float]:
    return [math.nan if v is None else v for v in values]


def _drift_plot(spec: Any, runs: list[dict], x: list[dt.datetime], x_range) -> str:
    threshold = float(spec.drift.share_threshold)
    fig, ax = _axes("Drift share: features drifted / all features", x_range)
    ax.plot(x, _nan([r["drift_share"] for r in runs]), marker="o", color=COLORS["line"], gid="share",
            label="drift share")
    above = [(xi, r["drift_share"]) for xi, r in zip(x, runs)
             if r["drift_share"] is not None and r["drift_share"] >= threshold]
    if above:
        ax.scatter(*zip(*above), color=COLORS["above"], zorder=3, gid="above", label="at or above threshold")
    ax.axhline(threshold, color=COLORS["threshold"], linestyle="--", gid="threshold",
               label=f"threshold {threshold:g} (drift.share_threshold)")
    ax.set_ylim(0, 1.02)
    _legend(ax)
    return _svg(fig, "drift")


def _metric_plot(spec: Any, runs: list[dict], x: list[dt.datetime], x_range) -> str:
    pro = spec.promotion
    gib, tolerance = bool(pro.greater_is_better), float(pro.realised_tolerance)
    fig, ax = _axes(f"Champion's {pro.metric}: realised on newly labelled rows, and on its holdout", x_range)
    holdout = _nan([r["champion_holdout_metric"] for r in runs])
    ax.plot(x, holdout, drawstyle="steps-mid", linestyle="--", color=COLORS["holdout"], gid="holdout",
            label="holdout (when promoted)")
    limit = [h - tolerance if gib else h + tolerance for h in holdout]
    ax.plot(x, limit, drawstyle="steps-mid", linestyle=":", color=COLORS["limit"], gid="decay-limit",
            label=f"decay limit (realised_tolerance {tolerance:g})")
    ax.axhline(float(pro.floor), color=COLORS["floor"], linestyle="-.", linewidth=0.8, gid="floor",
               label=f"floor {float(pro.floor):g}")
    ax.plot(x, _nan([r["realised_metric"] for r in runs]), marker="o", color=COLORS["line"], gid="realised",
            label="realised")
    _legend(ax)
    return _svg(fig, "metric")


def _rows_plot(runs: list[dict], x: list[dt.datetime], x_range) -> str:
    fig, ax = _axes("Rows published", x_range)
    ax.bar(x, [r["rows_published"] or 0 for r in runs], width=0.7, color=COLORS["bars"], gid="bars")
    ax.set_ylim(bottom=0)
    return _svg(fig, "rows")


def _version_plot(runs: list[dict], events: list[dict], x: list[dt.datetime], x_range) -> str:
    from matplotlib.ticker import MaxNLocator

    fig, ax = _axes("Champion version serving each night (promotions ▲, rollbacks ▼)", x_range)
    ax.plot(x, _nan([r["served_version"] for r in runs]), drawstyle="steps-mid", marker="o", color=COLORS["line"],
            gid="served", label="champion")
    for kind, marker in (("promote", "^"), ("rollback", "v")):
        shown = [e for e in events if e["version"] is not None and x_range[0] <= e["x"] <= x_range[1]
                 and e["event"] == kind]
        if shown:
            ax.scatter([e["x"] for e in shown], [e["version"] for e in shown], marker=marker, s=90, zorder=3,
                       color=COLORS[kind], gid=f"{kind}s", label=f"{kind} ({len(shown)})")
            for e in shown:
                ax.annotate(f"v{e['version']}", (e["x"], e["version"]), textcoords="offset points", xytext=(6, 4),
                            fontsize=8, color=COLORS[kind])
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.margins(y=0.3)
    _legend(ax)
    return _svg(fig, "versions")


def _figure(figure_id: str, svg: str, caption: str) -> str:
    return f'<figure id="{figure_id}">{svg}<figcaption>{caption}</figcaption></figure>'


def _plots(spec: Any, runs: list[dict], events: list[dict]) -> str:
    import matplotlib

    x = [_moment(r["day"], "night") for r in runs]
    shown_events = [e["x"] for e in events if e["x"] >= x[0] - HALF_DAY]
    x_range = (x[0] - HALF_DAY, max([x[-1], *shown_events]) + HALF_DAY)
    metric, delay = spec.promotion.metric, spec.label.delay_days
    realised_missing = all(r["realised_metric"] is None for r in runs)
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "nightshift"}):
        parts = [
            _figure("drift", _drift_plot(spec, runs, x, x_range),
                    esc(f"Nights without a value had no champion to compare with. Retraining starts at "
                        f"{spec.drift.share_threshold:g}.")),
            _figure("metric", _metric_plot(spec, runs, x, x_range),
                    esc(f"Realised: the champion's {metric} on the rows whose labels arrived that night "
                        f"(label.delay_days {delay}). A retrain is due when it crosses the decay limit "
                        f"or the floor.")
                    + (' <span class="fail">No realised metric recorded yet.</span>' if realised_missing else "")),
            _figure("rows", _rows_plot(runs, x, x_range), "Rows written to the predictions table each night."),
            _figure("versions", _version_plot(runs, events, x, x_range),
                    "The version that scored each night: the challenger on a promotion night, else the champion."),
        ]
    return "\n".join(parts)


# --------------------------------------------------------------------------- tables


def _events_table(events: list[dict]) -> str:
    if not events:
        return '<h2>Champion changes</h2><p class="note">No promotion or rollback recorded.</p>'
    rows = [("fail" if e["event"] == "rollback" else "", [
        (esc(e["at"].strftime("%Y-%m-%d %H:%M UTC")), True), (esc(e["event"]), True),
        (esc(MISSING if e["from_version"] is None else f"v{e['from_version']}"), True),
        (esc(MISSING if e["version"] is None else f"v{e['version']}"), True),
        (esc(e["by"] or MISSING), True), (esc(e["reason"] or MISSING), True)]) for e in reversed(events)]
    return "<h2>Champion changes</h2>" + table(
        "events", [("when", True), ("event", True), ("from", True), ("to", True), ("by", True), ("why", True)], rows)


def _periods_table(runs: list[dict]) -> str:
    """Consecutive nights served by the same version, newest first."""
    periods: list[dict] = []
    for r in runs:
        if periods and periods[-1]["version"] == r["served_version"]:
            periods[-1].update(last=r["day"], nights=periods[-1]["nights"] + 1)
        else:
            periods.append({"version": r["served_version"], "first": r["day"], "last": r["day"], "nights": 1})
    rows = [("", [(esc(MISSING if p["version"] is None else f"v{p['version']}"), True),
                  (esc(p["first"].isoformat()), True), (esc(p["last"].isoformat()), True), (esc(p["nights"]), False)])
            for p in reversed(periods)]
    return "<h2>Which version was champion when</h2>" + table(
        "periods", [("version", True), ("first night", True), ("last night", True), ("nights", False)], rows)


def _runs_table(spec: Any, runs: list[dict]) -> str:
    threshold = float(spec.drift.share_threshold)
    rows = []
    for r in reversed(runs):
        drift = r["drift_share"]
        drift_cell = num(drift) if drift is None or drift < threshold else status(False, text_fail=num(drift))
        version = r["served_version"]
        rows.append(("fail" if r.get("decision") == "failed" else "", [
            (esc(r["day"].isoformat()), True), (esc(r.get("decision") or MISSING), True),
            (esc(r.get("retrain_reason") or MISSING), True), (drift_cell, False), (num(r["realised_metric"]), False),
            (num(r["champion_holdout_metric"]), False), (esc(MISSING if version is None else f"v{version}"), True),
            (esc(MISSING if r.get("challenger_version") is None else f"v{r['challenger_version']}"), True),
            (num(r.get("challenger_metric")), False),
            (esc(MISSING if r["rows_published"] is None else r["rows_published"]), False)]))
    metric = spec.promotion.metric
    return "<h2>Every night</h2>" + table("runs", [
        ("night", True), ("decision", True), ("retrain reason", True), ("drift share", False),
        (f"realised {metric}", False), (f"holdout {metric}", False), ("champion", True), ("challenger", True),
        (f"challenger {metric}", False), ("rows published", False)], rows)


# --------------------------------------------------------------------------- the page


def health_page_html(spec: Any, runs: list[dict[str, Any]], events: list[dict[str, Any]] = (), *,
                     generated_at: dt.datetime | None = None) -> str:
    """The health page of one data set: plots over the nights, champion changes, every night.

    `runs`: run dicts (see the module docstring; read_history gives them), any order.
    `events`: champion changes (read_events gives them). With no run, a page that says so.
    """
    title = f"Model health: {spec.name} ({spec.model_name})"
    stamp = (generated_at or dt.datetime.now(dt.timezone.utc)).strftime("%Y-%m-%d %H:%M UTC")
    nights = _runs(list(runs))
    changes = _events(list(events), nights)
    if not nights:
        body = (f'<p id="no-runs" class="verdict">No runs yet.</p><p>The nightly DAG has recorded no run in '
                f'{esc(spec.warehouse.schema)}.pipeline_runs. This page is regenerated after every run.</p>'
                + _events_table(changes) + f'<p class="note">Generated {esc(stamp)}.</p>')
        return page(title, body)
    last = nights[-1]
    summary = (f'<p>{len(nights)} night(s), {esc(nights[0]["day"].isoformat())} to {esc(last["day"].isoformat())}. '
               f'Last night: {esc(last.get("decision") or MISSING)}; champion '
               f'{esc(MISSING if last["served_version"] is None else "v" + str(last["served_version"]))}. '
               f'Generated {esc(stamp)}.</p>')
    body = "\n".join([summary, _plots(spec, nights, changes), _events_table(changes), _periods_table(nights),
                      _runs_table(spec, nights)])
    return page(title, body)


def write_health_page(path: str | Path, spec: Any, runs: list[dict[str, Any]], events: list[dict[str, Any]] = (), *,
                      generated_at: dt.datetime | None = None) -> str:
    """Write the page to a local file (folders created); returns the path as a string."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(health_page_html(spec, runs, events, generated_at=generated_at), encoding="utf-8")
    return str(path)
