"""Training/serving skew, the serving round trip and dependency changes (issue 14 parts 4 and 6).

Real MLflow registry (tests/unit/conftest.py's `registry`), real snapshots in a real artifact store; the only
injected faults are the ones no real input can cause on demand: a serving path that builds a feature
differently (scoring.serving_features patched) and a version's logged scores altered after registration.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from include.nightshift import environment, scoring, skew, training
from include.nightshift.artifacts import ArtifactStore
from include.nightshift.demo_data import generate_day
from include.nightshift.nightly import score_night
from include.nightshift.registry import ENVIRONMENT_TAG
from include.nightshift.snapshot import write_snapshot
from include.nightshift.steps import SnapshotStep

_names = itertools.count(1)


@pytest.fixture
def spec(churn_spec):
    """A small, fast model under a model name no other test uses."""
    return dataclasses.replace(churn_spec, name=f"skewtest{next(_names)}", training=dataclasses.replace(
        churn_spec.training, params={**churn_spec.training.params, "n_estimators": 10}))


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return pd.concat([generate_day(dt.date(2026, 1, d), 600) for d in (1, 2)], ignore_index=True)


def _register(registry, spec, data, **tags) -> int:
    model = training.fit(training.build_model(spec), data, spec)
    info = registry.log_challenger(model, training.fit(training.build_baseline(spec), data, spec), spec=spec,
                                   train_df=data, reference=data.head(100), params={}, metrics={}, tags=tags)
    registry.promote(spec.model_name, info.version, {"promote": True})
    return info.version


def _night(store, spec, day=dt.date(2026, 1, 5), rows=700) -> SnapshotStep:
    current = write_snapshot(pa.Table.from_pandas(generate_day(day, rows), preserve_index=False), store, spec, day,
                             labelled=False)
    return SnapshotStep(day=day, current=current, labelled=current)


def _scaled(column: str, factor: float):
    """A serving path that builds `column` differently from training (the injected preprocessing difference)."""
    original = scoring.serving_features

    def serving_features(chunk, spec):
        features = original(chunk, spec)
        features[column] = features[column] * factor
        return features
    return serving_features


# --- statistics (pure) ---------------------------------------------------------------------------------------


def test_the_same_rows_through_the_same_path_agree_and_a_scaled_feature_is_a_finding(churn_spec, data):
    features = training.features_frame(data, churn_spec)
    stats = skew.feature_statistics(features, churn_spec)
    assert set(stats) == set(churn_spec.feature_names)
    tenure = stats["tenure_months"]
    assert tenure["count"] + tenure["nulls"] == len(data) and tenure["min"] <= tenure["q50"] <= tenure["max"]
    assert sum(stats["plan"]["top"].values()) == pytest.approx(stats["plan"]["count"] / len(data))
    assert skew.compare_paths(stats, skew.feature_statistics(features.copy(), churn_spec), 1e-9) == []

    shifted = features.copy()
    shifted["monthly_charges"] = shifted["monthly_charges"] * (1 + 1e-6)
    shifted["plan"] = shifted["plan"].where(shifted["plan"] != "basic", "BASIC")
    findings = skew.compare_paths(stats, skew.feature_statistics(shifted, churn_spec), 1e-9)
    assert [f["feature"] for f in findings] == ["monthly_charges", "plan"]
    assert "mean" in findings[0]["statistics"] and "share[basic]" in findings[1]["statistics"]
    assert skew.compare_paths(stats, skew.feature_statistics(shifted, churn_spec), 1e-3)[0]["feature"] == "plan"


def test_against_training_flags_unseen_categories_null_shares_and_range(churn_spec, data):
    trained = skew.feature_statistics(training.features_frame(data, churn_spec), churn_spec)
    tonight = data.copy()
    tonight.loc[: len(tonight) // 2, "satisfaction_score"] = np.nan  # half missing, far from training's share
    tonight.loc[:9, "region"] = "atlantis"
    tonight.loc[:9, "tenure_months"] = 10_000
    evidence = skew.against_training(skew.feature_statistics(training.features_frame(tonight, churn_spec),
                                                             churn_spec), trained, churn_spec)
    assert evidence["region"]["unseen_categories"] == ["atlantis"]
    assert evidence["satisfaction_score"]["null_share_flagged"] is True
    assert evidence["tenure_months"]["outside_training_range"] is True
    assert evidence["age"]["null_share_flagged"] is False and evidence["age"]["outside_training_range"] is False
    assert skew.against_training({}, None, churn_spec) == {}


# --- dependency changes (pure) -------------------------------------------------------------------------------


def test_a_recorded_environment_with_another_xgboost_is_reported_and_alerted():
    now = environment.current_environment()
    assert set(environment.PREDICTION_LIBRARIES) | {"python"} == set(now)
    assert environment.compare_with(3, now)["changes"] == []
    assert environment.digest(now) == environment.digest(dict(reversed(now.items())))
    assert len(environment.digest(now)) == 16 != environment.digest({**now, "xgboost": "1.7.0"})

    recorded = {**now, "xgboost": "1.7.0"}
    found = environment.compare_with(3, recorded)
    assert found["changes"] == [{"name": "xgboost", "recorded": "1.7.0", "now": now["xgboost"]}]
    assert found["summary"] == f"v3: changed since training: xgboost 1.7.0 -> {now['xgboost']}"
    text, facts = environment.environment_alert("churn", {"environment": found, "round_trip": {"passed": True}})
    assert "xgboost 1.7.0 -> " in text and "re-verified on tonight's environment" in text
    assert facts["changes"] == found["changes"]
    assert environment.environment_alert("churn", {"environment": environment.compare_with(3, None)}) is None
    assert environment.compare_with(3, None)["summary"] == "not recorded for v3"


# --- the round trip, on a real registry ------------------------------------------------------------------------


def test_a_registered_version_reproduces_its_logged_sample_through_the_serving_path(registry, spec, data, tmp_path,
                                                                                    monkeypatch):
    version = _register(registry, spec, data)
    info = registry.champion(spec.model_name)
    assert info.tags[ENVIRONMENT_TAG] == environment.digest(environment.current_environment())
    import mlflow.artifacts

    downloaded, download = [], mlflow.artifacts.download_artifacts
    monkeypatch.setattr(mlflow.artifacts, "download_artifacts",
                        lambda **kw: downloaded.append(Path(download(**kw))) or downloaded[-1])
    check = skew.load_serving_check(registry, info.run_id)
    # Nothing left on disk: a task process ends without exit handlers, so a kept download outlived it.
    assert len(downloaded) == 1 and not downloaded[0].exists()
    assert check.environment == environment.current_environment()
    assert check is not None and check.scores.shape == (spec.skew.round_trip_rows,)
    assert set(check.statistics) == set(spec.feature_names)
    evidence = skew.verify_round_trip(registry.load_model(spec.model_name, version), check, spec, version)
    assert evidence["passed"] is True and evidence["max_difference"] <= skew.ROUND_TRIP_TOLERANCE
    assert evidence["rows"] == spec.skew.round_trip_rows


def test_a_version_whose_logged_scores_were_altered_fails_the_round_trip_naming_it(registry, spec, data, tmp_path):
    version = _register(registry, spec, data)
    info = registry.champion(spec.model_name)
    check = skew.load_serving_check(registry, info.run_id)
    altered = check.scores.copy()
    altered[7] += 1e-6
    np.save(tmp_path / skew.SCORES_FILE, altered)
    registry.log_artifact(info.run_id, tmp_path / skew.SCORES_FILE, skew.FOLDER)  # the fault: a tampered record
    skew._CACHE.clear()
    store = ArtifactStore(tmp_path / "artifacts")
    night = _night(store, spec)
    with pytest.raises(skew.ServingSkew, match=rf"{spec.model_name} v{version} does not reproduce .* largest "
                                               r"difference 1e-06") as caught:
        score_night(store, registry, spec, night, "run1")
    assert caught.value.checks["round_trip"]["passed"] is False
    assert not list((tmp_path / "artifacts").rglob("run1.parquet"))  # nothing written for publish


def test_the_night_records_its_evidence_and_a_skewed_serving_feature_fails_before_anything_is_written(
        registry, spec, data, tmp_path, monkeypatch):
    version = _register(registry, spec, data)
    store = ArtifactStore(tmp_path / "artifacts")
    night = _night(store, spec)
    started = time.perf_counter()
    scored = score_night(store, registry, spec, night, "healthy")
    assert time.perf_counter() - started < 20
    checks = scored.checks
    assert checks["environment"]["summary"] == f"v{version}: unchanged since training"
    assert checks["round_trip"]["passed"] is True
    assert checks["skew"]["passed"] is True and checks["skew"]["findings"] == []
    assert checks["skew"]["rows"] == 700 and checks["skew"]["training_statistics"] == "recorded"
    assert set(checks["skew"]["against_training"]) == set(spec.feature_names)
    assert store.exists(scored.url)

    # a serving path that builds a feature its own way: the round trip (same path, training's rows) catches it
    monkeypatch.setattr(scoring, "serving_features", _scaled("monthly_charges", 1.5))
    with pytest.raises(skew.ServingSkew, match=rf"v{version} does not reproduce"):
        score_night(store, registry, spec, night, "skewed")
    assert not list((tmp_path / "artifacts").rglob("skewed.parquet"))


def test_the_feature_path_check_names_the_skewed_feature_and_writes_nothing(registry, spec, data, tmp_path,
                                                                            monkeypatch):
    version = _register(registry, spec, data)
    store = ArtifactStore(tmp_path / "artifacts")
    night = _night(store, spec)
    champion = registry.champion(spec.model_name)
    model = registry.load_model(spec.model_name, version)
    watch = skew.before_scoring(store, registry, spec, night.current, champion, model)  # passes: path unchanged
    monkeypatch.setattr(scoring, "serving_features", _scaled("days_since_last_login", 1 + 1e-6))
    out = store.url("predictions", "x.parquet")
    with pytest.raises(skew.ServingSkew, match=r"training/serving skew .* v\d+: .* days_since_last_login \("):
        scoring.score_snapshot(store, night.current.url, out, spec, model=model, model_version=version,
                               snapshot_sha256=night.current.sha256, dag_run_id="r", watch=watch)
    assert not store.exists(out)
    assert watch.checks["skew"]["findings"][0]["feature"] == "days_since_last_login"


def test_a_champion_registered_before_the_checks_is_not_recorded_and_still_scores(registry, spec, data, tmp_path):
    from urllib.parse import unquote, urlparse

    version = _register(registry, spec, data)
    info = registry.champion(spec.model_name)
    shutil.rmtree(unquote(urlparse(f"{registry.client.get_run(info.run_id).info.artifact_uri}/{skew.FOLDER}").path))
    store = ArtifactStore(tmp_path / "artifacts")
    scored = score_night(store, registry, spec, _night(store, spec), "old")
    assert scored.checks["round_trip"] == {"passed": None, "summary": f"not recorded for v{version}",
                                           "load_seconds": scored.checks["round_trip"]["load_seconds"]}
    assert scored.checks["environment"]["summary"] == f"not recorded for v{version}"
    assert scored.checks["skew"]["passed"] is True
    assert scored.checks["skew"]["training_statistics"] == f"not recorded for v{version}"
    assert scored.rows == 700


def test_a_champion_trained_with_another_xgboost_is_reported_and_re_verified_tonight(registry, spec, data, tmp_path):
    version = _register(registry, spec, data)
    info = registry.champion(spec.model_name)
    now = environment.current_environment()
    (tmp_path / skew.ENVIRONMENT_FILE).write_text(json.dumps({**now, "xgboost": "1.7.0"}))
    registry.log_artifact(info.run_id, tmp_path / skew.ENVIRONMENT_FILE, skew.FOLDER)  # as if trained elsewhere
    skew._CACHE.clear()
    store = ArtifactStore(tmp_path / "artifacts")
    checks = score_night(store, registry, spec, _night(store, spec), "upgraded").checks
    assert checks["environment"]["changes"] == [{"name": "xgboost", "recorded": "1.7.0", "now": now["xgboost"]}]
    assert checks["round_trip"]["passed"] is True  # re-verified on tonight's environment before it scored
    text, _ = environment.environment_alert(spec.name, checks)
    assert text.startswith(f"{spec.name}: the libraries on the prediction path changed") and f"v{version}" in text


def test_the_training_path_reads_only_the_sampled_rows_exactly_as_read_snapshot_does(churn_spec, tmp_path):
    """training_path_rows takes the sample a batch at a time (bounded memory) and still gives what the training
    reader gives for those rows, a decimal column included (read_snapshot casts it through its text)."""
    from decimal import Decimal

    from include.nightshift.snapshot import read_snapshot

    spec = dataclasses.replace(churn_spec, scoring=dataclasses.replace(churn_spec.scoring, chunk_rows=97))
    table = pa.Table.from_pandas(generate_day(dt.date(2026, 1, 5), 500), preserve_index=False)
    charges = [None if v is None else Decimal(f"{v:.6f}") for v in table.column("monthly_charges").to_pylist()]
    table = table.set_column(table.schema.get_field_index("monthly_charges"), "monthly_charges",
                             pa.array(charges, type=pa.decimal128(12, 6)))
    store = ArtifactStore(tmp_path / "artifacts")
    ref = write_snapshot(table, store, spec, dt.date(2026, 1, 5), labelled=False)
    positions = np.array([0, 5, 96, 97, 98, 250, 499])
    got = skew.training_path_rows(store, ref, spec, positions)
    expected = read_snapshot(store, ref, columns=spec.feature_names).iloc[positions].reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected)
    assert got["monthly_charges"].dtype == "float64"
    assert skew.training_path_rows(store, ref, spec, np.array([], dtype=int)).empty


def test_a_night_scored_in_shards_records_the_skew_evidence_a_whole_night_records(registry, spec, data, tmp_path):
    """Each score_shard checks its own rows (skew.sample_rows covers them all here); joined by
    sharded_night_checks they must say what the same night scored whole says: the same rows, the same null
    shares, the unseen category that only one shard saw, and every shard's round trip."""
    from include.nightshift.nightly import score_shard

    version = _register(registry, spec, data)
    store = ArtifactStore(tmp_path / "artifacts")
    day = dt.date(2026, 1, 5)
    frame = generate_day(day, 700)
    frame.loc[:249, "satisfaction_score"] = np.nan  # nulls in shard 0 only
    frame.loc[650:659, "region"] = "atlantis"  # a category training never saw, in shard 2 only
    current = write_snapshot(pa.Table.from_pandas(frame, preserve_index=False), store, spec, day, labelled=False)
    night = SnapshotStep(day=day, current=current, labelled=current)
    whole = score_night(store, registry, spec, night, "whole").checks

    sharded_spec = dataclasses.replace(spec, scoring=dataclasses.replace(spec.scoring, shard_rows=300))
    planned = score_night(store, registry, sharded_spec, night, "sharded")
    assert planned.shards == 3 and "skew" not in planned.checks  # the score step checked no rows itself
    shards = [score_shard(None, store, registry, sharded_spec, planned, night, "sharded", i) for i in range(3)]
    merged = skew.sharded_night_checks(planned.checks, [(s.shard, s.checks) for s in reversed(shards)])

    assert (merged["skew"]["rows"], merged["skew"]["shards"], merged["skew"]["passed"]) == (700, 3, True)
    assert merged["skew"]["findings"] == whole["skew"]["findings"] == []
    got, expected = merged["skew"]["against_training"], whole["skew"]["against_training"]
    assert set(got) == set(expected) == set(spec.feature_names)
    for name in expected:
        assert got[name]["null_share"] == pytest.approx(expected[name]["null_share"], abs=2e-6), name
        assert {k: v for k, v in got[name].items() if k != "null_share"} == \
               {k: v for k, v in expected[name].items() if k != "null_share"}, name
    assert got["region"]["unseen_categories"] == ["atlantis"] and got["satisfaction_score"]["null_share_flagged"]
    assert merged["round_trip"]["shards"] == {"checked": 3, "passed": True, "max_difference": 0.0}
    assert merged["environment"] == planned.checks["environment"]  # one environment: nothing to add
    assert skew.sharded_night_checks(planned.checks, []) == planned.checks


