"""Training/serving skew (issue 14 part 4): does the serving path feed the model what training fed it?

Drift asks whether tonight's rows look like the reference rows (different rows, compared as populations).
Skew asks a different question: whether the *code* that turns rows into model inputs at serving computes
what the training code computes. Two checks answer it every night, before anything is written for publish:

- The round trip. At registration a fixed, seeded sample of training rows (skew.round_trip_rows, the raw
  feature columns the serving path reads) and the scores the freshly fitted model gave them are logged on
  the version's run (serving_check/). Each night the champion, loaded from the registry as scoring loads it,
  scores that sample through the serving path (scoring.serving_chunks + scoring.serving_scores) on tonight's
  environment; any difference beyond ROUND_TRIP_TOLERANCE fails the score task (ServingSkew), naming the
  version and the largest difference. So a library upgrade (environment.py) re-verifies the champion too.
- The feature paths. A seeded sample of tonight's rows (skew.sample_rows) is taken twice: as the serving
  path fed them to the model (SkewWatch.see, called by scoring for every chunk) and as the training path
  builds them from the same snapshot rows (snapshot.read_snapshot + training.features_frame). Their
  per-feature statistics (feature_statistics) must agree within skew.tolerance; a feature that does not is
  a skew finding and fails the score task before its predictions are written.

Tonight's statistics are also compared with the training rows' statistics logged with the model: categories
never seen in training, a null share far from training's (skew.null_share_gap), values outside training's
range. That is evidence per feature (the score step's output, pipeline_runs.details.serving), not a failure:
it says what the model meets tonight, which drift judges.

The artifacts of a version never change, so they are read once per process and version (_CACHE).
"""

from __future__ import annotations

import io
import json
import logging
import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from include.nightshift.spec import DatasetSpec

log = logging.getLogger(__name__)

FOLDER = "serving_check"  # on a version's run
SAMPLE_FILE, SCORES_FILE, STATS_FILE, ENVIRONMENT_FILE = ("sample.parquet", "scores.npy", "feature_stats.json",
                                                         "environment.json")
ROUND_TRIP_TOLERANCE = 1e-9  # issue 14: any difference beyond this fails the run before publish
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
NUMERIC_STATS = ("count", "nulls", "min", "max", "mean", *(f"q{int(q * 100):02d}" for q in QUANTILES))


class ServingSkew(RuntimeError):
    """The serving path does not reproduce training (round trip or feature statistics): nothing is published.

    ``checks``: the evidence gathered so far (the score step's `checks`), for the alert and the log."""

    def __init__(self, message: str, checks: dict[str, Any]) -> None:
        super().__init__(message)
        self.checks = checks


# --- statistics ------------------------------------------------------------------------------------------------


def feature_statistics(features: pd.DataFrame, spec: DatasetSpec) -> dict[str, dict[str, Any]]:
    """Per feature of a frame of model inputs (training.features_frame's output): count (non-null), nulls, and
    min, max, mean and QUANTILES for a numeric feature; distinct and the skew.top_categories most frequent
    values with their shares (of all rows) for a categorical one. JSON-safe (None for an undefined number)."""
    return {f.name: (_numeric_stats(features[f.name]) if f.type == "numeric"
                     else _categorical_stats(features[f.name], spec.skew.top_categories))
            for f in spec.features}


def _numeric_stats(col: pd.Series) -> dict[str, Any]:
    values = col.to_numpy(dtype="float64", na_value=np.nan)
    present = values[~np.isnan(values)]
    stats: dict[str, Any] = {"count": int(present.size), "nulls": int(values.size - present.size)}
    if present.size == 0:
        return {**stats, **{name: None for name in NUMERIC_STATS[2:]}}
    quantiles = np.quantile(present, QUANTILES)
    stats.update(min=float(present.min()), max=float(present.max()), mean=float(present.mean()))
    stats.update({name: float(q) for name, q in zip(NUMERIC_STATS[5:], quantiles, strict=True)})
    return stats


def _categorical_stats(col: pd.Series, top: int) -> dict[str, Any]:
    counts = col.dropna().astype(str).value_counts()
    counts = counts.sort_index(kind="stable").sort_values(ascending=False, kind="stable")  # ties by value
    rows = max(len(col), 1)
    return {"count": int(counts.sum()), "nulls": int(col.isna().sum()), "distinct": int(len(counts)),
            "top": {str(k): float(v) / rows for k, v in counts.head(top).items()}}


