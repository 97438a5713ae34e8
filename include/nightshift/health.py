"""The model-health page of one data set: how the nights went, on one static page.

Four plots over the recent nights, each a PNG drawn by matplotlib and embedded as a ``data:``
URI with a text alternative (no script, nothing fetched: the page opens offline and from any
URL, like the other reports; the page itself is the ``health.html`` template, reports.render):

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
import math
from pathlib import Path
from typing import Any

from psycopg import Connection

from include.nightshift import audit, warehouse
from include.nightshift.reports import MISSING, num, png_data_uri, render
from include.nightshift.spec import DatasetSpec

EVENTS = ("promote", "rollback")
MONITOR_KEYS = ("realised_metric", "champion_holdout_metric")
HALF_DAY = dt.timedelta(hours=12)
COLORS = {"line": "#1f4e9c", "threshold": "#b00020", "above": "#b00020", "holdout": "#137333",
          "limit": "#b45309", "floor": "#6b7280", "bars": "#6b8fd6", "promote": "#137333", "rollback": "#b00020"}


# --------------------------------------------------------------------------- reading


def read_history(conn: Connection, spec: DatasetSpec, days: int, *, until: dt.date | None = None) -> list[dict[str, Any]]:
    """The run rows of the `days` nights up to `until` (default: the newest night recorded), oldest first.

    Every column of ``<schema>.pipeline_runs`` comes back (a column added later, such as
    realised_metric, without a change here); ``realised_metric`` and
    ``champion_holdout_metric`` come from their own columns when recorded there, else from
    the decision's details (where the decide step keeps them). No table yet means no history: [].
    """
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise ValueError(f"read_history: days must be a positive integer, got {days!r}")
    rows = warehouse.runs(conn, spec, days, until)
    for row in rows:
        for key in MONITOR_KEYS:
            row[key] = _monitored(row, key)
    return rows


def _monitored(run: dict[str, Any], key: str) -> Any:
    """A monitor number: its own column when recorded, else the decide step's copy in details."""
    if run.get(key) is not None:
        return run[key]
    return (((run.get("details") or {}).get("decision") or {}).get("details") or {}).get(key)


def read_events(conn: Connection, spec: DatasetSpec) -> list[dict[str, Any]]:
    """Every champion change that happened (audit.champion_changes rows marked done), oldest first; [] before
    the first one. An intent not yet completed, or abandoned, moved nothing: it is not drawn."""
    return [c for c in audit.changes(conn, spec) if c.get("state", "done") in (None, "done")]


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
            **_interval(run),
            "rows_published": _int(run.get("rows_published")),
            "served_version": _int(run.get("challenger_version") if promoted else run.get("champion_version")),
        })
    return sorted(out, key=lambda r: r["day"])


def _interval(run: dict[str, Any]) -> dict[str, float | None]:
    """The realised metric's bootstrap interval the decide step judged (None before it was recorded)."""
    found = (((run.get("details") or {}).get("decision") or {}).get("details") or {}).get("realised_interval")
    low, high = found if isinstance(found, list | tuple) and len(found) == 2 else (None, None)
    return {"realised_low": _float(low), "realised_high": _float(high)}


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


def _drift_plot(spec: DatasetSpec, runs: list[dict], x: list[dt.datetime], x_range) -> Any:
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
    return fig


def _metric_plot(spec: DatasetSpec, runs: list[dict], x: list[dt.datetime], x_range) -> Any:
    pro = spec.promotion
    gib, tolerance = bool(pro.greater_is_better), float(pro.realised_tolerance)
    fig, ax = _axes(f"Champion's {pro.metric}: realised on its unseen labelled days (with its interval), "
                    "and on its holdout", x_range)
    holdout = _nan([r["champion_holdout_metric"] for r in runs])
    ax.plot(x, holdout, drawstyle="steps-mid", linestyle="--", color=COLORS["holdout"], gid="holdout",
            label="holdout (when promoted)")
    limit = [h - tolerance if gib else h + tolerance for h in holdout]
    ax.plot(x, limit, drawstyle="steps-mid", linestyle=":", color=COLORS["limit"], gid="decay-limit",
            label=f"decay limit (realised_tolerance {tolerance:g})")
    ax.axhline(float(pro.floor), color=COLORS["floor"], linestyle="-.", linewidth=0.8, gid="floor",
               label=f"floor {float(pro.floor):g}")
    low, high = _nan([r["realised_low"] for r in runs]), _nan([r["realised_high"] for r in runs])
    if any(v == v for v in low):  # NaN != NaN: at least one night has an interval
        ax.fill_between(x, low, high, color=COLORS["line"], alpha=0.15, linewidth=0, gid="realised-interval",
                        label=f"realised, {pro.realised_confidence:.0%} interval")
    ax.plot(x, _nan([r["realised_metric"] for r in runs]), marker="o", color=COLORS["line"], gid="realised",
            label="realised")
    _legend(ax)
    return fig


