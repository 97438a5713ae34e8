"""Nightshift's reports over HTTP, inside the Airflow API server (mounted at /nightshift by plugin.py).

The validation, drift, evaluation and model-health pages live in the artifact store (a local
folder or s3://...), which a browser on the Airflow UI cannot open; this small app streams them
from the store so that the task buttons (links.py) and the UI's "Nightshift reports" menu entry
have an http address:

    GET /nightshift/                       the per-night index: each dataset's newest nights, their status
                                           and the reports of the run that published each (others under it)
    GET /nightshift/nights/<dataset>       the same for every night the dataset's index holds
    GET /nightshift/reports/<path>         a file under `reports/` of the store (a folder gives a listing)
    GET /nightshift/health/<dag_id>        the DAG's model-health page (the "Model health" tab on a DAG)

Reports are kept per DAG run (reports/<dataset>/<night>/<run>/, include/nightshift/artifacts.run_folder).
Which run speaks for a night comes from the warehouse through reports/<dataset>/nights.json, which the
record task writes from pipeline_runs and run_attempts (include/nightshift/report_index.py): the app
itself never connects to the warehouse. A run folder the index does not know yet (a run still going,
or whose record is pending) is listed as not recorded; pages a night kept in its own folder (written
before reports were kept per run) are listed as such.

Only `reports/` is served: a path with `..`, `.`, an empty segment, a backslash or a leading
slash is refused (400) before the store is touched; a missing file is 404.

Access: every request needs a signed-in Airflow user. Airflow 3.3 does not protect plugin apps
by itself, so each route depends on Airflow's own `get_user` (airflow.api_fastapi.core_api.security:
the `Authorization: Bearer` token, else the UI's `_token` cookie, which the browser sends here
because the app shares the UI's origin and cookie path). A browser without a session is sent to
the login page; then a dataset's reports are shown only to users the auth manager lets read the
task logs of its DAG (`nightshift_<dataset>`): the reports show the data, as the logs do.

Report pages come from Great Expectations and Evidently and embed values from the source data,
so they are served with `Content-Security-Policy: sandbox`: their scripts run (Evidently needs
them) in an opaque origin that cannot read the Airflow UI or call its API with the user's
session. The cost, seen in Chromium: the browser sends no cookie with a sandboxed page's own
sub-requests, so a page's local images (the GX favicon) do not load; the pages are otherwise
self-contained or load their styles from CDNs, and their links (top-level navigations) work.

The app's own pages (the index, folder listings, notices) come from the same Jinja2 templates
and stylesheet as the reports (include/nightshift/reports.py, autoescaped). The report pages it
streams use what the sandbox CSP leaves allowed: inline styles and ``data:`` images (charts).

This module is imported by every Airflow process that loads plugins (task runners too), so
Airflow's server modules are imported inside the functions that need them, not here.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, StreamingResponse

from nightshift_airflow.links import REPORTS_FOLDER

log = logging.getLogger(__name__)

DAG_PREFIX = "nightshift_"  # DatasetSpec.dag_id is f"nightshift_{name}"
CHUNK = 1 << 20
SANDBOX = "sandbox allow-scripts allow-popups allow-popups-to-escape-sandbox allow-downloads"
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# The pages of one night, in the order the index shows them (the first existing one per label).
NIGHT_PAGES = (
    ("validation", ("validation/current/validation.html",)),
    ("validation (labelled)", ("validation/labelled/validation.html",)),
    ("drift", ("drift.html",)),
    ("evaluation", ("evaluation.html", "evaluation.json")),
)
HEALTH_PAGE = "health.html"
RUN_INDEX = "nights.json"  # include/nightshift/artifacts.RUN_INDEX (not imported: this module loads in every process)
FRONT_NIGHTS = 14  # nights per dataset on the front page; /nightshift/nights/<dataset> shows them all
LEGACY = "(night folder, before reports were kept per run)"
STATUS_CLASS = {"published": "pass", "failed": "fail", "no model": "fail", "dry run": "skip",
                "dry run only": "skip", "replaced": "skip", "not recorded": "skip"}
ROLLBACK_SUFFIX = "_rollback"  # dags/nightshift_rollback.py: f"{spec.dag_id}_rollback"

app = FastAPI(title="Nightshift reports", docs_url=None, redoc_url=None, openapi_url=None)


class LoginRequired(Exception):
    """No Airflow session on a browser request: answered with a redirect to the login page."""


@app.exception_handler(LoginRequired)
def _to_login(request: Request, _: LoginRequired) -> RedirectResponse:
    from airflow.api_fastapi.app import get_auth_manager

    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(get_auth_manager().get_url_login(next_url=here), status_code=303)


async def airflow_user(request: Request) -> Any:
    """The signed-in Airflow user, validated by Airflow's own API dependency (JWT in header or cookie)."""
    from airflow.api_fastapi.core_api.security import bearer_scheme, get_user

    credentials = await bearer_scheme(request)
    try:
        return await get_user(request, _oauth_token=None, bearer_credentials=credentials)
    except HTTPException as error:
        if error.status_code == 401 and credentials is None:
            raise LoginRequired() from error
        raise


