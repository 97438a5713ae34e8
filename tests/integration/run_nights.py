"""Drive real Airflow DAG runs over simulated nights, from a JSON plan (run in its own process).

The integration tests run this as a subprocess so that Airflow is configured (AIRFLOW_HOME,
connections, variables) before it is imported, exactly as in the demo. Each plan step
changes the source for real (load a day, reveal labels, run SQL, drop and recreate the
empty source table) or runs the nightly DAG for a date with a conf; after each run it prints
one JSON line with the run's state, the registry's champion at that moment and its seconds.
A "move_alias" step moves the champion alias in MLflow as a person would, outside Nightshift.
A "skew_serving" step injects a preprocessing difference into the serving path (a test's fault; {} undoes it);
a "champion_environment" step records other library versions with the champion, as if it was trained with them.
A plan may name its own specs folder ("specs_dir", for NIGHTSHIFT_SPECS_DIR) and edit a spec
file in it between nights ("edit_spec"): the tasks read their spec file when they run.

    python tests/integration/run_nights.py PLAN.json    (env: NIGHTSHIFT_HOME, NIGHTSHIFT_PG_URI)
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import local_stack  # noqa: E402


def main(plan_path: str) -> int:
    plan = json.loads(Path(plan_path).read_text())
    if plan.get("specs_dir"):  # before Airflow parses the DAG files, which read the specs folder
        os.environ["NIGHTSHIFT_SPECS_DIR"] = plan["specs_dir"]
    server, _ = local_stack.start()

    import psycopg
    from psycopg import sql

    from include.nightshift import demo_data
    from include.nightshift.spec import load_spec
    from nightshift_airflow import runtime

    spec = load_spec(plan.get("spec", str(ROOT / "include" / "specs" / "churn.yaml")))
    rows = plan["rows"]
    drift = demo_data.DriftPlan(
        covariate_from=dt.date.fromisoformat(plan["covariate_from"]) if plan.get("covariate_from") else None)
    source = psycopg.connect(local_stack.database_uri(server, "source"))
    demo_data.create_source_table(source, spec.source.table)

    runner = local_stack.NightRunner(spec.dag_id)
    runners: dict[str, local_stack.NightRunner] = {}  # other DAGs of the spec, by suffix, made when first run

    for step in plan["steps"]:
        kind, arg = next(iter(step.items()))
        if kind == "load_days":  # {"from": date, "to": date, "labels": bool}
            day, last = dt.date.fromisoformat(arg["from"]), dt.date.fromisoformat(arg["to"])
            while day <= last:
                demo_data.load_day(source, day, rows, table=spec.source.table, drift=drift,
                                   with_labels=arg.get("labels", False))
                day += dt.timedelta(days=1)
        elif kind == "reveal":
            demo_data.reveal_labels(source, dt.date.fromisoformat(arg), rows, table=spec.source.table, drift=drift)
        elif kind == "sql":
            with source.transaction(), source.cursor() as cur:
                cur.execute(arg)
        elif kind == "recreate_source":  # drop the table and create it again, empty: undoes any schema change
            with source.transaction(), source.cursor() as cur:
                cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(*spec.source.table.split("."))))
            demo_data.create_source_table(source, spec.source.table)
        elif kind == "edit_spec":  # {"path": spec file, "replace": [old, new]}: the text must be there once
            path, (old, new) = Path(arg["path"]), arg["replace"]
            text = path.read_text()
            if text.count(old) != 1:
                raise ValueError(f"edit_spec: {old!r} is not in {path} exactly once")
            path.write_text(text.replace(old, new))
        elif kind == "move_alias":  # {}: a person points `champion` at another version in MLflow, outside Nightshift
            move_alias(runtime.registry(), spec.model_name)
        elif kind == "champion_environment":  # {library: version}, or {} for tonight's: what the champion was trained with
            champion_environment(runtime.registry(), spec.model_name, arg)
        elif kind == "skew_serving":  # {"feature": name, "factor": x}, or {} to undo: a serving-path difference
            skew_serving(arg)
        elif kind == "run":  # {"day": date, "conf": {...}, "env": {NAME: value, set for this run only}, "dag": suffix}
            saved = {name: os.environ.get(name) for name in arg.get("env", {})}
            os.environ.update(arg.get("env", {}))  # e.g. AIRFLOW_CONN_<ID>: a connection pointed elsewhere
            try:
                if arg.get("dag") and arg["dag"] not in runners:  # e.g. "rollback": <dag_id>_rollback
                    runners[arg["dag"]] = local_stack.NightRunner(f"{spec.dag_id}_{arg['dag']}")
                night = runners.get(arg.get("dag"), runner).run(dt.date.fromisoformat(arg["day"]), arg.get("conf", {}))
            finally:
                for name, value in saved.items():
                    if value is None:
                        del os.environ[name]
                    else:
                        os.environ[name] = value
            champion = runtime.registry().champion(spec.model_name)
            print(json.dumps({"day": night.day.isoformat(), "state": str(getattr(night.dag_run, "state", None)),
                              "run_id": getattr(night.dag_run, "run_id", None), "log": str(night.log),
                              "champion": champion.version if champion else None, "conf": arg.get("conf", {}),
                              "seconds": round(night.seconds, 1)}), flush=True)
        else:
            raise ValueError(f"unknown plan step {kind!r}")
    source.close()
    return 0


def champion_environment(registry, model_name: str, versions: dict) -> None:
    """Record other library versions with the champion (its run's serving_check/environment.json), as if it had been
    trained with them: no test can install another xgboost between two nights. {}: tonight's environment."""
    import tempfile

    from include.nightshift import environment, skew

    champion = registry.champion(model_name)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / skew.ENVIRONMENT_FILE
        path.write_text(json.dumps({**environment.current_environment(), **versions}, sort_keys=True))
        registry.log_artifact(champion.run_id, path, skew.FOLDER)
    skew._CACHE.clear()  # the nights run in this process: read the version's record again


def skew_serving(arg: dict) -> None:
    """Inject (or, given {}, remove) a preprocessing difference in the serving path, as a serving-side transform
    that drifted from training's would: scoring.serving_features scales one feature by a factor. The runs are
    dag.test runs in this process, so the tasks see it (skew.py must catch it before anything is published)."""
    from include.nightshift import scoring

    original = scoring.__dict__.setdefault("_unskewed_features", scoring.serving_features)
    if not arg:
        scoring.serving_features = original
        return

    def skewed(chunk, spec):
        features = original(chunk, spec)
        features[arg["feature"]] = features[arg["feature"]] * arg["factor"]
        return features
    scoring.serving_features = skewed


def move_alias(registry, model_name: str) -> None:
    """What the MLflow UI's alias editor does: `champion` onto another version (the first, else the newest other)."""
    current = registry.champion(model_name).version
    versions = sorted(int(v.version) for v in registry.client.search_model_versions(f"name = '{model_name}'"))
    target = next(v for v in [versions[0], *reversed(versions)] if v != current)
    registry.client.set_registered_model_alias(model_name, "champion", str(target))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
