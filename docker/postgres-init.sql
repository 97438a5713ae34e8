-- First-start setup of the one PostgreSQL server: a database per use and a role per user.
--
-- The postgres image runs this once, on an empty data volume, as the superuser (psql -f),
-- so changing a password in .env later needs ALTER ROLE (or a fresh volume). Passwords come
-- from the container's environment through psql's \getenv, never from this file; :'name'
-- quotes them as SQL literals, so any character is safe.
--
--   airflow            owns database airflow (Airflow metadata, Celery results)
--   mlflow             owns database mlflow (tracking and model registry)
--   nightshift         the pipeline writer: owns databases warehouse and source
--                      (source stands in for the upstream system in this stack; point the
--                      source connection at the real system, with a read-only login, in
--                      production)
--   nightshift_reader  consumers: may connect to warehouse only, and only read

\set ON_ERROR_STOP on

\getenv airflow_password AIRFLOW_DB_PASSWORD
\getenv mlflow_password MLFLOW_DB_PASSWORD
\getenv nightshift_password NIGHTSHIFT_DB_PASSWORD
\getenv reader_password NIGHTSHIFT_READER_PASSWORD

-- Spelled out although they are the defaults: no service login may create roles or
-- databases (tests/unit/test_access.py checks it on this very script).
CREATE ROLE airflow LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'airflow_password';
CREATE ROLE mlflow LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'mlflow_password';
CREATE ROLE nightshift LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'nightshift_password';
CREATE ROLE nightshift_reader LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'reader_password';
-- A consumer's session cannot write even where a grant slips through.
ALTER ROLE nightshift_reader SET default_transaction_read_only = on;

CREATE DATABASE airflow OWNER airflow;
CREATE DATABASE mlflow OWNER mlflow;
CREATE DATABASE warehouse OWNER nightshift;
CREATE DATABASE source OWNER nightshift;

-- By default every role may connect to every database: only owners, and the grants below.
REVOKE ALL ON DATABASE airflow, mlflow, warehouse, source FROM PUBLIC;
GRANT CONNECT ON DATABASE warehouse TO nightshift_reader;

-- Default privileges live in each database, so set them from inside warehouse. The
-- pipeline creates one schema per dataset spec and its tables and views at run time: every
-- schema, table and view nightshift creates there becomes readable by nightshift_reader.
-- A spec may also say `warehouse: {reader_role: nightshift_reader}`: the pipeline then
-- grants the same USAGE and SELECT itself (include/nightshift/warehouse.py), which also
-- covers a warehouse server that was not set up by this script.
\connect warehouse
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO nightshift_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE nightshift GRANT USAGE ON SCHEMAS TO nightshift_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE nightshift GRANT SELECT ON TABLES TO nightshift_reader;
