"""Fixtures the unit modules share."""

from __future__ import annotations

import os
from collections.abc import Iterator

import mlflow
import pytest

from include.nightshift.registry import Registry


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A real MLflow registry on a SQLite store of the module's own (creating its tables costs seconds),
    with model loading allowed and MLflow's process-wide URIs left as found."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("MLFLOW_REGISTRY_URI", raising=False)
        mp.chdir(tmp_path_factory.mktemp("cwd"))
        yield Registry(f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db")
        forget_mlflow_uris()


def forget_mlflow_uris() -> None:
    """Undo what the registry's fluent calls set process-wide. MLflow's set_*_uri(None) clears its
    globals but not the MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI variables it exported, and a later
    MlflowClient(tracking_uri=...) without a registry_uri would then read this module's registry."""
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        os.environ.pop(name, None)
