# The one image of the deployed stack: every Airflow service and the MLflow server run it,
# so the tasks and the tracking server use the very same mlflow, xgboost and pandas.
# dags/, plugins/, include/ and airflow_settings.yaml are mounted by docker-compose.yaml,
# not copied: editing a DAG needs no rebuild.
FROM apache/airflow:3.3.2-python3.11

# The project's pinned environment. requirements.txt pins apache-airflow==3.3.2 itself, so
# pip cannot move the Airflow that the base image ships, and the FAB provider (the stack's auth
# manager: users, roles, per-DAG permissions) at the version checked against it.
# requirements.txt also pins the Celery provider, celery and the redis client, and the S3 client
# (s3fs, boto3) for the artifact store and MLflow's S3 artifact proxy: the versions that
# tests/celery runs the nightly DAG with on two Celery workers and an S3 endpoint.
COPY --chown=airflow:0 requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir -r /tmp/requirements.txt

# `import include.nightshift...` and `import nightshift_airflow...` work in every process,
# the same way pytest.ini's pythonpath makes them work in the tests.
ENV PYTHONPATH=/opt/airflow:/opt/airflow/plugins
