"""The reports app, as the Airflow API server runs it: loaded by Airflow's plugin manager, mounted at
/nightshift, behind Airflow's own authentication, reading a real local artifact store.

One `airflow api-server` (core app, one worker) runs for the module on a fresh SQLite metadata
DB, in its own process so that Airflow is configured before it is imported. Users are the
simple auth manager's: `viewer` logs in through POST /auth/token like any API client; `nobody`
has a valid token signed by the same server but no role, so the auth manager grants nothing.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urljoin

import httpx
import pytest

import local_stack  # scripts/, on the path by tests/conftest.py
from include.nightshift.artifacts import ArtifactStore, safe_name
from include.nightshift.report_index import build_index

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.dagrun  # every test talks to a real Airflow api-server started in a subprocess
BINARY = bytes(range(256)) * 4
# Night 2026-02-02 of churn: published by a scheduled run, republished by a rerun (the night's publisher),
# then a dry run, and a run whose record is not written yet. Night 2026-02-03 failed; 2026-02-01 keeps its
# pages in the night's own folder (before reports were kept per run) and is in no index.
SCHEDULED, RERUN, DRY = ("scheduled__2026-02-02T00:00:00+00:00", "manual__2026-02-03T09:00:00+00:00",
                         "manual__2026-02-03T10:00:00+00:00")
UNRECORDED, FAILED = "manual__2026-02-03T11:00:00+00:00", "scheduled__2026-02-03T00:00:00+00:00"
NIGHT_DIR = "reports/churn/2026-02-02"
NIGHT = f"{NIGHT_DIR}/{safe_name(RERUN)}"  # the folder of the run that published the night
DOCS_PAGE = f"{NIGHT}/validation/current/validations/churn/2026-02-02/20260202T000000.000000Z/churn-snapshot.html"
FILES = {
    "reports/churn/2026-02-01/validation/current/validation.html": "<h1>churn validation 2026-02-01</h1>",
    "reports/churn/2026-02-01/drift.html": "<h1>churn drift 2026-02-01</h1>",
    f"{NIGHT}/validation/current/validation.html": '<h1>churn validation 2026-02-02</h1><a href="index.html">docs</a>',
    f"{NIGHT}/validation/current/validation.json": '{"success": true}',
    f"{NIGHT}/validation/current/index.html": '<link href="./static/styles/data_docs_default_styles.css">',
    f"{NIGHT}/validation/current/static/styles/data_docs_default_styles.css": "body { color: #333 }",
    DOCS_PAGE: "<h1>GX validation result page</h1>",
    f"{NIGHT}/drift.html": "<script>document.title = 'drift'</script><h1>churn drift 2026-02-02</h1>",
    f"{NIGHT}/evaluation.html": "<h1>churn evaluation 2026-02-02</h1>",
    "reports/churn/health.html": "<h1>churn model health</h1>",
    **{f"reports/fraud/2026-01-{d:02}/drift.html": "<h1>fraud drift</h1>" for d in range(1, 16)},  # 15 nights
    f"{NIGHT_DIR}/{safe_name(SCHEDULED)}/drift.html": "<h1>the first run's drift</h1>",
    f"{NIGHT_DIR}/{safe_name(DRY)}/drift.html": "<h1>the dry run's drift</h1>",
    f"{NIGHT_DIR}/{safe_name(DRY)}/evaluation.html": "<h1>the dry run's challenger</h1>",
    f"{NIGHT_DIR}/{safe_name(UNRECORDED)}/drift.html": "<h1>a run still going</h1>",
    f"reports/churn/2026-02-03/{safe_name(FAILED)}/validation/current/validation.html": "<h1>failed</h1>",
    "snapshots/churn/2026-02-02/abc.parquet": "SECRET-SNAPSHOT",
}
FAVICON = f"{NIGHT}/validation/current/static/images/favicon.ico"
EVIL = "<img src=x onerror=alert(1)>"  # a dataset folder named as markup (no slash: it is one folder)
EVIL_REPORT = f"reports/{EVIL}/2026-02-01/drift.html"
SAMPLE = "reports/churn/2026-02-01/health-sample.html"  # a real model-health page, charts and all

SETUP = """
    import json
    from airflow.utils.db import upgradedb
    upgradedb()
    from airflow.api_fastapi.app import create_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    print("TOKEN " + create_auth_manager().generate_jwt(SimpleAuthManagerUser(username="nobody", role=None)))
