"""Fixtures the unit modules share."""

from __future__ import annotations

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
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