def may_read(user: Any, dataset: str) -> bool:
    """Whether the auth manager lets `user` read the task logs of the dataset's DAG."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails

    return get_auth_manager().is_authorized_dag(
        method="GET", access_entity=DagAccessEntity.TASK_LOGS, details=DagDetails(id=DAG_PREFIX + dataset),
        user=user)


def artifact_store():
    """The store named by Variable `nightshift_artifact_root`, read per request (a change needs no restart)."""
    from nightshift_airflow import runtime

    try:
        return runtime.artifact_store()
    except runtime.SettingMissing as error:
        raise HTTPException(status_code=503, detail=str(error)) from error


def report_parts(path: str) -> list[str]:
    """The segments of a path under reports/; refuses anything that could leave that folder."""
    if path.startswith("/") or "\\" in path or "\x00" in path:
        raise HTTPException(status_code=400, detail=f"not a report path: {path!r}")
    parts = path.removesuffix("/").split("/") if path not in ("", "/") else []
    if any(part in ("", ".", "..") for part in parts):
        raise HTTPException(status_code=400, detail=f"not a report path: {path!r}")
    return parts


def _info(store, url: str) -> dict | None:
    """fsspec's description of a key (type, size), or None when there is nothing there."""
    try:
        return store.fs.info(store.fs._strip_protocol(url))
    except FileNotFoundError:
        return None


def _listing(store, url: str) -> list[dict]:
    """A folder's entries with their base names (an empty list when the folder does not exist)."""
    path = store.fs._strip_protocol(url)
    if not store.fs.exists(path):
        return []
    return [{**e, "name": e["name"].rstrip("/").rsplit("/", 1)[-1]} for e in store.fs.ls(path, detail=True)]


def _exists(store, *parts: str) -> bool:
    return store.exists(store.url(REPORTS_FOLDER, *parts))


def _page(template: str, **context: Any) -> HTMLResponse:
    """One of the app's own pages from its template (every value escaped there)."""
    from include.nightshift.reports import render

    return HTMLResponse(render(template, **context), headers={"Cache-Control": "no-cache"})


def _notice(title: str, text: str) -> HTMLResponse:
    from include.nightshift.reports import message_page

    return HTMLResponse(message_page(title, [text]), headers={"Cache-Control": "no-cache"})


def _stream(store, url: str) -> Iterator[bytes]:
    with store.open(url) as handle:
        while block := handle.read(CHUNK):
            yield block


def _newest_first(names: list[str]) -> list[str]:
    """Night folders newest first; anything else alphabetically."""
    return sorted(names, reverse=bool(names) and all(DATE.match(n) for n in names))


@app.get("/", response_class=HTMLResponse)
def index(user: Any = Depends(airflow_user)) -> HTMLResponse:
    """Each dataset the user may read: its model-health page and its newest nights (status, run, reports)."""
    store = artifact_store()
    datasets = sorted(e["name"] for e in _listing(store, store.url(REPORTS_FOLDER)) if e["type"] == "directory")
    rows = [_dataset(store, dataset, FRONT_NIGHTS, "") for dataset in datasets if may_read(user, dataset)]
    if not rows:
        return _notice("Nightshift reports", "No reports yet: they appear after the first nightly run.")
    return _page("reports_index.html", title="Nightshift reports", datasets=rows)


