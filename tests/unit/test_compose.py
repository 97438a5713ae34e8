"""The deployed stack's login: the FAB auth manager (users, roles, per-DAG permissions), an admin
created from .env by the init service, and login disabled nowhere but `make ui`.

There is no Docker engine here, so the compose file is read as YAML; but the init service's own
script (docker/airflow-init.sh) runs for real on a throwaway Airflow home, twice, and an
api-server with the auth manager the compose file names then shows that the reports app's
per-DAG check answers differently for users whose roles grant different DAGs.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

import local_stack  # scripts/, on the path by tests/conftest.py

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yaml"
FAB = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
AIRFLOW_SERVICES = {"airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                    "airflow-triggerer", "airflow-worker"}


def _services() -> dict[str, dict]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def _tracked_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split()
    return [ROOT / name for name in listed if (ROOT / name).is_file()]


# --- the compose file, read as YAML ------------------------------------------------------------

def test_every_airflow_service_uses_the_fab_auth_manager():
    services = _services()
    assert AIRFLOW_SERVICES <= set(services)
    managers = {name: services[name]["environment"].get("AIRFLOW__CORE__AUTH_MANAGER") for name in AIRFLOW_SERVICES}
    assert managers == {name: FAB for name in AIRFLOW_SERVICES}


def test_no_simple_auth_manager_setting_is_left_in_the_deployed_stack():
    deployed = [COMPOSE, ROOT / "Dockerfile", *sorted((ROOT / "docker").iterdir())]
    assert [path.name for path in deployed if "SIMPLE_AUTH_MANAGER" in path.read_text()] == []


def test_login_is_disabled_only_by_make_ui():
    """ALL_ADMINS=True makes everyone an admin without a login: only `make ui`'s environment (local_stack.ui_env,
    which `make ui` runs through scripts/demo.py ui) may set it, and then with every server on loopback."""
    setting = re.compile(r"SIMPLE_AUTH_MANAGER_ALL_ADMINS\W+true", re.IGNORECASE)
    found = [path.relative_to(ROOT).as_posix() for path in _tracked_files()
             if path.suffix not in (".md",) and setting.search(path.read_text(errors="replace"))]
    assert found == ["scripts/local_stack.py"]
    ui_env = re.search(r"^def ui_env\(.*?(?=^def )", (ROOT / "scripts" / "local_stack.py").read_text(),
                       re.MULTILINE | re.DOTALL)
    assert ui_env and setting.search(ui_env.group())
    assert '"AIRFLOW__API__HOST": "127.0.0.1"' in ui_env.group()  # and then only on this machine's loopback
    ui_target = re.search(r"^ui:.*?(?=^\S)", (ROOT / "Makefile").read_text(), re.MULTILINE | re.DOTALL)
    assert ui_target and "scripts/demo.py ui" in ui_target.group()
    assert "ui_env(" in (ROOT / "scripts" / "local_stack.py").read_text().split("def serve_ui", 1)[1]


def test_the_admin_comes_from_env_and_its_password_is_required():
    init = _services()["airflow-init"]
    assert init["environment"]["AIRFLOW_ADMIN_PASSWORD"].startswith("${AIRFLOW_ADMIN_PASSWORD:?")
    assert init["environment"]["AIRFLOW_ADMIN_USERNAME"].startswith("${AIRFLOW_ADMIN_USERNAME")
    assert init["command"] == ["bash", "/opt/nightshift/airflow-init.sh"]
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in init["volumes"] if isinstance(volume, str)}
    assert mounts["/opt/nightshift/airflow-init.sh"] == "./docker/airflow-init.sh"
    assert mounts["/opt/nightshift/load_airflow_settings.py"] == "./docker/load_airflow_settings.py"
    depends = {name for name, service in _services().items() if "airflow-init" in (service.get("depends_on") or {})}
    assert AIRFLOW_SERVICES - {"airflow-init"} <= depends  # nobody serves before the admin exists


def test_the_auth_manager_named_is_pinned_installed_and_an_auth_manager():
    from airflow.api_fastapi.auth.managers.base_auth_manager import BaseAuthManager

    pins = dict(line.split("==") for line in (ROOT / "requirements.txt").read_text().split() if "==" in line)
    assert importlib.metadata.version("apache-airflow-providers-fab") == pins["apache-airflow-providers-fab"]
    module, _, name = FAB.rpartition(".")
    assert issubclass(getattr(importlib.import_module(module), name), BaseAuthManager)


# --- the init script and an api-server, for real ---------------------------------------------

# Two teams, each with read access to its own DAG and to task logs (what the reports app asks).
TEAMS = """
    import sys
    from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder

    with get_application_builder() as builder:
        sm = builder.sm
        for team, dag_id in (("churn_team", "nightshift_churn"), ("other_team", "nightshift_other")):
            role = sm.add_role(team)
            for resource in (f"DAG:{dag_id}", "Task Logs"):
                sm.add_permission_to_role(role, sm.create_permission("can_read", resource))
            sm.add_user(team, "Team", team, f"{team}@nightshift.invalid", role, sys.argv[1])
