"""The nightly run's steps as plain functions: typed outputs in, a typed output out.

Each Airflow operator is an adapter over one function here: it opens the connections,
hands over the upstream steps' outputs (steps.py) and returns this function's output to XCom.
So every rule of the nightly run can be exercised without Airflow, and the Airflow layer
holds no decision of its own.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from psycopg import Connection

from include.nightshift.artifacts import DRY_RUNS, ArtifactStore, run_folder, safe_name
from include.nightshift.decide import Decision, decide, model_age_days
from include.nightshift.registry import RUN_DATE_TAG, Registry
from include.nightshift.reports import Origin, stamp_origin
from include.nightshift.run_record import RunRecord
from include.nightshift.spec import DatasetSpec
from include.nightshift.steps import (DriftStep, MonitorStep, PublishStep, ScoringStep, ShardStep, SnapshotStep,
                                      TrainingStep, ValidationStep, VerdictStep)

if TYPE_CHECKING:
    from include.nightshift.sources import SourceReader  # a psycopg connection, a common-sql hook's, or files

log = logging.getLogger(__name__)

VALIDATED = (("current", False), ("labelled", True))  # which snapshots validate checks, and whether labelled


class NotEnoughRows(ValueError):
    """Too few labelled rows to train a challenger: retrying changes nothing until more labels arrive."""


def take_night(source: SourceReader, store: ArtifactStore, spec: DatasetSpec, day: dt.date) -> SnapshotStep:
    """The rows the night scores (its own day, or the day `scoring.horizon_days` ahead), and the rows
    whose labels arrived with it (delay_days earlier)."""
    from include.nightshift.snapshot import take_snapshot

    current = take_snapshot(source, store, spec, day + spec.scored_day_offset)
    labelled = take_snapshot(source, store, spec, day - dt.timedelta(days=spec.label.delay_days), labelled=True)
    return SnapshotStep(day=day, current=current, labelled=labelled)


def validate_night(store: ArtifactStore, spec: DatasetSpec, snapshot: SnapshotStep,
                   recent_row_counts: list[int], *, origin: Origin) -> ValidationStep:
    """The spec's suite on the night's snapshot and on the newly labelled one; stops at the first failure.

    The row-count norm applies to the night only (a labelled day is the night before, already
    held to it). An empty labelled snapshot (the first night) has nothing to hold to account.
    Reports go to the artifact store under reports/<dataset>/<day>/<run>/validation/<kind>/ (run_folder).
    """
    from include.nightshift.snapshot import snapshot_columns
    from include.nightshift.validation import validate_snapshot

    results, urls = {}, {}
    for kind, labelled in VALIDATED:
        ref = getattr(snapshot, kind)
        if labelled and ref.rows == 0:
            continue
        with store.staging_dir() as tmp, snapshot_columns(store, ref) as columns:
            result = validate_snapshot(
                columns, spec, day=dt.date.fromisoformat(ref.day), labelled=labelled,
                recent_row_counts=() if labelled else recent_row_counts, report_dir=tmp / kind)
            if result.report_path:
                stamp_origin(result.report_path, origin)
            url = keep_report_folder(store, tmp / kind, result.report_path,
                                     (*run_folder(spec.name, snapshot.day, origin.dag_run_id), "validation", kind))
        results[kind] = {**result.to_dict(), "report_path": url}
        if url:
            urls[kind] = url
        log.info("validation of %s snapshot %s: %s; report %s", kind, ref.day,
                 "passed" if result.success else "FAILED", url)
        if not result.success:
            message = result.message().replace(str(result.report_path), str(url))
            return ValidationStep(passed=False, rows=snapshot.current.rows, results=results, report_urls=urls,
                                  failure={"snapshot": kind, "day": ref.day, "message": message,
                                           "failures": [f"[{f.expectation}] {f.details}" for f in result.failures][:20]})
    return ValidationStep(passed=True, rows=snapshot.current.rows, results=results, report_urls=urls)


def keep_report_folder(store: ArtifactStore, folder: Path, entry: str | None, base: tuple[str, ...]) -> str | None:
    """Copy a report folder into the artifact store under `base`; the address of its entry page."""
    if not folder.exists():
        return None
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        store.put_file(path, store.url(*base, str(path.relative_to(folder))))
    return store.url(*base, str(Path(entry).relative_to(folder))) if entry else None


def measure_night_drift(source: SourceReader, conn: Connection, store: ArtifactStore, registry: Registry,
                        spec: DatasetSpec, snapshot: SnapshotStep, *, origin: Origin) -> DriftStep:
    """The current window's features (and the champion's scores) against the reference, and how many
    nights in a row the drift has lasted (from `conn`'s pipeline_runs).

    The reference is the champion's training sample (stored with it; none without a champion) or,
    with drift.reference `recent`, the served nights just before the current window. Past nights'
    rows are re-taken as snapshots from `source` (the same rows give the same file, reused).
    """
    from include.nightshift.drift import current_days, measure_drift, reference_days

    champion = registry.champion(spec.model_name)
    tonight = dt.date.fromisoformat(snapshot.current.day)
    windows = {"current_days": [d.isoformat() for d in current_days(spec, tonight)], "reference": spec.drift.reference,
               "reference_days": [d.isoformat() for d in reference_days(spec, tonight)]}
    if champion is None and spec.drift.reference == "champion_training":
        log.info("no champion yet: nothing to compare against")
        return DriftStep(share=None, champion_version=None, details={"windows": windows})
    current = _pooled_features(source, store, spec, current_days(spec, tonight), snapshot.current)
    reference = (registry.load_reference(champion.run_id) if spec.drift.reference == "champion_training"
                 else _pooled_features(source, store, spec, reference_days(spec, tonight)))
    version = champion.version if champion else None
    if current.empty or reference.empty:
        log.info("drift not measured: %d current and %d reference rows", len(current), len(reference))
        return DriftStep(share=None, champion_version=version, details={"windows": windows})
    score = _champion_scorer(registry, spec, champion)
    url = store.url(*run_folder(spec.name, snapshot.day, origin.dag_run_id), "drift.html")  # this run's, not the night's
    with store.staging_dir() as tmp:
        result = measure_drift(current, reference, spec, html_path=tmp / "drift.html", score=score)
        stamp_origin(tmp / "drift.html", origin)
        store.put_file(tmp / "drift.html", url)
    detected = result.share >= spec.drift.share_threshold
    history = drift_history(conn, spec, snapshot.day, version)
    persisted = persisted_nights(detected, history, snapshot.day, spec)
    log.info("drift share %.3f (threshold %.3f, %d of %d consecutive nights; windows %s); drifted: %s; "
             "prediction drift %s; report %s", result.share, spec.drift.share_threshold, persisted,
             spec.drift.persist_nights, windows, ", ".join(result.drifted) or "none", result.prediction, url)
    return DriftStep(share=float(result.share), champion_version=version, drifted=list(result.drifted),
                     report_url=url, detected=detected, persisted_nights=persisted,
                     prediction_drift=result.to_dict()["prediction"],
                     details={**result.to_dict(), "report_path": url, "windows": windows, "history": history})


def _pooled_features(source: SourceReader, store: ArtifactStore, spec: DatasetSpec, days: list[dt.date],
                     tonight: Any = None) -> Any:
    """The spec's features of the scored rows of `days`, pooled (each day first cut to drift.sample_rows,
    seeded, so a long window stays bounded in memory); `tonight`'s snapshot is used as it is."""
    import pandas as pd

    from include.nightshift.drift import night_sample, reference_sample
    from include.nightshift.snapshot import take_snapshot

    frames = []
    for day in days:
        ref = tonight if tonight is not None and tonight.day == day.isoformat() else take_snapshot(source, store,
                                                                                                 spec, day)
        if ref.rows:  # sampled before reading: a night of any size reaches memory as drift.sample_rows rows
            frames.append(reference_sample(night_sample(store, ref, spec), spec))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=spec.feature_names)