@app.get("/nights/{dataset}", response_class=HTMLResponse)
def nights(dataset: str, user: Any = Depends(airflow_user)) -> HTMLResponse:
    """Every night of one dataset's index, as the front page shows its newest."""
    if len(report_parts(dataset)) != 1:
        raise HTTPException(status_code=400, detail=f"not a dataset: {dataset!r}")
    if not may_read(user, dataset):
        raise HTTPException(status_code=403, detail=f"no access to the reports of {DAG_PREFIX + dataset}")
    store = artifact_store()
    if not _exists(store, dataset):
        raise HTTPException(status_code=404, detail=f"no reports of {dataset}")
    return _page("reports_index.html", title=f"Nightshift reports: {dataset}",
                 datasets=[_dataset(store, dataset, None, "../")])


def _dataset(store, dataset: str, limit: int | None, base: str) -> dict[str, Any]:
    """What the index shows of one dataset: its health page, and each night (newest first, at most `limit`)
    with its status, the run that speaks for it and the dataset's other runs of that night.
    `base`: the way from the page to /nightshift/ (every address on the page is relative)."""
    folder = f"{base}{REPORTS_FOLDER}/{quote(dataset)}"  # a folder name is data: quoted into the address
    recorded = {n["night"]: n for n in _read_index(store, dataset)}
    days = sorted(set(recorded) | {e["name"] for e in _listing(store, store.url(REPORTS_FOLDER, dataset))
                                   if e["type"] == "directory" and DATE.match(e["name"])}, reverse=True)
    shown = days[:limit] if limit else days
    return {"name": dataset, "folder": f"{folder}/", "total": len(days),
            "health": f"{folder}/{HEALTH_PAGE}" if _exists(store, dataset, HEALTH_PAGE) else None,
            "all": f"{base}nights/{quote(dataset)}" if len(shown) < len(days) else None,
            "nights": [_night(store, folder, dataset, day, recorded.get(day)) for day in shown]}


def _read_index(store, dataset: str) -> list[dict[str, Any]]:
    """The nights of reports/<dataset>/nights.json ([] when there is none yet, or it cannot be read)."""
    url = store.url(REPORTS_FOLDER, dataset, RUN_INDEX)
    if not store.exists(url):
        return []
    try:
        return list(json.loads(store.read_text(url))["nights"])
    except (ValueError, KeyError, TypeError, OSError) as error:
        log.warning("%s: the report index cannot be read (%s); nights are shown from the folders only", url, error)
        return []


def _night(store, folder: str, dataset: str, day: str, recorded: dict[str, Any] | None) -> dict[str, Any]:
    """One night: its status, its run of record with that run's pages, then its other runs with theirs."""
    files = _night_files(store, dataset, day)
    recorded = recorded or {"status": "not recorded", "run": None, "runs": []}
    here = f"{folder}/{day}"
    known = [r for r in [recorded.get("run"), *recorded.get("runs", [])] if r]
    named = {r["folder"] for r in known}  # a run the index does not know yet is likely the newest: first
    others = [_run(here, {"run": name, "folder": name, "status": "not recorded"}, files)
              for name in sorted({p.split("/", 1)[0] for p in files if "/" in p} - named - {"validation"})]
    others += [_run(here, r, files, DAG_PREFIX + dataset) for r in recorded.get("runs", [])]
    legacy = _pages(here, "", files)
    if legacy:
        others.append({"run": LEGACY, "href": None, "status": "", "css": "", "note": None, "pages": legacy})
    run = _run(here, recorded["run"], files, DAG_PREFIX + dataset) if recorded.get("run") else None
    return {"night": day, "status": recorded["status"], "css": STATUS_CLASS.get(recorded["status"], ""),
            "run": run, "others": others}


def _run(here: str, run: dict[str, Any], files: set[str], dag_id: str | None = None) -> dict[str, Any]:
    """One run's row; with `dag_id` (a run the index knows by its exact id) a link to its page in the Airflow UI."""
    from airflow.configuration import conf

    from include.nightshift.reports import airflow_run_url

    href = airflow_run_url(conf.get("api", "base_url", fallback=None), dag_id, run["run"]) if dag_id else None
    return {"run": run["run"], "href": href, "status": run.get("status", ""),
            "css": STATUS_CLASS.get(run.get("status"), ""), "note": run.get("note"),
            "pages": _pages(f"{here}/{quote(run['folder'])}", f"{run['folder']}/", files)}


