#!/usr/bin/env bash
# One-shot setup that every other Airflow service waits for (depends_on:
# service_completed_successfully). Safe to run again: each step is idempotent, and a
# changed admin password or settings file takes effect on the next `docker compose up`.
set -euo pipefail

echo "[airflow-init] waiting for the metadata database"
airflow db check --retry 30 --retry-delay 2

echo "[airflow-init] migrating the metadata database"
airflow db migrate

# The simple auth manager (Airflow 3's default) reads logins from a JSON file and would
# otherwise invent a random password at the api-server's first start and print it to the
# log. Writing the file here, from the environment, makes the admin login what .env says.
echo "[airflow-init] writing the admin login for user '${AIRFLOW_ADMIN_USERNAME}'"
umask 077
python - <<'PY'
import json
import os

path = os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
login = {os.environ["AIRFLOW_ADMIN_USERNAME"]: os.environ["AIRFLOW_ADMIN_PASSWORD"]}
with open(path + ".tmp", "w") as out:
    json.dump(login, out)
os.replace(path + ".tmp", path)  # a running api-server never reads a half-written file
PY

echo "[airflow-init] loading pools, variables and connections from airflow_settings.yaml"
python /opt/nightshift/load_airflow_settings.py /opt/airflow/airflow_settings.yaml

echo "[airflow-init] done"