def _differs(a: Any, b: Any, tolerance: float) -> bool:
    """Two statistics disagree: one undefined and not the other, or apart by more than tolerance (relative to
    the larger magnitude, at least 1)."""
    if a is None or b is None:
        return (a is None) != (b is None)
    return abs(a - b) > tolerance * max(1.0, abs(a), abs(b))


def compare_paths(training: dict[str, dict], serving: dict[str, dict], tolerance: float) -> list[dict[str, Any]]:
    """The skew findings: each feature whose statistics on the training path and on the serving path (the same
    rows) disagree beyond `tolerance`, with every statistic that does: {"feature", "statistics": {name:
    [training, serving]}}."""
    findings = []
    for name, trained in training.items():
        served = serving.get(name, {})
        bad = {stat: [trained.get(stat), served.get(stat)] for stat in trained
               if stat != "top" and _differs(trained.get(stat), served.get(stat), tolerance)}
        if "top" in trained:
            shares = set(trained["top"]) | set(served.get("top", {}))
            bad.update({f"share[{v}]": [trained["top"].get(v), served.get("top", {}).get(v)] for v in sorted(shares)
                        if _differs(trained["top"].get(v, 0.0), served.get("top", {}).get(v, 0.0), tolerance)})
        if bad:
            findings.append({"feature": name, "statistics": bad})
    return findings


def against_training(tonight: dict[str, dict], trained: dict[str, dict] | None, spec: DatasetSpec) -> dict[str, Any]:
    """Evidence per feature: tonight's served rows against the training rows' statistics (never a failure).
    Numeric: null share then and now, and whether tonight leaves training's [min, max]. Categorical: null share,
    and categories never seen in training (judged only when training's categories were all kept). A null share
    further than skew.null_share_gap from training's is flagged."""
    if trained is None:
        return {}
    out = {}
    for name, now in tonight.items():
        then = trained.get(name)
        if then is None:
            continue
        share = _null_share(now), _null_share(then)
        row: dict[str, Any] = {"null_share": share[0], "training_null_share": share[1],
                               "null_share_flagged": abs(share[0] - share[1]) > spec.skew.null_share_gap}
        if "top" in now:
            complete = then.get("distinct", 0) <= len(then.get("top", {}))
            row["unseen_categories"] = sorted(set(now["top"]) - set(then["top"]))[:20] if complete else None
        elif now.get("min") is not None and then.get("min") is not None:
            row["outside_training_range"] = bool(now["min"] < then["min"] or now["max"] > then["max"])
        out[name] = row
    return out


def _null_share(stats: dict[str, Any]) -> float:
    rows = stats.get("count", 0) + stats.get("nulls", 0)
    return round(stats.get("nulls", 0) / rows, 6) if rows else 0.0


# --- what is logged with a version ---------------------------------------------------------------------------


def serving_sample(train_df: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """A fixed, seeded sample of the training rows (skew.round_trip_rows, or all when fewer): the raw feature
    columns the serving path reads, in training order."""
    rows = min(spec.skew.round_trip_rows, len(train_df))
    picked = np.sort(np.random.default_rng(spec.training.seed).choice(len(train_df), size=rows, replace=False))
    return train_df.iloc[picked][spec.feature_names].reset_index(drop=True)


def write_serving_check(folder: Path, model: Any, train_df: pd.DataFrame, spec: DatasetSpec,
                        environment: dict[str, str]) -> Path:
    """Into `folder`: the sample, the scores the fitted (in-memory) model gave it on the training path, the
    training rows' feature statistics and the `environment` it was trained in (environment.current_environment);
    `folder` (to log as the run's serving_check/)."""
    from include.nightshift.training import features_frame, predict_scores

    folder.mkdir(parents=True, exist_ok=True)
    sample = serving_sample(train_df, spec)
    sample.to_parquet(folder / SAMPLE_FILE, index=False)
    np.save(folder / SCORES_FILE, predict_scores(model, sample, spec))
    stats = feature_statistics(features_frame(train_df, spec), spec)
    (folder / STATS_FILE).write_text(json.dumps({"rows": len(train_df), "features": stats}, sort_keys=True))
    (folder / ENVIRONMENT_FILE).write_text(json.dumps(environment, sort_keys=True))
    return folder


@dataclass(frozen=True)
class ServingCheck:
    """What a version's run logged in serving_check/ (None parts: not logged); the sample as its Parquet bytes."""

    sample: bytes | None
    scores: np.ndarray | None
    statistics: dict[str, dict] | None
    environment: dict[str, str] | None = None


_CACHE: dict[tuple[str, str], ServingCheck | None] = {}


def load_serving_check(registry: Any, run_id: str) -> ServingCheck | None:
    """A run's serving_check/ (downloaded once per process and run: a version's artifacts never change);
    None when the run logged none (a version registered before issue 14)."""
    key = (registry.tracking_uri, run_id)
    if key not in _CACHE:
        _CACHE[key] = _download(registry, run_id)
    return _CACHE[key]


def _download(registry: Any, run_id: str) -> ServingCheck | None:
    import mlflow

    names = {Path(f.path).name for f in registry.client.list_artifacts(run_id, FOLDER)}
    if SAMPLE_FILE not in names:
        return None
    # Read into memory and the download removed here: a task process ends without running exit handlers
    # (Airflow's task runner), so a folder kept for the process's lifetime outlived it, one per task.
    with tempfile.TemporaryDirectory(prefix="nightshift-serving-check-") as tmp:
        folder = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=FOLDER, dst_path=tmp,
                                                          tracking_uri=registry.tracking_uri))
        stats = json.loads((folder / STATS_FILE).read_text())["features"] if STATS_FILE in names else None
        env = json.loads((folder / ENVIRONMENT_FILE).read_text()) if ENVIRONMENT_FILE in names else None
        return ServingCheck((folder / SAMPLE_FILE).read_bytes(),
                            np.load(folder / SCORES_FILE) if SCORES_FILE in names else None, stats, env)