"""


@dataclass
class Deployed:
    base: str
    passwords: tuple[str, str]  # the admin's password at the first init run, then at the second

    def token(self, username: str, password: str) -> httpx.Response:
        return httpx.post(f"{self.base}/auth/token", json={"username": username, "password": password}, timeout=30)

    def get(self, path: str, username: str, password: str) -> httpx.Response:
        answer = self.token(username, password)
        assert answer.status_code == 201, answer.text
        headers = {"Authorization": f"Bearer {answer.json()['access_token']}"}
        return httpx.get(self.base + path, headers=headers, timeout=30)


def _run(command: list[str], env: dict[str, str], home: Path) -> str:
    done = subprocess.run(command, env=env, cwd=home, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return done.stdout


@pytest.fixture(scope="module")
def deployed_login(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    """docker/airflow-init.sh run twice (the admin's password changed in between, as after an edit of
    .env), two team users, then an api-server with the plugin; all with the compose file's auth manager."""
    from include.nightshift.artifacts import ArtifactStore

    home = tmp_path_factory.mktemp("deployed_login")
    (home / "dags").mkdir()
    store = ArtifactStore(home / "store")
    for dataset in ("churn", "other"):
        store.put_text(f"<h1>{dataset} drift</h1>", store.url("reports", dataset, "2026-02-01", "drift.html"))
    port = local_stack.free_port()
    manager = _services()["airflow-apiserver"]["environment"]["AIRFLOW__CORE__AUTH_MANAGER"]  # as deployed
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
           "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__CORE__AUTH_MANAGER": manager,
           "AIRFLOW__API_AUTH__JWT_SECRET": "nightshift-test-" + "j" * 48,
           "AIRFLOW__API__SECRET_KEY": "nightshift-test-" + "s" * 48,
           "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
           "AIRFLOW_VAR_NIGHTSHIFT_ARTIFACT_ROOT": store.root,
           "AIRFLOW_ADMIN_USERNAME": "admin", "NIGHTSHIFT_SETTINGS_FILE": str(ROOT / "airflow_settings.yaml"),
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins")]),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    passwords = ("first-" + "p" * 20, "second-" + "q" * 20)
    for password in passwords:
        _run(["bash", str(ROOT / "docker" / "airflow-init.sh")], {**env, "AIRFLOW_ADMIN_PASSWORD": password}, home)
    _run([sys.executable, "-c", textwrap.dedent(TEAMS), "team-" + "t" * 20], env, home)
    log = home / "api-server.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "airflow", "api-server", "-H", "127.0.0.1", "-p", str(port),
                                 "-w", "1"], env=env, cwd=home, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while not _answers(base):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"api-server not up (exit {proc.poll()}):\n{log.read_text()[-4000:]}")
            time.sleep(0.3)
        yield Deployed(base, passwords)
    finally:
        local_stack.stop_processes([proc], grace=30)


def _answers(base: str) -> bool:
    try:
        return httpx.get(f"{base}/api/v2/version", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@pytest.mark.dagrun
def test_the_admin_logs_in_with_the_password_env_gives_now_and_not_the_old_one(deployed_login):
    old, new = deployed_login.passwords
    assert deployed_login.token("admin", new).status_code == 201
    assert deployed_login.token("admin", old).status_code == 401
    assert deployed_login.token("nobody", new).status_code == 401


@pytest.mark.dagrun
def test_reports_are_shown_per_dag_as_each_users_roles_allow(deployed_login):
    team = "team-" + "t" * 20
    logins = {"admin": ("admin", deployed_login.passwords[1]), "churn_team": ("churn_team", team),
              "other_team": ("other_team", team)}
    seen = {user: {dataset: deployed_login.get(f"/nightshift/reports/{dataset}/2026-02-01/drift.html", *login)
                   .status_code for dataset in ("churn", "other")}
            for user, login in logins.items()}
    assert seen == {"admin": {"churn": 200, "other": 200},
                    "churn_team": {"churn": 200, "other": 403},
                    "other_team": {"churn": 403, "other": 200}}
    page = deployed_login.get("/nightshift/reports/churn/2026-02-01/drift.html", "churn_team", team)
    assert page.text == "<h1>churn drift</h1>"
