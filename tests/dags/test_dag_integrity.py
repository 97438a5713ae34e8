"""Every DAG file imports cleanly, fast, without heavy libraries, with sane defaults."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("pandas", "mlflow", "evidently", "great_expectations", "xgboost", "sklearn", "pyarrow")


def _run(code: str, specs_dir: Path | None = None) -> str:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'plugins'}",
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags")}
    if specs_dir:
        env["NIGHTSHIFT_SPECS_DIR"] = str(specs_dir)
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


LOAD = """
    import time, sys, json
    import airflow.sdk  # the floor every DAG file pays
    from airflow.dag_processing.dagbag import DagBag
    t = time.perf_counter()
    bag = DagBag(dag_folder="dags")
    took = time.perf_counter() - t
    heavy = sorted({m.split(".")[0] for m in sys.modules} & set(%r))
    print(json.dumps({"errors": {k: str(v) for k, v in bag.import_errors.items()}, "took": took, "heavy": heavy,
        "dags": {d.dag_id: {"tags": sorted(d.tags), "tasks": [t.task_id for t in d.tasks],
                            "retries": [t.retries for t in d.tasks], "max_active_runs": d.max_active_runs,
                            "doc": bool(d.doc_md), "params": sorted(d.params.keys())}
                 for d in bag.dags.values()}}))
