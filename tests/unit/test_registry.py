"""The registry against a real MLflow SQLite store: versions, the champion alias, verdicts, round trips.

One store for the module (creating MLflow's tables costs seconds); each test registers under a
model name of its own, so tests do not see each other's versions.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import mlflow
import numpy as np
import pandas as pd
import pytest

from include.nightshift import training
from include.nightshift.demo_data import generate_day
from include.nightshift.registry import FAMILY_TAG, TRAINING_KEY_TAG, Registry
from include.nightshift.spec import Candidate, load_spec
from tests.unit.conftest import forget_mlflow_uris

SPEC_PATH = Path(__file__).resolve().parents[2] / "include" / "specs" / "churn.yaml"
_names = itertools.count(1)


@pytest.fixture(scope="module")
def mlflow_env(tmp_path_factory):
    """Allow model loading (MLflow 3.17 refuses it otherwise) and leave MLflow's globals as found."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)  # undone on exit, whatever set it meanwhile
        mp.delenv("MLFLOW_REGISTRY_URI", raising=False)
        mp.chdir(tmp_path_factory.mktemp("cwd"))  # so that a stray ./mlruns would be seen
        yield Path.cwd()
        forget_mlflow_uris()


@pytest.fixture(scope="module")
def store(tmp_path_factory, mlflow_env) -> Path:
    return tmp_path_factory.mktemp("mlflow")


@pytest.fixture(scope="module")
def registry(store) -> Registry:
    return Registry(f"sqlite:///{store}/mlflow.db")


@pytest.fixture
def spec():
    """A small, fast model under a model name (and experiment) no other test uses."""
    base = load_spec(SPEC_PATH)
    params = {**base.training.params, "n_estimators": 20}
    return dataclasses.replace(base, name=f"regtest{next(_names)}",
                               training=dataclasses.replace(base.training, params=params))


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return pd.concat([generate_day(dt.date(2026, 1, d), 1000) for d in (1, 2)], ignore_index=True)


@pytest.fixture(scope="module")
def models(data):
    base = load_spec(SPEC_PATH)
    spec = dataclasses.replace(base, training=dataclasses.replace(base.training, params={"n_estimators": 20}))
    return (training.fit(training.build_model(spec), data, spec),
            training.fit(training.build_baseline(spec), data, spec))


def _log(registry: Registry, spec, models, data, **tags):
    model, baseline = models
    return registry.log_challenger(
        model, baseline, spec=spec, train_df=data, reference=data.head(300),
        params={"rows": len(data), **spec.training.params}, metrics={"roc_auc": 0.81},
        tags={"nightshift.snapshot_sha256": "abc123", "nightshift.dag_run_id": "manual__1", **tags})


def test_log_challenger_registers_new_versions_with_tags(registry, spec, models, data, store, mlflow_env):
    first = _log(registry, spec, models, data)
    second = _log(registry, spec, models, data)

    assert (first.name, first.version) == (spec.model_name, 1)
    assert second.version == 2 and second.run_id != first.run_id
    assert first.tags["nightshift.snapshot_sha256"] == "abc123"
    assert first.aliases == [] and first.created_at.tzinfo is not None
    run = registry.client.get_run(first.run_id)
    assert run.data.metrics["roc_auc"] == 0.81
    assert run.data.params["n_estimators"] == "20"
    assert run.data.tags["nightshift.dag_run_id"] == "manual__1"
    assert registry.client.get_experiment(run.info.experiment_id).name == spec.dag_id
    # artifacts next to the SQLite file, never ./mlruns in the working directory
    assert run.info.artifact_uri.startswith((store / "mlartifacts").as_uri())
    assert not (mlflow_env / "mlruns").exists()


