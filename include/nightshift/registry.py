"""The model registry: MLflow runs, registered versions and the `champion` alias.

One class wraps every MLflow call the pipeline makes, so that the rest of the core speaks in
plain values (ModelVersionInfo, DataFrames, fitted pipelines) and MLflow's quirks live here:

- aliases, not stages (stages are deprecated in MLflow 3); the production model is the
  version behind the alias `champion`, and a version is blessed by tags that say why;
- MLflow is where models are compared: a run is named "<dataset> <night> <retrain reason>", the
  holdout numbers of challenger, champion and baseline (overall, per slice, per class) are metrics
  of the challenger's run, with the evaluation plots and the whole verdict (evaluation.json) under
  its artifacts' evaluation/; a version carries the verdict in words in its description and a
  handful of short tags (VERSION_TAGS: each read back by the code or searched by), never a JSON blob;
- the alias moves in two ways only, promote() and rollback(), both tags first, alias last; a
  rollback's who/why/when is written on the version restored and on the version left, and
  "previous champion" is read from those tags (see previous_champion);
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

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import math
import re
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

# training first: it sets OMP_WAIT_POLICY before mlflow.sklearn loads scikit-learn (and OpenMP with it).
from include.nightshift.training import features_frame  # isort: skip

import mlflow
import mlflow.sklearn
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature, infer_signature
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, RESOURCE_DOES_NOT_EXIST, ErrorCode
from mlflow.tracking import MlflowClient
from mlflow.types import ColSpec, DataType, Schema

from include.nightshift.snapshot import SnapshotRef
from include.nightshift.spec import DatasetSpec

log = logging.getLogger(__name__)

CHAMPION = "champion"
SHADOW = "shadow"  # a version that scores beside the champion, never served (shadow.py)
MODEL_ARTIFACT = "model"
BASELINE_ARTIFACT = "baseline"
REFERENCE_ARTIFACT = "reference.parquet"
BLESSED_TAG = "nightshift.blessed"
PROMOTED_AT_TAG = "nightshift.promoted_at"
REPLACED_VERSION_TAG = "nightshift.replaced_version"
# On the version a rollback restored (the latest rollback to it):
ROLLBACK_ID_TAG = "nightshift.rollback.id"
ROLLBACK_AT_TAG = "nightshift.rollback.at"
ROLLBACK_BY_TAG = "nightshift.rollback.by"
ROLLBACK_REASON_TAG = "nightshift.rollback.reason"
ROLLBACK_FROM_TAG = "nightshift.rollback.from"
# On the version a rollback moved away from (the latest rollback from it):
ROLLED_BACK_AT_TAG = "nightshift.rolled_back.at"
ROLLED_BACK_BY_TAG = "nightshift.rolled_back.by"
ROLLED_BACK_REASON_TAG = "nightshift.rolled_back.reason"
ROLLED_BACK_TO_TAG = "nightshift.rolled_back.to"
ROLLED_BACK_ID_TAG = "nightshift.rolled_back.id"
# On a version: the gate's answer ("passed" / "failed"), whatever the run's policy then did with it.
GATE_TAG = "nightshift.gate"
# On a version: "false" from registration until evaluate writes its verdict ("true"). A version that
# keeps "false" was never judged (its evaluate failed or never ran): never promoted, never restorable.
JUDGED_TAG = "nightshift.judged"
RUN_DATE_TAG = "nightshift.run_date"  # on a version: the night its training run was for
FAMILY_TAG = "nightshift.family"  # on a run and its version: the model family that won the holdout
# On a run and its version: training.training_key, the hash of its data, spec, libraries and code.
# A retrain with the same key reuses that version (find_reusable) instead of registering a duplicate.
TRAINING_KEY_TAG = "nightshift.training_key"
DAG_RUN_TAG = "nightshift.dag_run_id"  # on a run and its version: the Airflow run that trained it (search by it)
# On a run and its version: the fingerprint of Python's and the prediction path's library versions at training
# (environment.digest; the versions are the run's serving_check/environment.json).
ENVIRONMENT_TAG = "nightshift.environment"
# Every tag a version gets outside a rollback (whose who/why/when adds its own, ROLLBACK_* and ROLLED_BACK_*).
VERSION_TAGS = (RUN_DATE_TAG, DAG_RUN_TAG, FAMILY_TAG, TRAINING_KEY_TAG, JUDGED_TAG, GATE_TAG, BLESSED_TAG,
                PROMOTED_AT_TAG, REPLACED_VERSION_TAG, ENVIRONMENT_TAG)
MAX_DIGEST = 36  # MLflow's limit on a dataset digest
VERDICT_PREFIX = "verdict."  # the verdict as tags, on versions judged before issue 13 (read, never written)
EVALUATION_FOLDER = "evaluation"  # on the challenger's run: the plots and evaluation.json
MAX_DESCRIPTION = 4900  # MLflow stores a version's description in 5000 characters
MAX_METRIC_KEY = 250  # MLflow's limit on a metric name
# A version's description starts with one of these. promote() writes PROMOTION_PENDING before the alias moves
# and mark_promoted() turns it into PROMOTED once it has: a version whose alias write failed never reads promoted.
PROMOTED, NOT_PROMOTED, PROMOTION_PENDING = "**PROMOTED**", "**NOT PROMOTED**", "**PROMOTION PENDING**"
ROLES = ("challenger", "champion", "baseline")  # the models evaluated on one holdout (evaluation.evaluate)
INPUT_EXAMPLE_ROWS = 5
# Declared, not inferred: MLflow's inference starts a subprocess that imports the model (about
# 10 s per model here). The pipelines hold only scikit-learn and XGBoost objects.
MODEL_REQUIREMENTS = ("mlflow", "scikit-learn", "xgboost", "skops", "numpy", "pandas", "scipy")
# MLflow saves sklearn models with skops, which refuses types it does not know unless they are
# listed here (the list is stored in the MLmodel file and used again at load time).
# Exactly what skops.io.get_untrusted_types reports for every family, calibrated or not (test_registry
# round-trips each): HistGradientBoosting's trees and the calibration wrappers besides XGBoost's, and
# the input check HistGradientBoosting's native categorical support keeps (a functools.partial of
# sklearn's check_array: skops still checks the function it wraps against this list).
SKOPS_TRUSTED_TYPES = ["numpy.dtype", "xgboost.core.Booster", "xgboost.sklearn.XGBClassifier",
                       "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
                       "sklearn.calibration._CalibratedClassifier", "sklearn.calibration._SigmoidCalibration",
                       "functools.partial", "sklearn.utils.validation.check_array"]

_LOG_OPTIONS = {
    "pyfunc_predict_fn": "predict_proba",  # so that a pyfunc load scores too, not only labels
    "skops_trusted_types": SKOPS_TRUSTED_TYPES,
    "pip_requirements": [f"{name}=={installed_version(name)}" for name in MODEL_REQUIREMENTS],
}
# Task regression: the pipelines predict the value itself (XGBRegressor is one more type for skops).
_REGRESSION_LOG_OPTIONS = {**_LOG_OPTIONS, "pyfunc_predict_fn": "predict",
                           "skops_trusted_types": [*SKOPS_TRUSTED_TYPES, "xgboost.sklearn.XGBRegressor"]}


def _log_options(spec: DatasetSpec) -> dict[str, Any]:
    return _REGRESSION_LOG_OPTIONS if spec.task == "regression" else _LOG_OPTIONS


@dataclass(frozen=True)
class ModelVersionInfo:
    name: str
    version: int
    run_id: str
    created_at: dt.datetime  # UTC
    tags: dict[str, str]
    aliases: list[str]

    @property
    def champion_since(self) -> dt.datetime | None:
        """When this version last became champion (promoted or rolled back to); None if it never was."""
        stamps = [_parse_iso(self.tags[t]) for t in (PROMOTED_AT_TAG, ROLLBACK_AT_TAG) if self.tags.get(t)]
        return max(stamps, default=None)

    @property
    def trained_for(self) -> dt.date | None:
        """The night whose run trained this version (tag nightshift.run_date), else the day it was
        registered: the start of its age in nights (decide.model_age_days)."""
        stamp = self.tags.get(RUN_DATE_TAG)
        return dt.date.fromisoformat(stamp) if stamp else self.created_at.date()

    @property
    def rolled_back_from(self) -> bool:
        """True when the last thing that happened to this version as champion was a rollback away from it."""
        since, away = self.champion_since, self.tags.get(ROLLED_BACK_AT_TAG)
        return since is not None and away is not None and _parse_iso(away) > since

    @property
    def passed_gate(self) -> bool:
        """Whether this version may be made champion by a rollback: it passed the gate once.

        True when it was blessed (nightshift.blessed=true, written only by promote()), was
        champion at least once, or its verdict says the gate passed (nightshift.gate=passed, or
        verdict.promote=true on a version judged before issue 13: a version the gate passed but a
        run's policy held back, e.g. promotion_policy=never). A rejected challenger (blessed=false,
        gate failed, never champion) and a version never judged do not qualify.
        """
        return (self.tags.get(BLESSED_TAG) == "true" or self.champion_since is not None
                or self.tags.get(GATE_TAG) == "passed" or self.tags.get(f"{VERDICT_PREFIX}promote") == "true")


class RollbackRefused(ValueError):
    """A rollback that was refused: the message says what is wrong and what to do instead."""


class ModelArtifactsMissing(LookupError):
    """A registered version (or a run's logged baseline or reference data) whose files are gone.

    MLflow says only ``No such artifact: ''``; this names the model, the version, its run and where
    the files should be. No retry brings them back (include/nightshift/errors.py: permanent).
    """


@dataclass(frozen=True)
class RollbackResult:
    """What a rollback did (or, replayed with the same rollback_id, what it had done).

    changed: the alias moved (False only when the target already was the champion before
    this rollback began: a no-op). resumed: this call found the rollback_id already recorded
    and completed or confirmed it instead of resolving the target again.
    at: when the rollback happened (the first attempt's time on a replay).
    """

    model_name: str
    from_version: int | None  # None: the alias was gone (the champion version deleted)
    to_version: int
    changed: bool
    rollback_id: str
    at: dt.datetime
    resumed: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (for XCom and the audit table's details)."""
        return {**dataclasses.asdict(self), "at": self.at.isoformat()}


class Registry:
    """MLflow tracking + model registry for the nightly pipeline, bound to one tracking URI."""

    def __init__(self, tracking_uri: str, artifact_location: str | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.artifact_location = artifact_location or _default_artifact_location(tracking_uri)
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    # --- writing -----------------------------------------------------------------------

    def log_challenger(self, model, baseline, *, spec: DatasetSpec, train_df: pd.DataFrame,
                       reference: pd.DataFrame, params: dict[str, Any], metrics: dict[str, float],
                       tags: dict[str, str], snapshots: Sequence[SnapshotRef] = (),
                       run_name: str | None = None) -> ModelVersionInfo:
        """Log one training run and register its model as a new version of spec.model_name.

        The run holds everything needed to judge and reproduce the model later: params,
        metrics, tags (data hashes, Airflow run id), the model with its signature and an input
        example, the baseline it was compared with (logged, not registered) and the reference
        data that drift is measured against, and what the nightly skew checks compare with (serving_check/:
        a fixed training sample with the scores this model gave it, and the training rows' feature statistics;
        environment.json: the library versions it was trained with, fingerprinted by the tag nightshift.environment). The version carries the same tags, so the
        registry UI alone tells where a version came from. The snapshots it was trained and held
        out on are the run's dataset inputs (MLflow's lineage view), by address and hash. `run_name`
        says what happened (run_name(): "churn 2026-02-12 drift"); None lets MLflow make one up.
        """
        from include.nightshift.environment import current_environment, digest
        from include.nightshift.skew import FOLDER, write_serving_check

        environment = current_environment()  # the libraries it is trained with; the tag is their fingerprint
        tags = {ENVIRONMENT_TAG: digest(environment), **tags}
        experiment_id = self._experiment_id(spec.dag_id)
        example = features_frame(train_df.head(INPUT_EXAMPLE_ROWS), spec)
        output = model.predict(example) if spec.task == "regression" else model.predict_proba(example)
        signature = _signature(spec, output)
        with self._fluent(), mlflow.start_run(experiment_id=experiment_id, run_name=run_name):
            mlflow.log_params(params)
            mlflow.log_metrics(metrics)
            mlflow.set_tags(tags)
            _log_snapshots(snapshots)
            logged = mlflow.sklearn.log_model(model, name=MODEL_ARTIFACT, signature=signature,
                                              input_example=example, **_log_options(spec))
            mlflow.sklearn.log_model(baseline, name=BASELINE_ARTIFACT, signature=signature, **_log_options(spec))
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / REFERENCE_ARTIFACT
                reference.to_parquet(path, index=False)
                mlflow.log_artifact(str(path))
                # the serving round trip's sample and scores, and the training rows' feature statistics (skew.py)
                mlflow.log_artifacts(str(write_serving_check(Path(tmp) / FOLDER, model, train_df, spec,
                                                                         environment)), FOLDER)
            registered = mlflow.register_model(logged.model_uri, spec.model_name, tags={**tags, JUDGED_TAG: "false"})
        return self.version(spec.model_name, int(registered.version))

    def log_evaluation(self, run_id: str, evaluation: dict[str, Any], *, plots: Sequence[Any] = (),
                       record: dict[str, Any] | None = None) -> None:
        """The holdout comparison on the challenger's run, where MLflow's compare view finds it: every
        number of evaluation.evaluate() as a metric (holdout_metric_names), the plots as PNGs and the
        evaluation with its verdict `record` as evaluation.json, both under evaluation/; the verdict in
        one line as the run's tag nightshift.verdict. A role that was not measured is left out, never NaN."""
        from mlflow.entities import Metric

        stamp = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(key, value, stamp, 0)
                                               for key, value in holdout_metric_names(evaluation).items()])
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            for plot in plots:
                (folder / plot.file_name).write_bytes(plot.png)
            if record is not None:
                (folder / "evaluation.json").write_text(json.dumps({"evaluation": evaluation, "verdict": record},
                                                                   indent=2, default=str))
            if any(folder.iterdir()):
                self.client.log_artifacts(run_id, tmp, EVALUATION_FOLDER)
        if record is not None:
            self.client.set_tag(run_id, "nightshift.verdict", verdict_line(record))

    def promote(self, model_name: str, version: int, verdict: dict[str, Any]) -> int | None:
        """Bless a version and point `champion` at it; returns the version it replaced (None if none).

        The reasons first (the description and nightshift.gate), then the alias, then the serving tags (blessed=true,
        promoted_at, replaced_version): the alias never names a version without its reasons, and
        a version whose alias write failed never carries the marks of having served (issue 11:
        a rollback once read those marks and restored a version that had never served). The
        replaced champion is kept in nightshift.replaced_version, so every champion names its
        predecessor. Promoting the current champion again (a retried task) keeps the predecessor
        it recorded the first time.
        """
        now = _now_iso()
        current = self.champion(model_name)
        if current is not None and current.version == int(version):
            replaced = current.tags.get(REPLACED_VERSION_TAG)
            replaced = int(replaced) if replaced else None
        else:
            replaced = None if current is None else current.version
        self._write_verdict(model_name, version, verdict, blessed=None, at=now)
        self.client.set_registered_model_alias(model_name, CHAMPION, str(version))
        self.mark_promoted(model_name, version, replaced=replaced, at=now)
        return replaced

    def mark_promoted(self, model_name: str, version: int, *, replaced: int | None, at: str) -> None:
        """The serving tags of a promotion, written once the alias has moved (promote(), or the repair of a
        promotion interrupted between the alias and these tags: promotion.repair_pending), then the description's
        headline PROMOTED."""
        if replaced is not None:
            self.client.set_model_version_tag(model_name, str(version), REPLACED_VERSION_TAG, str(replaced))
        self.client.set_model_version_tag(model_name, str(version), PROMOTED_AT_TAG, at)
        self.client.set_model_version_tag(model_name, str(version), BLESSED_TAG, "true")
        description = self.client.get_model_version(model_name, str(version)).description or ""
        if description.startswith(PROMOTION_PENDING):  # the verdict's headline, now that the alias has moved
            self.client.update_model_version(model_name, str(version),
                                             description=PROMOTED + description[len(PROMOTION_PENDING):])

    def rollback(self, model_name: str, *, to_version: int | None, actor: str, reason: str,
                 rollback_id: str, previous: Callable[[int], int | None] | None = None,
                 before_move: Callable[[int, ModelVersionInfo, dt.datetime], None] | None = None) -> RollbackResult:
        """Point `champion` back at an earlier version, recording who, why and when on both versions.

        to_version None means previous_champion(). The target must exist and have passed the
        gate once (ModelVersionInfo.passed_gate); a version that was rolled back away from may
        still be named explicitly, it is only skipped when "previous" is resolved. Rolling back
        to the current champion is a no-op (changed=False, nothing written).

        Idempotent per rollback_id (the Airflow run id): the id is the last tag written on the
        target, the mark that its rollback tags are complete, and it is written before the alias
        moves. So a retry (an Airflow task retry, before or after the alias moved) that finds the
        id knows the target and where it came from, instead of resolving "previous" again, which
        after the move would be one step further back; it finishes what is missing and returns
        the first attempt's result (resumed=True). A retry that does not find the id knows the
        alias has not moved, and resolving again gives the same target. A replay is refused
        when the champion has since moved to a third version: undoing that is a new rollback.

        Tags first, alias last, as in promote(): the alias never names a version without the
        reasons it is there.

        `previous` (the production path: rollback.run_rollback) gives the previous champion of the
        current one from what actually served (the audit table); without it, previous_champion()
        reads the tags. `before_move(from_version, target, at)` runs before any tag is written or the
        alias moves, on a fresh rollback and on a retry that finishes one: the place to load and score
        the target and to record the audit intent; an exception there leaves production untouched.
        """
        _check_rollback_request(model_name, to_version, actor=actor, reason=reason, rollback_id=rollback_id)
        current = self.champion(model_name)
        if current is None and to_version is None:  # never promoted, or its version was deleted (alias gone)
            raise RollbackRefused(f"{model_name} has no champion (no alias {CHAMPION!r}): there is no previous "
                                  "one to go back to; name the version to restore (one that passed the gate once)")
        recorded = self._rolled_back_by_id(model_name, rollback_id)
        if recorded is not None:
            return self._resume_rollback(current, recorded, to_version, rollback_id, before_move)
        if to_version is None:
            target = self._previous(model_name, current, previous)
            if target is None:
                raise RollbackRefused(
                    f"{model_name}: no previous champion to roll back to from v{current.version} (no earlier "
                    f"champion, or every earlier one was rolled back from): name the version to restore")
        elif current is not None and to_version == current.version:  # already there: nothing to do, nothing written
            return RollbackResult(model_name, current.version, current.version, False, rollback_id,
                                  dt.datetime.now(dt.UTC))
        else:
            target = self._eligible_target(model_name, to_version)
        at, from_version = dt.datetime.now(dt.UTC), None if current is None else current.version
        if before_move is not None:
            before_move(from_version, target, at)
        self._write_rollback_tags(model_name, from_version, target.version, actor=actor, reason=reason,
                                  rollback_id=rollback_id, at=at.isoformat())
        self.client.set_registered_model_alias(model_name, CHAMPION, str(target.version))
        return RollbackResult(model_name, from_version, target.version, True, rollback_id, at)

    def _previous(self, model_name: str, current: ModelVersionInfo,
                  previous: Callable[[int], int | None] | None) -> ModelVersionInfo | None:
        """The previous champion: from `previous` (what served, by the audit table) when given, else the tags."""
        if previous is None:
            return self.previous_champion(model_name)
        found = previous(current.version)
        return None if found is None else self._eligible_target(model_name, found)

    def _eligible_target(self, model_name: str, to_version: int) -> ModelVersionInfo:
        """The chosen version, refused with a clear message when it does not exist or never passed the gate."""
        try:
            target = self.version(model_name, to_version)
        except MlflowException as exc:
            if exc.error_code != ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
                raise
            raise RollbackRefused(f"{model_name} has no version {to_version}: cannot roll back to it") from exc
        if not target.passed_gate:
            blessed = target.tags.get(BLESSED_TAG, "unset: never judged")
            raise RollbackRefused(
                f"{model_name} v{to_version} never passed the promotion gate ({BLESSED_TAG}={blessed}, never "
                f"champion): only a version that passed the gate once can be restored")
        return target

    def _resume_rollback(self, current: ModelVersionInfo | None, target: ModelVersionInfo, to_version: int | None,
                         rollback_id: str, before_move: Callable[..., None] | None = None) -> RollbackResult:
        """Finish (or confirm) the rollback recorded under rollback_id on `target`."""
        name, tags = target.name, target.tags
        if to_version is not None and int(to_version) != target.version:
            raise RollbackRefused(f"rollback id {rollback_id!r} of {name} already restored v{target.version}, "
                                  f"not v{to_version}: use a new rollback id")
        from_version = int(tags[ROLLBACK_FROM_TAG]) if tags[ROLLBACK_FROM_TAG].isdigit() else None  # "None": no champion
        now = None if current is None else current.version
        if now not in (from_version, target.version):
            raise RollbackRefused(
                f"rollback id {rollback_id!r} of {name} moved the champion from v{from_version} to "
                f"v{target.version}, but the champion is now v{now}: start a new rollback")
        at = tags[ROLLBACK_AT_TAG]
        if now == from_version:  # interrupted before the alias moved: finish it
            if before_move is not None:
                before_move(from_version, target, _parse_iso(at))
            self._write_rollback_tags(name, from_version, target.version, actor=tags[ROLLBACK_BY_TAG],
                                      reason=tags[ROLLBACK_REASON_TAG], rollback_id=rollback_id, at=at)
            self.client.set_registered_model_alias(name, CHAMPION, str(target.version))
        return RollbackResult(name, from_version, target.version, True, rollback_id, _parse_iso(at), resumed=True)

    def _write_rollback_tags(self, model_name: str, from_version: int | None, to_version: int, *, actor: str,
                             reason: str, rollback_id: str, at: str) -> None:
        """The target's tags with the id last (what a retry looks for), then the version left (none when
        the champion's alias was gone: its version was deleted).

        Dicts keep their order: the id is written only once the target's other tags are.
        """
        for version, tags in (
            (to_version, {ROLLBACK_FROM_TAG: str(from_version), ROLLBACK_BY_TAG: actor, ROLLBACK_REASON_TAG: reason,
                          ROLLBACK_AT_TAG: at, ROLLBACK_ID_TAG: rollback_id}),
            (from_version, {ROLLED_BACK_ID_TAG: rollback_id, ROLLED_BACK_TO_TAG: str(to_version),
                            ROLLED_BACK_BY_TAG: actor, ROLLED_BACK_REASON_TAG: reason, ROLLED_BACK_AT_TAG: at}),
        ):
            if version is None:
                continue
            for key, value in tags.items():
                self.client.set_model_version_tag(model_name, str(version), key, value)

    def experiment_of(self, run_id: str) -> str:
        """The experiment id of a run (for a link to the run in the MLflow UI)."""
        return self.client.get_run(run_id).info.experiment_id

    def log_artifact(self, run_id: str, local_path: str | Path, artifact_path: str = "reports") -> str:
        """Attach a file (a report) to a run, e.g. a model version's training run; returns its artifact URI."""
        local = Path(local_path)
        if not local.is_file():
            raise FileNotFoundError(f"log_artifact: {local} is not a file")
        self.client.log_artifact(run_id, str(local), artifact_path)
        base = self.client.get_run(run_id).info.artifact_uri.rstrip("/")
        return f"{base}/{artifact_path.strip('/')}/{local.name}" if artifact_path else f"{base}/{local.name}"

    def record_verdict(self, model_name: str, version: int, verdict: dict[str, Any]) -> None:
        """Record why a version was not promoted (description and tags; the alias does not move).

        Rejected challengers keep their numbers so that every decision can be audited.
        """
        current = self.champion(model_name)
        if current is not None and current.version == int(version):
            raise ValueError(f"{model_name} v{version} is the champion: use promote(), not record_verdict()")
        self._write_verdict(model_name, version, verdict, blessed=False, at=_now_iso())

    def _write_verdict(self, model_name: str, version: int, verdict: dict[str, Any], *,
                       blessed: bool | None, at: str) -> None:
        """The verdict in words as the version's description (verdict_description), the gate's answer as
        nightshift.gate, then judged=true; blessed None leaves nightshift.blessed to mark_promoted (after
        the alias moved). The whole record is evaluation.json on the run (log_evaluation), not tags."""
        headline = PROMOTION_PENDING if blessed is None else NOT_PROMOTED  # None: promote() moves the alias next
        description = verdict_description(verdict, at, headline=headline)
        self.client.update_model_version(model_name, str(version), description=description)
        if "promote" in verdict:
            self.client.set_model_version_tag(model_name, str(version), GATE_TAG,
                                              "passed" if verdict["promote"] else "failed")
        self.client.set_model_version_tag(model_name, str(version), JUDGED_TAG, "true")
        if blessed is not None:
            self.client.set_model_version_tag(model_name, str(version), BLESSED_TAG, "true" if blessed else "false")

    # --- reading -----------------------------------------------------------------------

    def champion(self, model_name: str) -> ModelVersionInfo | None:
        """The version behind the `champion` alias; None when the model or the alias does not exist."""
        return self._aliased(model_name, CHAMPION)

    def shadow(self, model_name: str) -> ModelVersionInfo | None:
        """The version behind the `shadow` alias (shadow.py); None when there is none."""
        return self._aliased(model_name, SHADOW)

    def set_shadow(self, model_name: str, version: int | None) -> None:
        """Point `shadow` at a version, or remove the alias (None). Only the champion's alias is audited
        (champion_changes): a shadow serves nothing; its changes are logged and kept in pipeline_runs."""
        if version is None:
            if self.shadow(model_name) is not None:
                self.client.delete_registered_model_alias(model_name, SHADOW)
            return
        self.client.set_registered_model_alias(model_name, SHADOW, str(int(version)))

    def _aliased(self, model_name: str, alias: str) -> ModelVersionInfo | None:
        try:
            registered = self.client.get_registered_model(model_name)
        except MlflowException as exc:
            if exc.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
                return None
            raise
        version = registered.aliases.get(alias)
        return None if version is None else self.version(model_name, int(version))

    def version(self, model_name: str, version: int) -> ModelVersionInfo:
        return _info(self.client.get_model_version(model_name, str(version)))

    def versions(self, model_name: str) -> list[ModelVersionInfo]:
        """Every version of a model with its tags, oldest first ([] when the model does not exist).

        Aliases are not filled in (MLflow's search does not promise them); use champion().
        """
        found, token = [], None
        while True:
            page = self.client.search_model_versions(_name_filter(model_name), page_token=token)
            found.extend(page)
            token = page.token
            if not token:
                break
        return sorted((_info(mv, aliases=[]) for mv in found), key=lambda v: v.version)

    def previous_champion(self, model_name: str) -> ModelVersionInfo | None:
        """The version a rollback without a target goes back to; None when there is none.

        Definition: among the versions other than the current champion that have been
        champion (tag nightshift.promoted_at or nightshift.rollback.at), leaving out those
        rolled back from (nightshift.rolled_back_at later than when they last became
        champion), the one that became champion most recently. So with v1, v3, v5 promoted
        the previous champion is v3; after a rollback to v3 it is v1 (v5 was rolled back
        from); after v7 is promoted next it is v3 again. The times are the tags' UTC
        timestamps, written by whichever machine made the change.
        """
        current = self.champion(model_name)
        candidates = [v for v in self.versions(model_name)
                      if v.champion_since is not None and not v.rolled_back_from
                      and (current is None or v.version != current.version)]
        return max(candidates, key=lambda v: (v.champion_since, v.version), default=None)

    def holdout_metric(self, info: ModelVersionInfo, metric: str) -> float | None:
        """A version's holdout `metric` as its evaluation measured it (the run metric holdout_<metric>_challenger;
        for a version judged before issue 13, its verdict.challenger tag if it was of the same metric); None
        when it was never evaluated on that metric."""
        name = f"holdout_{_metric_part(metric)}_challenger"
        found = self.client.get_run(info.run_id).data.metrics.get(name) if info.run_id else None  # by hand: no run
        if found is not None:
            return float(found)
        legacy = info.tags.get(f"{VERDICT_PREFIX}challenger")
        same = info.tags.get(f"{VERDICT_PREFIX}metric") == metric
        return float(legacy) if legacy not in (None, "", "null") and same else None

    def _rolled_back_by_id(self, model_name: str, rollback_id: str) -> ModelVersionInfo | None:
        """The version a rollback with this id restored (its first tag), or None."""
        matches = [v for v in self.versions(model_name) if v.tags.get(ROLLBACK_ID_TAG) == rollback_id]
        return matches[0] if matches else None

    def load_model(self, model_name: str, version: int):
        """The fitted sklearn pipeline of one registered version (by number, never by alias, so
        that what is loaded is exactly what was decided on)."""
        with self._fluent(), self._missing_files(f"model {model_name} v{int(version)}",
                                                 lambda: self._version_files(model_name, version)):
            return mlflow.sklearn.load_model(f"models:/{model_name}/{int(version)}")

    def find_reusable(self, model_name: str, training_key: str) -> tuple[ModelVersionInfo, Any] | None:
        """The newest version tagged with this training key whose model still loads, with the model;
        None when there is none. A version whose artifacts are gone or unreadable is passed over
        (logged): a retrain then registers a fresh version rather than reuse one that cannot serve."""
        matches = [v for v in self.versions(model_name) if v.tags.get(TRAINING_KEY_TAG) == training_key]
        for info in reversed(matches):
            try:
                return info, self.load_model(model_name, info.version)
            except Exception as exc:  # noqa: BLE001 - any failure to load means "not reusable"
                log.warning("%s v%s has training key %s but does not load (%s): not reused",
                            model_name, info.version, training_key[:12], exc)
        return None

    def load_baseline(self, run_id: str):
        """The baseline pipeline logged with a training run."""
        with self._fluent(), self._missing_files(f"the baseline model of run {run_id}",
                                                 lambda: self._run_files(run_id, BASELINE_ARTIFACT)):
            return mlflow.sklearn.load_model(f"runs:/{run_id}/{BASELINE_ARTIFACT}")

    def load_reference(self, run_id: str) -> pd.DataFrame:
        """The reference data logged with a training run (what drift is measured against)."""
        with tempfile.TemporaryDirectory() as tmp, self._missing_files(
                f"the reference data of run {run_id}", lambda: self._run_files(run_id, REFERENCE_ARTIFACT)):
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
    def _missing_files(self, what: str, where: Callable[[], str | None]) -> Iterator[None]:
        """Turn MLflow's "No such artifact" (or a missing file) into ModelArtifactsMissing naming `what`
        and `where()` its files should be; any other failure (MLflow down, a 5xx) passes unchanged.
        `where()` None: the registry has no such version at all (MLflow's own error already says so)."""
        try:
            yield
        except (MlflowException, FileNotFoundError) as exc:
            if isinstance(exc, MlflowException) and exc.error_code != ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
                raise
            location = where()
            if location is None:
                raise
            raise ModelArtifactsMissing(
                f"{what} cannot load: its files are missing at {location} ({type(exc).__name__}: {exc}); they were "
                "deleted or the artifact store moved: restore them, roll back to a version that loads, or retrain"
            ) from exc

    def _version_files(self, model_name: str, version: int) -> str | None:
        """Where a version's model files should be: its download URI, registered source and run."""
        try:
            found = self.client.get_model_version(model_name, str(int(version)))
            uri = self.client.get_model_version_download_uri(model_name, str(int(version)))
        except MlflowException:
            return None
        return f"{uri} (registered source {found.source}, run {found.run_id})"

    def _run_files(self, run_id: str, artifact_path: str) -> str | None:
        try:
            return f"{self.client.get_run(run_id).info.artifact_uri}/{artifact_path}"
        except MlflowException:
            return None

    @contextmanager
    def _fluent(self) -> Iterator[None]:
        """Point MLflow's process-wide URIs at this registry for the fluent calls that read them.

        They are set on every use (not once in __init__) so that no instance relies on what
        another instance, or other code in the process, set last.
        """
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        yield


def _check_rollback_request(model_name: str, to_version: int | None, **texts: str) -> None:
    """Refuse a rollback whose who/why/id is empty or whose version is not a positive integer."""
    for name, value in texts.items():
        if not isinstance(value, str) or not value.strip():
            raise RollbackRefused(f"rollback of {model_name}: {name} must be a non-empty string")
    if to_version is not None and (isinstance(to_version, bool) or not isinstance(to_version, int) or to_version < 1):
        raise RollbackRefused(f"rollback of {model_name}: the version to restore must be a positive integer, "
                              f"got {to_version!r}")


def _log_snapshots(snapshots: Sequence[SnapshotRef]) -> None:
    """Each snapshot as a dataset input of the active run: its address, hash, day and rows."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    for ref in snapshots:
        dataset = MetaDataset(resolve_dataset_source(ref.url), name=f"snapshot {ref.day}", digest=ref.sha256[:MAX_DIGEST])
        mlflow.log_input(dataset, context="labelled" if ref.labelled else "scored",
                         tags={"sha256": ref.sha256, "rows": str(ref.rows), "day": ref.day})


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


def run_name(dataset: str, night: dt.date, reason: str | None) -> str:
    """What a training run is called in MLflow: "<dataset> <night> <retrain reason>", e.g. "churn 2026-02-12 drift"."""
    return f"{dataset} {night.isoformat()} {reason or 'retrain'}"


def _metric_part(text: Any) -> str:
    """A piece of a metric name in the characters MLflow accepts everywhere (letters, digits, _ - .; no
    colon: refused on Windows); a piece that had to change gets a short hash of the original, so that two
    values never share a name ("a b" and "a_b")."""
    raw = "null" if text is None else str(text)
    safe = re.sub(r"[^A-Za-z0-9_.\-]", "_", raw)
    return safe if safe == raw else f"{safe}_{hashlib.sha1(raw.encode()).hexdigest()[:6]}"


def holdout_metric_names(evaluation: dict[str, Any]) -> dict[str, float]:
    """The numbers of evaluation.evaluate() by metric name, grouped by metric then role so that MLflow
    lists challenger, champion and baseline side by side:
    holdout_<metric>_<role>, slice_<column>.<value>_<metric>_<role> (slices too small to judge are left
    out) and, for task multiclass, holdout_recall_<class>_<role>. Undefined numbers (None) are left out."""
    metric = _metric_part(evaluation.get("metric"))
    found: dict[str, Any] = {f"holdout_{metric}_{role}": v for role, v in (evaluation.get("overall") or {}).items()}
    found.update(_slice_metrics(evaluation.get("slices") or [], metric))
    for role, recalls in (evaluation.get("per_class_recall") or {}).items():
        found.update({f"holdout_recall_{_metric_part(c)}_{role}": v for c, v in recalls.items()})
    return {_short_key(k): float(v) for k, v in found.items() if v is not None and math.isfinite(float(v))}


def _slice_metrics(slices: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """slice_<column>.<value>_<metric>_<role> of every slice large enough to be judged."""
    found = {}
    for s in slices:
        if not s.get("skipped"):
            where = f"slice_{_metric_part(s.get('column'))}.{_metric_part(s.get('value'))}"
            found.update({f"{where}_{metric}_{role}": s.get(role) for role in ROLES})
    return found


def _short_key(key: str) -> str:
    """A metric name within MLflow's 250 characters (a long slice value cut, with a hash of the whole)."""
    if len(key) <= MAX_METRIC_KEY:
        return key
    return f"{key[:MAX_METRIC_KEY - 9]}_{hashlib.sha1(key.encode()).hexdigest()[:8]}"


def verdict_line(verdict: dict[str, Any]) -> str:
    """The verdict in one line (a run tag): what happened, and which checks failed."""
    failed = [str(c.get("name")) for c in verdict.get("checks") or [] if not c.get("passed")]
    done = "promoted" if verdict.get("promoted", verdict.get("promote")) else "not promoted"
    why = f"failed {', '.join(failed)}" if failed else verdict.get("policy_note") or "every check passed"
    return f"{done}: {why}"


def verdict_description(verdict: dict[str, Any], at: str, *, headline: str | None = None) -> str:
    """A model version's description (MLflow renders Markdown): promoted or not and why, with the numbers.

    From the evaluate step's record (steps.VerdictStep.tags()); keys it lacks are left out and keys it does
    not know are listed as they are, so any dict of facts still reads. Cut to MAX_DESCRIPTION characters.
    `headline` None: PROMOTED or NOT PROMOTED, as the record says."""
    if headline is None:
        headline = PROMOTED if verdict.get("promoted", verdict.get("promote")) else NOT_PROMOTED
    run = f", Airflow run `{verdict['dag_run_id']}`" if verdict.get("dag_run_id") else ""
    head = [f"{headline} (verdict of {at}{run}).", *_described_head(verdict)]
    bullets = [f"- {'passed' if c.get('passed') else '**FAILED**'} {c.get('name')}: {c.get('detail')}"
               for c in verdict.get("checks") or [] if isinstance(c, dict)]
    bullets += [f"- {line}" for line in _described_extras(verdict)]
    text = "\n\n".join([*head, "\n".join(bullets),
                         "Full record: evaluation/evaluation.json and reports/evaluation.html on this version's run."])
    return text if len(text) <= MAX_DESCRIPTION else text[:MAX_DESCRIPTION - 1] + "…"


def _described_head(verdict: dict[str, Any]) -> list[str]:
    """The gate's answer with the run's policy, and the holdout numbers of the three models."""
    head = []
    if "promote" in verdict:
        why = verdict.get("policy_note")
        head.append(f"Gate {'passed' if verdict['promote'] else 'failed'}; policy {verdict.get('policy', 'auto')}"
                    + (f": {why}." if why else "."))
    if verdict.get("metric"):
        numbers = ", ".join(f"{role} {_described(verdict.get(role))}" for role in ROLES)
        champion = verdict.get("champion_version")
        head.append(f"Holdout {verdict['metric']}: {numbers}" + (f" (champion v{champion})." if champion else "."))
    return head


_DESCRIBED = {"promote", "promoted", "policy", "policy_note", "metric", "challenger", "champion", "baseline",
              "champion_version", "challenger_version", "checks", "dag_run_id", "message"}


def _described_extras(verdict: dict[str, Any]) -> list[str]:
    """The record's other facts in words: family, every candidate's holdout metric, reuse, and any key not known."""
    out = []
    if verdict.get("family"):
        out.append(f"model family: {verdict['family']}")
    candidates = verdict.get("candidates")
    if isinstance(candidates, dict) and candidates:
        out.append("candidates on the holdout: " + ", ".join(
            f"{family} {_described((c or {}).get('metric') if isinstance(c, dict) else c)}"
            for family, c in candidates.items()))
    if verdict.get("reused"):
        out.append("a version reused by training key (same snapshots, spec, libraries and code)")
    out += [f"{key}: {_described(value)}" for key, value in verdict.items()
            if key not in _DESCRIBED | {"family", "candidates", "reused"}]
    return out


def _described(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}" if math.isfinite(value) else "n/a"
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def _info(mv, aliases: list[str] | None = None) -> ModelVersionInfo:
    return ModelVersionInfo(
        name=mv.name,
        version=int(mv.version),
        run_id=mv.run_id,
        created_at=_from_millis(mv.creation_timestamp),
        tags=dict(mv.tags),
        aliases=list(mv.aliases) if aliases is None else aliases,
    )


def _name_filter(model_name: str) -> str:
    """An MLflow filter on one model name (names come from specs: plain identifiers, never a quote)."""
    if "'" in model_name or "\\" in model_name:
        raise ValueError(f"model name {model_name!r}: quotes and backslashes are not allowed")
    return f"name = '{model_name}'"


def _parse_iso(stamp: str) -> dt.datetime:
    return dt.datetime.fromisoformat(stamp).astimezone(dt.UTC)


def _from_millis(millis: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(millis / 1000, tz=dt.UTC)


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def save_unregistered(folder: Path, model: Any, baseline: Any, spec: DatasetSpec) -> None:
    """A challenger and its baseline saved as MLflow models in `folder` (model/, baseline/): no run, no
    version, no write to the tracking server or registry. What a dry run keeps instead of registering,
    in the same format log_challenger logs (so load_unregistered loads it as load_model does)."""
    mlflow.sklearn.save_model(model, str(folder / MODEL_ARTIFACT), **_log_options(spec))
    mlflow.sklearn.save_model(baseline, str(folder / BASELINE_ARTIFACT), **_log_options(spec))


def load_unregistered(folder: Path, artifact: str = MODEL_ARTIFACT) -> Any:
    """A model save_unregistered kept, loaded with the sklearn flavour as a registered version is."""
    return mlflow.sklearn.load_model(str(folder / artifact))