def _champion_scorer(registry: Registry, spec: DatasetSpec, champion: Any) -> Any:
    """The champion's scores of a frame of features (for output drift); None without a champion."""
    if champion is None:
        return None
    from include.nightshift.training import drift_scores

    model = registry.load_model(spec.model_name, champion.version)
    return lambda frame: drift_scores(model, frame, spec)


def drift_history(conn: Connection, spec: DatasetSpec, day: dt.date, champion_version: int | None) -> list[dict]:
    """The drift verdicts of the drift.persist_nights - 1 nights before `day`, newest first, from
    pipeline_runs: {"day", "drift_share", "champion_version", "drifted"}. A night counts as drifted when
    its share reached tonight's threshold against the same champion (any champion for a `recent`
    reference); a night without a row is not listed (and so not drifted)."""
    from include.nightshift import warehouse

    nights = spec.drift.persist_nights - 1
    if nights < 1:
        return []
    rows = warehouse.runs(conn, spec, nights, until=day - dt.timedelta(days=1))
    same = spec.drift.reference == "recent"
    return [{"day": row["logical_date"].isoformat(), "drift_share": row["drift_share"],
             "champion_version": row["champion_version"],
             "drifted": bool(row["drift_share"] is not None and row["drift_share"] >= spec.drift.share_threshold
                             and (same or row["champion_version"] == champion_version))}
            for row in sorted(rows, key=lambda r: r["logical_date"], reverse=True)]


def persisted_nights(detected: bool, history: list[dict], day: dt.date, spec: DatasetSpec) -> int:
    """Consecutive drifted nights ending tonight (0 when tonight is not drifted), at most drift.persist_nights."""
    if not detected:
        return 0
    drifted = {h["day"] for h in history if h["drifted"]}
    nights = 1
    while nights < spec.drift.persist_nights and (day - dt.timedelta(days=nights)).isoformat() in drifted:
        nights += 1
    return nights


Alert = tuple[str, dict[str, Any]]  # one sentence for a person, and the facts behind it


def drift_alert(spec: DatasetSpec, day: dt.date, decision: Decision) -> Alert | None:
    """An alert when drift is acted on (it triggered the decision: persisted, or with a measured quality
    drop); drift that is only recorded alerts nobody (it is logged and kept in pipeline_runs)."""
    d = decision.details
    if "drift" not in d.get("triggered", []):
        return None
    return (f"{spec.name} {day}: {d['drift_share']:.0%} of the features drifted (threshold "
            f"{spec.drift.share_threshold:.0%}), {d['drift_persisted_nights']} night(s) in a row",
            {"share": d["drift_share"], "drifted": d["drifted"], "persisted_nights": d["drift_persisted_nights"],
             "prediction_drift": d["prediction_drift"], "summary": d["summary"], "report": d["drift_report"]})


def _num(value: Any) -> str:
    """A measured number as the task log shows it: 4 significant digits (n/a when not measured)."""
    return "n/a" if value is None else f"{value:.4g}"


def validation_alert(spec: DatasetSpec, result: ValidationStep) -> Alert:
    """The alert of a failed validation: which snapshot, which rules, where the report is."""
    failure = result.failure or {}
    return (f"{spec.name} {failure.get('snapshot')} snapshot of {failure.get('day')} failed validation",
            {"failures": failure.get("failures"), "report": result.report_urls.get(failure.get("snapshot"))})


def monitor_champion(source: SourceReader, store: ArtifactStore, registry: Registry, spec: DatasetSpec,
                     snapshot: SnapshotStep, shadow: Any = None) -> MonitorStep:
    """The champion's realised metric, with a bootstrap interval and its calibration, on the labelled days
    it never saw: the last promotion.realised_window_days labelled days after its holdout's end, pooled.

    Past labelled days are re-taken as snapshots from `source` (the same rows give the same file). No
    such day yet (a champion trained last night) means not measured, which triggers nothing. A `shadow`
    (ModelVersionInfo) is compared with the champion on the same rows (shadow.measure_shadow).
    """
    from include.nightshift.training import training_days

    champion = registry.champion(spec.model_name)
    if champion is None:
        return MonitorStep(realised_metric=None, rows=0, champion_version=None)
    holdout = registry.holdout_metric(champion, spec.promotion.metric)  # its holdout metric when it was judged
    newest = dt.date.fromisoformat(snapshot.labelled.day)
    holdout_end = training_days(spec, champion.trained_for)[0] if champion.trained_for else None
    days = [newest - dt.timedelta(days=i) for i in range(spec.promotion.realised_window_days)]
    days = [d for d in days if holdout_end is None or d > holdout_end]
    base = MonitorStep(realised_metric=None, rows=0, champion_version=champion.version, day=newest,
                       champion_holdout_metric=holdout, holdout_end=holdout_end)
    quality, used, target, bias, compared, simpler, sampled_from = _realised(source, store, registry, spec, champion,
                                                                             snapshot, days, shadow)
    if quality is None:
        log.info("champion v%s: no labelled day after its holdout (ends %s) yet: realised %s not measured",
                 champion.version, holdout_end, spec.promotion.metric)
        return dataclasses.replace(base, shadow=compared)
    log.info("champion v%s realised %s on %d rows of %s: %s [%s, %s] (%.0f%%), brier %s, ECE %s (holdout %s)",
             champion.version, spec.promotion.metric, quality.rows, ", ".join(used), *map(_num, (
                 quality.value, quality.low, quality.high)), 100 * quality.confidence,
             *map(_num, (quality.brier, quality.ece, holdout)))
    log.info("target drift: %s", target.get("summary") or target)
    interval = None if quality.low is None else [quality.low, quality.high]
    return dataclasses.replace(base, realised_metric=quality.value, rows=quality.rows, interval=interval,
                               confidence=quality.confidence, days=used, brier=quality.brier, ece=quality.ece,
                               target_drift=target, prediction_bias=bias, shadow=compared, served_baseline=simpler,
                               sampled_from=sampled_from)


def _realised(source: SourceReader, store: ArtifactStore, registry: Registry, spec: DatasetSpec, champion: Any,
              snapshot: SnapshotStep, days: list[dt.date], shadow: Any = None) -> tuple[Any, list[str], dict, dict, dict,
                                                                                        dict, int | None]:
    """RealisedQuality of the champion on the labelled rows of `days` (None when there are none), the
    days that had rows, the drift of those rows' labels from the champion's training labels, its
    prediction bias per slice on them (bias.py: the ML Test Score's test of inclusion), the shadow's
    comparison with it on the same rows (shadow.measure_shadow; {} without a shadow), the champion
    against its simple baseline on them (served_baseline), and the rows before sampling when the days hold
    more than promotion.realised_max_rows (None: every row was read)."""
    from include.nightshift.shadow import measure_shadow

    from include.nightshift.quality import realised_quality
    from include.nightshift.snapshot import take_snapshot
    from include.nightshift.training import labels, predict_scores, row_days
    from include.nightshift.training_window import read_days

    refs = [snapshot.labelled if d.isoformat() == snapshot.labelled.day else
            take_snapshot(source, store, spec, d, labelled=True) for d in days]
    refs = [ref for ref in refs if ref.rows]
    absent = {} if shadow is None else {"version": shadow.version, "champion_version": champion.version,
                                        "not_measured": "no labelled row in the realised window"}
    if not refs:
        return None, [], {}, {}, absent, {}, None
    df, sampled_from = read_days(store, refs, spec, spec.promotion.realised_max_rows)
    if sampled_from is not None:
        log.info("promotion.realised_max_rows %d: the realised window is a seeded, time-stratified sample of %d of "
                 "its %d labelled rows", spec.promotion.realised_max_rows, len(df), sampled_from)
    scores = predict_scores(registry.load_model(spec.model_name, champion.version), df, spec)
    pro = spec.promotion
    quality = realised_quality(pro.metric, labels(df, spec), scores, threshold=spec.scoring.decision_threshold,
                               confidence=pro.realised_confidence, resamples=pro.realised_resamples,
                               seed=spec.training.seed, days=row_days(df, spec))
    compared = absent if shadow is None else measure_shadow(registry, spec, shadow, champion, df, scores)
    simpler = served_baseline(registry, spec, champion, df, labels(df, spec), scores)
    return (quality, sorted(ref.day for ref in refs), _target_drift(registry, spec, champion, df),
            _slice_bias(spec, df, scores), compared, simpler, sampled_from)


