"""The model-health page of one data set: how the nights went, on one static page.

The plots share one axis: the recorded nights side by side, oldest first, one slot each (a
night that was never recorded takes no room; where nights are missing a dotted line marks the
gap). A calendar axis anchored at the newest night emptied the page when one night far from
the others was recorded (the scheduled run of today next to a demo of last February), and
squashed the champion changes on its edge. Each plot is a PNG drawn by matplotlib and
embedded as a ``data:`` URI with a text alternative (no script, nothing fetched: the page
opens offline and from any URL, like the other reports; the page is the ``health.html``
template, reports.render):

- drift share, with the spec's threshold drawn (nights at or above it marked);
- drift of each feature per night (a heatmap of its score against its own threshold);
- the champion's realised metric on the rows whose labels arrived that night, with the
  champion's holdout metric, the decay limit (holdout minus ``promotion.realised_tolerance``)
  and the floor: the lines the retrain decision compares it with;
- the published output: the score distribution per night, and the predicted-positive rate
  (task binary), the mean predicted value (regression) or each class's share (multiclass);
- rows published;
- which version was champion each night, with promotions and rollbacks marked;
- the shadow (shadow.py) against the champion on realised labels, per labelled day (its own date axis);

a failed night is a red band with an ✕ on every plot. Then the champion changes, the champion
periods and every night in a table, each night linked to its reports and its Airflow run, and the
nights whose serving checks (details.serving) found something: skew, a failed round trip, changed
libraries.
The header names the version serving now: the last champion change recorded
(champion_changes), not the newest night's champion (a rollback since, or a failed night).

Inputs are plain dicts so the page can be fed from anywhere: ``read_history`` gives the
run rows of ``<schema>.pipeline_runs``, ``read_events`` the rows of
``<schema>.champion_changes`` (audit.py), ``read_outputs`` the nights' output statistics from
``<schema>.predictions``. A run dict uses these keys (missing keys are treated as unknown):

- ``logical_date`` (date, datetime or ISO string): the night; the only required key;
- ``decision`` (skipped / promoted / rejected / failed / no_model / reproduced), ``retrain_reason``;
- ``drift_share`` (float or None: no champion to compare with);
- ``realised_metric``, ``champion_holdout_metric`` (float or None): the monitor's numbers;
  when a key is absent they are read from ``details["decision"]["details"]``, where the
  decide step records them;
- ``champion_version`` (the champion before the night's evaluation),
  ``challenger_version``, ``champion_metric``, ``challenger_metric``;
- ``rows_in``, ``rows_published``; ``dag_run_id``, ``finished_at`` (to place champion
  changes between nights); ``details`` (dict: ``drift_columns`` {feature: {method, score,
  threshold, drifted}} and ``reports`` {name: artifact-store URL}, as run_record keeps them).

An event dict: ``event`` ('promote', 'rollback' or 'external'), the new version as ``to_version``
(or ``version``), ``from_version``, when as ``changed_at`` (or ``at``), who as ``actor`` (or
``by``), ``reason``, ``dag_run_id``, ``night`` (the night it belongs to, when known).
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any
from urllib.parse import quote

from psycopg import Connection, sql
from psycopg.rows import dict_row

from include.nightshift import audit, warehouse
from include.nightshift.reports import MISSING, num, png_data_uri, render
from include.nightshift.spec import DatasetSpec

NIGHTS = 90  # nights on the page: the newest recorded, whatever their dates
EVENTS = ("promote", "rollback", "external")  # external: the alias moved outside Nightshift
EVENT_MARKERS = {"promote": "^", "rollback": "v", "external": "D"}
FAILED = ("failed", "no_model")  # decisions drawn as a failed night
MONITOR_KEYS = ("realised_metric", "champion_holdout_metric")
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
HEATMAP_FEATURES = 40  # rows of the drift heatmap at most: the features that drifted most
HEATMAP_CAP = 4.0  # score/threshold drawn between 1/cap (far from drifting) and cap (far past it)
# The page is served at <airflow>/nightshift/reports/<dataset>/health.html (plugins/nightshift_airflow/web.py):
# from there, the Airflow UI's root. Relative, so an Airflow behind a base URL prefix keeps working.
AIRFLOW_ROOT = "../../../"
COLORS = {"line": "#1f4e9c", "threshold": "#b00020", "above": "#b00020", "holdout": "#137333",
          "limit": "#b45309", "floor": "#6b7280", "bars": "#6b8fd6", "promote": "#137333", "rollback": "#b00020",
          "external": "#b45309", "failed": "#b00020", "gap": "#6b7280"}


# --------------------------------------------------------------------------- reading


def read_history(conn: Connection, spec: DatasetSpec, days: int = NIGHTS, *,
                 until: dt.date | None = None) -> list[dict[str, Any]]:
    """The run rows of the newest `days` recorded nights (up to `until` when given), oldest first.

    Recorded nights, not calendar days: nights missing in between take no room, so one night
    recorded far from the others (the scheduled run of today after a demo of past dates) does
    not push the others off the page. Every column of ``<schema>.pipeline_runs`` comes back (a
    column added later, such as realised_metric, without a change here); ``realised_metric`` and
    ``champion_holdout_metric`` come from their own columns when recorded there, else from the
    decision's details (where the decide step keeps them). No table yet means no history: [].
    """
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise ValueError(f"read_history: days must be a positive integer, got {days!r}")
    if not warehouse.table_exists(conn, spec, warehouse.PIPELINE_RUNS):
        return []
    query = sql.SQL("SELECT * FROM (SELECT * FROM {} WHERE %(until)s::date IS NULL OR logical_date <= %(until)s "
                    "ORDER BY logical_date DESC LIMIT %(n)s) AS newest ORDER BY logical_date").format(
        warehouse.table(spec, warehouse.PIPELINE_RUNS))
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, {"until": until, "n": days})
        rows = cur.fetchall()
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


def read_outputs(conn: Connection, spec: DatasetSpec, days: list[dt.date]) -> dict[dt.date, dict[str, Any]]:
    """What was published on each of `days`, from ``<schema>.predictions`` (what consumers read, so a
    night re-published after a rollback shows the restored model's output): {night: {rows, mean,
    quantiles (QUANTILES of the score), positive_rate (task binary: share of predicted_label 1),
    class_shares (task multiclass: {class: share})}}. Nights with no row are left out.

    One grouped scan of those nights' partitions (the primary key starts with score_date); the
    quantiles sort each night's scores, about a second per million rows.
    """
    if not days or not warehouse.table_exists(conn, spec, warehouse.PREDICTIONS):
        return {}
    predictions = warehouse.table(spec, warehouse.PREDICTIONS)
    stats = sql.SQL("SELECT score_date, count(*) AS rows, avg(score) AS mean, "
                    "percentile_cont(%(q)s::float8[]) WITHIN GROUP (ORDER BY score) AS quantiles, "
                    "avg(predicted_label) AS positive_rate FROM {} WHERE score_date = ANY(%(days)s) "
                    "GROUP BY score_date").format(predictions)
    params = {"q": list(QUANTILES), "days": list(days)}
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute(stats, params)
        out = {r.pop("score_date"): {**r, "class_shares": {}} for r in cur.fetchall()}
        if spec.task == "multiclass":
            cur.execute(sql.SQL("SELECT score_date, predicted_class, count(*) AS n FROM {} "
                                "WHERE score_date = ANY(%(days)s) GROUP BY 1, 2").format(predictions), params)
            for r in cur.fetchall():
                out[r["score_date"]]["class_shares"][r["predicted_class"]] = r["n"] / out[r["score_date"]]["rows"]
    return out


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
    """A naive UTC datetime, from a datetime, date or ISO string."""
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


def _runs(runs: list[dict[str, Any]], outputs: dict[Any, dict] | None = None) -> list[dict[str, Any]]:
    """One plain record per night, oldest first, with the version that served it and its output.

    The version that scored a night is the challenger on a promotion night (the evaluate step
    moves the alias before scoring) and the recorded champion otherwise.
    """
    found = {_day(day, "outputs"): value for day, value in (outputs or {}).items()}
    out = []
    for i, run in enumerate(runs):
        if run.get("logical_date") is None:
            raise ValueError(f"run {i}: logical_date is required")
        promoted = run.get("decision") == "promoted"
        day = _day(run["logical_date"], f"run {i} logical_date")
        out.append({
            **run,
            "day": day,
            "failed": run.get("decision") in FAILED,
            "drift_share": _float(run.get("drift_share")),
            **{key: _float(_monitored(run, key)) for key in MONITOR_KEYS},
            **_interval(run),
            "rows_published": _int(run.get("rows_published")),
            "served_version": _int(run.get("challenger_version") if promoted else run.get("champion_version")),
            "output": found.get(day),
        })
    return sorted(out, key=lambda r: r["day"])


def _interval(run: dict[str, Any]) -> dict[str, float | None]:
    """The realised metric's bootstrap interval the decide step judged (None before it was recorded)."""
    found = (((run.get("details") or {}).get("decision") or {}).get("details") or {}).get("realised_interval")
    low, high = found if isinstance(found, list | tuple) and len(found) == 2 else (None, None)
    return {"realised_low": _float(low), "realised_high": _float(high)}


