"""Spec files that share a name or a warehouse schema each become an invalid-spec DAG naming the other.

Before, two files with the same `name` made two DAGs with one dag_id: the second silently replaced
the first, and both wrote the same registered model and warehouse schema. The DAG folder is parsed
by a real DagBag in a subprocess (as in test_dag_integrity), with NIGHTSHIFT_SPECS_DIR pointed at
a tmp folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from test_dag_integrity import ROOT, _run

CHURN = ROOT / "include" / "specs" / "churn.yaml"

INVALID = """
    import json
    from airflow.dag_processing.dagbag import DagBag
    bag = DagBag(dag_folder="dags")
    print(json.dumps({
        "errors": {k: str(v) for k, v in bag.import_errors.items()},
        "dags": sorted(bag.dags),
        "invalid": {d.dag_id: {"doc": d.doc_md, "explains": d.get_task("explain").op_args[0]}
                    for d in bag.dags.values() if "invalid-spec" in d.tags},
    }))
"""


def _parse(specs: Path) -> dict[str, Any]:
    return json.loads(_run(INVALID, specs_dir=specs).strip().splitlines()[-1])


def _write(folder: Path, file_name: str, **changes: Any) -> None:
    data = yaml.safe_load(CHURN.read_text())
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        section = data
        for part in parents:
            section = section[part]
        section[last] = value
    (folder / file_name).write_text(yaml.safe_dump(data, sort_keys=False))


def test_two_copies_of_a_spec_each_become_an_invalid_dag_naming_both_files(tmp_path):
    (tmp_path / "churn.yaml").write_text(CHURN.read_text())
    (tmp_path / "churn_copy.yaml").write_text(CHURN.read_text())
    out = _parse(tmp_path)
    assert out["errors"] == {}
    assert "nightshift_churn" not in out["dags"]  # neither copy wins silently
    assert "nightshift_churn_rollback" not in out["dags"]  # nor does either one's rollback DAG
    assert set(out["invalid"]) == {"nightshift_invalid_churn", "nightshift_invalid_churn_copy"}
    for dag_id, other in (("nightshift_invalid_churn", "churn_copy.yaml"), ("nightshift_invalid_churn_copy",
                                                                           "churn.yaml")):
        own = dag_id.removeprefix("nightshift_invalid_") + ".yaml"
        explains = out["invalid"][dag_id]["explains"]
        assert explains.splitlines() == [
            f"{own}: name: 'churn' is also the name of {other} (spec files must not share it)",
            f"{own}: warehouse.schema: 'churn' is also the warehouse.schema of {other} (spec files must not share it)",
        ]
        assert explains in out["invalid"][dag_id]["doc"]


def test_a_shared_warehouse_schema_is_refused_and_other_specs_still_load(tmp_path):
    _write(tmp_path, "a.yaml", name="alpha")
    _write(tmp_path, "b.yaml", name="beta")  # both keep warehouse.schema: churn
    _write(tmp_path, "c.yaml", name="gamma", warehouse__schema="gamma")
    out = _parse(tmp_path)
    assert out["errors"] == {}
    assert "nightshift_gamma" in out["dags"] and "nightshift_invalid_c" not in out["dags"]
    assert not {"nightshift_alpha", "nightshift_beta"} & set(out["dags"])
    assert out["invalid"]["nightshift_invalid_a"]["explains"] == (
        "a.yaml: warehouse.schema: 'churn' is also the warehouse.schema of b.yaml (spec files must not share it)")
    assert "b.yaml: warehouse.schema: 'churn' is also the warehouse.schema of a.yaml" in (
        out["invalid"]["nightshift_invalid_b"]["explains"])


def test_a_broken_spec_explains_itself_once_naming_its_file(tmp_path):
    """The explaining task's message is the loader's, each line starting with the file name once."""
    text = CHURN.read_text().replace("  floor: 0.70", "  flor: 0.70", 1).replace("name: churn", "name: broken", 1)
    (tmp_path / "broken.yaml").write_text(text)
    (tmp_path / "churn.yaml").write_text(CHURN.read_text())
    out = _parse(tmp_path)
    assert "nightshift_churn" in out["dags"]
    lines = out["invalid"]["nightshift_invalid_broken"]["explains"].splitlines()
    assert lines[0].startswith("broken.yaml: promotion.flor: unknown key; did you mean floor?"), lines
    assert len(lines) == 1, lines  # the typo is the one problem: floor is not reported missing besides