def served_baseline(registry: Registry, spec: DatasetSpec, champion: Any, df: Any, y: Any, scores: Any) -> dict:
    """The champion against the simple baseline trained beside it, on the labelled days it served: the gate asked
    it to beat the baseline on its holdout; this asks whether it still does on the rows it scored since (the ML
    Test Score's "a simpler model is not better", every night, not only on training nights). Evidence, not a
    rule: {"champion", "baseline", "gain", "margin", "passed", "rows"}, or {"not_measured": why}."""
    from include.nightshift.evaluation import metric_value
    from include.nightshift.training import predict_scores

    pro = spec.promotion
    try:
        baseline = registry.load_baseline(champion.run_id)
    except Exception as exc:  # a version registered by hand has no baseline beside it
        return {"not_measured": f"v{champion.version} has no baseline to load ({type(exc).__name__}: {exc})"}
    values = [metric_value(pro.metric, y, s, spec.scoring.decision_threshold)
              for s in (scores, predict_scores(baseline, df, spec))]
    gain = values[0] - values[1] if pro.greater_is_better else values[1] - values[0]
    margin = float(pro.baseline_margin)
    passed = None if not math.isfinite(gain) else bool(gain > 0 if margin == 0 else gain >= margin)
    record = {"metric": pro.metric, "champion": _finite(values[0]), "baseline": _finite(values[1]),
              "gain": _finite(gain), "margin": margin, "passed": passed, "rows": int(len(y))}
    (log.warning if passed is False else log.info)(
        "champion v%s vs its baseline on %d served labelled rows: %s %s vs %s (gain %s, baseline_margin %g)",
        champion.version, len(y), pro.metric, _num(record["champion"]), _num(record["baseline"]), _num(record["gain"]),
        margin)
    return record


def _slice_bias(spec: DatasetSpec, df: Any, scores: Any) -> dict:
    """The champion's prediction bias per slice value on the pooled labelled rows (bias.prediction_bias)."""
    from include.nightshift.bias import prediction_bias
    from include.nightshift.training import labels

    pro = spec.promotion
    return prediction_bias(df, labels(df, spec), scores, columns=list(pro.slice_columns), min_rows=pro.min_slice_rows,
                           tolerance=float(pro.slice_tolerance), task=spec.task)


def _target_drift(registry: Registry, spec: DatasetSpec, champion: Any, labelled: Any) -> dict:
    """The labels' drift from the champion's training labels (drift.measure_target_drift), with a one-line
    summary; {"not_measured": why} when the champion's stored reference has no labels (trained before it did)."""
    from include.nightshift.drift import measure_target_drift

    reference = registry.load_reference(champion.run_id)
    name = spec.label.name
    if name not in reference.columns:
        return {"not_measured": f"v{champion.version}'s stored training sample has no {name} column"}
    result = measure_target_drift(labelled[name], reference[name], spec)
    result["summary"] = (f"{name} {'drifted' if result['drifted'] else 'stable'} ({result['method']} "
                         f"{result['score']} vs {result['threshold']}): {result['current']} now, "
                         f"{result['reference']} in training")
    return result


def monitor_night(source: SourceReader, conn: Connection, store: ArtifactStore, registry: Registry, spec: DatasetSpec,
                  snapshot: SnapshotStep, dag_run_id: str, *, dry_run: bool,
                  shadow_version: int | None = None) -> MonitorStep:
    """The monitor step: the champion's realised quality (monitor_champion), with the shadow's beside it (the
    version the trigger form names, else the alias's: shadow.name_shadow), and how fast models go stale
    (measure_staleness)."""
    from include.nightshift.shadow import name_shadow

    shadow = name_shadow(registry, spec, shadow_version, dry_run=dry_run)
    monitored = monitor_champion(source, store, registry, spec, snapshot, shadow)
    staleness = measure_staleness(conn, store, registry, spec, snapshot, dag_run_id, dry_run=dry_run)
    return dataclasses.replace(monitored, staleness=staleness)


def measure_staleness(conn: Connection, store: ArtifactStore, registry: Registry, spec: DatasetSpec,
                      snapshot: SnapshotStep, dag_run_id: str, *, dry_run: bool = False) -> dict:
    """Tonight's newest labelled day scored by the champion and the newest blessed versions before it (up to
    staleness.versions, each only on a day it never saw), kept in model_staleness (not by a dry run: it
    only reads); and the cadence the history recommends (staleness.recommend), judged against
    promotion.max_model_age_days. {} without a labelled row or a version to score it."""
    from include.nightshift import warehouse
    from include.nightshift.training_window import read_days

    day = dt.date.fromisoformat(snapshot.labelled.day)
    versions = _unseen_versions(registry, spec, day)
    if not snapshot.labelled.rows or not versions:
        return {}
    df, _ = read_days(store, [snapshot.labelled], spec, spec.promotion.realised_max_rows)  # bounded, seeded
    tonight = [_age_point(registry, spec, info, df, day) for info in versions]
    warehouse.ensure_warehouse(conn, spec)
    if not dry_run:
        warehouse.record_staleness(conn, spec, [
            {"day": p.day, "model_name": spec.model_name, "version": p.version, "age_days": p.age_days,
             "metric_name": spec.promotion.metric, "metric": _finite(p.metric), "rows": p.rows,
             "measured_by": dag_run_id} for p in tonight])
    cadence, setting = _cadence(conn, spec, day, tonight)
    log.info("staleness on %s: %s; cadence: %s%s", day,
             ", ".join(f"v{p.version} at {p.age_days:g} nights {_num(p.metric)}" for p in tonight),
             cadence.reason or f"at most {cadence.recommended_max_age:.1f} nights", f" ({setting})" if setting else "")
    return {"day": day.isoformat(), "cadence": cadence.to_dict(), "setting": setting,
            "tonight": [{"version": p.version, "age_days": p.age_days, "metric": _finite(p.metric)} for p in tonight]}


def _cadence(conn: Connection, spec: DatasetSpec, day: dt.date, tonight: list[Any]) -> tuple[Any, str | None]:
    """The cadence fitted on model_staleness's history with tonight's points, and the judgement of the setting."""
    from include.nightshift import warehouse
    from include.nightshift.staleness import AgePoint, judge_setting, recommend_for

    history = {(r["day"], r["version"]): AgePoint(r["day"], r["version"], r["age_days"], r["metric"], r["rows"])
               for r in warehouse.staleness_history(conn, spec, day, spec.staleness.history_days)
               if r["metric"] is not None}
    history.update({(p.day, p.version): p for p in tonight if math.isfinite(p.metric)})
    cadence = recommend_for(spec, list(history.values()))
    return cadence, judge_setting(cadence, spec.promotion.max_model_age_days)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _unseen_versions(registry: Registry, spec: DatasetSpec, day: dt.date) -> list[Any]:
    """The champion and the newest blessed versions (at most staleness.versions) whose training never saw `day`."""
    from include.nightshift.training import training_days

    champion = registry.champion(spec.model_name)
    others = sorted((v for v in registry.versions(spec.model_name) if v.passed_gate), key=lambda v: -v.version)
    chosen = [v for v in ([champion] if champion else []) + others
              if v.trained_for is not None and training_days(spec, v.trained_for)[0] < day]
    return list({v.version: v for v in chosen}.values())[:spec.staleness.versions]


def _age_point(registry: Registry, spec: DatasetSpec, info: Any, df: Any, day: dt.date) -> Any:
    from include.nightshift.evaluation import metric_value
    from include.nightshift.staleness import AgePoint, serving_age
    from include.nightshift.training import labels, predict_scores

    scores = predict_scores(registry.load_model(spec.model_name, info.version), df, spec)
    metric = metric_value(spec.promotion.metric, labels(df, spec), scores, spec.scoring.decision_threshold)
    return AgePoint(day, info.version, serving_age(day, info.trained_for, spec.scoring.horizon_days), float(metric),
                    len(df))


