#!/usr/bin/env bash
# One-shot setup that every other Airflow service waits for (depends_on:
# service_completed_successfully). Safe to run again: each step is idempotent, and a
# changed admin password or settings file takes effect on the next `docker compose up`.
set -euo pipefail

echo "[airflow-init] waiting for the metadata database"
airflow db check --retry 30 --retry-delay 2

echo "[airflow-init] migrating the metadata database"
airflow db migrate

# The FAB auth manager keeps users and roles in the metadata database (migrated just above).
# The admin comes from .env: created on the first run, and its password set to what .env says on
# every run, so a changed AIRFLOW_ADMIN_PASSWORD takes effect on the next `docker compose up`.
# The password is an argument of these commands only inside this one-shot container.
echo "[airflow-init] admin user '${AIRFLOW_ADMIN_USERNAME}' (FAB auth manager)"
airflow users create --username "${AIRFLOW_ADMIN_USERNAME}" --password "${AIRFLOW_ADMIN_PASSWORD}" \
  --role Admin --firstname Nightshift --lastname Admin --email "${AIRFLOW_ADMIN_USERNAME}@nightshift.invalid"
airflow users reset-password --username "${AIRFLOW_ADMIN_USERNAME}" --password "${AIRFLOW_ADMIN_PASSWORD}"

echo "[airflow-init] loading pools, variables and connections from airflow_settings.yaml"
# Beside this script in the container (/opt/nightshift) and in the repository (docker/).
python "$(dirname "$0")/load_airflow_settings.py" "${NIGHTSHIFT_SETTINGS_FILE:-/opt/airflow/airflow_settings.yaml}"

echo "[airflow-init] done"