"""


@dataclass
class Server:
    base: str
    store: ArtifactStore
    viewer: str
    admin: str
    nobody: str
    outside: Path

    def get(self, path: str, token: str | None = "viewer", **kwargs) -> httpx.Response:
        headers = {"Authorization": f"Bearer {getattr(self, token)}"} if token else {}
        return httpx.get(self.base + path, headers=headers, timeout=30, **kwargs)


def _health_sample() -> str:
    """A model-health page as Nightshift writes it: inline stylesheet, PNG charts as data: URIs."""
    from include.nightshift.health import health_page_html
    from include.nightshift.spec import load_spec

    spec = load_spec(ROOT / "include" / "specs" / "churn.yaml")
    runs = [{"logical_date": f"2026-01-0{d}", "decision": "skipped", "drift_share": 0.1 * d, "champion_version": 1,
             "rows_published": 100 + d} for d in range(1, 5)]
    return health_page_html(spec, runs, [])


def _index() -> str:
    """reports/churn/nights.json as the record task writes it (report_index.write_index) for these runs."""
    def row(run_id: str, day: str, decision: str, rows: int, hour: int, **more) -> dict:
        return {"dag_run_id": run_id, "logical_date": day, "decision": decision, "rows_published": rows,
                "finished_at": f"2026-02-03T{hour:02}:00:00+00:00", "note": None, **more}

    nights = [row(RERUN, "2026-02-02", "skipped", 100, 9, note="rerun"), row(FAILED, "2026-02-03", "failed", 0, 12)]
    attempts = [{**nights[0], "dry_run": False}, {**nights[1], "dry_run": False},
                row(SCHEDULED, "2026-02-02", "skipped", 100, 1, dry_run=False),
                row(DRY, "2026-02-02", "rejected", 0, 10, dry_run=True, note="dry")]
    return json.dumps({"dataset": "churn", "nights": build_index(nights, attempts)})


def _write_store(store: ArtifactStore, tmp: Path) -> None:
    for key, text in {**FILES, EVIL_REPORT: "<h1>evil drift</h1>", SAMPLE: _health_sample(),
                      "reports/churn/nights.json": _index()}.items():
        store.put_text(text, store.url(key))
    (tmp / "favicon.ico").write_bytes(BINARY)
    store.put_file(tmp / "favicon.ico", store.url(FAVICON))


def _wait_until_up(proc: subprocess.Popen, base: str, log: Path) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"api-server exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(f"{base}/api/v2/version", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    pytest.fail(f"api-server did not answer within 180 s:\n{log.read_text()[-4000:]}")


def _login(base: str, home: Path, username: str) -> str:
    password = json.loads((home / "simple_auth_manager_passwords.json.generated").read_text())[username]
    answer = httpx.post(f"{base}/auth/token", json={"username": username, "password": password}, timeout=30)
    assert answer.status_code == 201, answer.text
    return answer.json()["access_token"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("airflow_web")
    (home / "dags").mkdir()
    store = ArtifactStore(home / "store")
    _write_store(store, home)
    outside = home / "outside.txt"
    outside.write_text("SECRET-OUTSIDE")
    port = local_stack.free_port()
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
           "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,viewer:viewer",
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
           "AIRFLOW__API_AUTH__JWT_SECRET": "nightshift-test-" + "x" * 48,
           "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
           "AIRFLOW_VAR_NIGHTSHIFT_ARTIFACT_ROOT": store.root,
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins")])}
    setup = subprocess.run([sys.executable, "-c", textwrap.dedent(SETUP)], env=env, cwd=home, capture_output=True,
                           text=True, timeout=300)
    tokens = [line.removeprefix("TOKEN ") for line in setup.stdout.splitlines() if line.startswith("TOKEN ")]
    assert setup.returncode == 0 and tokens, (setup.stdout + setup.stderr)[-4000:]
    log = home / "api-server.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "airflow", "api-server", "--apps", "core", "-H", "127.0.0.1",
                                 "-p", str(port), "-w", "1"], env=env, cwd=home, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_until_up(proc, base, log)
        yield Server(base=base, store=store, viewer=_login(base, home, "viewer"), admin=_login(base, home, "admin"),
                     nobody=tokens[-1], outside=outside)
    finally:
        local_stack.stop_processes([proc], grace=30)


def test_airflow_loads_the_plugin_with_its_app_and_ui_entries(server):
    plugins = server.get("/api/v2/plugins", token="admin").json()["plugins"]
    nightshift = next(p for p in plugins if p["name"] == "nightshift")
    assert nightshift["fastapi_apps"] == [
        {"app": "fastapi.applications.FastAPI", "url_prefix": "/nightshift", "name": "Nightshift reports"}]
    assert {(v["name"], v["destination"], v["href"]) for v in nightshift["external_views"]} == {
        ("Nightshift reports", "nav", "nightshift/"), ("Model health", "dag", "nightshift/health/{DAG_ID}"),
        ("Model versions", "dag", "nightshift/models/{DAG_ID}")}


def test_report_page_is_streamed_as_html_in_a_sandbox(server):
    answer = server.get(f"/nightshift/{NIGHT}/drift.html")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/html; charset=utf-8"
    assert answer.text == FILES[f"{NIGHT}/drift.html"]
    assert answer.headers["content-security-policy"].startswith("sandbox allow-scripts")
    assert answer.headers["x-content-type-options"] == "nosniff"


def test_data_docs_pages_and_assets_beside_the_report_are_served(server):
    page = server.get(f"/nightshift/{DOCS_PAGE}")
    assert (page.status_code, page.headers["content-type"], page.text) == (
        200, "text/html; charset=utf-8", FILES[DOCS_PAGE])
    css = server.get(f"/nightshift/{NIGHT}/validation/current/static/styles/data_docs_default_styles.css")
    assert (css.status_code, css.headers["content-type"]) == (200, "text/css; charset=utf-8")
    icon = server.get(f"/nightshift/{FAVICON}")
    assert (icon.status_code, icon.content) == (200, BINARY)
    record = server.get(f"/nightshift/{NIGHT}/validation/current/validation.json")
    assert (record.headers["content-type"], record.json()) == ("application/json", {"success": True})


@pytest.mark.parametrize("path", [
    "/nightshift/reports/churn/%2E%2E/%2E%2E/snapshots/churn/2026-02-02/abc.parquet",  # up into the store
    "/nightshift/reports/%2E%2E/%2E%2E/outside.txt",                                  # up out of the store
    "/nightshift/reports/churn/..%2F..%2F..%2Foutside.txt",                           # encoded slashes
    "/nightshift/reports//{outside}",                                                 # an absolute path
    "/nightshift/reports/churn%5C..%5C..%5Coutside.txt",                              # backslashes
    "/nightshift/reports/churn/%2E/health.html",                                      # a dot segment
    "/nightshift/reports/churn//health.html",                                         # an empty segment
])
def test_paths_that_could_leave_the_reports_folder_are_refused(server, path):
    raw = path.format(outside=str(server.outside).lstrip("/"))
    request = httpx.Request("GET", server.base + raw, headers={"Authorization": f"Bearer {server.viewer}"})
    assert request.url.raw_path.decode() == raw  # sent as written, not tidied up by the client
    with httpx.Client() as client:
        answer = client.send(request)
    assert answer.status_code == 400, (unquote(raw), answer.status_code, answer.text[:200])
    assert "not a report path" in answer.json()["detail"]
    assert "SECRET" not in answer.text


def test_missing_report_is_404(server):
    answer = server.get("/nightshift/reports/churn/2026-02-02/nothing.html")
    assert answer.status_code == 404
    assert answer.json()["detail"] == "no report at reports/churn/2026-02-02/nothing.html"


def test_a_folder_redirects_to_its_slash_form_then_lists_its_entries(server):
    answer = server.get("/nightshift/reports/churn")
    assert (answer.status_code, answer.headers["location"]) == (307, "churn/")
    listing = server.get("/nightshift/reports/churn/")
    assert listing.status_code == 200
    assert re.findall(r'href="([^"]+)"', listing.text) == [
        "../", "2026-02-03/", "2026-02-02/", "2026-02-01/", "health.html", "nights.json"]
    assert "<style>" in listing.text  # the app's pages share the reports' stylesheet


def _sections(page: str) -> dict[str, str]:
    return dict(re.findall(r'<section class="dataset" data-dataset="([^"]*)">(.*?)</section>', page, re.S))


def _rows(section: str) -> list[tuple[str, str, list[str]]]:
    """(row class, its cells' text, its links) per row of a dataset's nights table."""
    found = []
    for kind, cells in re.findall(r'<tr class="(night|other-run)"[^>]*>(.*?)</tr>', section, re.S):
        text = " | ".join(re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", cells, re.S))
        found.append((kind, text, re.findall(r'href="([^"]+)"', cells)))
    return found


def test_index_shows_each_night_with_its_status_and_the_publishing_run_s_reports(server):
    answer = server.get("/nightshift/")
    assert answer.status_code == 200
    churn = _sections(answer.text)["churn"]
    assert re.findall(r'<p>(.*?)</p>', churn)[0].count("href") == 2  # model health, all folders
    rows = _rows(churn)
    assert [r[:2] for r in rows] == [
        ("night", f"2026-02-03 | failed | {FAILED} | validation"),
        ("night", f"2026-02-02 | published | {RERUN} (rerun) | validation, drift, evaluation"),
        ("other-run", f" | ↳ not recorded | {safe_name(UNRECORDED)} | drift"),
        ("other-run", f" | ↳ dry run | {DRY} (dry) | drift, evaluation"),
        ("other-run", f" | ↳ replaced | {SCHEDULED} | drift"),
        ("night", "2026-02-01 | not recorded | – | –"),
        ("other-run", " | ↳ older | (night folder, before reports were kept per run) | validation, drift")]
    def run_page(run_id: str) -> str:  # a run the index knows links to its page in the Airflow UI
        return f"{server.base}/dags/nightshift_churn/runs/{quote(run_id, safe='')}"

    assert rows[1][2] == [run_page(RERUN), f"{NIGHT}/validation/current/validation.html", f"{NIGHT}/drift.html",
                          f"{NIGHT}/evaluation.html"]  # the publisher's pages, not the dry run's
    assert rows[3][2] == [run_page(DRY), f"{NIGHT_DIR}/{safe_name(DRY)}/drift.html",
                          f"{NIGHT_DIR}/{safe_name(DRY)}/evaluation.html"]
    assert rows[2][2] == [f"{NIGHT_DIR}/{safe_name(UNRECORDED)}/drift.html"]  # known only by its folder: no run link
    for href in re.findall(r'href="([^"]+)"', answer.text):  # every link on the page works from where it is
        assert server.get(urljoin(f"{server.base}/nightshift/", href)[len(server.base):]).status_code == 200, href
    assert server.get(f"/nightshift/{rows[3][2][2]}").text == "<h1>the dry run's challenger</h1>"


def test_a_dataset_with_many_nights_shows_its_newest_and_links_them_all(server):
    fraud = _sections(server.get("/nightshift/").text)["fraud"]
    assert "no health page yet" in fraud and 'href="nights/fraud"' in fraud and "all 15 nights" in fraud
    assert [r[1].split(" | ")[0] for r in _rows(fraud) if r[0] == "night"] == [
        f"2026-01-{d:02}" for d in range(15, 1, -1)]  # the newest 14
    every = server.get("/nightshift/nights/fraud")
    assert every.status_code == 200 and "Nightshift reports: fraud" in every.text
    nights = [r for r in _rows(_sections(every.text)["fraud"]) if r[0] == "night"]
    assert len(nights) == 15 and nights[-1][1].startswith("2026-01-01")
    oldest = _rows(_sections(every.text)["fraud"])[-1]  # its pages, from the night's own folder
    assert oldest[2] == ["../reports/fraud/2026-01-01/drift.html"]
    assert server.get(urljoin(f"{server.base}/nightshift/nights/fraud", oldest[2][0])[len(server.base):]).text == (
        "<h1>fraud drift</h1>")
    assert server.get("/nightshift/nights/nothing").status_code == 404
    assert server.get("/nightshift/nights/fraud", token="nobody").status_code == 403


def test_a_night_s_folder_names_each_run_with_its_status(server):
    listing = server.get(f"/nightshift/{NIGHT_DIR}/").text
    assert f"{safe_name(RERUN)}/</a> <span class=\"note\">(published: run {RERUN})</span>" in listing
    assert f"(dry run: run {DRY})" in listing and f"(replaced: run {SCHEDULED})" in listing
    assert f'{safe_name(UNRECORDED)}/</a></li>' in listing  # no record yet: nothing said of it


def test_model_health_tab_of_a_dag_opens_its_datasets_page(server):
    answer = server.get("/nightshift/health/nightshift_churn", follow_redirects=True)
    assert (answer.status_code, answer.text) == (200, FILES["reports/churn/health.html"])
    assert str(answer.url).endswith("/nightshift/reports/churn/health.html")
    from_rollback = server.get("/nightshift/health/nightshift_churn_rollback", follow_redirects=True)
    assert str(from_rollback.url).endswith("/nightshift/reports/churn/health.html")  # the dataset's own page
    assert "No model-health page for fraud yet" in server.get("/nightshift/health/nightshift_fraud").text
    assert "is not a Nightshift DAG" in server.get("/nightshift/health/some_other_dag").text


def test_a_browser_without_a_session_is_sent_to_the_login_page(server):
    answer = server.get(f"/nightshift/{NIGHT}/drift.html", token=None)
    assert answer.status_code == 303
    assert answer.headers["location"] == f"/auth/login?next=%2Fnightshift%2F{NIGHT.replace('/', '%2F')}%2Fdrift.html"


def test_the_ui_session_cookie_is_accepted(server):
    answer = httpx.get(f"{server.base}/nightshift/{NIGHT}/evaluation.html", cookies={"_token": server.viewer})
    assert (answer.status_code, answer.text) == (200, FILES[f"{NIGHT}/evaluation.html"])


def test_a_forged_token_is_refused(server):
    answer = httpx.get(f"{server.base}/nightshift/", headers={"Authorization": f"Bearer {server.viewer[:-4]}AAAA"})
    assert answer.status_code == 403


def test_a_user_the_auth_manager_grants_nothing_sees_no_reports(server):
    assert "No reports yet" in server.get("/nightshift/", token="nobody").text
    answer = server.get(f"/nightshift/{NIGHT}/drift.html", token="nobody")
    assert answer.status_code == 403
    assert answer.json()["detail"] == "no access to the reports of nightshift_churn"
    assert server.get("/nightshift/health/nightshift_churn", token="nobody").status_code == 403


def _csp_allows(policy: str, directive: str, source: str) -> bool:
    """Whether a CSP lets `directive` load `source`: its own list, else default-src, else anything."""
    directives = {d.split()[0]: d.split()[1:] for d in (p.strip() for p in policy.split(";")) if d}
    allowed = directives.get(directive, directives.get("default-src"))
    return allowed is None or source in allowed


def test_a_nightshift_page_gets_what_it_needs_from_the_sandbox_policy(server):
    answer = server.get(f"/nightshift/{SAMPLE}")
    assert answer.status_code == 200 and answer.text == server.store.read_text(server.store.url(SAMPLE))
    policy = answer.headers["content-security-policy"]
    assert policy.startswith("sandbox")
    charts = re.findall(r'<img class="chart" src="(data:image/png;base64,[^"]+)" alt="([^"]+)"', answer.text)
    assert len(charts) >= 4 and "<style>" in answer.text  # what the page uses ...
    assert _csp_allows(policy, "img-src", "data:") and _csp_allows(policy, "style-src", "'unsafe-inline'")  # ... allowed
    assert not re.search(r'(src|href)="(?!data:)[^"]*//', answer.text)  # and nothing fetched from elsewhere


def test_markup_in_a_folder_name_is_text_in_the_app_s_pages(server):
    index = server.get("/nightshift/").text
    assert EVIL not in index and "&lt;img src=x onerror=alert(1)&gt;" in index
    assert "reports/%3Cimg%20src%3Dx%20onerror%3Dalert%281%29%3E/" in index  # its address quoted, and it works:
    listing = server.get("/nightshift/reports/%3Cimg%20src%3Dx%20onerror%3Dalert%281%29%3E/")
    assert listing.status_code == 200 and EVIL not in listing.text and "2026-02-01/" in listing.text
