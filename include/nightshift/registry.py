"""The model registry: MLflow runs, registered versions and the `champion` alias.

One class wraps every MLflow call the pipeline makes, so that the rest of the core speaks in
plain values (ModelVersionInfo, DataFrames, fitted pipelines) and MLflow's quirks live here:

- aliases, not stages (stages are deprecated in MLflow 3); the production model is the
  version behind the alias `champion`, and a version is blessed by tags that say why;
- every call names its tracking and registry URI explicitly, so two Registry objects (or a
  test and the demo) never share MLflow's process-wide "current URI" by accident;
- experiments are created with an explicit artifact location: with a SQLite store MLflow
  would otherwise write artifacts to ./mlruns in whatever the working directory happens to be;
- models are loaded with the sklearn flavour (the pipeline itself, predict_proba and all);
  they are also logged with pyfunc_predict_fn="predict_proba", because a pyfunc load would
  otherwise return class labels, not scores;
- MLflow 3.17 refuses to deserialise any model (skops included) unless the environment sets
  MLFLOW_ALLOW_PICKLE_DESERIALIZATION=true: the deployment must set it for the processes that
  load models from this, our own, registry. It is not switched on here behind anyone's back.
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import mlflow
import mlflow.sklearn
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature, infer_signature
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, RESOURCE_DOES_NOT_EXIST, ErrorCode
from mlflow.tracking import MlflowClient
from mlflow.types import ColSpec, DataType, Schema

from include.nightshift.spec import DatasetSpec
from include.nightshift.training import features_frame

CHAMPION = "champion"
MODEL_ARTIFACT = "model"
BASELINE_ARTIFACT = "baseline"
REFERENCE_ARTIFACT = "reference.parquet"
BLESSED_TAG = "nightshift.blessed"
PROMOTED_AT_TAG = "nightshift.promoted_at"
VERDICT_AT_TAG = "nightshift.verdict_at"
VERDICT_PREFIX = "verdict."
INPUT_EXAMPLE_ROWS = 5
# Declared, not inferred: MLflow's inference starts a subprocess that imports the model (about
# 10 s per model here). The pipelines hold only scikit-learn and XGBoost objects.
MODEL_REQUIREMENTS = ("mlflow", "scikit-learn", "xgboost", "skops", "numpy", "pandas", "scipy")
# MLflow saves sklearn models with skops, which refuses types it does not know unless they are
# listed here (the list is stored in the MLmodel file and used again at load time).
SKOPS_TRUSTED_TYPES = ["numpy.dtype", "xgboost.core.Booster", "xgboost.sklearn.XGBClassifier"]

_LOG_OPTIONS = {
    "pyfunc_predict_fn": "predict_proba",  # so that a pyfunc load scores too, not only labels
    "skops_trusted_types": SKOPS_TRUSTED_TYPES,
    "pip_requirements": [f"{name}=={installed_version(name)}" for name in MODEL_REQUIREMENTS],
}


@dataclass(frozen=True)
class ModelVersionInfo:
    name: str
    version: int
    run_id: str
    created_at: dt.datetime  # UTC
    tags: dict[str, str]
    aliases: list[str]


class Registry:
    """MLflow tracking + model registry for the nightly pipeline, bound to one tracking URI."""

    def __init__(self, tracking_uri: str, artifact_location: str | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.artifact_location = artifact_location or _default_artifact_location(tracking_uri)
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    # --- writing -----------------------------------------------------------------------

    def log_challenger(self, model, baseline, *, spec: DatasetSpec, train_df: pd.DataFrame,
                       reference: pd.DataFrame, params: dict[str, Any], metrics: dict[str, float],
                       tags: dict[str, str]) -> ModelVersionInfo:
        """Log one training run and register its model as a new version of spec.model_name.

        The run holds everything needed to judge and reproduce the model later: params,
        metrics, tags (data hashes, Airflow run id), the model with its signature and an input
        example, the baseline it was compared with (logged, not registered) and the reference
        data that drift is measured against. The version carries the same tags, so the
        registry UI alone tells where a version came from.
        """
        experiment_id = self._experiment_id(spec.dag_id)
        example = features_frame(train_df.head(INPUT_EXAMPLE_ROWS), spec)
        signature = _signature(spec, model.predict_proba(example))
        with self._fluent(), mlflow.start_run(experiment_id=experiment_id):
            mlflow.log_params(params)
            mlflow.log_metrics(metrics)
            mlflow.set_tags(tags)
            logged = mlflow.sklearn.log_model(model, name=MODEL_ARTIFACT, signature=signature,
                                              input_example=example, **_LOG_OPTIONS)
            mlflow.sklearn.log_model(baseline, name=BASELINE_ARTIFACT, signature=signature, **_LOG_OPTIONS)
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / REFERENCE_ARTIFACT
                reference.to_parquet(path, index=False)
                mlflow.log_artifact(str(path))
            registered = mlflow.register_model(logged.model_uri, spec.model_name, tags=tags)
        return self.version(spec.model_name, int(registered.version))

    def promote(self, model_name: str, version: int, verdict: dict[str, Any]) -> None:
        """Bless a version and point `champion` at it.

        Tags first, alias last: if anything fails half-way, the alias still names a blessed
        model, never one without its reasons.
        """
        now = _now_iso()
        self._write_verdict(model_name, version, verdict, blessed=True, at=now)
        self.client.set_model_version_tag(model_name, str(version), PROMOTED_AT_TAG, now)
        self.client.set_registered_model_alias(model_name, CHAMPION, str(version))

    def record_verdict(self, model_name: str, version: int, verdict: dict[str, Any]) -> None:
        """Record why a version was not promoted (tags only; the alias does not move).

        Rejected challengers keep their numbers so that every decision can be audited.
        """
        current = self.champion(model_name)
        if current is not None and current.version == int(version):
            raise ValueError(f"{model_name} v{version} is the champion: use promote(), not record_verdict()")
        self._write_verdict(model_name, version, verdict, blessed=False, at=_now_iso())

    def _write_verdict(self, model_name: str, version: int, verdict: dict[str, Any], *,
                       blessed: bool, at: str) -> None:
        for key, value in verdict.items():
            self.client.set_model_version_tag(model_name, str(version), f"{VERDICT_PREFIX}{key}", _tag_value(value))
        self.client.set_model_version_tag(model_name, str(version), VERDICT_AT_TAG, at)
        self.client.set_model_version_tag(model_name, str(version), BLESSED_TAG, "true" if blessed else "false")

    # --- reading -----------------------------------------------------------------------

    def champion(self, model_name: str) -> ModelVersionInfo | None:
        """The version behind the `champion` alias; None when the model or the alias does not exist."""
        try:
            registered = self.client.get_registered_model(model_name)
        except MlflowException as exc:
            if exc.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
                return None
            raise
        version = registered.aliases.get(CHAMPION)
        return None if version is None else self.version(model_name, int(version))

    def version(self, model_name: str, version: int) -> ModelVersionInfo:
        mv = self.client.get_model_version(model_name, str(version))
        return ModelVersionInfo(
            name=mv.name,
            version=int(mv.version),
            run_id=mv.run_id,
            created_at=_from_millis(mv.creation_timestamp),
            tags=dict(mv.tags),
            aliases=list(mv.aliases),
        )

    def champion_promoted_at(self, model_name: str) -> dt.datetime | None:
        """When the champion became champion (its tag, else its creation time): the max-age rule's clock."""
        current = self.champion(model_name)
        if current is None:
            return None
        stamp = current.tags.get(PROMOTED_AT_TAG)
        return dt.datetime.fromisoformat(stamp).astimezone(dt.UTC) if stamp else current.created_at

    def load_model(self, model_name: str, version: int):
        """The fitted sklearn pipeline of one registered version (by number, never by alias, so
        that what is loaded is exactly what was decided on)."""
        with self._fluent():
            return mlflow.sklearn.load_model(f"models:/{model_name}/{int(version)}")

    def load_baseline(self, run_id: str):
        """The baseline pipeline logged with a training run."""
        with self._fluent():
            return mlflow.sklearn.load_model(f"runs:/{run_id}/{BASELINE_ARTIFACT}")

    def load_reference(self, run_id: str) -> pd.DataFrame:
        """The reference data logged with a training run (what drift is measured against)."""
        with tempfile.TemporaryDirectory() as tmp:
            path = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=REFERENCE_ARTIFACT, dst_path=tmp,
                tracking_uri=self.tracking_uri)
            return pd.read_parquet(path)

    # --- helpers -----------------------------------------------------------------------

    def _experiment_id(self, name: str) -> str:
        """The experiment's id, creating it (with our artifact location) on first use."""
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        try:
            return self.client.create_experiment(name, artifact_location=self.artifact_location)
        except MlflowException as exc:  # another process created it first
            if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                raise
            return self.client.get_experiment_by_name(name).experiment_id

    @contextmanager
    def _fluent(self) -> Iterator[None]:
        """Point MLflow's process-wide URIs at this registry for the fluent calls that read them.

        They are set on every use (not once in __init__) so that no instance relies on what
        another instance, or other code in the process, set last.
        """
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        yield


