"""Quiet task logs: library noise silenced where it is raised, real warnings kept.

Why: a night's task log is read by the person on call, and the cause of a failure should be
near the end of a short log, not after a thousand lines nobody can act on. Measured on the e2e
stack's task logs (Airflow 3.3, MLflow 3, GX 1.x, November 2026):

- drift, monitor, train, evaluate and score each logged about 1,160 ``DeprecatedImportWarning``
  lines. MLflow loads a scikit-learn model through skops, whose ``whichmodule()`` calls
  ``getattr(module, name)`` on every module in ``sys.modules``; Airflow's deprecated-import
  shims (``airflow.utils.timezone`` ...) warn on each lookup. Nothing in Nightshift imports them.
- validate logged about 200 INFO lines of GX's own start-up ("Skipping registering function ...",
  "Loading 'datasources'").
- MLflow logs to its own stderr handler, and Airflow records a task's stderr at ERROR level: a
  successful train showed "Registered model ... already exists" and tqdm progress bars as errors.

Each warning filter names the module that raises the warning and its message, so the same kind
of warning raised by our code or another library still shows. Library loggers are set to
WARNING, not silenced: their warnings and errors still reach the task log, at their own level.
``install()`` runs when the operators' base module is imported (every task does); it changes
nothing an explicit setting already chose (MLFLOW_LOGGING_LEVEL, a progress bar switch).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

# (category, module that raises it, message regex, why it is noise)
WARNING_FILTERS: tuple[tuple[type[Warning], str, str, str], ...] = (
    (FutureWarning, r"skops\.io\._utils", r"The `airflow\.",
     "skops probes every loaded module for a name; Airflow's deprecated-import shims answer with a warning"),
    (UserWarning, r"mlflow\.data\.dataset_source_registry", r"The specified dataset source can be interpreted",
     "MLflow registers its local artifact source twice and warns that the two candidates are ambiguous"),
)
# Loggers whose INFO lines describe the library's internals, not the night.
LIBRARY_LOGGERS = ("great_expectations", "evidently", "mlflow", "alembic", "huey", "sqlalchemy.engine")
# Loggers MLflow points at its own stderr handler at import (mlflow.utils.logging_utils).
MLFLOW_OWNED = ("mlflow", "alembic", "huey", "sqlalchemy.engine")
ENVIRONMENT = {
    "MLFLOW_LOGGING_LEVEL": "WARNING",  # read when mlflow is imported: INFO chatter is never made
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # tqdm bars on stderr, recorded as ERROR lines
}


def install() -> None:
    """Filter the known noisy warnings and set library loggers to WARNING (idempotent)."""
    for name, value in ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    for category, module, message, _why in WARNING_FILTERS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level in (logging.NOTSET, logging.DEBUG, logging.INFO):
            logger.setLevel(logging.WARNING)
    if "mlflow" in sys.modules:
        adopt_mlflow_loggers()


class MlflowNotices:
    """Where MLflow's `eprint` notices go once adopted: the `mlflow.notices` logger at INFO, which
    the mlflow logger's WARNING level drops (MLFLOW_LOGGING_LEVEL=INFO shows them as INFO lines).

    Why a stream: `eprint` prints to the module global `MLFLOW_LOGGING_STREAM` (stderr), and
    MLflow switches that stream back on by itself (its autologging guard calls `enable_logging()`
    after every model it logs), so turning it off does not last. `enabled` is kept for that call."""

    enabled = True

    def write(self, text: str) -> int:
        if text.strip():
            logging.getLogger("mlflow.notices").info(text.strip())
        return len(text)

    def flush(self) -> None:
        """Nothing is buffered."""


def adopt_mlflow_loggers() -> None:
    """Route MLflow's loggers and notices to the task log instead of stderr; call after importing mlflow.

    MLflow replaces the handlers of its loggers with a stderr stream and stops propagation when
    it is imported; under Airflow that stream becomes ERROR lines. Propagating instead keeps
    each record's own level (a real MLflow warning is a WARNING line in the task log). Its
    `eprint` notices ("Successfully registered model ...", "Created version ...") become INFO
    records of `mlflow.notices`: the step's own line names the version it registered."""
    from mlflow.utils import logging_utils

    logging_utils.MLFLOW_LOGGING_STREAM = MlflowNotices()
    level = logging.getLevelName(os.environ.get("MLFLOW_LOGGING_LEVEL", "WARNING").upper())
    for name in MLFLOW_OWNED:
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True
        logger.setLevel(level if isinstance(level, int) else logging.WARNING)
