"""No secret in the repository, and a deployed stack that neither holds nor exposes one.

Files scanned: everything git tracks plus new files it would pick up (`git ls-files
--cached --others --exclude-standard`), so a secret is caught before its first commit.
The compose checks read docker-compose.yaml as YAML (there is no Docker engine here).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"

# Credentials that are recognisable whatever file they sit in.
SECRET_PATTERNS = {
    "private key": re.compile(r"-----BEGIN (?:[A-Z]+ )*PRIVATE KEY( BLOCK)?-----"),
    "AWS access key id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "AWS secret access key": re.compile(r"(?i)aws_?secret_?access_?key\s*[=:]\s*['\"]?[A-Za-z0-9/+]{40}\b"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),
    "Slack token": re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
    "Slack webhook": re.compile(r"hooks\.slack\.com/services/T[A-Z0-9]{6,}/B[A-Z0-9]{6,}/[A-Za-z0-9]{20,}"),
}
# Settings files, where `password: hunter2` would be a committed credential.
CONFIG_SUFFIXES = {".yaml", ".yml", ".ini", ".cfg", ".toml", ".conf", ".json", ".env", ".example", ".properties"}
CONFIG_NAMES = {"Dockerfile", ".env.example"}
SECRET_NAME = re.compile(r"(?i)(password|passwd|secret|token|api_?key|access_?key|private_?key|fernet)")
# key = value / key: value / "key": "value", on one line; the value stops at a quote, comma or brace.
ASSIGNMENT = re.compile(r"""(?P<key>[\w.-]+)["']?[ \t]*[:=][ \t]*["']?(?P<value>[^"',}\s#]*)""")
# A value that is not a literal: empty, or a reference the environment fills in.
REFERENCE = re.compile(r"^(|\$\{[A-Z0-9_]+(:?[?-][^}]*)?\}?|\$[A-Z0-9_]+)$")
URL_PASSWORD = re.compile(r"[a-z0-9+]+://[^:/@\s]+:(?P<password>[^@\s]*)@")


def repo_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                            cwd=ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    return [ROOT / name for name in listed if name and (ROOT / name).is_file()]


def _text(path: Path) -> str | None:
    data = path.read_bytes()
    return None if b"\0" in data[:8192] else data.decode("utf-8", errors="replace")


def known_secrets(text: str) -> Iterator[str]:
    for kind, pattern in SECRET_PATTERNS.items():
        for match in pattern.finditer(text):
            yield f"{kind}: {match.group(0)[:24]}..."


def literal_credentials(text: str) -> Iterator[str]:
    """Settings whose name says secret and whose value is written out, and passwords in URLs."""
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("#"):
            continue
        for match in ASSIGNMENT.finditer(line):
            key, value = match["key"], match["value"]
            if SECRET_NAME.search(key) and not re.search(r"(?i)(_file|_path|_dir)$", key) \
                    and not REFERENCE.match(value):
                yield f"line {number}: {key} = {value[:4]}..."
        for match in URL_PASSWORD.finditer(line):
            if not REFERENCE.match(match["password"]) and not match["password"].startswith("${"):
                yield f"line {number}: password in URL {match.group(0)[:20]}..."


URL_PLACEHOLDERS = {"pass", "password", "secret", "***", "<password>", "PASSWORD"}


def url_passwords(text: str) -> Iterator[str]:
    """user:password@ in a URL anywhere (docs and code too), unless a ${VAR} or a placeholder."""
    for number, line in enumerate(text.splitlines(), 1):
        for match in URL_PASSWORD.finditer(line):
            password = match["password"]
            if password and not password.startswith("$") and password not in URL_PLACEHOLDERS:
                yield f"line {number}: {match.group(0)[:20]}..."


def _is_config(path: Path) -> bool:
    return path.name in CONFIG_NAMES or path.suffix in CONFIG_SUFFIXES or path.name.startswith(".env")


# --- the scanners find what they look for --------------------------------------------------

FAKE_KEY_ID = "AKIA" + "Z7Q2" * 4  # built here, so this file holds no matchable literal


@pytest.mark.parametrize("text", [
    "-----BEGIN RSA " + "PRIVATE KEY-----\nMIIE...",
    "-----BEGIN OPENSSH " + "PRIVATE KEY-----",
    f"aws_access_key_id = {FAKE_KEY_ID}",
    "aws_secret_access_key = " + "wJalrXUtnFEMI/K7MDENG/bPxRfiCY" + "EXAMPLEKEY",
    "token: gh" + "p_" + "a1B2" * 9,
])
def test_known_secret_scanner_finds_planted_secrets(text):
    assert list(known_secrets(text))


@pytest.mark.parametrize(("text", "found"), [
    ("POSTGRES_PASSWORD: hunter2hunter2", True),
    ('AIRFLOW_CONN_X: \'{"login": "u", "password": "s3cr3t"}\'', True),
    ("AIRFLOW__CORE__FERNET_KEY=abcdef", True),
    ("url: postgresql://airflow:s3cr3t@postgres:5432/airflow", True),
    ("POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:?set it in .env}", False),
    ("url: postgresql://airflow:${AIRFLOW_DB_PASSWORD:?set it}@postgres/airflow", False),
    ("POSTGRES_PASSWORD=", False),
    ("conn_password:", False),
    ("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE: /opt/airflow/auth/passwords.json", False),
    ("# password: only a comment", False),
])
def test_literal_credential_scanner(text, found):
    assert bool(list(literal_credentials(text))) is found