# --- the nightly checks --------------------------------------------------------------------------------------


def verify_round_trip(model: Any, check: ServingCheck | None, spec: DatasetSpec, version: int) -> dict[str, Any]:
    """The logged sample through the serving path with the registry-loaded model, against the logged scores.
    Evidence {"passed", "rows", "max_difference", "tolerance", "seconds"} ({"passed": None, "summary": "not
    recorded for vN"} without a logged sample); ServingSkew when any score differs beyond ROUND_TRIP_TOLERANCE."""
    from include.nightshift.scoring import serving_chunks, serving_scores

    if check is None or check.sample is None or check.scores is None:
        return {"passed": None, "summary": f"not recorded for v{version}"}
    started = time.perf_counter()
    chunks = serving_chunks(io.BytesIO(check.sample), spec)
    scores = np.concatenate([serving_scores(model, chunk, spec) for chunk in chunks])
    if scores.shape != check.scores.shape:  # e.g. another number of classes: as far apart as can be
        worst = math.inf
    else:
        worst = float(np.max(np.abs(scores - check.scores))) if scores.size else 0.0
    evidence = {"passed": bool(worst <= ROUND_TRIP_TOLERANCE), "rows": int(len(scores)),
                "max_difference": worst if math.isfinite(worst) else None,  # JSON (jsonb) has no infinity
                "tolerance": ROUND_TRIP_TOLERANCE, "seconds": round(time.perf_counter() - started, 4)}
    evidence["summary"] = (f"v{version} reproduced its {len(scores)} logged training scores through the serving "
                           f"path (largest difference {worst:.3g})" if evidence["passed"] else
                           f"{spec.model_name} v{version} does not reproduce the scores it gave its fixed training "
                           f"sample at training when scored through the serving path: largest difference {worst:.6g} "
                           f"(tolerance {ROUND_TRIP_TOLERANCE:g}, {len(scores)} rows); nothing is published")
    return evidence