def _events(events: list[dict[str, Any]], runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Events with their kind checked and a place on the nights' axis (x: the night's slot; None: not drawn).

    A change made by a nightly run sits on that night; any other (a rollback) sits between the
    last night that finished before it and the first that finished after it (or after the last
    night): the wall clock of a simulated or backfilled night says nothing about where it
    belongs. A change that belongs to a night before the first one shown is not drawn.
    """
    slot = {r.get("dag_run_id"): i for i, r in enumerate(runs) if r.get("dag_run_id")}
    finished = [(_moment(r["finished_at"], "finished_at"), i) for i, r in enumerate(runs) if r.get("finished_at")]
    out = []
    for i, e in enumerate(events):
        kind = e.get("event")
        if kind not in EVENTS:
            raise ValueError(f"event {i}: event must be one of {EVENTS}, got {kind!r}")
        at = _moment(e.get("changed_at", e.get("at")), f"event {i} changed_at")
        night = _day(e["night"], f"event {i} night") if e.get("night") else None
        out.append({"event": kind, "version": _int(e.get("to_version", e.get("version"))),
                    "from_version": _int(e.get("from_version")), "at": at, "x": _slot(e, at, night, slot, finished, runs),
                    "by": e.get("actor", e.get("by")), "reason": e.get("reason")})
    return sorted(out, key=lambda e: e["at"])


def _slot(event: dict, at: dt.datetime, night: dt.date | None, slot: dict[str, int],
          finished: list[tuple[dt.datetime, int]], runs: list[dict]) -> float | None:
    """Where a change is drawn: its run's night, else half a slot before the first night that finished after it
    (after the last night when none did); None when it may belong before the first night shown."""
    if event.get("dag_run_id") in slot:
        return float(slot[event["dag_run_id"]])
    later = [j for end, j in finished if end >= at]
    if not finished or (night is not None and night < runs[0]["day"]):
        return None
    if later and min(later) == 0 and night is None:  # before the first night shown: how long before is unknown
        return None
    return (min(later) if later else len(runs)) - 0.5


def serving(events: list[dict[str, Any]], runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The version serving now, and since when: the last champion change recorded (a rollback after the
    newest night, or a failed newest night, leave the nights' columns behind); without any recorded
    change (a warehouse older than the audit table), the newest night that names one."""
    if events:
        last = events[-1]
        return {"version": last["version"], "since": f"{last['event']} {last['at']:%Y-%m-%d %H:%M} UTC"
                                                     f" by {last['by'] or MISSING}"}
    named = [r for r in runs if r["served_version"] is not None]
    return {"version": named[-1]["served_version"] if named else None,
            "since": f"night {named[-1]['day'].isoformat()}" if named else ""}


# --------------------------------------------------------------------------- plots


def _axes(title: str, runs: list[dict], x_range: tuple[float, float], height: float = 2.6):
    """A figure on the nights' axis: ticks at nights labelled with their date, gaps and failed nights drawn."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, height))
    ax = fig.add_subplot()
    ax.set_title(title, loc="left", fontsize=11)
    _night_axis(ax, runs, x_range)
    return fig, ax


def _night_axis(ax: Any, runs: list[dict], x_range: tuple[float, float]) -> None:
    from matplotlib.ticker import FuncFormatter, MaxNLocator
    from matplotlib.transforms import blended_transform_factory

    ax.set_xlim(*x_range)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=10, integer=True, min_n_ticks=1))
    ax.xaxis.set_major_formatter(FuncFormatter(
        lambda v, _: runs[int(round(v))]["day"].isoformat() if abs(v - round(v)) < 1e-6 and 0 <= round(v) < len(runs)
        else ""))
    ax.tick_params(axis="x", labelsize=8, labelrotation=20)
    ax.grid(True, color="#e5e7eb", linewidth=0.6)
    gaps = [i for i in range(1, len(runs)) if (runs[i]["day"] - runs[i - 1]["day"]).days > 1]
    for n, i in enumerate(gaps):
        ax.axvline(i - 0.5, color=COLORS["gap"], linestyle=(0, (1, 2)), linewidth=1.2, gid="gap",
                   label=None if n else "nights not recorded")
    failed = [i for i, r in enumerate(runs) if r["failed"]]
    for i in failed:
        ax.axvspan(i - 0.5, i + 0.5, color=COLORS["failed"], alpha=0.08, linewidth=0, gid="failed-band")
    if failed:
        ax.scatter(failed, [0.04] * len(failed), marker="X", s=60, color=COLORS["failed"], zorder=4, gid="failed",
                   transform=blended_transform_factory(ax.transData, ax.transAxes), clip_on=False,
                   label=f"failed night ({len(failed)})")


def _legend(ax: Any) -> None:
    """Beside the plot, not over the data."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)


def _nan(values: list[float | None]) -> list[float]:
    return [math.nan if v is None else v for v in values]


def _drift_plot(spec: DatasetSpec, runs: list[dict], x: list[int], x_range) -> Any:
    threshold = float(spec.drift.share_threshold)
    fig, ax = _axes("Drift share: features drifted / all features", runs, x_range)
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


def drift_ratio(column: dict[str, Any]) -> float | None:
    """A feature's drift score against its own threshold, the same way round for every method: >= 1 is
    drifted. A distance (Wasserstein, Jensen-Shannon, PSI) drifts at or above its threshold, a p-value
    (KS, chi-squared) below it; which one a record is comes from Evidently's own verdict recorded with it.
    Capped to [1/HEATMAP_CAP, HEATMAP_CAP]; None when the score was not recorded."""
    score, threshold, drifted = _float(column.get("score")), _float(column.get("threshold")), column.get("drifted")
    if score is None or threshold is None or not isinstance(drifted, bool):
        return None
    high, low = (score, threshold) if drifted == (score >= threshold) else (threshold, score)  # else a p-value
    ratio = high / low if low > 0 else (HEATMAP_CAP if drifted else 1 / HEATMAP_CAP)
    return min(max(ratio, 1 / HEATMAP_CAP), HEATMAP_CAP)