def test_champion_is_none_until_promoted_then_the_alias_moves(registry, spec, models, data):
    assert registry.champion(spec.model_name) is None  # no registered model at all
    _log(registry, spec, models, data)
    _log(registry, spec, models, data)
    assert registry.champion(spec.model_name) is None  # model, but no alias

    before = dt.datetime.now(dt.UTC)
    registry.promote(spec.model_name, 1, {"decision": "promote", "roc_auc": 0.81, "reasons": ["first model"]})
    after = dt.datetime.now(dt.UTC)
    champion = registry.champion(spec.model_name)
    assert champion.version == 1 and champion.aliases == ["champion"]
    assert champion.tags["nightshift.blessed"] == "true"
    # the verdict is the version's description, in words; any fact it is given is listed there, not as a tag
    description = registry.client.get_model_version(spec.model_name, "1").description
    assert description.startswith("**PROMOTED**")
    assert "- decision: promote\n- roc_auc: 0.8100\n- reasons: [\"first model\"]" in description
    assert not [k for k in champion.tags if k.startswith("verdict.")]
    assert before <= champion.champion_since <= after

    registry.promote(spec.model_name, 2, {"decision": "promote"})
    assert registry.champion(spec.model_name).version == 2
    assert registry.version(spec.model_name, 1).aliases == []


def test_record_verdict_on_a_rejected_version_leaves_the_alias(registry, spec, models, data):
    _log(registry, spec, models, data)
    _log(registry, spec, models, data)
    _log(registry, spec, models, data)
    assert {registry.version(spec.model_name, v).tags["nightshift.judged"] for v in (1, 2, 3)} == {"false"}
    registry.promote(spec.model_name, 1, {"decision": "promote"})

    registry.record_verdict(spec.model_name, 2, {"decision": "reject", "reason": "below the champion", "roc_auc": 0.7})

    assert registry.champion(spec.model_name).version == 1
    rejected = registry.version(spec.model_name, 2)
    assert rejected.aliases == []
    assert rejected.tags["nightshift.blessed"] == "false"
    description = registry.client.get_model_version(spec.model_name, "2").description
    assert description.startswith("**NOT PROMOTED**")
    assert "- reason: below the champion" in description and "- roc_auc: 0.7000" in description
    with pytest.raises(ValueError, match="champion"):
        registry.record_verdict(spec.model_name, 1, {"decision": "reject"})
    # judged: the promoted and the rejected one; v3 (its evaluate never ran) says it never was
    assert [registry.version(spec.model_name, v).tags["nightshift.judged"] for v in (1, 2, 3)] == [
        "true", "true", "false"]


def test_round_trips_give_what_was_logged(registry, spec, models, data):
    model, baseline = models
    info = _log(registry, spec, models, data)
    # another process-wide URI set meanwhile must not matter
    mlflow.set_tracking_uri("sqlite:///elsewhere.db")
    mlflow.set_registry_uri("sqlite:///elsewhere.db")

    loaded = registry.load_model(spec.model_name, info.version)
    loaded_baseline = registry.load_baseline(info.run_id)
    reference = registry.load_reference(info.run_id)

    assert np.array_equal(training.predict_scores(loaded, data, spec), training.predict_scores(model, data, spec))
    assert np.array_equal(training.predict_scores(loaded_baseline, data, spec),
                          training.predict_scores(baseline, data, spec))
    pd.testing.assert_frame_equal(reference, data.head(300))


def test_pyfunc_load_scores_probabilities_and_signature_follows_the_spec(registry, spec, models, data):
    """What a scorer using models:/NAME@champion gets: probabilities, not labels."""
    model, _ = models
    info = _log(registry, spec, models, data)
    registry.promote(spec.model_name, info.version, {"decision": "promote"})
    mlflow.set_registry_uri(registry.tracking_uri)
    mlflow.set_tracking_uri(registry.tracking_uri)

    uri = f"models:/{spec.model_name}@champion"
    assert mlflow.models.get_model_info(uri).signature.inputs.input_names() == spec.feature_names
    features = training.features_frame(data.head(50), spec)
    scores = np.asarray(mlflow.pyfunc.load_model(uri).predict(features))
    assert np.array_equal(scores, model.predict_proba(features))


def test_registries_on_different_stores_do_not_mix(registry, spec, models, data, tmp_path):
    other = Registry(f"sqlite:///{tmp_path}/other.db")
    _log(other, spec, models, data)
    other.promote(spec.model_name, 1, {"decision": "promote"})

    assert registry.champion(spec.model_name) is None
    assert other.champion(spec.model_name).version == 1
    assert (tmp_path / "mlartifacts").is_dir()