def decide_night(registry: Registry, spec: DatasetSpec, day: dt.date, drift: DriftStep | None,
                 monitor: MonitorStep | None, *, force: bool) -> Decision:
    """Retrain tonight or not, and why (logged); the champion's age is counted in nights, up to `day`."""
    champion = registry.champion(spec.model_name)
    decision = decide(has_champion=champion is not None, drift=drift, monitor=monitor,
                      champion_age_days=model_age_days(champion.trained_for, day) if champion else None,
                      force=force, spec=spec)
    log.info("decision: %s", decision.details.get("summary", decision.reason))
    return decision


def train_challenger(source: SourceReader, store: ArtifactStore, registry: Registry, spec: DatasetSpec, day: dt.date,
                     decision: Decision | None, dag_run_id: str, *, dry_run: bool = False,
                     cluster: Any = None) -> TrainingStep:
    """Train every candidate on the labelled window before `day`; the holdout metric picks the challenger.

    The challenger is registered with its baseline, unless a version of the model already carries
    tonight's training key (same snapshots, spec, libraries and code), loads, and reproduces the
    fresh fit's holdout scores: that version is reused and nothing new is registered (a rerun of a
    night adds no duplicate version).

    A dry run registers nothing and starts no MLflow run: the challenger and its baseline are kept in
    the artifact store under dry_runs/<dataset>/<day>/<run>/ (version None, `model_url` set), where
    evaluate loads them the way it loads a registered version (_challenger_models).

    On a shadow_wins night nothing is fitted: the shadow is the challenger (shadow.shadow_challenger).
    With training.engine dask, `cluster` (a distributed.Client the train task opened) trains the XGBoost candidate
    on every row of the window (training_dask.py); this process reads a bounded sample and the holdout only.
    """
    from include.nightshift import training
    from include.nightshift.shadow import REASON, shadow_challenger
    from include.nightshift.snapshot import take_snapshot

    if decision is not None and decision.reason == REASON:
        return shadow_challenger(registry, spec, decision.details["shadow"])

    end, days = training.training_days(spec, day)
    refs = [take_snapshot(source, store, spec, d, labelled=True) for d in days]
    dask = spec.training.engine == "dask"
    window = _training_window(store, spec, refs, end, days)
    train_df, holdout_df = window.train, window.holdout
    fits = [_fit_on_cluster(cluster, store, spec, refs, end, window)] if dask else \
        training.fit_candidates(spec, train_df, holdout_df)
    chosen = training.choose(fits, spec)
    key = training.training_key(spec, [r.sha256 for r in refs])
    if dry_run:
        folder = run_folder(spec.name, day, dag_run_id, top=DRY_RUNS)
        version, run_id, reused = None, "", False
        model_url = _keep_unregistered(store, folder, spec, chosen.model, _fitted_baseline(spec, train_df, fits))
        holdout_url, refs_url = _keep_holdout(store, folder, "challenger", chosen, refs)
        what = f"kept unregistered at {model_url} (dry run)"
    else:
        info = _reusable_version(registry, spec, key, chosen, holdout_df)
        reused, model_url, what = info is not None, None, "reused"
        if info is None:
            info = _register_challenger(registry, spec, day, decision, dag_run_id, train_df, refs, fits, chosen, key,
                                        window.sampled_from, window.holdout_sampled_from)
            what = "registered"
        version, run_id, what = info.version, info.run_id, f"{what} v{info.version}"
        holdout_url, refs_url = _keep_holdout(store, ("holdout", spec.name, day.isoformat()), f"v{version}", chosen,
                                              refs)
    log.info("challenger %s (%s) on %d rows (%d held out, days %s..%s); candidates' holdout %s: %s", what,
             chosen.family, len(train_df), len(holdout_df), days[-1], end, spec.promotion.metric,
             ", ".join(f"{f.family} {_num(f.metric)}" for f in fits))
    rows, sampled_from = _rows_trained(spec, window)
    return TrainingStep(version=version, run_id=run_id, train_rows=rows,
                        holdout_rows=len(holdout_df), holdout_end=end, holdout_scores_url=holdout_url,
                        snapshots_url=refs_url, family=chosen.family,
                        candidates={f.family: f.summary() for f in fits}, reused=reused, training_key=key,
                        model_url=model_url, sampled_from=sampled_from,
                        holdout_sampled_from=window.holdout_sampled_from)


def _training_window(store: ArtifactStore, spec: DatasetSpec, refs: list, end: dt.date, days: list[dt.date]) -> Any:
    """The window read day by day (training_window.read_window; engine dask: a bounded local sample of it), or
    NotEnoughRows: too few rows, no holdout, or one class only."""
    from include.nightshift import training
    from include.nightshift.training_window import read_window

    window = read_window(store, refs, _local_sample_spec(spec) if spec.training.engine == "dask" else spec, end)
    train_df, holdout_df = window.train, window.holdout
    if len(train_df) < spec.training.min_rows or len(holdout_df) == 0:
        raise NotEnoughRows(
            f"not enough labelled rows to train: {len(train_df)} training rows (training.min_rows "
            f"{spec.training.min_rows}) and {len(holdout_df)} holdout rows in the {len(days)} days up to {end}")
    if one_class := training.one_class_problem(train_df, spec, days):  # before sklearn says it less clearly
        raise NotEnoughRows(one_class)
    return window


def _rows_trained(spec: DatasetSpec, window: Any) -> tuple[int, int | None]:
    """(rows the model trained on, rows before sampling or None): with engine dask the model saw every row of the
    window on the cluster (the local sample only fed the baseline and the samples kept with it)."""
    if spec.training.engine == "dask":
        return window.sampled_from or len(window.train), None
    return len(window.train), window.sampled_from


def _local_sample_spec(spec: DatasetSpec) -> DatasetSpec:
    """engine dask: what this process reads of the window, for the baseline and the samples kept with the model: a
    seeded, time-stratified sample of training.max_rows (else LINEAR_MAX_ROWS) rows (training_window.read_window)."""
    from include.nightshift.training import LINEAR_MAX_ROWS

    cap = spec.training.max_rows or max(LINEAR_MAX_ROWS, spec.training.min_rows)
    return dataclasses.replace(spec, training=dataclasses.replace(spec.training, max_rows=cap))


def _fit_on_cluster(cluster: Any, store: ArtifactStore, spec: DatasetSpec, refs: list, end: dt.date,
                    window: Any) -> Any:
    """engine dask: the XGBoost candidate trained on the Dask cluster on every training row, scored on the holdout
    here like any candidate (training.CandidateFit)."""
    import time

    from include.nightshift import training
    from include.nightshift.evaluation import metric_value
    from include.nightshift.training_dask import fit_on_cluster
    from include.nightshift.training_window import parts

    if cluster is None:
        raise ValueError(f"training.engine dask: no Dask client to train {spec.model_name} with (the train task opens "
                         f"one from the Airflow connection training.dask_connection_id "
                         f"{spec.training.dask_connection_id!r})")
    started = time.perf_counter()
    model = fit_on_cluster(cluster, store, spec, parts(refs, spec, end)[0], window.train)
    seconds = time.perf_counter() - started
    scores = training.predict_scores(model, window.holdout, spec)
    value = metric_value(spec.promotion.metric, training.labels(window.holdout, spec), scores,
                         spec.scoring.decision_threshold)
    params = dict(next(c for c in spec.candidates if c.family == "xgboost").params)
    return training.CandidateFit("xgboost", model, scores, None if math.isnan(value) else value, seconds,
                                 {**params, "engine": "dask"})


def _reusable_version(registry: Registry, spec: DatasetSpec, key: str, chosen: Any, holdout_df: Any) -> Any:
    """The registered version with this training key, if it loads and scores the holdout exactly as the
    fresh fit does; otherwise None (logged when a version with the key does not reproduce)."""
    import numpy as np

    from include.nightshift import training

    found = registry.find_reusable(spec.model_name, key)
    if found is None:
        return None
    info, model = found
    if not np.array_equal(training.predict_scores(model, holdout_df, spec), chosen.holdout_scores):
        log.warning("%s v%s has training key %s but does not reproduce tonight's fit: registering a new version",
                    spec.model_name, info.version, key[:12])
        return None
    return info