def _feature_drift(spec: DatasetSpec, runs: list[dict]) -> tuple[list[str], list[list[float]], list[tuple]]:
    """(features, their ratio per night (NaN: not measured), drifted cells (night, row))."""
    nights = [((r.get("details") or {}).get("drift_columns") or {}) for r in runs]
    names = _heatmap_features(spec, nights)
    grid = [[_nan([drift_ratio(cols[n]) if n in cols else None])[0] for cols in nights] for n in names]
    drifted = [(j, i) for i, n in enumerate(names) for j, cols in enumerate(nights)
               if cols.get(n, {}).get("drifted") is True]
    return names, grid, drifted


def _heatmap_features(spec: DatasetSpec, nights: list[dict[str, dict]]) -> list[str]:
    """The features recorded, in spec order; at most HEATMAP_FEATURES of them: those drifted on the most
    nights, then with the highest mean ratio (a wide data set keeps a readable heatmap)."""
    order = {name: i for i, name in enumerate(spec.feature_names)}
    names = sorted({n for cols in nights for n in cols}, key=lambda n: (order.get(n, len(order)), n))
    if len(names) <= HEATMAP_FEATURES:
        return names

    def weight(name: str) -> tuple[int, float]:
        records = [cols[name] for cols in nights if name in cols]
        ratios = [v for v in map(drift_ratio, records) if v is not None]
        return -sum(c.get("drifted") is True for c in records), -sum(ratios) / max(len(ratios), 1)

    kept = set(sorted(names, key=weight)[:HEATMAP_FEATURES])
    return [n for n in names if n in kept]


def _features_plot(spec: DatasetSpec, runs: list[dict], x_range) -> Any:
    import numpy as np
    from matplotlib.colors import LogNorm

    names, grid, drifted = _feature_drift(spec, runs)
    fig, ax = _axes("Drift of each feature: score / its threshold (red: drifted, ● Evidently's verdict)", runs,
                    x_range, height=1.4 + 0.22 * max(len(names), 1))
    if names:
        cmap = _heat_colormap()
        image = ax.imshow(np.ma.masked_invalid(np.array(grid, dtype=float)), aspect="auto", cmap=cmap,
                          norm=LogNorm(vmin=1 / HEATMAP_CAP, vmax=HEATMAP_CAP), interpolation="nearest",
                          extent=(-0.5, len(runs) - 0.5, len(names) - 0.5, -0.5))
        image.set_gid("feature-drift")
        bar = fig.colorbar(image, ax=ax, pad=0.01, fraction=0.04, label="score / threshold")
        bar.set_ticks([1 / HEATMAP_CAP, 0.5, 1, 2, HEATMAP_CAP], labels=[f"{1 / HEATMAP_CAP:g}", "0.5", "1", "2",
                                                                        f"{HEATMAP_CAP:g}"])
        bar.ax.minorticks_off()
        if drifted:
            ax.scatter([j for j, _ in drifted], [i for _, i in drifted], s=6, color="black", gid="drifted-cells")
        ax.set_xlim(*x_range)
    else:
        ax.text(0.5, 0.5, "no per-feature drift score recorded", transform=ax.transAxes, ha="center",
                va="center", color=COLORS["gap"])
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_ylim(max(len(names), 1) - 0.5, -0.5)
    ax.grid(False)
    return fig


def _heat_colormap() -> Any:
    from matplotlib import colormaps

    return colormaps["RdBu_r"].with_extremes(bad="#f3f4f6")  # grey: not measured that night


def _metric_plot(spec: DatasetSpec, runs: list[dict], x: list[int], x_range) -> Any:
    pro = spec.promotion
    gib, tolerance = bool(pro.greater_is_better), float(pro.realised_tolerance)
    fig, ax = _axes(f"Champion's {pro.metric}: realised on its unseen labelled days (with its interval), "
                    "and on its holdout", runs, x_range)
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


def _output_name(spec: DatasetSpec) -> str:
    return {"regression": "predicted value", "multiclass": "predicted class's probability"}.get(
        spec.task, "score (probability of 1)")


def _quantile(run: dict, q: float) -> float | None:
    values = (run["output"] or {}).get("quantiles") or []
    return _float(values[QUANTILES.index(q)]) if len(values) == len(QUANTILES) else None


def _scores_plot(spec: DatasetSpec, runs: list[dict], x: list[int], x_range) -> Any:
    fig, ax = _axes(f"Output: the published {_output_name(spec)} per night", runs, x_range)
    for (low, high), alpha, gid in (((0.1, 0.9), 0.15, "score-band-80"), ((0.25, 0.75), 0.3, "score-band-50")):
        ax.fill_between(x, _nan([_quantile(r, low) for r in runs]), _nan([_quantile(r, high) for r in runs]),
                        color=COLORS["line"], alpha=alpha, linewidth=0, gid=gid,
                        label=f"{low:.0%}-{high:.0%} of rows")
    ax.plot(x, _nan([_quantile(r, 0.5) for r in runs]), marker="o", markersize=3, color=COLORS["line"],
            gid="score-median", label="median")
    ax.plot(x, _nan([_float((r["output"] or {}).get("mean")) for r in runs]), linestyle="--",
            color=COLORS["holdout"], gid="score-mean", label="mean")
    _legend(ax)
    return fig


def _rate_plot(spec: DatasetSpec, runs: list[dict], x: list[int], x_range) -> Any:
    """Task binary: the predicted-positive rate; regression: the mean predicted value; multiclass: class shares."""
    outputs = [r["output"] or {} for r in runs]
    if spec.task == "multiclass":
        fig, ax = _axes("Output: each predicted class's share of the night's rows", runs, x_range)
        bottom = [0.0] * len(runs)
        for name in _classes(spec, outputs):
            shares = [o.get("class_shares", {}).get(name, 0.0) if o else 0.0 for o in outputs]
            ax.bar(x, shares, bottom=bottom, width=0.8, gid=f"class-share-{name}", label=str(name))
            bottom = [b + s for b, s in zip(bottom, shares)]
        ax.set_ylim(0, 1.02)
    elif spec.task == "regression":
        fig, ax = _axes("Output: mean predicted value per night", runs, x_range)
        ax.plot(x, _nan([_float(o.get("mean")) for o in outputs]), marker="o", color=COLORS["line"],
                gid="mean-prediction", label="mean predicted value")
    else:
        threshold = float(spec.scoring.decision_threshold)
        fig, ax = _axes(f"Output: predicted-positive rate (score ≥ {threshold:g}) per night", runs, x_range)
        ax.plot(x, _nan([_float(o.get("positive_rate")) for o in outputs]), marker="o", color=COLORS["line"],
                gid="positive-rate", label="share predicted 1")
        ax.set_ylim(bottom=0)
    _legend(ax)
    return fig


def _classes(spec: DatasetSpec, outputs: list[dict]) -> list[str]:
    """The spec's classes in its order, then any other class seen in the published rows."""
    named = list(getattr(spec.label, "classes", None) or ())
    seen = {c for o in outputs for c in (o.get("class_shares") or {})}
    return named + sorted(seen - set(named), key=str)


def _rows_plot(runs: list[dict], x: list[int], x_range) -> Any:
    fig, ax = _axes("Rows published", runs, x_range)
    ax.bar(x, [r["rows_published"] or 0 for r in runs], width=0.7, color=COLORS["bars"], gid="bars")
    ax.set_ylim(bottom=0)
    return fig


