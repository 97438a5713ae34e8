"""The champion alias moved in MLflow, outside Nightshift, and what the next run and a person see.

Someone registers a copy of the serving model and points `champion` at it with MLflow's client,
the two calls the MLflow UI makes ("Register model", then the alias editor). The next run, here the
rollback a person starts to undo it, finds the move before anything else: one `external` row in
champion_changes, an external_change alert in its task log, a row in model_versions; then it restores
the version that served. The rollback form links to the Model versions page, which names the version
serving and those that may be restored (headless Chromium; screenshots kept with the others).

Cheap on purpose: one rollback run without republish, no extra night; the champion and the
"previous champion" the other modules' rollbacks expect are left as they were.
"""

from __future__ import annotations

import pytest

from include.nightshift.external import ACTOR

from .airflow_stack import USERNAME, AirflowStack, Api
from .scenario import ROLLBACK, screenshot
from .test_e2e_ui import log_in, open_trigger_form

pytestmark = pytest.mark.e2e

MODEL = "nightshift_churn"
RUN = "e2e_alias_undo"


def query(conn, text: str, args: tuple = ()) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(text, args)
        return cur.fetchall()


@pytest.fixture(scope="module")
def moved_and_undone(first_night: dict, api: Api, registry, warehouse) -> dict:
    """A copy of the champion registered and made champion in MLflow, then a rollback to the one that served."""
    served = registry.champion(MODEL)
    files = registry.client.get_model_version_download_uri(MODEL, str(served.version))  # the model's artifacts
    copy = registry.client.create_model_version(MODEL, source=files, run_id=served.run_id)
    registry.client.set_registered_model_alias(MODEL, "champion", copy.version)
    api.unpause(ROLLBACK)
    api.trigger(ROLLBACK, {"version": served.version, "reason": "e2e: undo a move made in MLflow",
                           "republish": False}, run_id=RUN)
    (run,) = api.wait(ROLLBACK, [RUN])
    return {"served": served.version, "copy": int(copy.version), "run": run}


def test_a_move_in_mlflow_is_recorded_once_alerted_and_undone_by_the_next_run(moved_and_undone, api, registry,
                                                                             warehouse, stack: AirflowStack):
    served, copy, run = moved_and_undone["served"], moved_and_undone["copy"], moved_and_undone["run"]
    assert run["state"] == "success", api.task_states(ROLLBACK, RUN)
    assert registry.champion(MODEL).version == served
    rows = query(warehouse, "SELECT event, from_version, to_version, actor, state FROM churn.champion_changes "
                            "WHERE dag_run_id = %s ORDER BY changed_at", (RUN,))
    assert rows == [("external", served, copy, ACTOR, "done"), ("rollback", copy, served, USERNAME, "done")]
    assert query(warehouse, "SELECT count(*) FROM churn.champion_changes WHERE event = 'external'") == [(1,)]

    log = stack.home / "airflow" / "logs" / f"dag_id={ROLLBACK}" / f"run_id={RUN}" / "task_id=rollback"
    text = "".join(p.read_text() for p in sorted(log.glob("attempt=*.log")))
    assert f"nightshift external_change: {MODEL}: champion moved outside Nightshift, v{served} -> v{copy}" in text
    assert "NEVER passed the promotion gate" in text

    versions = dict(query(warehouse, "SELECT version, (blessed, champion_from IS NOT NULL, champion_to IS NULL)::text "
                                     "FROM churn.model_versions WHERE model_name = %s", (MODEL,)))
    assert versions[copy] == "(,t,f)"  # never judged here; served from the move until the rollback
    assert versions[served] == "(t,t,t)"  # blessed; serving again since the rollback


def test_the_rollback_form_links_to_the_versions_serving_and_restorable(moved_and_undone, browser_page, stack,
                                                                      registry):
    from include.nightshift.versions import version_choices

    choices = version_choices(registry, MODEL)
    page = browser_page
    log_in(page, stack, f"/dags/{ROLLBACK}")
    dialog = open_trigger_form(page)
    link = dialog.get_by_role("link", name="model versions")
    link.wait_for()
    screenshot(page, "alias-01-rollback-form-links-to-versions")
    href = link.get_attribute("href")
    assert href.endswith(f"/nightshift/models/{ROLLBACK}"), href

    page.goto(href if href.startswith("http") else stack.base_url + href)
    page.locator("#versions").wait_for()
    screenshot(page, "alias-02-model-versions-page")
    assert page.inner_text("#serving").startswith(f"Serving: v{choices['serving']}")
    restorable = ", ".join(f"v{v}" for v in choices["restorable"]) or "none"
    assert page.inner_text("#restorable") == f"May be restored: {restorable}"
    assert f"v{moved_and_undone['served']}" not in restorable.split(", ")  # serving: nothing to restore
    rows = page.locator("#versions tbody tr").all_inner_texts()
    copy = next(r for r in rows if r.startswith(f"v{moved_and_undone['copy']}\t"))
    assert "never passed the promotion gate" in copy and "\t–\t" in copy  # not trained by any night

    page.goto(f"{stack.base_url}/dags/{ROLLBACK}/plugin/nightshift-models")  # the DAG's Model versions tab
    page.frame_locator("iframe").locator("#versions").wait_for()
    screenshot(page, "alias-03-model-versions-tab")