def _register_challenger(registry: Registry, spec: DatasetSpec, day: dt.date, decision: Decision | None,
                         dag_run_id: str, train_df: Any, refs: list, fits: list, chosen: Any, key: str,
                         sampled_from: int | None = None, holdout_sampled_from: int | None = None) -> Any:
    """Log the chosen candidate's run (every candidate's holdout metric on it) and register it; with
    training.max_rows, the window's rows before sampling (metric train_rows_before_sampling) beside train_rows,
    and with training.holdout_max_rows the holdout's (holdout_rows_before_sampling) beside holdout_rows."""
    from include.nightshift import training
    from include.nightshift.drift import reference_sample
    from include.nightshift.registry import DAG_RUN_TAG, FAMILY_TAG, TRAINING_KEY_TAG, run_name

    metric = spec.promotion.metric
    metrics: dict[str, float] = {"train_rows": len(train_df), "holdout_rows": int(len(chosen.holdout_scores)),
                                 "train_rows_before_sampling": len(train_df) if sampled_from is None else sampled_from,
                                 "holdout_rows_before_sampling": int(len(chosen.holdout_scores)) if
                                 holdout_sampled_from is None else holdout_sampled_from,
                                 "linear_fit_rows": min(len(train_df), training.LINEAR_MAX_ROWS)}
    for f in fits:
        metrics[f"candidate_{f.family}_fit_seconds"] = f.fit_seconds
        if f.metric is not None:
            metrics[f"candidate_{f.family}_{metric}"] = f.metric
    baseline = _fitted_baseline(spec, train_df, fits)
    reason = str(decision.reason) if decision and decision.reason else "retrain"
    return registry.log_challenger(
        chosen.model, baseline, spec=spec, train_df=train_df, reference=reference_sample(train_df, spec),
        params={"seed": spec.training.seed, "window_days": spec.training.window_days,
                "holdout_days": spec.training.holdout_days, "family": chosen.family,
                "calibration": spec.training.calibration, "retrain_reason": reason,
                "max_rows": spec.training.max_rows, "holdout_max_rows": spec.training.holdout_max_rows,
                **chosen.params},
        metrics=metrics,
        tags={DAG_RUN_TAG: dag_run_id, RUN_DATE_TAG: day.isoformat(), FAMILY_TAG: chosen.family,
              TRAINING_KEY_TAG: key},
        snapshots=refs, run_name=run_name(spec.name, day, reason),
    )


def _fitted_baseline(spec: DatasetSpec, train_df: Any, fits: list) -> Any:
    """The baseline, fitted on the training rows (at most training.LINEAR_MAX_ROWS of them: linear_rows): the
    logistic-regression candidate itself when it is the baseline's exact recipe (default params, no calibration),
    else fitted here."""
    from include.nightshift import training
    from include.nightshift.spec import LINEAR_FAMILY

    if spec.training.calibration == "none":
        for f in fits:
            if f.family == LINEAR_FAMILY[spec.task] and not f.params:
                return f.model
    return training.fit(training.build_baseline(spec), training.linear_rows(train_df, spec), spec)


def _keep_holdout(store: ArtifactStore, folder: tuple[str, ...], stem: str, chosen: Any,
                  refs: list) -> tuple[str, str]:
    """The fresh fit's holdout scores and the snapshot manifest, for the evaluate step (urls):
    `<folder>/<stem>.npz` and `<folder>/<stem>-snapshots.json`."""
    import numpy as np

    from include.nightshift.snapshot import manifest

    holdout_url = store.url(*folder, f"{stem}.npz")
    with store.staging_dir() as tmp:
        np.savez(tmp / "holdout.npz", scores=chosen.holdout_scores)
        store.put_file(tmp / "holdout.npz", holdout_url)
        (tmp / "snapshots.json").write_text(manifest(refs))
        refs_url = store.put_file(tmp / "snapshots.json", store.url(*folder, f"{stem}-snapshots.json"))
    return holdout_url, refs_url


def _keep_unregistered(store: ArtifactStore, folder: tuple[str, ...], spec: DatasetSpec, model: Any,
                       baseline: Any) -> str:
    """A dry run's challenger and baseline, saved as MLflow models (no run, no version) and zipped into
    one file of the artifact store (a store may be object storage); the file's address."""
    import shutil

    from include.nightshift.registry import save_unregistered

    url = store.url(*folder, "challenger.zip")
    with store.staging_dir() as tmp:
        save_unregistered(tmp / "models", model, baseline, spec)
        store.put_file(shutil.make_archive(str(tmp / "challenger"), "zip", tmp / "models"), url)
    return url


def _challenger_models(store: ArtifactStore, registry: Registry, spec: DatasetSpec, trained: TrainingStep) -> tuple:
    """(challenger, baseline) loaded back: from the registry, or a dry run's from the artifact store."""
    if trained.model_url is None:
        return registry.load_model(spec.model_name, trained.version), registry.load_baseline(trained.run_id)
    import shutil

    from include.nightshift.registry import BASELINE_ARTIFACT, load_unregistered

    with store.staging_dir() as tmp, store.local_copy(trained.model_url) as archive:
        shutil.unpack_archive(archive, tmp, "zip")
        return load_unregistered(tmp), load_unregistered(tmp, BASELINE_ARTIFACT)


def judge_challenger(store: ArtifactStore, registry: Registry, spec: DatasetSpec, trained: TrainingStep, *,
                     day: dt.date, policy: str, dry_run: bool, origin: Origin,
                     reports: dict[str, str], conn: Connection | None = None) -> VerdictStep:
    """Champion, challenger (loaded back from the registry) and baseline on the same holdout; the gate;
    the run's policy. The evaluation report is written and logged before anything moves.

    With the warehouse (`conn`), a registry without a champion is told apart from a model that never had
    one by the audit table (lost_champion): a champion that vanished fails the gate's champion check."""
    import numpy as np

    from include.nightshift import training
    from include.nightshift.benefit import feature_benefit
    from include.nightshift.trace import trace_example
    from include.nightshift.evaluation import evaluate, gate
    from include.nightshift.plots import evaluation_plots
    from include.nightshift.promotion import apply_policy
    from include.nightshift.snapshot import SnapshotRef
    from include.nightshift.training_window import read_holdout

    if trained.shadow:  # shadow_wins: judged on realised labels by monitor, not on a holdout
        return judge_shadow(store, registry, spec, trained, day=day, policy=policy, dry_run=dry_run, origin=origin,
                            reports=reports)
    refs = [SnapshotRef.from_dict(r) for r in json.loads(store.read_text(trained.snapshots_url))]
    holdout = read_holdout(store, refs, spec, trained.holdout_end)  # the holdout days only, never the window
    y = training.labels(holdout, spec)
    challenger, baseline = _challenger_models(store, registry, spec, trained)  # a dry run's: from the store
    scores = {"challenger": training.predict_scores(challenger, holdout, spec),
              "baseline": training.predict_scores(baseline, holdout, spec)}
    with store.open(trained.holdout_scores_url) as handle:
        in_memory = np.load(handle)["scores"]
    champion = registry.champion(spec.model_name)
    lost = lost_champion(conn, spec, champion) if conn is not None else None
    if champion is not None and champion.version != trained.version:
        scores["champion"] = training.predict_scores(registry.load_model(spec.model_name, champion.version),
                                                     holdout, spec)
    evaluation = evaluate(holdout, y, scores, spec)
    benefit = feature_benefit(challenger, holdout, y, spec)  # each feature's permutation importance (benefit.py)
    traced = trace_example(challenger, holdout, spec)  # one row through the model, stage by stage (trace.py)
    verdict = gate(evaluation, spec.promotion, challenger_scores=scores["challenger"],
                   roundtrip_equal=bool(np.array_equal(in_memory, scores["challenger"])),
                   challenger_family=trained.family, lost_champion=lost)
    promote, why = already_champion(champion, trained) or apply_policy(verdict, policy, dry_run=dry_run)
    judged = VerdictStep(**verdict.to_dict(), policy=policy, dag_run_id=origin.dag_run_id,
                         champion_version=champion.version if champion else None,
                         challenger_version=trained.version, promoted=promote, policy_note=why,
                         evaluation=evaluation, family=trained.family, candidates=trained.candidates,
                         reused=trained.reused, feature_benefit=benefit, example_trace=traced)
    plots = evaluation_plots(y, scores, spec, evaluation=evaluation)  # for the report and the MLflow run
    url = write_evaluation_report(store, registry, spec, day, trained, judged, reports, plots=plots, origin=origin)
    log.info("verdict for v%s: %s (%s)\n%s", trained.version, "PROMOTED" if promote else "not promoted",
             why, verdict.message())
    return dataclasses.replace(judged, report_url=url)