def _version_plot(runs: list[dict], events: list[dict], x: list[int], x_range) -> Any:
    from matplotlib.ticker import MaxNLocator

    fig, ax = _axes("Champion version serving each night (promotions ▲, rollbacks ▼, external moves ◆)", runs,
                    x_range)
    ax.plot(x, _nan([r["served_version"] for r in runs]), drawstyle="steps-mid", marker="o", color=COLORS["line"],
            gid="served", label="champion")
    for kind in EVENTS:
        shown = [e for e in events if e["event"] == kind and e["version"] is not None and e["x"] is not None]
        if shown:
            ax.scatter([e["x"] for e in shown], [e["version"] for e in shown], marker=EVENT_MARKERS[kind], s=90,
                       zorder=3, color=COLORS[kind], gid=f"{kind}s", label=f"{kind} ({len(shown)})")
            for e in shown:
                ax.annotate(f"v{e['version']}", (e["x"], e["version"]), textcoords="offset points", xytext=(6, 4),
                            fontsize=8, color=COLORS[kind])
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.margins(y=0.3)
    _legend(ax)
    return fig


def _charts(spec: DatasetSpec, runs: list[dict], events: list[dict]) -> dict[str, Any]:
    """The figures of normalised nights and events, by figure id, in page order."""
    x = list(range(len(runs)))
    right = max([len(runs) - 1, *(e["x"] for e in events if e["x"] is not None)])
    x_range = (-0.5, right + 0.5)
    return {"drift": _drift_plot(spec, runs, x, x_range), "features": _features_plot(spec, runs, x_range),
            "metric": _metric_plot(spec, runs, x, x_range), "scores": _scores_plot(spec, runs, x, x_range),
            "rate": _rate_plot(spec, runs, x, x_range), "rows": _rows_plot(runs, x, x_range),
            "versions": _version_plot(runs, events, x, x_range)}


def health_charts(spec: DatasetSpec, runs: list[dict[str, Any]], events: list[dict[str, Any]] = (),
                  outputs: dict[Any, dict] | None = None) -> dict[str, Any]:
    """The page's plots as matplotlib figures (before they become PNGs), for whoever needs the
    drawn data itself: each line, marker set, image and bar set carries a gid (share, above, threshold,
    feature-drift, drifted-cells, realised, holdout, decay-limit, floor, score-median, score-mean,
    score-band-50/80, positive-rate / mean-prediction / class-share-<class>, bars, served, promotes,
    rollbacks, externals; on every plot gap, failed, failed-band). x is the night's slot. Needs one run."""
    nights = _runs(list(runs), outputs)
    if not nights:
        raise ValueError("health_charts: no run to plot")
    return _charts(spec, nights, _events(list(events), nights))


def _alt_texts(spec: DatasetSpec, runs: list[dict], events: list[dict]) -> dict[str, str]:
    """What each plot shows, in words, for the <img> alt text (a PNG cannot be read aloud or searched)."""
    threshold = float(spec.drift.share_threshold)
    shares = [r["drift_share"] for r in runs if r["drift_share"] is not None]
    realised = [r["realised_metric"] for r in runs if r["realised_metric"] is not None]
    served = ", then ".join(f"{_version_str(p['version'])} for {p['nights']} night(s)" for p in _periods(runs))
    failed = [r["day"].isoformat() for r in runs if r["failed"]]
    span = (f"{len(runs)} recorded night(s) from {runs[0]['day'].isoformat()} to {runs[-1]['day'].isoformat()}"
            + (f", failed: {', '.join(failed)}" if failed else ""))
    return {
        "drift": f"Drift share per night, {span}: {len(shares)} night(s) measured, "
                 f"{sum(v >= threshold for v in shares)} at or above the threshold {threshold:g}; "
                 f"last {num(runs[-1]['drift_share'])}.",
        "features": _features_alt(spec, runs, span),
        "metric": f"The champion's realised {spec.promotion.metric} per night, {span}, with its holdout value, "
                  f"the decay limit and the floor {float(spec.promotion.floor):g}; "
                  f"{len(realised)} night(s) with a realised value, last {num(runs[-1]['realised_metric'])}.",
        **_output_alts(spec, runs, span),
        "rows": f"Rows published per night, {span}; last night {runs[-1]['rows_published'] or 0}.",
        "versions": f"Champion version serving each night, {span}: {served}; " + _changes_words(events),
    }


def _changes_words(events: list[dict]) -> str:
    kinds = [e["event"] for e in events]
    return (f"{kinds.count('promote')} promotion(s), {kinds.count('rollback')} rollback(s)"
            + (f", {kinds.count('external')} external move(s)." if "external" in kinds else "."))


def _features_alt(spec: DatasetSpec, runs: list[dict], span: str) -> str:
    names, _, drifted = _feature_drift(spec, runs)
    counts = {name: sum(i == row for _, i in drifted) for row, name in enumerate(names)}
    often = [n for n in sorted(names, key=lambda n: -counts[n]) if counts[n]][:5]
    return (f"Drift of {len(names)} feature(s) per night, {span}: {len(drifted)} drifted feature-night(s)"
            + (f"; most often: {', '.join(often)}." if often else "."))


def _output_alts(spec: DatasetSpec, runs: list[dict], span: str) -> dict[str, str]:
    published = [r for r in runs if r["output"]]
    last = published[-1] if published else None
    return {"scores": f"The published {_output_name(spec)} per night (median, mean, 10-90% and 25-75% of rows), "
                      f"{span}; {len(published)} night(s) with published rows"
                      + (f", last median {num(_quantile(last, 0.5))}." if last else "."),
            "rate": f"{_rate_words(spec)} per night, {span}"
                    + (f"; last {_rate_value(spec, last['output'])}." if last else ".")}


def _rate_words(spec: DatasetSpec) -> str:
    return {"regression": "Mean predicted value", "multiclass": "Each predicted class's share"}.get(
        spec.task, f"Predicted-positive rate (score ≥ {float(spec.scoring.decision_threshold):g})")


def _rate_value(spec: DatasetSpec, output: dict) -> str:
    if spec.task == "multiclass":
        shares = sorted((output.get("class_shares") or {}).items(), key=lambda item: str(item[0]))
        return ", ".join(f"{name} {share:.1%}" for name, share in shares)
    return num(output.get("mean") if spec.task == "regression" else output.get("positive_rate"))


def _figures(spec: DatasetSpec, runs: list[dict], events: list[dict]) -> list[dict[str, str]]:
    """Each plot as a PNG data URI with its alt text and caption."""
    metric, delay = spec.promotion.metric, spec.label.delay_days
    captions = {
        "drift": f"Nights without a value had no champion to compare with. Retraining starts at "
                 f"{spec.drift.share_threshold:g}.",
        "features": "Each feature's drift score against its own threshold, the same way round for every test "
                    f"(a distance above its threshold, a p-value below it): red from 1 on, capped at {HEATMAP_CAP:g}; "
                    "grey: not measured (no champion, or recorded before per-feature scores were kept).",
        "metric": f"Realised: the champion's {metric} on the rows whose labels arrived that night "
                  f"(label.delay_days {delay}). A retrain is due when it crosses the decay limit or the floor.",
        "scores": f"From {spec.warehouse.schema}.predictions as consumers read it (a night re-published after a "
                  "rollback shows the restored model's output).",
        "rate": {"regression": "The mean of the published predicted values.",
                 "multiclass": "The share of the night's rows predicted as each class."}.get(
            spec.task, "The share of the night's rows with predicted_label 1 (scoring.decision_threshold)."),
        "rows": "Rows written to the predictions table each night.",
        "versions": "The version that scored each night: the challenger on a promotion night, else the champion.",
    }
    warnings = {"metric": "No realised metric recorded yet." if all(r["realised_metric"] is None for r in runs) else "",
                "features": "No per-feature drift score recorded yet."
                if not any((r.get("details") or {}).get("drift_columns") for r in runs) else "",
                "scores": "No published rows in the predictions table for these nights."
                if not any(r["output"] for r in runs) else ""}
    alts = _alt_texts(spec, runs, events)
    return [{"id": key, "src": png_data_uri(fig), "alt": alts[key], "caption": captions[key],
             "warning": warnings.get(key, "")} for key, fig in _charts(spec, runs, events).items()]