def test_a_shard_on_a_worker_with_other_libraries_is_named_in_the_nights_environment():
    """The score task's worker matched the champion's libraries; shard 4's did not: the night records the change
    once, with the shard that saw it (crafted evidence: two environments cannot coexist in one test process)."""
    change = {"name": "xgboost", "recorded": "3.0.0", "now": "3.1.0"}
    score = {"environment": {"recorded": True, "changes": [], "summary": "v2: unchanged since training"},
             "round_trip": {"passed": True, "max_difference": 0.0}}
    shard = {"environment": {"recorded": True, "changes": [change]}, "round_trip": {"passed": True,
                                                                                     "max_difference": 1e-12}}
    merged = skew.sharded_night_checks(score, [(4, shard), (5, shard), (0, {"round_trip": {"passed": True}})])
    assert merged["environment"]["changes"] == [{**change, "shard": 4}]
    assert merged["round_trip"] == {"passed": True, "max_difference": 0.0,
                                    "shards": {"checked": 3, "passed": True, "max_difference": 1e-12}}
    assert "skew" not in merged
    text, facts = environment.shard_environment_alert("churn", merged)  # record_run's one alert for the night
    assert text == ("churn: the libraries on a scoring worker's prediction path differ from the champion's training "
                    "(shard 4: xgboost 3.0.0 -> 3.1.0); re-verified there by the serving round trip of each of the 3 "
                    "shards checked")
    assert facts["changes"] == [{**change, "shard": 4}]
    assert environment.shard_environment_alert("churn", score) is None  # the score task's own: alerted by it
    failed = {**merged, "round_trip": {"shards": {"checked": 3, "passed": False}}}
    assert "did not pass on its worker: nothing is published" in environment.shard_environment_alert("churn", failed)[0]
