"""Hooks: connections come from Airflow, the bulk paths from the core.

The Postgres provider hands out psycopg 3 connections when SQLAlchemy 2 is installed (it
is, with Airflow 3), while the core's COPY paths are written against psycopg2. This hook
keeps the provider's connection handling (Airflow connections, extras such as sslmode)
and opens the psycopg2 connection the core expects.
"""

from __future__ import annotations

from airflow.providers.postgres.hooks.postgres import PostgresHook

_LIBPQ_EXTRAS = ("sslmode", "sslrootcert", "sslcert", "sslkey", "connect_timeout", "application_name", "options")


class NightshiftPostgresHook(PostgresHook):
    """A PostgresHook whose `psycopg2_conn()` serves the core's COPY-based readers and writers."""

    hook_name = "Nightshift Postgres"
    default_conn_name = "nightshift_warehouse"

    def psycopg2_conn(self):
        import psycopg2

        conn = self.get_connection(self.get_conn_id())
        extras = {k: v for k, v in (conn.extra_dejson or {}).items() if k in _LIBPQ_EXTRAS}
        return psycopg2.connect(
            host=conn.host or None,
            port=conn.port or None,
            user=conn.login or None,
            password=conn.password or None,
            dbname=conn.schema or None,
            application_name=extras.pop("application_name", "nightshift"),
            **extras,
        )