# --------------------------------------------------------------------------- tables


def _version_str(version: int | None) -> str:
    return MISSING if version is None else f"v{version}"


def _events_rows(events: list[dict]) -> list[dict[str, str]]:
    """Newest first; a rollback or an external move marked."""
    return [{"cls": "" if e["event"] == "promote" else "fail", "when": e["at"].strftime("%Y-%m-%d %H:%M UTC"),
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


def report_href(spec: DatasetSpec, url: Any) -> str | None:
    """A report's artifact-store URL as a link relative to the health page (both live under
    reports/<dataset>/ in the store and in the reports app); None when it is not under that folder."""
    marker = f"reports/{spec.name}/"
    if not isinstance(url, str) or marker not in url:
        return None
    rest = url.split(marker, 1)[1]
    return "/".join(quote(part) for part in rest.split("/")) if rest and ".." not in rest.split("/") else None


def airflow_run_href(spec: DatasetSpec, dag_run_id: Any) -> str | None:
    """The run's page in the Airflow UI (/dags/<dag_id>/runs/<run_id>), relative to the served health page."""
    if not dag_run_id:
        return None
    return f"{AIRFLOW_ROOT}dags/{quote(spec.dag_id, safe='')}/runs/{quote(str(dag_run_id), safe='')}"


def _links(spec: DatasetSpec, run: dict) -> list[dict[str, str]]:
    """The night's reports (recorded by run_record; older rows: the drift report the decision kept)."""
    details = run.get("details") or {}
    urls = dict(details.get("reports") or {})
    if not urls:
        drift = ((details.get("decision") or {}).get("details") or {}).get("drift_report")
        urls = {"drift": drift} if drift else {}
    found = [(name, report_href(spec, url)) for name, url in urls.items()]
    return [{"name": name, "href": href} for name, href in found if href]


def _runs_rows(spec: DatasetSpec, runs: list[dict]) -> list[dict[str, Any]]:
    """Newest first; a failed night or one without a model (no_model) marked, a drift share at or above
    the threshold highlighted; each night with its folder of reports, its reports and its Airflow run."""
    threshold = float(spec.drift.share_threshold)
    return [{"cls": "fail" if r["failed"] else "", "night": r["day"].isoformat(),
             "night_href": f"{r['day'].isoformat()}/", "reports": _links(spec, r),
             "airflow_href": airflow_run_href(spec, r.get("dag_run_id")), "run_id": r.get("dag_run_id") or MISSING,
             "decision": r.get("decision") or MISSING, "reason": r.get("retrain_reason") or MISSING,
             "drift": num(r["drift_share"]),
             "drift_above": r["drift_share"] is not None and r["drift_share"] >= threshold,
             "realised": num(r["realised_metric"]), "holdout": num(r["champion_holdout_metric"]),
             "champion": _version_str(r["served_version"]), "challenger": _version_str(_int(r.get("challenger_version"))),
             "challenger_metric": num(r.get("challenger_metric")),
             "rows_published": MISSING if r["rows_published"] is None else r["rows_published"],
             "output": num(_quantile(r, 0.5)) if r["output"] else MISSING,
             "rate": _rate_value(spec, r["output"]) if r["output"] else MISSING}
            for r in reversed(runs)]


# --------------------------------------------------------------------------- the page


def health_page_html(spec: DatasetSpec, runs: list[dict[str, Any]], events: list[dict[str, Any]] = (), *,
                     outputs: dict[Any, dict] | None = None, generated_at: dt.datetime | None = None,
                     test_score: list[dict[str, Any]] | None = None,
                     staleness: list[dict[str, Any]] | None = None) -> str:
    """The health page of one data set: plots over the nights, champion changes, every night.

    `runs`: run dicts (see the module docstring; read_history gives them), any order.
    `events`: champion changes (read_events gives them). `outputs`: each night's published output
    (read_outputs). With no run, a page that says so (and which version serves, if one does).
    `test_score`: the newest night's ml_test_score rows (read_test_score), shown with the section scores.
    `staleness`: model_staleness rows (read_staleness), drawn as the age-vs-quality curve.
    """
    stamp = (generated_at or dt.datetime.now(dt.timezone.utc)).strftime("%Y-%m-%d %H:%M UTC")
    nights = _runs(list(runs), outputs)
    changes = _events(list(events), nights)
    now = serving(changes, nights)
    context: dict[str, Any] = {"title": f"Model health: {spec.name} ({spec.model_name})", "generated": stamp,
                               "nights": len(nights), "events": _events_rows(changes),
                               "champion": _version_str(now["version"]), "champion_since": now["since"]}
    if not nights:
        return render("health.html", **context, schema=spec.warehouse.schema)
    last = nights[-1]
    failed = sum(r["failed"] for r in nights)
    gaps = sum((b["day"] - a["day"]).days > 1 for a, b in zip(nights, nights[1:]))
    return render("health.html", **context, first_night=nights[0]["day"].isoformat(),
                  last_night=last["day"].isoformat(), last_decision=last.get("decision") or MISSING,
                  last_failed=last["failed"], failed_nights=failed, gaps=gaps,
                  figures=_figures(spec, nights, changes), periods=_periods_rows(nights),
                  runs=_runs_rows(spec, nights), metric=spec.promotion.metric,
                  test_score=_test_score_context(spec, nights, list(test_score or [])),
                  costs=_costs_context(spec, nights),  # each step's cost per night (task_costs.py)
                  staleness=_staleness_context(spec, list(staleness or [])),
                  shadow=_shadow_context(spec, nights),  # the shadow against the champion on realised labels
                  skew=_skew_context(nights),  # what the serving checks found (skew.py, environment.py)
                  output_name={"regression": "prediction", "multiclass": "top probability"}.get(spec.task, "score"),
                  rate_name={"regression": "mean prediction", "multiclass": "class shares"}.get(spec.task,
                                                                                                "share predicted 1"))


def write_health_page(path: str | Path, spec: DatasetSpec, runs: list[dict[str, Any]], events: list[dict[str, Any]] = (), *,
                      outputs: dict[Any, dict] | None = None, generated_at: dt.datetime | None = None,
                      test_score: list[dict[str, Any]] | None = None,
                      staleness: list[dict[str, Any]] | None = None) -> str:
    """Write the page to a local file (folders created); returns the path as a string."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(health_page_html(spec, runs, events, outputs=outputs, generated_at=generated_at,
                                     test_score=test_score, staleness=staleness), encoding="utf-8")
    return str(path)


# --------------------------------------------------------------------------- staleness (staleness.py)


def read_staleness(conn: Connection, spec: DatasetSpec) -> list[dict[str, Any]]:
    """model_staleness rows of the spec's staleness.history_days labelled days up to the newest ([]: none yet)."""
    if not warehouse.table_exists(conn, spec, warehouse.MODEL_STALENESS):
        return []
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT max(day) FROM {}").format(warehouse.table(spec, warehouse.MODEL_STALENESS)))
        newest = cur.fetchone()[0]
    return [] if newest is None else warehouse.staleness_history(conn, spec, newest, spec.staleness.history_days)


def staleness_chart(spec: DatasetSpec, points: list[Any], cadence: Any) -> Any:
    """Quality lost against the freshest version that scored the same labelled day, by how many nights older
    the version was (a point per version and day), with the fitted decay (gid staleness-fit), the tolerance
    (staleness-tolerance) and the recommended maximum age with its interval (staleness-recommended)."""
    from matplotlib.figure import Figure

    from include.nightshift.staleness import paired_losses

    pairs = [pair for day in paired_losses(points, bool(spec.promotion.greater_is_better)).values() for pair in day]
    tolerance = float(spec.promotion.realised_tolerance)
    fig = Figure(figsize=(8, 3.6))
    ax = fig.subplots()
    ax.set_title("Quality lost with age: each older version against the freshest on the same day", loc="left",
                 fontsize=11)
    ax.scatter([a for a, _ in pairs], [loss for _, loss in pairs], s=14, alpha=0.7, gid="staleness-pairs")
    reach = max([a for a, _ in pairs] + [cadence.recommended_max_age or 0, 1.0])
    if cadence.slope is not None:
        ax.plot([0, reach], [0, cadence.slope * reach], color="#d97706", gid="staleness-fit",
                label=f"fit: {cadence.slope:+.4f} per night")
    ax.axhline(tolerance, color="#b00020", linestyle="--", gid="staleness-tolerance",
               label=f"realised_tolerance {tolerance:g}")
    if cadence.recommended_max_age is not None:
        ax.axvline(cadence.recommended_max_age, color="#137333", gid="staleness-recommended",
                   label=f"recommended maximum age {cadence.recommended_max_age:.1f}")
        low, high = cadence.interval
        ax.axvspan(low, min(high, reach) if math.isfinite(high) else reach, color="#137333", alpha=0.1)
    ax.set_xlabel("nights older than the freshest version that scored the day")
    ax.set_ylabel(f"{spec.promotion.metric} lost")
    _legend(ax)
    fig.tight_layout()
    return fig


def _staleness_context(spec: DatasetSpec, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The page's staleness section: the curve and what it recommends against promotion.max_model_age_days."""
    from include.nightshift.staleness import AgePoint, judge_setting, recommend_for

    points = [AgePoint(r["day"], r["version"], float(r["age_days"]), float(r["metric"]), r["rows"])
              for r in rows if r.get("metric") is not None]
    if not points:
        return None
    cadence = recommend_for(spec, points)
    limit = spec.promotion.max_model_age_days
    if cadence.recommended_max_age is None:
        said = f"No recommendation yet: {cadence.reason}."
    else:
        low, high = cadence.interval
        said = (f"Recommended maximum age {cadence.recommended_max_age:.1f} nights (90% interval {low:.1f} to "
                f"{'unbounded' if not math.isfinite(high) else f'{high:.1f}'}), against "
                f"promotion.max_model_age_days {limit:g}. " + (judge_setting(cadence, limit) or ""))
    days = len({p.day for p in points})
    return {"figure": {"id": "staleness", "src": png_data_uri(staleness_chart(spec, points, cadence)),
                       "alt": f"Quality lost with age on {days} labelled day(s), {cadence.pairs} older-version "
                              f"point(s). {said}"},
            "said": said.strip(), "days": days, "versions": len({p.version for p in points}),
            "schema": spec.warehouse.schema}


# --------------------------------------------------------------------------- task costs (task_costs.py)


def task_costs_chart(runs: list[dict[str, Any]]) -> Any:
    """Each step's wall seconds (log scale) and peak resident memory per night, from the run records'
    details.costs (non-dry nights). Lines carry gids wall-<task> and rss-<task>. Needs one run."""
    from matplotlib.figure import Figure

    from include.nightshift.task_costs import MB, series

    nights = _runs(list(runs))
    x, x_range = list(range(len(nights))), (-0.5, len(nights) - 0.5)
    fig = Figure(figsize=(8, 5.0))
    wall, rss = fig.subplots(2, 1, sharex=True)
    for ax, title in ((wall, "Wall seconds per step (log scale)"), (rss, "Peak resident memory per step (MB)")):
        ax.set_title(title, loc="left", fontsize=11)
        _night_axis(ax, nights, x_range)
    for task, values in series(nights, "wall_seconds").items():
        wall.plot(x, _nan(values), marker="o", markersize=3, gid=f"wall-{task}", label=task)
    for task, values in series(nights, "rss_peak_bytes").items():
        rss.plot(x, _nan([None if v is None else v / MB for v in values]), marker="o", markersize=3, gid=f"rss-{task}")
    wall.set_yscale("log")
    _legend(wall)
    fig.tight_layout()
    return fig


def _fixed(value: Any, digits: int) -> str:
    return MISSING if value is None else f"{float(value):.{digits}f}"


def _cost_row(task: str, c: dict[str, Any]) -> dict[str, Any]:
    """One step of the newest night's table."""
    from include.nightshift.task_costs import MB

    return {"task": task, "wall": _fixed(c.get("wall_seconds"), 2), "cpu": _fixed(c.get("cpu_seconds"), 2),
            "peak": _fixed(c["rss_peak_bytes"] / MB, 0) if c.get("rss_peak_bytes") else MISSING,
            "rows": MISSING if c.get("rows") is None else c["rows"], "rate": _fixed(c.get("rows_per_second"), 0),
            "outcome": c.get("outcome") or MISSING}


def _costs_context(spec: DatasetSpec, nights: list[dict]) -> dict[str, Any] | None:
    """The page's task costs section: the chart over the nights and the newest measured night's steps."""
    from include.nightshift.task_costs import finding_words

    measured = [r for r in nights if ((r.get("details") or {}).get("costs") or {}).get("tasks")]
    if not measured:
        return None
    newest = measured[-1]["details"]["costs"]
    rows = [_cost_row(task, c) for task, c in sorted(newest["tasks"].items())]
    findings = [finding_words(f) for f in newest.get("findings") or []]
    return {"figure": {"id": "task-costs", "src": png_data_uri(task_costs_chart(nights)),
                       "alt": f"Wall seconds and peak memory of each step per night, {len(measured)} measured night(s); "
                              f"last night: " + ", ".join(f"{r['task']} {r['wall']} s" for r in rows) + "."},
            "rows": rows, "night": measured[-1]["day"].isoformat(), "findings": findings,
            "schema": spec.warehouse.schema}


# --------------------------------------------------------------------------- the ML Test Score (test_score.py)


def read_test_score(conn: Connection, spec: DatasetSpec) -> list[dict[str, Any]]:
    """The newest recorded night's rows of ``<schema>.ml_test_score`` in the rubric's order ([]: none yet)."""
    if not warehouse.table_exists(conn, spec, warehouse.ML_TEST_SCORE):
        return []
    query = sql.SQL("SELECT max(night) FROM {}").format(warehouse.table(spec, warehouse.ML_TEST_SCORE))
    with conn.transaction(), conn.cursor() as cur:
        newest = cur.execute(query).fetchone()[0]
    return warehouse.ml_test_scores(conn, spec, newest) if newest else []


def _section_sums(run: dict) -> dict[str, Any]:
    return ((run.get("details") or {}).get("ml_test_score") or {}).get("sections") or {}


def ml_test_score_chart(runs: list[dict[str, Any]]) -> Any:
    """The four section scores per night (and the final score, their minimum), against the rubric's 5
    ("exceptional") and its most, 7. Lines carry gids section-<name>, final, exceptional. Needs one run."""
    from include.nightshift.test_score import SECTIONS

    nights = _runs(list(runs))
    x = list(range(len(nights)))
    fig, ax = _axes("ML Test Score per night: each section's points (7 tests, 1 each), final = the lowest", nights,
                    (-0.5, len(nights) - 0.5), height=3.0)
    for section, color in zip(SECTIONS, ("#1f4e9c", "#137333", "#b45309", "#7c3aed")):
        ax.plot(x, _nan([_float(_section_sums(r).get(section)) for r in nights]), marker="o", color=color,
                gid=f"section-{section}", label=section)
    finals = [((r.get("details") or {}).get("ml_test_score") or {}).get("final") for r in nights]
    ax.plot(x, _nan([_float(v) for v in finals]), linestyle="--", color="#111827", gid="final", label="final")
    ax.axhline(5, color=COLORS["holdout"], linestyle=":", linewidth=1, gid="exceptional", label="5: exceptional")
    ax.set_ylim(-0.3, 7.3)
    _legend(ax)
    return fig


def _test_score_context(spec: DatasetSpec, nights: list[dict], rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The page's ML Test Score section: the chart over the nights and the newest night's 28 rows with evidence."""
    if not rows and not any(_section_sums(r) for r in nights):
        return None
    newest = next((r for r in reversed(nights) if _section_sums(r)), {})
    summary = (newest.get("details") or {}).get("ml_test_score") or {}
    figure = {"id": "ml-test-score", "src": png_data_uri(ml_test_score_chart(nights)),
              "alt": f"ML Test Score per night, {len(nights)} night(s): the data, model, infrastructure and monitoring "
                     f"sections' points and the final score; last night final {num(summary.get('final'))} ("
                     + ", ".join(f"{name} {num(value)}" for name, value in _section_sums(newest).items()) + ")."}
    return {"figure": figure, "rows": [_test_row(r) for r in rows],
            "night": rows[0]["night"].isoformat() if rows else None, "schema": spec.warehouse.schema}


def _test_row(row: dict[str, Any]) -> dict[str, str]:
    """One test of the table: a failed check marked, its evidence as compact JSON."""
    import json

    passed = row["passed"]
    return {"test": row["test"], "title": row["title"], "score": f"{float(row['score']):g}",
            "cls": "fail" if passed is False else "", "passed": MISSING if passed is None else ("yes" if passed else "no"),
            "evidence": json.dumps(row["evidence"], default=str, sort_keys=True)[:600]}


# --------------------------------------------------------------------------- shadow scoring (shadow.py)


# One color per version of a role, in the order the versions come (a change of version: a line of another color).
SHADOW_COLORS = {"champion": (COLORS["line"], "#0891b2", "#4338ca"), "shadow": ("#d97706", "#be185d", "#7c3aed"),
                 "won": COLORS["promote"]}


def _shadow(run: dict[str, Any]) -> dict[str, Any]:
    """The night's shadow evidence, as the decide step keeps it (details.decision.details.shadow); {}: none."""
    found = (((run.get("details") or {}).get("decision") or {}).get("details") or {}).get("shadow")
    return found if isinstance(found, dict) else {}


def shadow_points(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One point per labelled day a shadow was compared with the champion on, oldest day first: {day, night,
    champion_version, shadow_version, champion, shadow, gain, beats, rows}. A day is measured again by every
    night whose realised window still holds it (more labels, or another shadow): the newest night's measurement
    is the one drawn, so a day is one point, never two."""
    found: dict[dt.date, dict[str, Any]] = {}
    for run in sorted(runs, key=lambda r: _day(r["logical_date"], "logical_date")):  # newer nights overwrite
        evidence = _shadow(run)
        for measured in evidence.get("days") or []:
            try:
                labelled = _day(measured.get("day"), "shadow day")
            except ValueError:
                continue
            found[labelled] = {"day": labelled, "night": _day(run["logical_date"], "logical_date"),
                               "champion_version": _int(evidence.get("champion_version")),
                               "shadow_version": _int(evidence.get("version")),
                               "champion": _float(measured.get("champion")), "shadow": _float(measured.get("shadow")),
                               "gain": _float(measured.get("gain")), "beats": measured.get("beats") is True,
                               "rows": _int(measured.get("rows"))}
    return [found[d] for d in sorted(found)]


def _segments(points: list[dict[str, Any]], key: str) -> list[tuple[int | None, list[dict[str, Any]]]]:
    """Consecutive points scored by the same version: a change of version starts a new line."""
    out: list[tuple[int | None, list[dict[str, Any]]]] = []
    for p in points:
        if out and out[-1][0] == p[key]:
            out[-1][1].append(p)
        else:
            out.append((p[key], [p]))
    return out


def shadow_chart(spec: DatasetSpec, runs: list[dict[str, Any]]) -> Any:
    """The champion's and the shadow's realised metric per labelled day (shadow_points), one line per role and
    version (gids champion-v<N> and shadow-v<N>; a version's second stretch -2, ...), the days the shadow beat the
    champion by shadow.min_improvement circled (gid shadow-beats), and the nights the shadow won promotion
    (shadow_wins) as vertical lines (gid shadow-won). x: the dates. Needs one shadowed run."""
    from matplotlib.figure import Figure

    points = shadow_points(runs)
    if not points:
        raise ValueError("shadow_chart: no labelled day was compared (details.decision.details.shadow.days)")
    fig = Figure(figsize=(8, 3.2))
    ax = fig.subplots()
    ax.set_title(f"Shadow vs champion: realised {spec.promotion.metric} on the same labelled rows, per day",
                 loc="left", fontsize=11)
    for role in ("champion", "shadow"):
        _shadow_lines(ax, points, role)
    won = sorted(_day(r["logical_date"], "logical_date") for r in runs if _shadow(r).get("wins"))
    _shadow_marks(ax, points, won)
    _date_axis(ax, [p["day"] for p in points] + won)
    ax.set_ylabel(spec.promotion.metric)
    _legend(ax)
    fig.tight_layout()
    return fig


def _shadow_lines(ax: Any, points: list[dict[str, Any]], role: str) -> None:
    """One line per stretch of days one version of `role` scored, in its own color."""
    seen: dict[int | None, int] = {}
    palette = SHADOW_COLORS[role]
    for version, stretch in _segments(points, f"{role}_version"):
        seen[version] = seen.get(version, 0) + 1
        again = seen[version] > 1
        ax.plot([p["day"] for p in stretch], _nan([p[role] for p in stretch]), marker="o", markersize=4,
                color=palette[list(seen).index(version) % len(palette)], linestyle="-" if role == "champion" else "--",
                gid=f"{role}-{_version_str(version)}" + (f"-{seen[version]}" if again else ""),
                label=None if again else f"{role} {_version_str(version)}")


def _shadow_marks(ax: Any, points: list[dict[str, Any]], won: list[dt.date]) -> None:
    """The days the shadow was ahead, circled; the nights it won promotion, a vertical line each."""
    beaten = [p for p in points if p["beats"] and p["shadow"] is not None]
    if beaten:
        ax.scatter([p["day"] for p in beaten], [p["shadow"] for p in beaten], s=60, facecolors="none", zorder=3,
                   edgecolors=SHADOW_COLORS["won"], gid="shadow-beats", label="shadow won the day (by min_improvement)")
    for n, night in enumerate(won):
        ax.axvline(night, color=SHADOW_COLORS["won"], linewidth=1.5, gid="shadow-won",
                   label=None if n else "night the shadow won (shadow_wins)")


def _date_axis(ax: Any, days: list[dt.date]) -> None:
    """Whole days as ticks (at most about ten), labelled with their date."""
    from matplotlib.dates import DateFormatter, DayLocator

    ax.xaxis.set_major_locator(DayLocator(interval=max(1, (max(days) - min(days)).days // 8)))
    ax.xaxis.set_major_formatter(DateFormatter("%Y-%m-%d"))
    ax.tick_params(axis="x", labelsize=8, labelrotation=20)
    ax.grid(True, color="#e5e7eb", linewidth=0.6)


def _shadow_row(run: dict[str, Any], evidence: dict[str, Any]) -> dict[str, str]:
    """The newest shadowed night's evidence, one table row."""
    measured = "not_measured" not in evidence
    need = _int(evidence.get("min_nights"))
    return {"night": run["day"].isoformat(), "shadow": _version_str(_int(evidence.get("version"))),
            "champion": _version_str(_int(evidence.get("champion_version"))),
            "metric": evidence.get("metric") or MISSING,
            "won": (f"{_int(evidence.get('nights_won')) or 0} of {MISSING if need is None else need}" if measured
                    else MISSING),
            "wins": "yes: shadow_wins" if evidence.get("wins") else "no",
            "summary": (evidence.get("summary") or "") if measured else f"not measured: {evidence['not_measured']}",
            "cls": "pass" if evidence.get("wins") else ""}


def _shadow_context(spec: DatasetSpec, nights: list[dict]) -> dict[str, Any]:
    """The page's shadow section: the chart of the labelled days (when any was measured) and the newest shadowed
    night's evidence; without any shadowed night, one sentence."""
    shadowed = [r for r in nights if _shadow(r)]
    if not shadowed:
        return {"none": f"No night of these {len(nights)} had a shadow: no challenger scored beside the champion "
                        f"(a narrow miss within shadow.max_gap, or a version named in the trigger form, becomes one)."}
    newest = shadowed[-1]
    points = shadow_points(nights)
    context: dict[str, Any] = {"none": "", "rows": [_shadow_row(newest, _shadow(newest))], "days": len(points),
                               "nights": len(shadowed), "schema": spec.warehouse.schema, "figure": None}
    if points:
        won = sum(bool(_shadow(r).get("wins")) for r in nights)
        last = points[-1]
        context["figure"] = {
            "id": "shadow", "src": png_data_uri(shadow_chart(spec, nights)),
            "alt": f"Realised {spec.promotion.metric} of champion and shadow on {len(points)} labelled day(s) "
                   f"from {points[0]['day'].isoformat()} to {last['day'].isoformat()}; the shadow beat the champion "
                   f"on {sum(p['beats'] for p in points)} of them; last day champion "
                   f"{_version_str(last['champion_version'])} {num(last['champion'])}, shadow "
                   f"{_version_str(last['shadow_version'])} {num(last['shadow'])}; {won} night(s) the shadow won."}
    return context


# --------------------------------------------------------------------------- serving checks (skew.py, environment.py)


SERVING_CHECKS = ("environment", "round_trip", "skew")  # the champion's entries of details.serving (skew.py)


def _g(value: Any) -> str:
    """A statistic as it was measured (6 significant digits), or – when there was none."""
    number = _float(value)
    return MISSING if number is None else f"{number:.6g}"


def _finding(check: str, subject: str, evidence: str) -> dict[str, str]:
    return {"check": check, "subject": subject, "evidence": evidence}


def _skew_findings(skew: dict[str, Any]) -> list[dict[str, str]]:
    """The feature paths that disagreed (each statistic, training path against serving path), then what tonight's
    served rows showed against the training rows (a null share beyond skew.null_share_gap, unseen categories)."""
    out = []
    for f in skew.get("findings") or []:
        stats = "; ".join(f"{name}: training path {_g(a) if not isinstance(a, str) else a}, serving path "
                          f"{_g(b) if not isinstance(b, str) else b}" for name, (a, b) in
                          list((f.get("statistics") or {}).items())[:6])
        where = f"shard {f['shard']}: " if f.get("shard") is not None else ""  # a sharded night (sharded_night_checks)
        out.append(_finding("skew", str(f.get("feature")), f"{where}{stats} (skew.tolerance "
                                                           f"{_g(skew.get('tolerance'))}, {skew.get('rows', MISSING)} rows)"))
    for name, seen in sorted((skew.get("against_training") or {}).items()):
        if seen.get("null_share_flagged"):
            out.append(_finding("against training", name, f"null share {_g(seen.get('null_share'))} tonight, "
                                                          f"{_g(seen.get('training_null_share'))} at training "
                                                          "(further apart than skew.null_share_gap)"))
        if seen.get("unseen_categories"):
            out.append(_finding("against training", name, "categories never seen in training: "
                                + ", ".join(map(str, seen["unseen_categories"]))))
    return out


def serving_findings(run: dict[str, Any]) -> list[dict[str, str]]:
    """What the night's serving checks (details.serving: skew.before_scoring's evidence) did not pass or found:
    the libraries on the prediction path that changed since the champion's training, a round trip that did not
    reproduce the logged scores, skew findings per feature, and flags against the training rows. A value outside
    training's range is left out (routine on a tail: drift judges it). A night whose score step failed before
    its checks were recorded (ServingSkew) is named by its error. [] for a clean night."""
    serving = (run.get("details") or {}).get("serving") or {}
    if not any(serving.get(check) for check in SERVING_CHECKS):  # the champion's checks were not recorded
        return _failure_findings(run)
    return [*_environment_findings(serving.get("environment") or {}), *_round_trip_findings(run, serving),
            *_skew_findings(serving.get("skew") or {})]


def _environment_findings(environment: dict[str, Any]) -> list[dict[str, str]]:
    """Each library (or Python) whose version changed since the champion was trained."""
    return [_finding("dependency change", str(c.get("name")), f"{c.get('recorded') or 'not listed'} at training, "
                                                              f"{c.get('now') or 'not listed'} tonight"
                                                              + (f" (on shard {c['shard']}'s worker)"
                                                                 if c.get("shard") is not None else ""))
            for c in environment.get("changes") or []]


def _round_trip_findings(run: dict[str, Any], serving: dict[str, Any]) -> list[dict[str, str]]:
    """A round trip that did not reproduce the version's logged training scores (not recorded: no finding)."""
    trip = serving.get("round_trip") or {}
    if trip.get("passed") is not False:
        return []
    version = _int(run.get("served_version", run.get("champion_version")))
    return [_finding("round trip", _version_str(version), f"largest difference {_g(trip.get('max_difference'))} "
                                                          f"(tolerance {_g(trip.get('tolerance'))}, "
                                                          f"{trip.get('rows', MISSING)} rows)")]


def _failure_findings(run: dict[str, Any]) -> list[dict[str, str]]:
    """A step that failed on the serving path's checks before they were recorded, with its error."""
    return [_finding("score failed", str(r.get("task")), str(r.get("message")))
            for r in (run.get("details") or {}).get("root_failure") or []
            if "serving path" in str(r.get("message") or "").lower()]


def _skew_context(nights: list[dict]) -> dict[str, Any]:
    """The page's serving checks section: every finding of every night, newest night first."""
    rows = [{"night": r["day"].isoformat(), "cls": "" if f["check"] == "against training" else "fail", **f}
            for r in reversed(nights) for f in serving_findings(r)]
    checked = sum(bool((r.get("details") or {}).get("serving")) for r in nights)
    return {"rows": rows, "nights": len({row["night"] for row in rows}), "checked": checked,
            "none": "" if rows else f"No finding: on the {checked} night(s) of these {len(nights)} whose serving "
                                     "checks were recorded, the environment, the round trip and the feature paths "
                                     "all agreed with training."}