def test_log_artifact_attaches_a_report_to_the_run(registry, spec, models, data, tmp_path):
    info = _log(registry, spec, models, data)
    report = tmp_path / "evaluation.html"
    report.write_text("<html>verdict</html>")

    uri = registry.log_artifact(info.run_id, report)

    assert uri.endswith("/reports/evaluation.html")
    assert [a.path for a in registry.client.list_artifacts(info.run_id, "reports")] == ["reports/evaluation.html"]
    fetched = mlflow.artifacts.download_artifacts(run_id=info.run_id, artifact_path="reports/evaluation.html",
                                                  dst_path=str(tmp_path / "back"), tracking_uri=registry.tracking_uri)
    assert Path(fetched).read_text() == "<html>verdict</html>"
    with pytest.raises(FileNotFoundError, match="missing.html is not a file"):
        registry.log_artifact(info.run_id, tmp_path / "missing.html")


def test_versions_lists_every_version_with_its_tags(registry, spec, models, data):
    assert registry.versions(spec.model_name) == []  # no such model yet
    _log(registry, spec, models, data)
    _log(registry, spec, models, data, **{"nightshift.extra": "x"})
    registry.promote(spec.model_name, 2, {"decision": "promote"})

    versions = registry.versions(spec.model_name)
    assert [v.version for v in versions] == [1, 2]
    assert versions[1].tags["nightshift.extra"] == "x" and versions[1].tags["nightshift.blessed"] == "true"
    assert versions[1].champion_since is not None and versions[0].champion_since is None
    assert versions[1].passed_gate and not versions[0].passed_gate
    with pytest.raises(ValueError, match="quotes"):
        registry.versions("a'b")


def test_training_snapshots_are_dataset_inputs_and_holdout_metrics_are_run_metrics(registry, spec, models, data):
    from include.nightshift.snapshot import SnapshotRef

    refs = [SnapshotRef(url=f"/store/snapshots/churn/2026-02-0{d}/{str(d) * 64}.parquet", sha256=str(d) * 64,
                        rows=100 * d, day=f"2026-02-0{d}", labelled=True) for d in (1, 2)]
    model, baseline = models
    info = registry.log_challenger(model, baseline, spec=spec, train_df=data, reference=data.head(50), params={},
                                   metrics={}, tags={"nightshift.run_date": "2026-02-03"}, snapshots=refs)
    run = registry.client.get_run(info.run_id)
    inputs = sorted(run.inputs.dataset_inputs, key=lambda i: i.dataset.name)
    assert [i.dataset.name for i in inputs] == ["snapshot 2026-02-01", "snapshot 2026-02-02"]
    assert {t.key: t.value for t in inputs[1].tags}["sha256"] == "2" * 64  # the whole hash, not a cut one
    assert {t.key: t.value for t in inputs[1].tags}["rows"] == "200"
    assert "/store/snapshots/churn/2026-02-02/" in inputs[1].dataset.source

    # the model's age is counted from the night it was trained for, not from the wall clock
    assert registry.version(spec.model_name, info.version).trained_for == dt.date(2026, 2, 3)


# --- model families and version reuse ----------------------------------------------------

@pytest.mark.parametrize("family, calibration", [("hist_gradient_boosting", "none"),
                                                 ("logistic_regression", "none"), ("xgboost", "isotonic"),
                                                 ("hist_gradient_boosting", "sigmoid")])
def test_every_family_calibrated_or_not_round_trips_through_the_registry(registry, spec, data, family, calibration):
    """skops refuses types it was not told to trust: each family and each calibrator must load back as it scored."""
    candidate = Candidate(family=family, params={"n_estimators": 20} if family == "xgboost" else {})
    spec = dataclasses.replace(spec, training=dataclasses.replace(spec.training, calibration=calibration,
                                                                  calibration_days=1))
    model = training.fit_candidate(spec, candidate, data)
    info = registry.log_challenger(model, training.fit(training.build_baseline(spec), data, spec), spec=spec,
                                   train_df=data, reference=data.head(20), params={}, metrics={},
                                   tags={FAMILY_TAG: family})
    loaded = registry.load_model(spec.model_name, info.version)
    assert np.array_equal(training.predict_scores(loaded, data, spec), training.predict_scores(model, data, spec))
    assert info.tags[FAMILY_TAG] == family