def _signature(spec: DatasetSpec, proba) -> ModelSignature:
    """Inputs declared from the spec, outputs inferred from predict_proba.

    The input types are exactly what features_frame produces (float64 -> double, object
    strings -> string), every feature required. Inferring them from the training rows instead
    cost 1.5 s on 40k rows and marks a column optional or not by whether that window happened
    to have a missing value.
    """
    inputs = Schema([ColSpec(DataType.double if f.type == "numeric" else DataType.string, f.name)
                     for f in spec.features])
    return ModelSignature(inputs=inputs, outputs=infer_signature(model_output=proba).outputs)


def _default_artifact_location(tracking_uri: str) -> str | None:
    """Artifacts next to a SQLite store; a tracking server chooses its own; other stores must say."""
    parsed = urlparse(tracking_uri)
    if parsed.scheme == "sqlite":
        db_path = Path(unquote(tracking_uri[len("sqlite:///"):])).absolute()
        return (db_path.parent / "mlartifacts").as_uri()
    if parsed.scheme in ("http", "https", "databricks"):
        return None
    raise ValueError(f"{tracking_uri!r}: give an explicit artifact_location for this tracking store")


def _tag_value(value: Any) -> str:
    """Tags are strings: keep strings as they are, JSON for numbers, booleans, lists and dicts."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def _from_millis(millis: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(millis / 1000, tz=dt.UTC)


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat()