def judge_shadow(store: ArtifactStore, registry: Registry, spec: DatasetSpec, trained: TrainingStep, *,
                 day: dt.date, policy: str, dry_run: bool, origin: Origin, reports: dict[str, str]) -> VerdictStep:
    """A shadow_wins night's verdict: the gate monitor ran on the realised rows (shadow.measure_shadow), under the
    run's policy. Its evaluation page goes to the artifact store only: the shadow's MLflow run keeps the holdout
    evaluation it was registered with."""
    from include.nightshift.promotion import apply_policy
    from include.nightshift.shadow import REASON, shadow_verdict

    evidence = trained.shadow
    verdict = shadow_verdict(evidence)
    champion = registry.champion(spec.model_name)
    promote, why = already_champion(champion, trained) or apply_policy(verdict, policy, dry_run=dry_run)
    judged = VerdictStep(**verdict.to_dict(), policy=policy, dag_run_id=origin.dag_run_id,
                         champion_version=champion.version if champion else None,
                         challenger_version=trained.version, promoted=promote,
                         policy_note=f"{REASON}: {why} on realised labels", family=trained.family,
                         evaluation={**evidence.get("evaluation", {}),
                                     "days": evidence.get("days", [])[-spec.shadow_min_nights:]})
    url = write_evaluation_report(store, registry, spec, day, dataclasses.replace(trained, run_id=""), judged,
                                  reports, origin=origin)
    log.info("shadow v%s: %s (%s)\n%s", trained.version, "PROMOTED" if promote else "not promoted", why,
             verdict.message())
    return dataclasses.replace(judged, report_url=url)


# Where each of the night's reports goes on the challenger's MLflow run, beside the evaluation report.
MLFLOW_REPORT_FOLDERS = {"drift": "reports", "validation": "reports/validation",
                         "validation of labels": "reports/validation_labelled"}


def write_evaluation_report(store: ArtifactStore, registry: Registry, spec: DatasetSpec, day: dt.date,
                            trained: TrainingStep, judged: VerdictStep, reports: dict[str, str], *,
                            plots: list | tuple = (), origin: Origin | None = None) -> str:
    """evaluation.html (+ .json, with `plots` embedded) in the artifact store; it and the night's other
    reports on the challenger's MLflow run, so the run in MLflow holds every page its promotion was decided
    on, with the holdout numbers as run metrics and the plots and evaluation.json under evaluation/."""
    from include.nightshift.reports import evaluation_report_html

    title = f"{spec.name} {day.isoformat()}: challenger " + (
        f"v{trained.version}" if trained.version is not None else "of a dry run (not registered)")
    record = judged.record()  # with each slice's numbers, as the gate recorded them
    here = run_folder(spec.name, day, judged.dag_run_id)  # this run's: a rerun or dry run writes beside it
    url = store.url(*here, "evaluation.html")
    store.put_text(json.dumps({"evaluation": judged.evaluation, "verdict": record}, indent=2, default=str),
                   store.url(*here, "evaluation.json"))
    with store.staging_dir() as tmp:
        (tmp / "evaluation.html").write_text(evaluation_report_html(judged.evaluation, record, title, spec=spec,
                                                                    plots=plots))
        stamp_origin(tmp / "evaluation.html", origin,
                     mlflow_run=(registry.experiment_of(trained.run_id), trained.run_id) if trained.run_id else None)
        store.put_file(tmp / "evaluation.html", url)
        if not trained.run_id:  # a dry run's challenger: no MLflow run to attach the pages to
            return url
        registry.log_artifact(trained.run_id, tmp / "evaluation.html", "reports")
    registry.log_evaluation(trained.run_id, judged.evaluation, plots=plots, record=record)
    for name, folder in MLFLOW_REPORT_FOLDERS.items():
        found = reports.get(name)
        if found and store.exists(found):
            with store.local_copy(found) as local:
                registry.log_artifact(trained.run_id, local, folder)
    return url


def already_champion(champion: Any, trained: TrainingStep) -> tuple[bool, str] | None:
    """(promote?, why) when the challenger already is the champion, else None (the gate and policy decide).

    Reused by training key: tonight's retrain reproduced the champion, nothing to promote. Not reused: it
    was registered by this run, so an earlier attempt of this run's evaluate passed the gate and moved the
    alias, and died before its audit row was marked done (issue 11): the night is a promotion, and
    promote() adopts that attempt's intent and completes it, instead of the night reading `rejected`
    while the challenger serves.
    """
    if champion is None or champion.version != trained.version:
        return None
    if trained.reused:
        return False, f"v{trained.version} is the champion already: tonight's retrain reproduced it"
    return True, (f"v{trained.version} is the champion already: an earlier attempt of this run moved the alias; "
                  "completing its promotion")


def lost_champion(conn: Connection, spec: DatasetSpec, champion: Any) -> int | None:
    """The version that last served (audit table) when the registry names no champion: it vanished (deleted
    in MLflow, or its alias removed). None when there is a champion, or the model never had one."""
    from include.nightshift import audit

    if champion is not None:
        return None
    lost = audit.last_served(conn, spec, spec.model_name)
    if lost is not None:
        log.error("%s: no champion in the registry, but v%s served (%s.%s): it vanished", spec.model_name, lost,
                  spec.warehouse.schema, audit.CHANGES)
    return lost


def verdict_alerts(spec: DatasetSpec, verdict: VerdictStep, replaced: int | None) -> list[tuple[str, Alert]]:
    """The evaluate step's alerts: a promotion, and a champion that vanished (the champion check failed with
    no champion in the registry; sent as no_model: production has no model it can trust)."""
    from include.nightshift.promotion import promotion_alert

    found = []
    if verdict.promoted:
        found.append(("promotion", promotion_alert(spec, verdict, replaced)))
    lost = [c for c in verdict.checks if c.get("name") == "champion" and not c.get("passed")]
    if lost and verdict.champion_version is None:
        found.append(("no_model", (f"{spec.model_name}: {lost[0].get('detail')}", {"check": lost[0]})))
    return found


def settle_verdict(registry: Registry, conn: Connection, spec: DatasetSpec, verdict: VerdictStep,
                   night: dt.date | None = None) -> int | None:
    """Promote (audit intent -> alias -> done) or record why not, settling first any change another run left
    as an intent (promotion.repair_pending); the version replaced, if any.
    `night`: the run's date, for the audit row (None: the challenger's own, see promotion.promote)."""
    from include.nightshift import audit
    from include.nightshift.promotion import promote, repair_pending
    from include.nightshift.shadow import BASIS, narrow_miss

    if verdict.promoted:
        replaced = promote(registry, conn, spec, verdict, night=night)
        if registry.shadow(spec.model_name) is not None:  # it was compared with the champion just replaced
            registry.set_shadow(spec.model_name, None)
            log.info("%s: the shadow is retired by the promotion of v%s", spec.model_name, verdict.challenger_version)
        return replaced
    if verdict.challenger_version is None:  # a dry run's challenger, never registered: the registry and the
        return None  # audit table are left as they were (another run's pending change is that run's to settle)
    if verdict.evaluation.get("basis") == BASIS:  # a shadow not promoted tonight (policy, dry run): it shadows on
        return None
    audit.ensure_audit(conn, spec)
    repair_pending(registry, conn, spec, this_run=verdict.dag_run_id)  # intents other runs left (promotion.py)
    if verdict.champion_version == verdict.challenger_version:  # a reused champion: its tags say why it serves
        return None
    registry.record_verdict(spec.model_name, verdict.challenger_version, verdict.tags())
    why = narrow_miss(verdict, spec)
    if why:
        registry.set_shadow(spec.model_name, verdict.challenger_version)
        log.info("%s v%s is the shadow: %s", spec.model_name, verdict.challenger_version, why)
    return None