@dataclass
class SkewWatch:
    """Tonight's rows as the serving path feeds them to the model, against the training path on the same rows.

    scoring.score_snapshot calls see() with every chunk's model inputs and verify() before it writes anything;
    the watch keeps only the rows of a seeded sample of positions (skew.sample_rows), so memory stays bounded."""

    spec: DatasetSpec
    training_rows: Any  # (positions) -> those rows of the snapshot as the training path reads them (a DataFrame)
    total_rows: int
    trained: dict[str, dict] | None = None  # the version's training statistics, for the evidence
    version: int | None = None
    checks: dict[str, Any] = field(default_factory=dict)
    first_row: int = 0  # a shard's rows are first_row .. first_row + total_rows - 1 of the snapshot
    _seen: list[pd.DataFrame] = field(default_factory=list)

    def __post_init__(self) -> None:
        rows = min(self.spec.skew.sample_rows, self.total_rows)
        rng = np.random.default_rng(self.spec.training.seed)
        self.positions = self.first_row + (np.sort(rng.choice(self.total_rows, size=rows, replace=False)) if rows
                                           else np.array([], int))
        self.seconds = 0.0

    def see(self, features: pd.DataFrame, start: int) -> None:
        """A chunk of model inputs whose first row is the snapshot's row `start`: keep the sampled rows."""
        began = time.perf_counter()
        lo, hi = np.searchsorted(self.positions, [start, start + len(features)])
        if hi > lo:
            self._seen.append(features.iloc[self.positions[lo:hi] - start])
        self.seconds += time.perf_counter() - began

    def verify(self) -> dict[str, Any]:
        """The feature paths compared (ServingSkew on a finding) and tonight's evidence against training."""
        from include.nightshift.training import features_frame

        began = time.perf_counter()
        served = pd.concat(self._seen, ignore_index=True) if self._seen else pd.DataFrame(columns=self.spec.feature_names)
        trained_path = features_frame(self.training_rows(self.positions).reset_index(drop=True), self.spec)
        serving_stats = feature_statistics(served, self.spec)
        findings = compare_paths(feature_statistics(trained_path, self.spec), serving_stats, self.spec.skew.tolerance)
        self.seconds += time.perf_counter() - began
        result = {"rows": int(len(self.positions)), "tolerance": self.spec.skew.tolerance, "findings": findings,
                  "passed": not findings, "seconds": round(self.seconds, 4),
                  "against_training": against_training(serving_stats, self.trained, self.spec),
                  "training_statistics": "recorded" if self.trained is not None else
                  f"not recorded for v{self.version}"}
        self.checks["skew"] = result
        if findings:
            raise ServingSkew(skew_message(self.spec, self.version, findings, len(self.positions)), self.checks)
        return result


