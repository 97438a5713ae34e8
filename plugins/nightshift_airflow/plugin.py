"""The Airflow plugin: mounts the reports app in the API server and adds it to the UI.

Airflow imports every .py file of the plugins folder and registers the AirflowPlugin
subclasses it finds, so this class must be defined in this file only (a second module
importing it would register it twice). Check it is loaded with `airflow plugins`; the UI
shows it under Admin > Plugins.

- `fastapi_apps`: web.app under /nightshift (Airflow 3.1+ keys: app, url_prefix, name).
- `external_views` (Airflow 3.1+): "Nightshift reports" under Browse, and a "Model health" and a
  "Model versions" tab on each DAG (models_page.router, added to web.app here). All have a `url_route`,
  so the UI shows them inside its own page (an iframe)
  instead of a new tab; `href` has no leading slash, so it resolves against the UI's base URL;
  `{DAG_ID}` is filled in by the UI for views on a DAG.
- `operator_extra_links`: listed so that `airflow plugins` shows them. Airflow 3 does not need
  this: the buttons come from each operator's own `operator_extra_links`. Their `operators`
  stay empty on purpose: a plugin link attached to an operator would be evaluated in the API
  server, where the task SDK's XCom access they use is not available.
- `listeners`: run_note writes each Nightshift run's note (its night and conf) when the scheduler
  starts the run.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from nightshift_airflow import run_note
from nightshift_airflow.links import ALL_LINKS, URL_PREFIX
from nightshift_airflow.models_page import router as models_router
from nightshift_airflow.web import app

if not any(getattr(route, "path", None) == "/models/" for route in app.routes):  # once, even if imported twice
    app.include_router(models_router)  # /nightshift/models/...: the "Model versions" tab and the rollback form's link

HREF = URL_PREFIX.strip("/")


class NightshiftPlugin(AirflowPlugin):
    name = "nightshift"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "Nightshift reports"}]
    external_views = [
        {"name": "Nightshift reports", "href": f"{HREF}/", "destination": "nav", "category": "browse",
         "url_route": "nightshift-reports"},
        {"name": "Model health", "href": f"{HREF}/health/{{DAG_ID}}", "destination": "dag",
         "url_route": "nightshift-health"},
        {"name": "Model versions", "href": f"{HREF}/models/{{DAG_ID}}", "destination": "dag",
         "url_route": "nightshift-models"},  # serving and restorable versions (models_page.py)
    ]
    operator_extra_links = [link() for link in ALL_LINKS]
    listeners = [run_note]  # the run's note: the night it processed and its conf (run_note.py)