def _rows_plot(runs: list[dict], x: list[dt.datetime], x_range) -> Any:
    fig, ax = _axes("Rows published", x_range)
    ax.bar(x, [r["rows_published"] or 0 for r in runs], width=0.7, color=COLORS["bars"], gid="bars")
    ax.set_ylim(bottom=0)
    return fig


def _version_plot(runs: list[dict], events: list[dict], x: list[dt.datetime], x_range) -> Any:
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
    return fig


def _charts(spec: DatasetSpec, runs: list[dict], events: list[dict]) -> dict[str, Any]:
    """The four figures of normalised nights and events, by figure id (drift, metric, rows, versions)."""
    x = [_moment(r["day"], "night") for r in runs]
    shown_events = [e["x"] for e in events if e["x"] >= x[0] - HALF_DAY]
    x_range = (x[0] - HALF_DAY, max([x[-1], *shown_events]) + HALF_DAY)
    return {"drift": _drift_plot(spec, runs, x, x_range), "metric": _metric_plot(spec, runs, x, x_range),
            "rows": _rows_plot(runs, x, x_range), "versions": _version_plot(runs, events, x, x_range)}


def health_charts(spec: DatasetSpec, runs: list[dict[str, Any]], events: list[dict[str, Any]] = ()) -> dict[str, Any]:
    """The page's plots as matplotlib figures (before they become PNGs), for whoever needs the
    drawn data itself: each line, marker set and bar set carries a gid (share, above, threshold,
    realised, holdout, decay-limit, floor, bars, served, promotes, rollbacks). Needs one run."""
    nights = _runs(list(runs))
    if not nights:
        raise ValueError("health_charts: no run to plot")
    return _charts(spec, nights, _events(list(events), nights))


def _alt_texts(spec: DatasetSpec, runs: list[dict], events: list[dict]) -> dict[str, str]:
    """What each plot shows, in words, for the <img> alt text (a PNG cannot be read aloud or searched)."""
    threshold = float(spec.drift.share_threshold)
    shares = [r["drift_share"] for r in runs if r["drift_share"] is not None]
    realised = [r["realised_metric"] for r in runs if r["realised_metric"] is not None]
    served = ", then ".join(f"{_version_str(p['version'])} for {p['nights']} night(s)" for p in _periods(runs))
    span = f"{runs[0]['day'].isoformat()} to {runs[-1]['day'].isoformat()}"
    kinds = [e["event"] for e in events]
    return {
        "drift": f"Drift share per night, {span}: {len(shares)} night(s) measured, "
                 f"{sum(v >= threshold for v in shares)} at or above the threshold {threshold:g}; "
                 f"last {num(runs[-1]['drift_share'])}.",
        "metric": f"The champion's realised {spec.promotion.metric} per night, {span}, with its holdout value, "
                  f"the decay limit and the floor {float(spec.promotion.floor):g}; "
                  f"{len(realised)} night(s) with a realised value, last {num(runs[-1]['realised_metric'])}.",
        "rows": f"Rows published per night, {span}; last night {runs[-1]['rows_published'] or 0}.",
        "versions": f"Champion version serving each night, {span}: {served}; "
                    f"{kinds.count('promote')} promotion(s), {kinds.count('rollback')} rollback(s).",
    }


def _figures(spec: DatasetSpec, runs: list[dict], events: list[dict]) -> list[dict[str, str]]:
    """Each plot as a PNG data URI with its alt text and caption."""
    metric, delay = spec.promotion.metric, spec.label.delay_days
    captions = {
        "drift": f"Nights without a value had no champion to compare with. Retraining starts at "
                 f"{spec.drift.share_threshold:g}.",
        "metric": f"Realised: the champion's {metric} on the rows whose labels arrived that night "
                  f"(label.delay_days {delay}). A retrain is due when it crosses the decay limit or the floor.",
        "rows": "Rows written to the predictions table each night.",
        "versions": "The version that scored each night: the challenger on a promotion night, else the champion.",
    }
    warnings = {"metric": "No realised metric recorded yet."
                if all(r["realised_metric"] is None for r in runs) else ""}
    alts = _alt_texts(spec, runs, events)
    return [{"id": key, "src": png_data_uri(fig), "alt": alts[key], "caption": captions[key],
             "warning": warnings.get(key, "")} for key, fig in _charts(spec, runs, events).items()]


