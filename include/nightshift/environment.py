"""Dependency changes (issue 14 part 6): the libraries on a model's prediction path, recorded with the model
and compared with tonight's every night.

A model registered by this pipeline carries, in its run's serving_check/environment.json, the Python version and
the versions of every library the registry's model loads and predicts with (PREDICTION_LIBRARIES), read with
importlib.metadata at training, and their fingerprint as the version tag nightshift.environment (digest). The
score step compares the champion's recorded environment with the running one: a
difference is reported (the dependency_change alert and the score step's evidence), and the champion is
re-verified on tonight's environment by the serving round trip (skew.verify_round_trip), which runs before
every night's scoring, changed environment or not. A version registered before this existed has neither:
"not recorded for vN" is the evidence, and the night goes on.

Pure: no Airflow, no MLflow import.
"""

from __future__ import annotations

import hashlib
import json
import platform
from importlib.metadata import PackageNotFoundError, version
from typing import Any

# What a registered model is unpickled and scored with: scikit-learn pipelines (skops, joblib, threadpoolctl),
# XGBoost boosters, the frames and arrays around them, the Parquet reader the serving path reads rows with,
# and MLflow, which loads the model (cloudpickle for its pyfunc wrapper).
PREDICTION_LIBRARIES = ("numpy", "pandas", "scikit-learn", "xgboost", "scipy", "pyarrow", "mlflow", "skops",
                        "joblib", "threadpoolctl", "cloudpickle")
PYTHON = "python"
NOT_INSTALLED = "not installed"


def current_environment() -> dict[str, str]:
    """{"python": "3.11.2", "numpy": "2.3.1", ...}: the running interpreter and PREDICTION_LIBRARIES."""
    found = {PYTHON: platform.python_version()}
    for name in PREDICTION_LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = NOT_INSTALLED
    return found


def digest(environment: dict[str, str]) -> str:
    """A short fingerprint of an environment (the version tag nightshift.environment: tags stay short; the
    versions themselves are the run's serving_check/environment.json)."""
    return hashlib.sha256(json.dumps(environment, sort_keys=True).encode()).hexdigest()[:16]


def changes(recorded: dict[str, str], now: dict[str, str]) -> list[dict[str, str | None]]:
    """Every library (and Python) whose version differs between the model's training and tonight, sorted by
    name: {"name", "recorded", "now"} (None: not listed on that side)."""
    names = sorted(set(recorded) | set(now))
    return [{"name": n, "recorded": recorded.get(n), "now": now.get(n)} for n in names
            if recorded.get(n) != now.get(n)]


def compare_with(version_number: int, recorded: dict[str, str] | None) -> dict[str, Any]:
    """The evidence of tonight's comparison with the champion's recorded environment (None: not recorded, a
    version registered before issue 14), for the score step's output: {"recorded": bool, "changes": [...],
    "summary": "..."} (and "now": tonight's versions)."""
    now = current_environment()
    if recorded is None:
        return {"recorded": False, "changes": [], "now": now, "summary": f"not recorded for v{version_number}"}
    found = changes(recorded, now)
    summary = ("unchanged since training" if not found else "changed since training: " + ", ".join(
        f"{c['name']} {c['recorded']} -> {c['now']}" for c in found))
    return {"recorded": True, "changes": found, "now": now, "summary": f"v{version_number}: {summary}"}


def environment_alert(dataset: str, checks: dict[str, Any] | None) -> tuple[str, dict[str, Any]] | None:
    """The dependency_change alert (a sentence and its facts) when tonight's environment differs from the
    champion's; None when unchanged or not recorded. `checks`: the score step's evidence (skew.ServingChecks)."""
    env = (checks or {}).get("environment") or {}
    if not env.get("changes"):
        return None
    round_trip = (checks or {}).get("round_trip") or {}
    verified = ("re-verified on tonight's environment by the serving round trip" if round_trip.get("passed")
                else "the serving round trip did not pass on tonight's environment: nothing is published"
                if round_trip.get("passed") is False else "the serving round trip could not re-verify it")
    return (f"{dataset}: the libraries on the prediction path changed since the champion was trained "
            f"({env['summary']}); {verified}",
            {"changes": env["changes"], "round_trip": round_trip})


def shard_environment_alert(dataset: str, serving: dict[str, Any] | None) -> tuple[str, dict[str, Any]] | None:
    """The dependency_change alert for the library changes only a shard's worker saw (a night scored in shards:
    skew.sharded_night_checks tags them with their shard); None when there are none. The score task alerted for
    its own worker's changes already; this is the one alert for the other workers', sent once per night by the
    run's record, not once per shard."""
    changes = [c for c in ((serving or {}).get("environment") or {}).get("changes") or [] if c.get("shard") is not None]
    if not changes:
        return None
    trips = ((serving or {}).get("round_trip") or {}).get("shards") or {}
    verified = (f"re-verified there by the serving round trip of each of the {trips.get('checked')} shards checked"
                if trips.get("passed")
                else "a shard's serving round trip did not pass on its worker: nothing is published")
    listed = ", ".join(f"shard {c['shard']}: {c['name']} {c.get('recorded')} -> {c.get('now')}" for c in changes)
    return (f"{dataset}: the libraries on a scoring worker's prediction path differ from the champion's training "
            f"({listed}); {verified}", {"changes": changes, "round_trip": trips})