def _night_files(store, dataset: str, day: str) -> set[str]:
    """Every file under the night's folder, relative to it: one recursive listing per night (one request
    on object storage), not one per page."""
    root = store.fs._strip_protocol(store.url(REPORTS_FOLDER, dataset, day)).rstrip("/")
    try:
        found = store.fs.find(root)
    except FileNotFoundError:
        return set()
    return {path[len(root):].lstrip("/") for path in found if path.startswith(root)}


def _pages(href: str, prefix: str, files: set[str]) -> list[tuple[str, str]]:
    """(label, address) of each report among `files` under `prefix`, the first existing candidate per label."""
    found = []
    for label, candidates in NIGHT_PAGES:
        page = next((c for c in candidates if prefix + c in files), None)
        if page:
            found.append((label, f"{href}/{page}"))
    return found


@app.get("/health/{dag_id}")
def health(dag_id: str, user: Any = Depends(airflow_user)):
    """The DAG's model-health page, for the "Model health" tab the plugin adds to every DAG."""
    dataset = dag_id.removeprefix(DAG_PREFIX)
    if not dag_id.startswith(DAG_PREFIX) or not report_parts(dataset):
        return _notice("Model health", f"{dag_id} is not a Nightshift DAG.")
    owner = dataset.removesuffix(ROLLBACK_SUFFIX)  # the rollback DAG shows its dataset's page
    if owner != dataset and not _exists(artifact_store(), dataset, HEALTH_PAGE):
        dataset = owner
    if not may_read(user, dataset):
        raise HTTPException(status_code=403, detail=f"no access to the reports of {DAG_PREFIX + dataset}")
    if not _exists(artifact_store(), dataset, HEALTH_PAGE):
        return _notice("Model health", f"No model-health page for {dataset} yet: each nightly run writes it.")
    return RedirectResponse(f"../{REPORTS_FOLDER}/{dataset}/{HEALTH_PAGE}", status_code=307)


@app.get("/reports/{path:path}")
def report(path: str, user: Any = Depends(airflow_user)):
    """A file under reports/ streamed from the store, or a folder's listing."""
    parts = report_parts(path)
    if parts and not may_read(user, parts[0]):
        raise HTTPException(status_code=403, detail=f"no access to the reports of {DAG_PREFIX + parts[0]}")
    store = artifact_store()
    url = store.url(REPORTS_FOLDER, *parts)
    info = _info(store, url)
    if info is None:
        raise HTTPException(status_code=404, detail=f"no report at {REPORTS_FOLDER}/{'/'.join(parts)}")
    if info["type"] == "directory":
        if parts and not path.endswith("/"):
            return RedirectResponse(f"{parts[-1]}/", status_code=307)  # relative links inside need the slash
        return _folder(store, url, parts, user)
    media_type, _ = mimetypes.guess_type(parts[-1])
    media_type = media_type or "application/octet-stream"
    if media_type.startswith("text/"):
        media_type += "; charset=utf-8"
    headers = {"Content-Security-Policy": SANDBOX, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}
    if info.get("size") is not None:
        headers["Content-Length"] = str(info["size"])
    return StreamingResponse(_stream(store, url), media_type=media_type, headers=headers)


def _folder(store, url: str, parts: list[str], user: Any) -> HTMLResponse:
    entries = {e["name"]: e for e in _listing(store, url) if parts or may_read(user, e["name"])}
    folders = _newest_first([n for n, e in entries.items() if e["type"] == "directory"])
    files = sorted(n for n, e in entries.items() if e["type"] != "directory")
    runs = _run_notes(store, parts)
    return _page("folder.html", title="/".join([REPORTS_FOLDER, *parts]),
                 folders=[{"href": f"{quote(n)}/", "name": n, "note": runs.get(n)} for n in folders],
                 files=[{"href": quote(n), "name": n, "size": f"{entries[n].get('size') or 0:,}"} for n in files])


def _run_notes(store, parts: list[str]) -> dict[str, str]:
    """In a night's folder: each run folder's run id and status from the index (what the folder name,
    made safe for a path, no longer says exactly); {} anywhere else."""
    if len(parts) != 2 or not DATE.match(parts[1]):
        return {}
    night = next((n for n in _read_index(store, parts[0]) if n.get("night") == parts[1]), None)
    if night is None:
        return {}
    return {r["folder"]: f"{r['status']}: run {r['run']}" for r in [night.get("run"), *night.get("runs", [])] if r}