def _delete_model_artifacts(registry: Registry, name: str, version: int) -> None:
    """What a lost artifact store looks like to the registry: the version is there, its files are not."""
    source = registry.client.get_model_version(name, str(version)).source  # models:/m-<id>
    logged = registry.client.get_logged_model(source.removeprefix("models:/"))
    shutil.rmtree(unquote(urlparse(logged.artifact_location).path))


def test_find_reusable_returns_the_newest_loadable_version_with_the_key(registry, spec, models, data):
    assert registry.find_reusable(spec.model_name, "k1") is None  # no such model yet
    first = _log(registry, spec, models, data, **{TRAINING_KEY_TAG: "k1"})
    _log(registry, spec, models, data, **{TRAINING_KEY_TAG: "k2"})
    third = _log(registry, spec, models, data, **{TRAINING_KEY_TAG: "k1"})

    info, model = registry.find_reusable(spec.model_name, "k1")
    assert info.version == third.version and info.tags[TRAINING_KEY_TAG] == "k1"
    assert np.array_equal(training.predict_scores(model, data, spec),
                          training.predict_scores(models[0], data, spec))
    assert registry.find_reusable(spec.model_name, "k3") is None

    _delete_model_artifacts(registry, spec.model_name, third.version)  # gone: the older one still serves
    assert registry.find_reusable(spec.model_name, "k1")[0].version == first.version
    _delete_model_artifacts(registry, spec.model_name, first.version)
    assert registry.find_reusable(spec.model_name, "k1") is None


# --- MLflow as the place to compare models (issue 13) -------------------------------------

NIGHT = dt.date(2026, 2, 12)


def _judged(registry: Registry, spec, models, data, *, challenger: str, version_tags: dict, promoted: bool,
            champion_version: int | None):
    """A version logged as the train step logs it, then evaluated and gated for real on `data` (challenger:
    "model" or "baseline", the other one as champion), its evaluation logged and its verdict written as the
    evaluate step does; (info, evaluation, plots, VerdictStep)."""
    from include.nightshift.evaluation import evaluate, gate
    from include.nightshift.plots import evaluation_plots
    from include.nightshift.registry import run_name
    from include.nightshift.steps import VerdictStep

    model, baseline = models
    info = registry.log_challenger(model, baseline, spec=spec, train_df=data, reference=data.head(50),
                                   params={"retrain_reason": "drift"}, metrics={}, tags=version_tags,
                                   run_name=run_name(spec.name, NIGHT, "drift"))
    fitted = {"model": model, "baseline": baseline}
    scores = {"challenger": training.predict_scores(fitted[challenger], data, spec),
              "baseline": training.predict_scores(baseline, data, spec)}
    if champion_version is not None:
        scores["champion"] = training.predict_scores(fitted["baseline" if challenger == "model" else "model"], data,
                                                     spec)
    y = training.labels(data, spec)
    evaluation = evaluate(data, y, scores, spec)
    verdict = gate(evaluation, spec.promotion, challenger_scores=scores["challenger"], roundtrip_equal=True,
                   challenger_family="xgboost")
    step = VerdictStep(**verdict.to_dict(), policy="auto", dag_run_id="scheduled__2026-02-12T00:00:00+00:00",
                       champion_version=champion_version, challenger_version=info.version, promoted=promoted,
                       policy_note="gate passed" if promoted else "gate failed", evaluation=evaluation,
                       family="xgboost", candidates={"xgboost": {"metric": verdict.challenger, "fit_seconds": 1.0}})
    plots = evaluation_plots(y, scores, spec, evaluation=evaluation)
    registry.log_evaluation(info.run_id, evaluation, plots=plots, record=step.record())
    if promoted:
        registry.promote(spec.model_name, info.version, step.tags())
    else:
        registry.record_verdict(spec.model_name, info.version, step.tags())
    return info, evaluation, plots, step


