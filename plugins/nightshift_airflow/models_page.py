"""The model-versions page: which version of a model serves, and which the rollback DAG may restore.

    GET /nightshift/models/               every Nightshift model the user may read
    GET /nightshift/models/<dag_id>       one model (the nightly or the rollback DAG of a dataset): the
                                          "Model versions" tab on each DAG, and the link in the rollback
                                          form's "Version to restore"

Why a page and not the form itself: the rollback DAG's trigger form is built from Param objects
when the DAG processor parses the DAG file, every few seconds, and a DAG file must not call MLflow
(ARCHITECTURE.md): an enum of versions read there would slow every parse, fail with MLflow down,
and be stale by the time a person opens the form. This page asks the registry when it is opened,
with the rule a rollback applies (versions.version_choices), so what it lists is what the rollback
accepts at that moment; the form's field links here.

Registered on the reports app (web.app) by plugin.py, behind the same Airflow login and the same
per-dataset access check as the reports (web.airflow_user, web.may_read). Only the registry is read
(the reports app never connects to the warehouse).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import HTMLResponse

from nightshift_airflow.web import DAG_PREFIX, ROLLBACK_SUFFIX, _notice, _page, airflow_user, may_read

router = APIRouter()
PAGE = "models.html"


def model_of(dag_id: str) -> str | None:
    """The registered model of a Nightshift DAG (the nightly DAG's id is its model's name; the rollback DAG
    adds _rollback); None for any other DAG."""
    model = dag_id.removesuffix(ROLLBACK_SUFFIX)
    if not model.startswith(DAG_PREFIX) or model == DAG_PREFIX or "/" in model:
        return None
    return model


def _registry():
    from nightshift_airflow import runtime

    try:
        return runtime.registry()
    except runtime.SettingMissing as error:
        raise HTTPException(status_code=503, detail=str(error)) from error


@router.get("/models/{dag_id}", response_class=HTMLResponse)
def model_versions(dag_id: str, user: Any = Depends(airflow_user)) -> HTMLResponse:
    """Serving and restorable versions of the DAG's model, newest first."""
    from include.nightshift.versions import version_choices

    model = model_of(dag_id)
    if model is None:
        return _notice("Model versions", f"{dag_id} is not a Nightshift DAG.")
    if not may_read(user, model.removeprefix(DAG_PREFIX)):
        raise HTTPException(status_code=403, detail=f"no access to the model of {model}")
    choices = version_choices(_registry(), model)
    if not choices["versions"]:
        return _notice(f"Model versions of {model}", "No version registered yet: the first nightly run trains one.")
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC, from the MLflow registry")
    return _page(PAGE, title=f"Model versions of {model}", when=when, **choices)


@router.get("/models/", response_class=HTMLResponse)
def all_models(user: Any = Depends(airflow_user)) -> HTMLResponse:
    """Every registered Nightshift model the user may read, each linking to its page."""
    names = sorted(m.name for m in _registry().client.search_registered_models()
                   if model_of(m.name) == m.name and may_read(user, m.name.removeprefix(DAG_PREFIX)))
    if not names:
        return _notice("Model versions", "No Nightshift model registered yet: the first nightly run trains one.")
    return _page("models_index.html", title="Model versions", models=names)