# --------------------------------------------------------------------------- tables


def _version_str(version: int | None) -> str:
    return MISSING if version is None else f"v{version}"


def _events_rows(events: list[dict]) -> list[dict[str, str]]:
    """Newest first; a rollback marked."""
    return [{"cls": "fail" if e["event"] == "rollback" else "", "when": e["at"].strftime("%Y-%m-%d %H:%M UTC"),
             "event": e["event"], "from_version": _version_str(e["from_version"]),
             "to_version": _version_str(e["version"]), "by": e["by"] or MISSING, "reason": e["reason"] or MISSING}
            for e in reversed(events)]


def _periods(runs: list[dict]) -> list[dict[str, Any]]:
    """Consecutive nights served by the same version, oldest first."""
    periods: list[dict] = []
    for r in runs:
        if periods and periods[-1]["version"] == r["served_version"]:
            periods[-1].update(last=r["day"], nights=periods[-1]["nights"] + 1)
        else:
            periods.append({"version": r["served_version"], "first": r["day"], "last": r["day"], "nights": 1})
    return periods


def _periods_rows(runs: list[dict]) -> list[dict[str, Any]]:
    """The periods table, newest first."""
    return [{"version": _version_str(p["version"]), "first": p["first"].isoformat(), "last": p["last"].isoformat(),
             "nights": p["nights"]} for p in reversed(_periods(runs))]


def _runs_rows(spec: DatasetSpec, runs: list[dict]) -> list[dict[str, Any]]:
    """Newest first; a failed night or one without a model (no_model) marked, a drift share at or above
    the threshold highlighted."""
    threshold = float(spec.drift.share_threshold)
    return [{"cls": "fail" if r.get("decision") in ("failed", "no_model") else "", "night": r["day"].isoformat(),
             "decision": r.get("decision") or MISSING, "reason": r.get("retrain_reason") or MISSING,
             "drift": num(r["drift_share"]),
             "drift_above": r["drift_share"] is not None and r["drift_share"] >= threshold,
             "realised": num(r["realised_metric"]), "holdout": num(r["champion_holdout_metric"]),
             "champion": _version_str(r["served_version"]), "challenger": _version_str(_int(r.get("challenger_version"))),
             "challenger_metric": num(r.get("challenger_metric")),
             "rows_published": MISSING if r["rows_published"] is None else r["rows_published"]}
            for r in reversed(runs)]


# --------------------------------------------------------------------------- the page


def health_page_html(spec: DatasetSpec, runs: list[dict[str, Any]], events: list[dict[str, Any]] = (), *,
                     generated_at: dt.datetime | None = None) -> str:
    """The health page of one data set: plots over the nights, champion changes, every night.

    `runs`: run dicts (see the module docstring; read_history gives them), any order.
    `events`: champion changes (read_events gives them). With no run, a page that says so.
    """
    stamp = (generated_at or dt.datetime.now(dt.timezone.utc)).strftime("%Y-%m-%d %H:%M UTC")
    nights = _runs(list(runs))
    changes = _events(list(events), nights)
    context: dict[str, Any] = {"title": f"Model health: {spec.name} ({spec.model_name})", "generated": stamp,
                               "nights": len(nights), "events": _events_rows(changes)}
    if not nights:
        return render("health.html", **context, schema=spec.warehouse.schema)
    last = nights[-1]
    return render("health.html", **context, first_night=nights[0]["day"].isoformat(),
                  last_night=last["day"].isoformat(), last_decision=last.get("decision") or MISSING,
                  last_champion=_version_str(last["served_version"]), figures=_figures(spec, nights, changes),
                  periods=_periods_rows(nights), runs=_runs_rows(spec, nights), metric=spec.promotion.metric)


def write_health_page(path: str | Path, spec: DatasetSpec, runs: list[dict[str, Any]], events: list[dict[str, Any]] = (), *,
                      generated_at: dt.datetime | None = None) -> str:
    """Write the page to a local file (folders created); returns the path as a string."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(health_page_html(spec, runs, events, generated_at=generated_at), encoding="utf-8")
    return str(path)