# --- the repository ---------------------------------------------------------------------

def test_no_known_secret_in_any_file():
    files = repo_files()
    assert len(files) > 20 and COMPOSE in files  # the listing itself worked
    found = {str(p.relative_to(ROOT)): hits for p in files
             if (text := _text(p)) is not None and (hits := list(known_secrets(text)))}
    assert found == {}


def test_no_password_in_a_url_in_any_file():
    this_file = Path(__file__).resolve()  # its scanner tests hold sample URLs on purpose
    found = {str(p.relative_to(ROOT)): hits for p in repo_files()
             if p.resolve() != this_file and (text := _text(p)) is not None and (hits := list(url_passwords(text)))}
    assert found == {}


def test_url_password_scanner():
    assert list(url_passwords("NIGHTSHIFT_PG_URI=postgresql://nightshift:" + "Zq81kLp@db:5432/warehouse"))
    assert not list(url_passwords("postgresql://user:pass@host:5432/postgres  postgresql://u:${PW:?x}@h/d"))


def test_no_literal_credential_in_settings_files():
    configs = [p for p in repo_files() if _is_config(p)]
    assert {COMPOSE, ENV_EXAMPLE, ROOT / "airflow_settings.yaml"} <= set(configs)
    found = {str(p.relative_to(ROOT)): hits for p in configs
             if (text := _text(p)) is not None and (hits := list(literal_credentials(text)))}
    assert found == {}


def test_env_file_is_ignored_by_git_and_docker():
    tracked = subprocess.run(["git", "ls-files", "--", ".env"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert tracked.stdout == ""
    ignored = subprocess.run(["git", "check-ignore", "--quiet", "--no-index", ".env"], cwd=ROOT)
    assert ignored.returncode == 0, ".env is not in .gitignore"
    assert ".env" in (ROOT / ".dockerignore").read_text().split(), ".env would be sent to the image build"


def _env_example() -> dict[str, str]:
    pairs = [line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    return {key.strip(): value.strip() for key, value in pairs}


def test_env_example_holds_no_values_for_secrets():
    settings = _env_example()
    secret = {k: v for k, v in settings.items() if SECRET_NAME.search(k) or k.endswith(("_USER", "_KEY_ID"))}
    assert len(secret) >= 10
    assert {k: v for k, v in secret.items() if v} == {}


# --- docker-compose.yaml ----------------------------------------------------------------

def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _references() -> list[tuple[str, str]]:
    """Every ${VAR...} in the compose file, as (name, the whole reference)."""
    return [(m[1], m[0]) for m in re.findall(r"(\$\{([A-Z0-9_]+)[^}]*\})", COMPOSE.read_text())]


def test_compose_takes_every_secret_from_the_environment_and_refuses_to_start_without_it():
    secret = [(name, how) for name, how in _references()
              if SECRET_NAME.search(name) or name.endswith(("_USER", "_KEY_ID"))]
    assert len({name for name, _ in secret}) >= 10
    not_required = [how for name, how in secret if not how.startswith(f"${{{name}:?")]
    assert not_required == [], "a secret with a default, or optional, lets the stack start without it"
    missing_from_example = sorted({name for name, _ in secret} - set(_env_example()))
    assert missing_from_example == [], "each required secret must be listed in .env.example"


def test_compose_environment_has_no_literal_secret():
    """Every environment value whose name says secret comes from ${VAR}; JSON and URLs included."""
    found = []
    for name, service in _compose()["services"].items():
        environment = service.get("environment") or {}
        items = environment.items() if isinstance(environment, dict) else (e.split("=", 1) for e in environment)
        for key, value in items:
            text = f"{key}: {value}"
            if SECRET_NAME.search(key) and not re.search(r"(?i)_file$", key) and "${" not in str(value):
                found.append(f"{name}.{key}")
            found += [f"{name}.{key}: {hit}" for hit in literal_credentials(text)]
    assert found == []


PUBLISHED = {"postgres": {"5432"}, "minio": {"9001"}, "mlflow": {"5000"}, "airflow-apiserver": {"8080"}}


def test_compose_publishes_only_on_loopback_and_only_what_people_use():
    published: dict[str, set[str]] = {}
    for name, service in _compose()["services"].items():
        assert service.get("network_mode") != "host", f"{name} shares the host's network"
        for port in service.get("ports") or []:
            if isinstance(port, dict):
                host_ip, target = port.get("host_ip"), str(port["target"])
            else:
                parts = re.sub(r"\$\{[^}]*\}", "VAR", str(port)).split(":")  # ${PORT:-5432} holds a colon
                host_ip, target = (parts[0] if len(parts) == 3 else None), parts[-1].split("/")[0]
            assert host_ip == "127.0.0.1", f"{name} publishes {port} beyond this machine"
            published.setdefault(name, set()).add(target)
    assert published == PUBLISHED