class NoModel(RuntimeError):
    """No champion after the gate: nothing can score the night, so consumers get no predictions.

    Carries what the score task hands on (``scored``, its ``no_model`` set, for the run record),
    the alert to send (None on a dry run, which publishes nothing anyway) and whether the run may
    stay green (``scoring.allow_no_predictions``, or a dry run); the message names the setting.
    """

    def __init__(self, spec: DatasetSpec, scored: ScoringStep, *, dry_run: bool) -> None:
        self.scored = scored
        self.allowed = dry_run or spec.scoring.allow_no_predictions
        setting = f"scoring.allow_no_predictions is {str(spec.scoring.allow_no_predictions).lower()}"
        consequence = ("dry run: nothing would be published anyway" if dry_run else
                       f"{setting}: the run stays green" if self.allowed else f"{setting}: the run fails")
        super().__init__(f"no champion model for {spec.model_name} after the gate: nothing scored or published for "
                         f"{scored.day} (decision no_model; {consequence})")
        self.alert: Alert | None = None if dry_run else (
            f"{spec.name} {scored.day}: no predictions tonight: {spec.model_name} has no champion after the gate "
            f"({setting})", {"night": scored.day, "model_name": spec.model_name,
                             "allow_no_predictions": spec.scoring.allow_no_predictions})


def score_night(store: ArtifactStore, registry: Registry, spec: DatasetSpec, snapshot: SnapshotStep,
                dag_run_id: str, *, dry_run: bool = False, allow_later_model: bool = False,
                sharded: bool = True) -> ScoringStep:
    """The champion scores the night, chunk by chunk; NoModel when there is no champion (no_model).

    A night of more than scoring.shard_rows rows (with `sharded`) is only planned here: the champion is chosen
    and checked, and the step says how many score_shard tasks score it (score_shard), all with that version.

    A champion trained on a night after this one is refused unless allowed (history.refuse_look_ahead):
    rerunning a past night must not score it with what was learnt later. Before anything is written, the
    champion must reproduce its logged training scores through the serving path on tonight's environment, and
    the serving path must feed it the features the training path would (skew.py: ServingSkew otherwise); the
    evidence, with tonight's environment against the champion's, is the step's `checks`.
    """
    from include.nightshift.history import refuse_look_ahead
    from include.nightshift.scoring import score_snapshot
    from include.nightshift.skew import before_scoring

    champion = registry.champion(spec.model_name)
    if champion is None:
        raise NoModel(spec, ScoringStep(url=None, rows=0, model_version=None,
                                        day=dt.date.fromisoformat(snapshot.current.day)), dry_run=dry_run)
    trained_for = champion.tags.get(RUN_DATE_TAG)  # not the registration day: a version registered by hand says nothing
    refuse_look_ahead(spec, champion.version, trained_for and dt.date.fromisoformat(trained_for), snapshot.day,
                      allowed=allow_later_model or dry_run)  # a dry run publishes nothing
    model = registry.load_model(spec.model_name, champion.version)
    watch = before_scoring(store, registry, spec, snapshot.current, champion, model)  # the round trip, tonight
    shards = spec.scoring.shards(snapshot.current.rows) if sharded else 0
    if shards:
        log.info("%d rows: scored by %d score_shard tasks of %d rows with %s v%s", snapshot.current.rows, shards,
                 spec.scoring.shard_rows, spec.model_name, champion.version)
        return _scored(store, registry, spec, snapshot, dag_run_id, champion, watch.checks, allow_later_model or dry_run,
                       url=None, rows=snapshot.current.rows, shards=shards, scored_at=dt.datetime.now(dt.timezone.utc))
    url = store.url("predictions", spec.name, snapshot.day.isoformat(), f"{safe_name(dag_run_id)}.parquet")
    rows = score_snapshot(store, snapshot.current.url, url, spec, model=model, model_version=champion.version,
                          snapshot_sha256=snapshot.current.sha256, dag_run_id=dag_run_id, watch=watch)
    log.info("scored %d rows with %s v%s -> %s", rows, spec.model_name, champion.version, url)
    return _scored(store, registry, spec, snapshot, dag_run_id, champion, watch.checks, allow_later_model or dry_run,
                   url=url, rows=rows)


def _scored(store: ArtifactStore, registry: Registry, spec: DatasetSpec, snapshot: SnapshotStep, dag_run_id: str,
            champion: Any, checks: dict, allow_later_model: bool, **scoring: Any) -> ScoringStep:
    """The score step's output, once the champion's scores are written or planned: the shadow scores too."""
    shadow_url, shadow_version, checks["shadow"] = score_shadow(store, registry, spec, snapshot, dag_run_id,
                                                                champion, allow_later_model)
    # The partition is the day of the rows scored: the night itself, or the day ahead (scoring.horizon_days).
    return ScoringStep(**scoring, model_version=champion.version, day=dt.date.fromisoformat(snapshot.current.day),
                       checks=checks, shadow_url=shadow_url, shadow_version=shadow_version)


def score_shadow(store: ArtifactStore, registry: Registry, spec: DatasetSpec, snapshot: SnapshotStep,
                 dag_run_id: str, champion: Any, allow_later_model: bool) -> tuple[str | None, int | None, dict]:
    """The shadow's scores of the night's rows (shadow.py), beside the champion's: (url, version, evidence).

    The shadow serves nothing, so nothing about it stops the night: a shadow that cannot load or score, or was
    trained on a later night than this one, is left out tonight and the evidence says why."""
    from include.nightshift.scoring import score_snapshot

    shadow = registry.shadow(spec.model_name)
    if shadow is None or shadow.version == champion.version:
        return None, None, {}
    trained_for = shadow.tags.get(RUN_DATE_TAG)
    if trained_for and dt.date.fromisoformat(trained_for) > snapshot.day and not allow_later_model:
        return None, None, {"version": shadow.version, "scored": False,
                            "reason": f"v{shadow.version} was trained for {trained_for}, after this night"}
    url = store.url("predictions", spec.name, snapshot.day.isoformat(), f"{safe_name(dag_run_id)}-shadow.parquet")
    try:
        rows = score_snapshot(store, snapshot.current.url, url, spec,
                              model=registry.load_model(spec.model_name, shadow.version), model_version=shadow.version,
                              snapshot_sha256=snapshot.current.sha256, dag_run_id=dag_run_id)
    except Exception as exc:  # logged with its traceback; the champion's night goes on
        log.exception("shadow v%s could not score %s: left out tonight", shadow.version, snapshot.current.day)
        return None, None, {"version": shadow.version, "scored": False, "reason": f"{type(exc).__name__}: {exc}"}
    log.info("shadow v%s scored the same %d rows -> %s (not served)", shadow.version, rows, url)
    return url, shadow.version, {"version": shadow.version, "scored": True, "rows": rows}