def sharded_night_checks(checks: dict[str, Any], shards: Sequence[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
    """The serving evidence of a night scored in shards, as a night scored whole records it: the score step's
    `checks` (environment, round trip: checked where the score task ran), joined by what each shard's worker found
    (`shards`: (shard, its score_shard task's checks)): libraries that differ there too, each shard's round trip,
    and the skew checks, which only the shards run (each on a sample of its own rows).

    Why: a sharded night's score step scores no rows, so without this its record (the health page, the ML Test
    Score's skew test) would hold no skew evidence, and a worker with other libraries would go unrecorded."""
    found = sorted(((shard, got) for shard, got in shards if isinstance(got, dict)), key=lambda pair: pair[0])
    if not found:
        return checks
    skews = [(shard, got["skew"]) for shard, got in found if got.get("skew")]
    return {**checks, "environment": _joined_environment(checks.get("environment") or {}, found),
            "round_trip": {**(checks.get("round_trip") or {}), "shards": _shard_round_trips(found)},
            **({"skew": _merged_skew(skews)} if skews else {})}


def _joined_environment(environment: dict[str, Any], found: list[tuple[int, dict]]) -> dict[str, Any]:
    """The score task's environment evidence plus each library change a shard's worker saw (once, with the shard)."""
    changes = {(c.get("name"), c.get("now")): c for c in environment.get("changes") or []}
    for shard, got in found:
        for change in (got.get("environment") or {}).get("changes") or []:
            changes.setdefault((change.get("name"), change.get("now")), {**change, "shard": shard})
    return {**environment, "changes": list(changes.values())}


def _shard_round_trips(found: list[tuple[int, dict]]) -> dict[str, Any]:
    trips = [got.get("round_trip") or {} for _, got in found]
    differences = [t["max_difference"] for t in trips if t.get("max_difference") is not None]
    return {"checked": len(trips), "passed": all(t.get("passed") is not False for t in trips),
            "max_difference": max(differences) if differences else None}


def _merged_skew(skews: list[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
    """Shards' skew evidence as one: rows and seconds summed, findings joined (each naming its shard), passed when
    every shard passed, and each feature's evidence against training joined (_join_feature)."""
    rows = sum(int(skew.get("rows") or 0) for _, skew in skews)
    first = skews[0][1]
    return {"rows": rows, "tolerance": first.get("tolerance"), "shards": len(skews),
            "findings": [{**f, "shard": shard} for shard, skew in skews for f in skew.get("findings") or []],
            "passed": all(skew.get("passed") for _, skew in skews),
            "seconds": round(sum(float(skew.get("seconds") or 0) for _, skew in skews), 4),
            "against_training": _joined_features([skew for _, skew in skews], rows),
            "training_statistics": first.get("training_statistics")}


def _joined_features(skews: list[dict[str, Any]], rows: int) -> dict[str, dict[str, Any]]:
    features: dict[str, dict[str, Any]] = {}
    for skew in skews:
        weight = int(skew.get("rows") or 0) / rows if rows else 0.0
        for name, row in (skew.get("against_training") or {}).items():
            _join_feature(features.setdefault(name, {"null_share": 0.0, "null_share_flagged": False}), row, weight)
    return {name: {**row, "null_share": round(row["null_share"], 6)} for name, row in features.items()}


def _join_feature(into: dict[str, Any], row: dict[str, Any], weight: float) -> None:
    """One shard's evidence for a feature joined into the night's: the null share weighted by the shard's sample
    rows; a flag, unseen categories (None: not judged) or a value outside training's range when any shard had it."""
    into["null_share"] += weight * float(row.get("null_share") or 0.0)
    into["training_null_share"] = row.get("training_null_share")
    into["null_share_flagged"] |= bool(row.get("null_share_flagged"))
    if "unseen_categories" in row:
        unseen = row["unseen_categories"]
        into["unseen_categories"] = None if unseen is None else sorted(
            set(into.get("unseen_categories") or ()) | set(unseen))[:20]
    if "outside_training_range" in row:
        into["outside_training_range"] = bool(into.get("outside_training_range")) or bool(row["outside_training_range"])


def skew_message(spec: DatasetSpec, version: int | None, findings: list[dict], rows: int) -> str:
    """The score task's error: which features the serving path computes differently from training, and how."""
    parts = []
    for finding in findings[:5]:
        stat, (then, now) = next(iter(finding["statistics"].items()))
        parts.append(f"{finding['feature']} ({stat}: training path {then}, serving path {now})")
    return (f"training/serving skew in {spec.name} with {spec.model_name} v{version}: on the same {rows} rows of "
            f"tonight's snapshot the serving path feeds the model features that differ from the training path's "
            f"beyond skew.tolerance {spec.skew.tolerance:g}: {'; '.join(parts)}; nothing is published")


def before_scoring(store: Any, registry: Any, spec: DatasetSpec, snapshot: Any, champion: Any, model: Any,
                   rows_range: tuple[int, int] | None = None) -> SkewWatch:
    """What the score step checks before the champion scores the night (`snapshot`: its SnapshotRef):
    tonight's environment against the champion's (environment.py), then the round trip on tonight's environment
    (every night, so a changed library is re-verified before it scores; ServingSkew when it fails). The returned
    watch goes to scoring.score_snapshot, which compares the feature paths before writing; its `checks` are the
    score step's evidence. With `rows_range` (a shard's first and end positions) the watch samples that shard's rows."""
    from include.nightshift.environment import compare_with

    began = time.perf_counter()
    logged = load_serving_check(registry, champion.run_id)
    checks: dict[str, Any] = {"environment": compare_with(champion.version, logged.environment if logged else None)}
    checks["round_trip"] = verify_round_trip(model, logged, spec, champion.version)
    checks["round_trip"]["load_seconds"] = round(time.perf_counter() - began - checks["round_trip"].get("seconds", 0), 4)
    log.info("environment: %s; round trip: %s", checks["environment"]["summary"], checks["round_trip"]["summary"])
    if checks["round_trip"]["passed"] is False:
        raise ServingSkew(checks["round_trip"]["summary"], checks)
    first, end = rows_range or (0, snapshot.rows)
    return SkewWatch(spec, lambda positions: training_path_rows(store, snapshot, spec, positions), end - first,
                     trained=logged.statistics if logged else None, version=champion.version, checks=checks,
                     first_row=first)


def training_path_rows(store: Any, snapshot: Any, spec: DatasetSpec, positions: np.ndarray) -> pd.DataFrame:
    """The snapshot's rows at `positions` (sorted) as the training path reads them: the feature columns of those rows,
    Arrow types untouched, through snapshot.read_snapshot (decimals through their text, then pandas). Taken a
    batch at a time, so the score step's memory stays bounded by the sample, not by the night."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from include.nightshift.artifacts import ArtifactStore
    from include.nightshift.snapshot import read_snapshot

    taken, start = [], 0
    with store.open(snapshot.url) as handle:
        source = pq.ParquetFile(handle)
        schema = source.schema_arrow
        for batch in source.iter_batches(batch_size=spec.scoring.chunk_rows, columns=spec.feature_names):
            lo, hi = np.searchsorted(positions, [start, start + batch.num_rows])
            if hi > lo:
                taken.append(batch.take(pa.array(positions[lo:hi] - start)))
            start += batch.num_rows
    table = pa.Table.from_batches(taken, schema=pa.schema([schema.field(n) for n in spec.feature_names]))
    with store.staging_dir() as tmp:
        pq.write_table(table, tmp / "sample.parquet")
        return read_snapshot(ArtifactStore(tmp), str(tmp / "sample.parquet"))
