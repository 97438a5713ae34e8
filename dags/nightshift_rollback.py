"""The manual rollback DAG, one per dataset spec: put a known-good model back in production.

    rollback -> republish_latest

Triggered by hand from the UI (or the REST API) with a reason; never scheduled.
"""

from __future__ import annotations

import logging

from airflow.sdk import DAG, Param

from include.nightshift.spec import DatasetSpec, SpecError, load_specs, specs_dir
from nightshift_airflow import rollback_operators as ops
from nightshift_airflow import runtime
from nightshift_airflow.notifiers import TaskFailureNotifier

log = logging.getLogger(__name__)

VERSION_TEXT = ("A registered version that passed the promotion gate once. Empty: the previous champion (the most "
                "recent earlier champion that served, by the audit table, and was not itself rolled back from).")
MODELS_PAGE = "nightshift/models/{dag_id}"  # plugins/nightshift_airflow/models_page.py (the "Model versions" tab)

PARAMS = {
    "version": Param(None, type=["null", "integer"], minimum=1, title="Version to restore", description=VERSION_TEXT),
    "reason": Param(type="string", minLength=3, maxLength=500, title="Reason",
                    description="Why the champion is rolled back; recorded in the audit table and on the model "
                                "version, with who triggered it and when."),
    # boolean-or-null: Airflow's trigger form marks a param whose type refuses null as required; null = on
    "republish": Param(True, type=["boolean", "null"], title="Re-publish the latest night",
                       description="Re-score the latest published night with the restored model and replace its "
                                   "partition of the predictions table."),
}


def version_param(dag_id: str) -> Param:
    """PARAMS' version, its text in markdown with a link to the page of the versions serving and restorable.

    The form is built when the DAG file is parsed, which must not ask MLflow (ARCHITECTURE.md): the page
    asks it when opened. Only description_md (no plain description): Airflow's form renders description_md
    as markdown, with the link, only when description is unset.
    """
    from airflow.sdk.configuration import conf

    base = (conf.get("api", "base_url", fallback="") or "").rstrip("/")
    page = f"{base}/{MODELS_PAGE.format(dag_id=dag_id)}"
    return Param(None, type=["null", "integer"], minimum=1, title="Version to restore",
                 description_md=f"{VERSION_TEXT} Which version serves and which ones may be restored: "
                                f"[model versions]({page}) (also this DAG's *Model versions* tab).")


def rollback_dag(spec: DatasetSpec) -> DAG:
    common = {"spec_path": spec.path}
    with DAG(
        dag_id=f"{spec.dag_id}_rollback",
        description=f"Roll back the {spec.model_name} champion (manual)",
        schedule=None,
        max_active_runs=1,
        default_args={"owner": "nightshift", "retries": 1, "retry_delay": runtime.retry_delay(),
                      "on_failure_callback": TaskFailureNotifier()},
        params={**PARAMS, "version": version_param(f"{spec.dag_id}_rollback")},
        tags=["nightshift", "rollback", spec.name],
        doc_md=f"""\
### Roll back `{spec.model_name}`

Moves the MLflow alias `champion` of `{spec.model_name}` to the version you name, or to the previous
champion (the last one that served, by `{spec.warehouse.schema}.champion_changes`), after checking that
the version exists, passed the promotion gate once, and loads and scores its reference sample. Who,
why and when go to `{spec.warehouse.schema}.champion_changes` (an intent before the alias moves, done
after) and onto the model version's tags. With
*Re-publish* on, the latest night of `{spec.warehouse.schema}.predictions` is scored again with the
restored model. Running the same rollback again changes nothing.
""",
    ) as dag:
        rollback = ops.RollbackOperator(task_id=ops.ROLLBACK, **common)
        ops.RepublishOperator(task_id=ops.REPUBLISH, rolled_back=rollback.output, **common)
    return dag


for _path, _loaded in load_specs(specs_dir()):
    if isinstance(_loaded, SpecError):
        continue  # the nightly DAG file already shows the broken (or clashing) spec as nightshift_invalid_<name>
    _dag = rollback_dag(_loaded)
    globals()[_dag.dag_id] = _dag