""" % (HEAVY,)


@pytest.fixture(scope="module")
def bag() -> dict:
    import json

    return json.loads(_run(LOAD).strip().splitlines()[-1])


def test_dags_import_without_errors(bag):
    assert bag["errors"] == {}
    assert "nightshift_churn" in bag["dags"]


def test_one_dag_per_spec(bag):
    names = {yaml.safe_load(p.read_text())["name"] for p in (ROOT / "include" / "specs").glob("*.yaml")}
    assert {f"nightshift_{n}" for n in names} <= set(bag["dags"])


def test_dag_files_are_light(bag):
    assert bag["heavy"] == [], f"DAG parsing imported heavy libraries: {bag['heavy']}"
    # Parsing every DAG file beyond airflow.sdk itself.
    assert bag["took"] < 2.0, f"parsing took {bag['took']:.2f} s"


def test_sane_defaults(bag):
    for dag_id, dag in bag["dags"].items():
        if dag_id.startswith("nightshift_invalid_"):
            continue
        assert "nightshift" in dag["tags"], dag_id
        assert dag["max_active_runs"] == 1, dag_id
        assert dag["doc"], dag_id
        if dag_id.endswith("_rollback"):
            continue
        assert {"force_retrain", "promotion_policy", "dry_run", "note", "run_date"} <= set(dag["params"])
        assert max(dag["retries"]) >= 1, dag_id


def test_pipeline_order_has_no_cycles_and_reads_like_the_diagram():
    out = _run("""
        from airflow.dag_processing.dagbag import DagBag
        from airflow.sdk.definitions._internal.abstractoperator import AbstractOperator
        dag = DagBag(dag_folder="dags").dags["nightshift_churn"]
        order = [t.task_id for t in dag.topological_sort()]
        print(",".join(order))
        for t in dag.tasks:
            print(t.task_id, sorted(t.downstream_task_ids), str(getattr(t.trigger_rule, "value", t.trigger_rule)))
    """)
    lines = out.strip().splitlines()
    order = next(l for l in lines if "," in l and " " not in l).split(",")
    pos = {t: i for i, t in enumerate(order)}
    for a, b in [("snapshot", "validate"), ("validate", "drift"), ("validate", "monitor"), ("drift", "decide"),
                 ("decide", "train"), ("train", "evaluate"), ("evaluate", "score"), ("decide", "no_retrain_needed"),
                 ("score", "plan_shards"), ("plan_shards", "score_shard"), ("score_shard", "publish"),
                 ("score", "publish"), ("publish", "record_run")]:
        assert pos[a] < pos[b], (a, b)
    rules = {l.split(" ")[0]: l.rsplit(" ", 1)[1] for l in lines if " [" in l}
    # the champion serves whatever the retrain branch did: score waits for it in any state, and
    # decide runs when validate passed even if one of drift and monitor failed
    assert rules["score"] == "all_done" and "validate" in _upstream(lines, "score")
    assert rules["decide"] == rules["evaluate"] == "all_done_min_one_success"
    assert "decide" in _downstream(lines, "validate")
    assert any(l.startswith("record_run ") and "all_done" in l for l in lines)
    # publish runs after the shards, or without them when the night was scored whole (score_shard skipped)
    assert rules["publish"] == "none_failed_min_one_success" and "publish" in _downstream(lines, "score_shard")


def _downstream(lines: list[str], task: str) -> str:
    return next(l for l in lines if l.startswith(task + " [")).split(" ", 1)[1]


def _upstream(lines: list[str], task: str) -> list[str]:
    return [l.split(" ")[0] for l in lines if " [" in l and f"'{task}'" in l.split("]")[0]]


def test_invalid_spec_becomes_an_explaining_dag_without_hiding_good_ones(tmp_path):
    import json
    import shutil

    shutil.copy(ROOT / "include" / "specs" / "churn.yaml", tmp_path / "churn.yaml")
    bad = yaml.safe_load((ROOT / "include" / "specs" / "churn.yaml").read_text())
    bad["name"] = "broken"
    bad["promotion"]["flor"] = bad["promotion"].pop("floor")
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(bad))
    out = json.loads(_run(LOAD, specs_dir=tmp_path).strip().splitlines()[-1])
    assert "nightshift_churn" in out["dags"]
    assert "nightshift_invalid_broken" in out["dags"]


def test_trigger_form_params_are_typed_described_and_refuse_bad_values():
    import json

    out = _run("""
        import copy, json
        from airflow.dag_processing.dagbag import DagBag
        dag = DagBag(dag_folder="dags").dags["nightshift_churn"]
        schemas = {k: {**dag.params.get_param(k).schema, "description": dag.params.get_param(k).description}
                   for k in dag.params}
        refused = {}
        for conf in ({"promotion_policy": "sometimes"}, {"force_retrain": "yes"}, {"dry_run": 1},
                     {"run_date": "31/12/2026"}, {"run_date": "2026-2-1"}, {"note": "x" * 501}):
            params = copy.deepcopy(dag.params)
            try:
                params.update(conf)
                params.validate()
                refused[json.dumps(conf)] = None
            except Exception as exc:
                refused[json.dumps(conf)] = str(exc)
        ok = copy.deepcopy(dag.params)
        ok.update({"promotion_policy": "force", "run_date": "2026-03-01", "note": "why"})
        print(json.dumps({"schemas": schemas, "refused": refused, "ok": ok.validate()}))
    """)
    result = json.loads(out.strip().splitlines()[-1])
    for name, schema in result["schemas"].items():
        assert schema.get("title") and schema.get("description"), name  # the form explains every field
    assert result["schemas"]["promotion_policy"]["enum"] == ["auto", "never", "force"]
    # boolean-or-null: the trigger form marks every param whose type refuses null as required
    assert result["schemas"]["force_retrain"]["type"] == ["boolean", "null"]
    # a text field with a pattern, not format "date" (a date picker in the browser's locale, mm/dd/yyyy)
    assert "format" not in result["schemas"]["run_date"] and "YYYY-MM-DD" in result["schemas"]["run_date"]["description"]
    for conf, error in result["refused"].items():
        assert error is not None, f"{conf} was accepted"
        assert next(iter(json.loads(conf))) in error, error  # the error names the param
    assert result["ok"]["promotion_policy"] == "force"


def test_rollback_dag_per_spec_is_manual_and_asks_for_a_reason(bag):
    dag = bag["dags"]["nightshift_churn_rollback"]
    assert dag["tasks"] == ["rollback", "republish_latest"]
    assert {"version", "reason", "republish"} <= set(dag["params"])
    out = _run("""
        import copy
        from airflow.dag_processing.dagbag import DagBag
        dag = DagBag(dag_folder="dags").dags["nightshift_churn_rollback"]
        print(type(dag.timetable).__name__)
        for conf in ({}, {"reason": "x"}, {"reason": "bad model", "version": 0}, {"reason": "bad model", "version": "v2"}):
            params = copy.deepcopy(dag.params)
            try:
                params.update(conf)
                params.validate()
                print("accepted", conf)
            except Exception as exc:
                print("refused", conf)
        params = copy.deepcopy(dag.params)
        params.update({"reason": "v7 scores everyone 0.5", "version": 3})
        print("ok", params.validate())
    """)
    assert "NullTimetable" in out.splitlines()  # never scheduled
    assert "accepted" not in out, out
    assert "'version': 3" in out


def test_steps_receive_their_inputs_as_upstream_outputs_not_by_task_id_lookups():
    out = _run("""
        from airflow.dag_processing.dagbag import DagBag
        from airflow.sdk.definitions.xcom_arg import XComArg
        dag = DagBag(dag_folder="dags").dags["nightshift_churn"]
        for t in dag.tasks:
            for name in getattr(t, "inputs", ()):
                value = getattr(t, name)
                print(t.task_id, name, value.operator.task_id if isinstance(value, XComArg) else type(value).__name__)
    """)
    wiring = {tuple(line.split()[:2]): line.split()[2] for line in out.strip().splitlines() if line.count(" ") == 2}
    assert wiring[("validate", "snapshot")] == "snapshot"
    assert wiring[("decide", "drift")] == "drift" and wiring[("decide", "monitor")] == "monitor"
    assert wiring[("train", "decision")] == "decide" and wiring[("evaluate", "trained")] == "train"
    assert wiring[("publish", "scored")] == "score"
    assert {wiring[("record_run", n)] for n in ("snapshot", "validation", "drift", "decision", "trained", "verdict",
                                                 "shards", "published")} == {"snapshot", "validate", "drift", "decide",
                                                                             "train", "evaluate", "score_shard",
                                                                             "publish"}
    plugins = "".join(p.read_text() for p in (ROOT / "plugins").rglob("*.py"))
    # The one pull by task id (base._pull): record_run reads how a *failed* task failed (base.pushed_errors; a
    # failed task has no output to wire) and what each task cost (base.pushed_costs), never a step's output.
    assert plugins.count("_pull(context, task_id, ERROR_KEY)") == 1
    assert plugins.count("_pull(context, task_id, task_costs.COST_KEY)") == 1
    plugins = plugins.replace("xcom_pull(task_ids=task_id, key=key,", "", 1)
    assert "xcom_pull(task_ids" not in plugins  # no step digs another's output out by its task id
