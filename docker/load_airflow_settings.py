"""Load airflow_settings.yaml (the Astro CLI's format) into Airflow's metadata database.

airflow_settings.yaml is the one place the project declares its connections, variables
and pools, and the local run reads the same file. Plain Airflow does not read that format,
so the deployed stack's init service converts it to the files that Airflow's own
`airflow pools|variables|connections import` commands take.

A variable or connection that the environment already defines (AIRFLOW_VAR_<KEY>,
AIRFLOW_CONN_<ID>) is skipped: Airflow looks in the environment before the database, so
the deployed value wins anyway, and the database should not hold a stale copy of it.
Pools have no environment form, so they are always imported.

Usage: python load_airflow_settings.py /opt/airflow/airflow_settings.yaml
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

# Astro CLI key -> airflow.models.Connection argument.
_CONNECTION_FIELDS = {
    "conn_type": "conn_type",
    "conn_host": "host",
    "conn_schema": "schema",
    "conn_login": "login",
    "conn_password": "password",
    "conn_port": "port",
    "conn_description": "description",
}


def read_settings(path: Path) -> dict[str, Any]:
    """The `airflow:` section of the file; an empty file or section means nothing to load."""
    document = yaml.safe_load(path.read_text()) or {}
    return document.get("airflow") or {}


def pools(settings: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Pools in the shape `airflow pools import` takes (it skips entries without a description)."""
    return {
        pool["pool_name"]: {
            "slots": int(pool["pool_slot"]),
            "description": pool.get("pool_description") or "",
            "include_deferred": False,
        }
        for pool in settings.get("pools") or []
    }


def variables(settings: dict[str, Any], environ: dict[str, str]) -> dict[str, Any]:
    """Variables the environment does not already set, as `airflow variables import` takes them."""
    return {
        var["variable_name"]: var.get("variable_value")
        for var in settings.get("variables") or []
        if f"AIRFLOW_VAR_{var['variable_name'].upper()}" not in environ
    }


def connection(entry: dict[str, Any]) -> dict[str, Any]:
    """One Astro connection as airflow.models.Connection arguments, empty fields left out."""
    fields = {
        field: entry[key] for key, field in _CONNECTION_FIELDS.items() if entry.get(key) not in (None, "")
    }
    extra = entry.get("conn_extra")
    if isinstance(extra, dict) and extra:
        fields["extra_dejson"] = extra
    elif isinstance(extra, str) and extra:
        fields["extra"] = extra
    return fields


def connections(settings: dict[str, Any], environ: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Connections the environment does not already set, keyed by conn_id."""
    return {
        entry["conn_id"]: connection(entry)
        for entry in settings.get("connections") or []
        if f"AIRFLOW_CONN_{entry['conn_id'].upper()}" not in environ
    }


def run_import(command: list[str], payload: dict[str, Any]) -> None:
    """Write payload to a JSON file and hand it to an `airflow ... import` command."""
    if not payload:
        print(f"nothing to import for: {' '.join(command)}")
        return
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "settings.json"
        path.write_text(json.dumps(payload))
        subprocess.run([*command, str(path)], check=True)


def main(argv: list[str]) -> int:
    """Import pools, then variables, then connections; fail loudly on a bad file."""
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    settings = read_settings(Path(argv[1]))
    environ = dict(os.environ)
    run_import(["airflow", "pools", "import"], pools(settings))
    run_import(["airflow", "variables", "import", "--action-on-existing-key", "overwrite"], variables(settings, environ))
    run_import(["airflow", "connections", "import", "--overwrite"], connections(settings, environ))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
