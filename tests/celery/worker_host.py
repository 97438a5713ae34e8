"""The hostname a Celery worker's task instances report (AIRFLOW__CORE__HOSTNAME_CALLABLE in its environment).

In the deployed stack each worker container has its own hostname, and Airflow records it as the task
instance's hostname. Two worker processes on one machine share a hostname, so the test gives each
worker its own through this callable: the same field then says which worker ran a task.
"""

from __future__ import annotations

import os


def hostname() -> str:
    return os.environ["NIGHTSHIFT_WORKER_NAME"]