def score_shard(conn: Connection | None, store: ArtifactStore, registry: Registry, spec: DatasetSpec,
                scored: ScoringStep, snapshot: SnapshotStep, dag_run_id: str, shard: int) -> ShardStep:
    """One shard of a sharded night (score_night planned it): its rows scored with the version the plan chose,
    written to the artifact store, then staged in predictions_staging (not on a dry run: `conn` None).

    On whichever worker it runs, the version must first reproduce its logged training scores there and the
    serving path must feed it the training path's features on a sample of this shard (skew.before_scoring),
    as for a whole night. A retry of the shard replaces its own staged rows (warehouse.stage_shard)."""
    from include.nightshift import warehouse
    from include.nightshift.scoring import score_snapshot
    from include.nightshift.skew import before_scoring

    rows_range = scored.shard_range(shard, spec.scoring.shard_rows)
    version = registry.version(spec.model_name, scored.model_version)
    model = registry.load_model(spec.model_name, scored.model_version)
    watch = before_scoring(store, registry, spec, snapshot.current, version, model, rows_range=rows_range)
    url = store.url("predictions", spec.name, snapshot.day.isoformat(),
                    f"{safe_name(dag_run_id)}-shard-{shard:05d}.parquet")

    def stage(path: Path) -> None:  # from the file just written: no download of it back from the store
        warehouse.ensure_warehouse(conn, spec)
        warehouse.stage_shard(conn, spec, scored.day, path, dag_run_id=dag_run_id, shard=shard)

    rows = score_snapshot(store, snapshot.current.url, url, spec, model=model, model_version=scored.model_version,
                          snapshot_sha256=snapshot.current.sha256, dag_run_id=dag_run_id, watch=watch,
                          rows_range=rows_range, scored_at=scored.scored_at, then=None if conn is None else stage)
    log.info("shard %d: rows %d..%d scored with %s v%s%s", shard, rows_range[0], rows_range[1] - 1, spec.model_name,
             scored.model_version, " and staged" if conn is not None else " (dry run: not staged)")
    return ShardStep(shard=shard, rows=rows, url=url, model_version=scored.model_version, staged=conn is not None,
                     checks=watch.checks)


def publish_night(conn: Connection, store: ArtifactStore, registry: Registry, spec: DatasetSpec,
                  scored: ScoringStep, snapshot: SnapshotStep, dag_run_id: str, *,
                  allow_later_model: bool = False) -> PublishStep:
    """Replace the night's partition of the predictions table (one transaction) with the champion's scores.

    Under the serving lock (warehouse.serving_lock), the version that scored must still be the
    champion: if a rollback (or a promotion) moved the alias since the score step, the night is
    scored again with the version serving now, so consumers never read a replaced champion's night.
    """
    from include.nightshift import warehouse

    if scored.no_model:  # the score task fails or skips first; never replace a night with nothing
        raise ValueError(f"nothing to publish for {scored.day}: no champion scored it (decision no_model)")
    warehouse.ensure_warehouse(conn, spec)
    with warehouse.serving_lock(conn, spec):
        champion = registry.champion(spec.model_name)
        if champion is None or champion.version != scored.model_version:
            log.warning("%s v%s scored %s, but the champion is now %s: scoring the night again with it",
                        spec.model_name, scored.model_version, scored.day,
                        "gone" if champion is None else f"v{champion.version}")
            scored = score_night(store, registry, spec, snapshot, dag_run_id,  # NoModel when it vanished
                                 allow_later_model=allow_later_model, sharded=False)
        if scored.shards:  # the shards are staged: one transaction swaps them in
            rows = warehouse.swap_staged(conn, spec, scored.day, dag_run_id=dag_run_id, shards=scored.shards,
                                         rows=scored.rows)
        else:
            with store.local_copy(scored.url) as path:
                rows = warehouse.replace_partition(conn, spec, scored.day, path)
    log.info("published %d rows to %s.predictions for %s with v%s", rows, spec.warehouse.schema, scored.day,
             scored.model_version)
    return PublishStep(rows=rows, day=scored.day, model_version=scored.model_version,
                       shadow_rows=publish_shadow(conn, store, spec, scored))


def publish_shadow(conn: Connection, store: ArtifactStore, spec: DatasetSpec, scored: ScoringStep) -> int:
    """The night's partition of predictions_shadow: the shadow's scores, or none (a night without a shadow
    keeps no shadow rows from an earlier run of it). After the champion's partition: never in its way."""
    from include.nightshift import warehouse

    if scored.shadow_url is None:
        warehouse.clear_partition(conn, spec, scored.day, warehouse.PREDICTIONS_SHADOW)
        return 0
    with store.local_copy(scored.shadow_url) as path:
        rows = warehouse.replace_partition(conn, spec, scored.day, path, relation=warehouse.PREDICTIONS_SHADOW)
    log.info("published %d rows of shadow v%s to %s.%s for %s", rows, scored.shadow_version, spec.warehouse.schema,
             warehouse.PREDICTIONS_SHADOW, scored.day)
    return rows


def record_night(conn: Connection, store: ArtifactStore, spec: DatasetSpec, record: RunRecord, *,
                 health_days: int) -> str | None:
    """Write the run's row of run_attempts (every run, dry runs flagged), upsert the night's row of
    pipeline_runs (a dry run writes none: that history is of what was published), then regenerate
    the per-night report index (report_index.py) and the model-health page; the page's address, None
    if it failed.

    First the records of earlier runs that could not reach the warehouse (pending_records.py), oldest
    first, each removed from the artifact store once its transaction committed."""
    from include.nightshift import report_index, warehouse
    from include.nightshift import task_costs
    from include.nightshift.pending_records import write_pending

    warehouse.ensure_warehouse(conn, spec)
    write_pending(conn, store, spec)
    task_costs.judge_night(conn, spec, record)  # tonight's step costs against their nights (details.costs)
    test_rows = score_run(conn, spec, record)  # ML Test Score: before the rows, whose details keep its sums
    warehouse.record_attempt(conn, spec, record.attempt_row())
    task_costs.record_costs(conn, spec, record)  # every run's, dry runs flagged
    if record.dry_run:
        log.info("dry run: %s.pipeline_runs and ml_test_score left as they were", spec.warehouse.schema)
    elif warehouse.upsert_run(conn, spec, record.row()):  # ML Test Score: the night's row is this run's
        warehouse.record_test_score(conn, spec, record.logical_date, test_rows)
    try:  # which run's reports speak for each night (Browse > Nightshift reports)
        report_index.write_index(conn, store, spec)
    except Exception:  # like the health page: an index problem never fails a good night
        log.exception("the report index of %s could not be written", spec.name)
    try:
        return write_health_page(conn, store, spec, health_days)
    except Exception:  # the row is written: a plotting problem never turns a good night into a failed one
        log.exception("the model-health page of %s could not be written", spec.name)
        return None


def score_run(conn: Connection, spec: DatasetSpec, record: RunRecord) -> list[dict]:
    """The ML Test Score of the run (test_score.py): its 28 rows, judged from the record and what model_versions
    says a rollback could restore; the section sums and final score go into record.details['ml_test_score']
    (the record is still being written: run_attempts and pipeline_runs keep them, its summary line says them)."""
    from include.nightshift import test_score, warehouse

    restorable = test_score.rollback_evidence(warehouse.model_versions(conn, spec, spec.model_name))
    rows = test_score.score_night(test_score.night_evidence(record, rollback=restorable, spec=spec))
    record.details["ml_test_score"] = test_score.summarise(rows)
    log.info("%s", test_score.summary_text(record.details["ml_test_score"]))
    return rows


def write_health_page(conn: Connection, store: ArtifactStore, spec: DatasetSpec, days: int) -> str:
    """Regenerate reports/<dataset>/health.html from the warehouse's history (the newest `days` recorded
    nights, their champion changes and published output); its address. Called after every nightly run
    and every rollback."""
    from include.nightshift import health

    url = store.url("reports", spec.name, "health.html")
    runs = health.read_history(conn, spec, days)
    events = health.read_events(conn, spec)
    outputs = health.read_outputs(conn, spec, [run["logical_date"] for run in runs])
    with store.staging_dir() as tmp:
        health.write_health_page(tmp / "health.html", spec, runs, events, outputs=outputs,
                                 test_score=health.read_test_score(conn, spec),  # ML Test Score: the newest night
                                 staleness=health.read_staleness(conn, spec))  # the age-vs-quality curve
        store.put_file(tmp / "health.html", url)
    return url


def run_reports(validation: ValidationStep | None, drift: DriftStep | None,
                verdict: VerdictStep | None = None) -> dict[str, str]:
    """The night's report pages by name (those that were written): for the challenger's MLflow run
    and for the last lines of the run's log."""
    urls = validation.report_urls if validation else {}
    found = {"validation": urls.get("current"), "validation of labels": urls.get("labelled"),
             "drift": drift.report_url if drift else None, "evaluation": verdict.report_url if verdict else None}
    return {name: url for name, url in found.items() if url}
