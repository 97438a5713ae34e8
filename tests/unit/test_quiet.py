"""quiet.install(): the library noise measured in real task logs is gone, real warnings are not.

The warnings are made the way a task makes them: skops' whichmodule() probing Airflow's
deprecated-import shims (what MLflow's scikit-learn loader triggers), MLflow's own loggers and
eprint notices. Global state (warning filters, loggers, MLflow's stream) is restored after each test.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator

import pytest

from include.nightshift import quiet


class Nameless:
    """An object skops cannot place by its __module__, so whichmodule() searches sys.modules."""


Nameless.__module__ = None  # type: ignore[assignment]


@pytest.fixture
def restored(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from mlflow.utils import logging_utils

    stream = logging_utils.MLFLOW_LOGGING_STREAM
    for name in quiet.ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    loggers = {name: logging.getLogger(name) for name in (*quiet.LIBRARY_LOGGERS, *quiet.MLFLOW_OWNED)}
    saved = {name: (lg.level, list(lg.handlers), lg.propagate) for name, lg in loggers.items()}
    with warnings.catch_warnings():
        yield
    logging_utils.MLFLOW_LOGGING_STREAM = stream
    for name, (level, handlers, propagate) in saved.items():
        loggers[name].setLevel(level)
        loggers[name].handlers = handlers
        loggers[name].propagate = propagate


def _probe(name: str) -> list[warnings.WarningMessage]:
    from skops.io._utils import whichmodule

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        quiet.install()  # after simplefilter: installed filters go first, as in a task
        whichmodule(Nameless(), name)
        warnings.warn("The `airflow.utils.timezone.x` attribute is deprecated", FutureWarning)  # ours: kept
        warnings.warn("a real warning", FutureWarning)
    return caught


def test_skops_probe_of_airflow_shims_is_filtered_other_warnings_are_kept(restored):
    import airflow.utils.timezone  # noqa: F401 - a deprecated-import shim, loaded as in a task

    from skops.io._utils import whichmodule

    with warnings.catch_warnings(record=True) as before:
        warnings.simplefilter("default")
        whichmodule(Nameless(), "nightshift_probe_a")
    noisy = [w for w in before if "skops" in w.filename and "airflow" in str(w.message)]
    assert noisy, "the probe no longer warns: quiet.WARNING_FILTERS may be dropped"
    caught = _probe("nightshift_probe_b")
    assert [str(w.message) for w in caught] == ["The `airflow.utils.timezone.x` attribute is deprecated",
                                                "a real warning"]


def test_library_loggers_are_at_warning_and_mlflow_goes_to_the_task_log(restored, capsys, caplog):
    import mlflow  # noqa: F401 - configures its loggers to stderr on import
    from mlflow.utils.logging_utils import enable_logging, eprint

    quiet.install()
    for name in ("great_expectations", "evidently", "alembic"):
        assert logging.getLogger(name).getEffectiveLevel() == logging.WARNING, name
    mlflow_log = logging.getLogger("mlflow.tracking")
    with caplog.at_level(logging.INFO):
        mlflow_log.info("Registered model 'm' already exists")  # MLflow's chatter: dropped
        mlflow_log.warning("a real MLflow warning")  # kept, through the root logger at its own level
        enable_logging()  # what MLflow's autologging guard does after logging a model
        eprint("Created version '3' of model 'm'.")  # MLflow's print to stderr: an INFO record, dropped
    assert [(r.levelname, r.getMessage()) for r in caplog.records if r.name.startswith("mlflow")] == \
        [("WARNING", "a real MLflow warning")]
    assert capsys.readouterr().err == ""