def test_a_judged_challenger_reads_in_mlflow_run_name_metrics_plots_description_and_few_tags(
        registry, spec, models, data):
    """What a person finds in MLflow after a night: a run named for what happened, the holdout numbers of the
    three models (overall and per slice) as metrics to chart, the plots and the whole record under
    evaluation/, the verdict in words on the version, and a handful of short tags that the code reads."""
    from include.nightshift.registry import (DAG_RUN_TAG, GATE_TAG, RUN_DATE_TAG, VERSION_TAGS,
                                             holdout_metric_names)

    tags = {DAG_RUN_TAG: "scheduled__2026-02-12T00:00:00+00:00", RUN_DATE_TAG: NIGHT.isoformat(),
            FAMILY_TAG: "xgboost", TRAINING_KEY_TAG: "f" * 64}
    first, *_ = _judged(registry, spec, models, data, challenger="baseline", version_tags=tags, promoted=True,
                        champion_version=None)
    info, evaluation, plots, step = _judged(registry, spec, models, data, challenger="baseline",
                                            version_tags=tags, promoted=False, champion_version=first.version)
    run = registry.client.get_run(info.run_id)

    assert run.info.run_name == f"{spec.name} 2026-02-12 drift"
    metrics = run.data.metrics
    for role in ("challenger", "champion", "baseline"):
        assert metrics[f"holdout_roc_auc_{role}"] == pytest.approx(evaluation["overall"][role])
        assert metrics[f"slice_plan.basic_roc_auc_{role}"] == pytest.approx(
            next(s[role] for s in evaluation["slices"] if (s["column"], s["value"]) == ("plan", "basic")))
    judged_slices = [s for s in evaluation["slices"] if not s["skipped"]]
    assert len([k for k in metrics if k.startswith("slice_")]) == 3 * len(judged_slices) > 0
    assert set(holdout_metric_names(evaluation)) <= set(metrics)
    assert run.data.tags["nightshift.verdict"].startswith("not promoted: failed champion")

    logged = {a.path for a in registry.client.list_artifacts(info.run_id, "evaluation")}
    assert logged == {f"evaluation/{p.file_name}" for p in plots} | {"evaluation/evaluation.json"}
    assert {p.id for p in plots} == {"roc", "precision_recall", "calibration", "score_histogram",
                                     "confusion_matrix", "lift"}
    back = mlflow.artifacts.download_artifacts(run_id=info.run_id, artifact_path="evaluation/roc.png",
                                               tracking_uri=registry.tracking_uri)
    assert Path(back).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    version = registry.client.get_model_version(spec.model_name, str(info.version))
    description = version.description
    assert description.startswith("**NOT PROMOTED**") and "Gate failed; policy auto: gate failed." in description
    assert (f"Holdout roc_auc: challenger {step.challenger:.4f}, champion {step.champion:.4f}, "
            f"baseline {step.baseline:.4f} (champion v{first.version}).") in description
    failed = [c for c in step.checks if not c["passed"]]
    assert failed and all(f"- **FAILED** {c['name']}: {c['detail']}" in description for c in failed)

    assert set(version.tags) == {DAG_RUN_TAG, RUN_DATE_TAG, FAMILY_TAG, TRAINING_KEY_TAG, "nightshift.judged",
                                 GATE_TAG, "nightshift.blessed", "nightshift.environment"}
    assert version.tags[GATE_TAG] == "failed" and version.tags["nightshift.blessed"] == "false"
    promoted = registry.client.get_model_version(spec.model_name, str(first.version))
    assert set(promoted.tags) <= set(VERSION_TAGS) and len(promoted.tags) == 9  # no predecessor to name
    assert promoted.description.startswith("**PROMOTED**")
    for tag in (*version.tags.values(), *promoted.tags.values()):
        assert len(tag) <= 64 and not tag.startswith(("{", "[")), tag  # short, readable: no JSON blob

    # what the code reads back still reads: the gate's answer, and the holdout metric the monitor compares
    assert registry.version(spec.model_name, first.version).passed_gate
    assert not registry.version(spec.model_name, info.version).passed_gate
    assert registry.holdout_metric(registry.version(spec.model_name, first.version), "roc_auc") == pytest.approx(
        evaluation["overall"]["challenger"])
    assert registry.holdout_metric(registry.version(spec.model_name, first.version), "log_loss") is None


