#!/bin/sh
# One-shot MinIO setup, run with the mc client image after MinIO is healthy: the buckets,
# and a service user for the pipeline and MLflow that may use those buckets and nothing
# else (the root login stays with MinIO and this script). Safe to run again.
set -eu

mc alias set nightshift http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD"

# nightshift-artifacts: snapshots, validation and drift reports (the pipeline's artifact store)
# nightshift-mlflow:    what the MLflow server stores for runs and registered models
mc mb --ignore-existing nightshift/nightshift-artifacts nightshift/nightshift-mlflow

# `user add` on an existing user resets its secret, so a changed .env takes effect.
mc admin user add nightshift "$S3_ACCESS_KEY_ID" "$S3_SECRET_ACCESS_KEY"
mc admin policy create nightshift nightshift-buckets /docker/minio-policy.json
if ! mc admin user info nightshift "$S3_ACCESS_KEY_ID" | grep -q nightshift-buckets; then
  mc admin policy attach nightshift nightshift-buckets --user "$S3_ACCESS_KEY_ID"
fi

echo "[minio-init] buckets and service user ready"
