"""No secret in the repository; the deployed stack takes every secret from the environment and
publishes ports on loopback only."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SECRET_PATTERNS = {
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "AWS access key": re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    "Slack token": re.compile(r"\bxox[abposr]-[0-9A-Za-z-]{10,}"),
    "Slack webhook": re.compile(r"hooks\.slack\.com/services/T[0-9A-Z]{6,}/B[0-9A-Z]{6,}/[0-9A-Za-z]{20,}"),
    "password in a URL": re.compile(r"://[^/\s:@'\"]+:(?!\$\{|pass@|password@)[^@\s/'\"]{4,}@"),  # user:pass@ is a placeholder
}


def _tracked() -> list[Path]:
    names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    return [ROOT / n for n in names if (ROOT / n).is_file()]


def test_no_secret_in_any_tracked_file():
    found = []
    for path in _tracked():
        if path.suffix in {".png", ".parquet"} or path.name == "test_repo_hygiene.py":
            continue
        text = path.read_text(errors="ignore")
        found += [f"{path.relative_to(ROOT)}: {kind}" for kind, rx in SECRET_PATTERNS.items() if rx.search(text)]
    assert found == []
    assert ".env" in (ROOT / ".gitignore").read_text().split()
    assert not any(p.name == ".env" for p in _tracked())


def test_env_example_holds_no_values_for_secrets():
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        if re.search(r"PASSWORD|SECRET|KEY", key):
            assert value == "", f".env.example gives {key} a value"


def test_compose_takes_secrets_from_the_environment_and_listens_on_loopback():
    text = (ROOT / "docker-compose.yaml").read_text()
    compose = yaml.safe_load(text)
    for match in re.finditer(r"^\s*(\w*(?:PASSWORD|SECRET|FERNET_KEY)(?!S_FILE)\w*):\s+(\S+)", text, re.MULTILINE):
        assert match.group(2).startswith("${") and ":?" in match.group(2), match.group(0)  # required, no default
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    published = {n for n, s in compose["services"].items() if s.get("ports")}
    assert {"redis", "airflow-worker", "airflow-scheduler"}.isdisjoint(published)