def test_metric_names_keep_to_mlflow_s_characters_and_never_collide(registry, spec, models, data):
    """Slice values with characters MLflow refuses in a metric name (=, :, spaces, markup, accents) and values
    that become alike once cleaned are all logged, each under its own name."""
    from include.nightshift.registry import holdout_metric_names

    info = _log(registry, spec, models, data)
    values = ["a b", "a_b", "x=1", "weird:<script>", "é", None, "v" * 300]
    evaluation = {"metric": "roc_auc", "overall": {"challenger": 0.8, "champion": None, "baseline": 0.7},
                  "slices": [{"column": "region", "value": v, "rows": 100, "skipped": False,
                              "challenger": 0.5 + i / 100} for i, v in enumerate(values)]
                  + [{"column": "region", "value": "tiny", "rows": 3, "skipped": True}],
                  "per_class_recall": {"challenger": {"on time": 0.9, "late": None}}}
    registry.log_evaluation(info.run_id, evaluation)

    metrics = registry.client.get_run(info.run_id).data.metrics
    assert metrics["holdout_roc_auc_challenger"] == 0.8 and metrics["holdout_roc_auc_baseline"] == 0.7
    assert "holdout_roc_auc_champion" not in metrics  # not measured: absent, never NaN
    slices = sorted(v for k, v in metrics.items() if k.startswith("slice_region"))
    assert slices == [pytest.approx(0.5 + i / 100) for i in range(len(values))]  # one name each, none lost
    assert all(len(k) <= 250 for k in metrics) and "slice_region.tiny_roc_auc_challenger" not in metrics
    assert [k for k in metrics if k.startswith("holdout_recall_on_time")]
    assert len(holdout_metric_names(evaluation)) == 10  # 2 overall, 7 slices, 1 class (None left out)
    assert registry.client.list_artifacts(info.run_id, "evaluation") == []  # no plot, no record: nothing else


def test_versions_judged_before_issue_13_still_read(registry, spec, models, data):
    """A registry written by the earlier code (the verdict as verdict.* tags) keeps working: a version its gate
    passed may be restored, and its holdout metric is still found for the monitor (of the same metric only)."""
    info = _log(registry, spec, models, data)
    for key, value in {"verdict.promote": "true", "verdict.metric": "roc_auc", "verdict.challenger": "0.8123"}.items():
        registry.client.set_model_version_tag(spec.model_name, str(info.version), key, value)
    old = registry.version(spec.model_name, info.version)
    assert old.passed_gate
    assert registry.holdout_metric(old, "roc_auc") == 0.8123 and registry.holdout_metric(old, "log_loss") is None


def test_a_promotion_whose_alias_write_failed_never_reads_promoted(registry, spec, models, data, monkeypatch):
    """The description is written before the alias moves (the reasons first): it says the promotion is pending
    until the alias has moved, as the serving tags do; the retry that moves it makes it read PROMOTED."""
    info = _log(registry, spec, models, data)
    real = registry.client.set_registered_model_alias

    def refused(*args, **kwargs):
        raise ConnectionError("registry refused the alias")

    monkeypatch.setattr(registry.client, "set_registered_model_alias", refused)
    with pytest.raises(ConnectionError):
        registry.promote(spec.model_name, info.version, {"promote": True, "promoted": True, "metric": "roc_auc",
                                                         "challenger": 0.8})
    pending = registry.client.get_model_version(spec.model_name, str(info.version))
    assert pending.description.startswith("**PROMOTION PENDING**") and "Holdout roc_auc: challenger 0.8000" in (
        pending.description)
    assert "nightshift.blessed" not in pending.tags and registry.champion(spec.model_name) is None

    monkeypatch.setattr(registry.client, "set_registered_model_alias", real)
    registry.promote(spec.model_name, info.version, {"promote": True, "promoted": True})
    done = registry.client.get_model_version(spec.model_name, str(info.version))
    assert done.description.startswith("**PROMOTED** (verdict of ") and done.tags["nightshift.blessed"] == "true"
