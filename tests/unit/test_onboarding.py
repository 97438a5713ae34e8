"""Onboarding commands on a real PostgreSQL source: `spec init` drafts a spec that loads and checks clean,
`spec check` lists every problem of a broken spec at once (issue 12 item 4). The CLI runs as a user runs it:
`python -m include.nightshift` in a subprocess, the connection resolved from AIRFLOW_CONN_<ID>."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import yaml
from psycopg import sql

import local_stack
from include.nightshift import demo_data, onboarding
from include.nightshift.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]
FIRST = dt.date(2026, 3, 1)
NIGHTS = 20
ROWS = 300
TABLE = "public.churn_events"


@pytest.fixture(scope="module")
def source(pg_server_uri: str) -> Iterator[str]:
    """A database with the demo's source: 20 nights of 300 rows, every night's labels known but the newest's
    (labels arrive one day late). Module-scoped: built once for every test here."""
    dbname = f"onb_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_server_uri, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    uri = local_stack.database_uri(pg_server_uri, dbname)
    with psycopg.connect(uri) as conn:
        demo_data.create_source_table(conn)
        for i in range(NIGHTS):
            demo_data.load_day(conn, FIRST + dt.timedelta(days=i), ROWS, with_labels=i < NIGHTS - 1)
    yield uri
    with psycopg.connect(pg_server_uri, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))


def cli(*args: str, uri: str, conn_id: str = "onboarding_src") -> subprocess.CompletedProcess:
    """The CLI as a user runs it, from the repository root, the connection id in the environment."""
    env = {**os.environ, f"AIRFLOW_CONN_{conn_id.upper()}": local_stack.connection_json(
        uri, uri.partition("?")[0].rsplit("/", 1)[1])}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "include.nightshift", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    print(f"$ python -m include.nightshift {' '.join(args)}  ({time.monotonic() - started:.1f} s, exit "
          f"{done.returncode})\n{done.stdout}{done.stderr}")
    return done


@pytest.fixture(scope="module")
def draft(source: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("draft") / "churn_draft.yaml"
    done = cli("spec", "init", "--connection", "onboarding_src", "--table", TABLE, "--key", "customer_id",
               "--timestamp", "event_ts", "--label", "churned", "--days", "28", "--name", "churn_draft",
               "--out", str(out), uri=source)
    assert done.returncode == 0, done.stderr
    return out


def test_init_drafts_a_spec_that_loads_with_what_the_data_says(draft: Path, source: str):
    spec = load_spec(draft)
    assert (spec.entity_key.name, spec.entity_key.type, spec.timestamp) == ("customer_id", "bigint", "event_ts")
    assert (spec.label.name, spec.label.delay_days) == ("churned", 1)
    assert spec.source.table == TABLE and spec.source.connection_id == "onboarding_src"
    features = {f.name: f for f in spec.features}
    assert set(features) == set(demo_data.NUMERIC) | {"plan", "region", "payment_method", "acquisition_channel"}
    assert features["plan"].categories == tuple(sorted(demo_data.PLANS))
    assert features["region"].categories == tuple(sorted(demo_data.REGIONS))
    with psycopg.connect(source) as conn:  # every drafted range holds every value of the source
        for name in demo_data.NUMERIC:
            low, high = conn.execute(sql.SQL("SELECT min({c}), max({c}) FROM public.churn_events").format(
                c=sql.Identifier(name))).fetchone()
            assert features[name].min <= low and high <= features[name].max, (name, low, high, features[name])
    assert features["satisfaction_score"].max_null_share > 0  # 8% null in the demo
    assert features["age"].max_null_share == 0
    assert spec.validation.min_rows <= ROWS
    text = draft.read_text()
    assert text.count("# CHECK") + text.count("CHECK:") >= 4, "each section says what to check"


def test_check_passes_on_the_draft(draft: Path, source: str):
    done = cli("spec", "check", str(draft), uri=source)
    assert done.returncode == 0, done.stdout
    assert "OK, no problem" in done.stdout


def test_check_lists_every_problem_at_once(draft: Path, source: str, tmp_path: Path):
    # A copy of the source where one night is thin and no label ever arrived.
    thin = FIRST + dt.timedelta(days=NIGHTS - 3)
    with psycopg.connect(source) as conn:
        conn.execute("DROP TABLE IF EXISTS public.churn_broken")
        conn.execute("CREATE TABLE public.churn_broken AS SELECT * FROM public.churn_events")
        conn.execute("UPDATE public.churn_broken SET churned = NULL")
        conn.execute("DELETE FROM public.churn_broken WHERE event_ts >= %s AND event_ts < %s AND customer_id > 20",
                     (dt.datetime.combine(thin, dt.time(), dt.timezone.utc),
                      dt.datetime.combine(thin + dt.timedelta(days=1), dt.time(), dt.timezone.utc)))
    data = yaml.safe_load(draft.read_text())
    data["source"]["table"] = "public.churn_broken"
    data["validation"]["min_rows"] = 100
    features = {f["name"]: f for f in data["features"]}
    features["plan"]["categories"].remove("premium")             # a category not declared
    features["age"]["max"] = 30                                   # a range too narrow
    data["features"].append({"name": "loyalty_tier", "type": "categorical", "categories": ["gold"]})  # missing
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(data, sort_keys=False))
    load_spec(broken)  # a valid spec: only the source says it is wrong

    done = cli("spec", "check", str(broken), uri=source)
    assert done.returncode == 1
    problems = [line.strip() for line in done.stdout.splitlines() if line.strip().startswith("- ")]
    expected = {
        "missing column": r"features\[\d+\]\.name \(loyalty_tier\): no such column",
        "undeclared category": r"features\[\d+\]\.categories \(plan\): values not declared: 'premium'",
        "range too narrow": r"features\[\d+\]\.max \(age\): \d+ sampled rows outside \[[\d.]+, 30\]: values seen from 18 to",
        "thin night": rf"validation\.min_rows: night {thin} has 20 rows, below 100",
        "labels never arrive": r"label\.delay_days \(churned\): no labelled row .*labels never arrive",
    }
    for what, pattern in expected.items():
        assert any(re.search(pattern, p) for p in problems), f"{what} not reported: {problems}"
    assert len(problems) == len(expected), problems


def test_check_names_a_missing_table_and_a_wrong_type(draft: Path, source: str):
    spec = load_spec(draft)
    with psycopg.connect(source) as conn:
        import dataclasses

        gone = dataclasses.replace(spec, source=dataclasses.replace(spec.source, table="public.nope"))
        assert [str(p) for p in onboarding.check_spec(conn, gone).problems] == [
            "source.table: table public.nope does not exist (or has no columns, or this login cannot see it)"]
        conn.execute("CREATE TABLE public.typed AS SELECT customer_id::text AS customer_id, event_ts, "
                     "plan AS age, plan, churned FROM public.churn_events")
        narrow = dataclasses.replace(spec, source=dataclasses.replace(spec.source, table="public.typed"),
                                     features=tuple(f for f in spec.features if f.name in ("age", "plan")))
        found = [str(p) for p in onboarding.check_spec(conn, narrow).problems]
    assert "entity_key.name (customer_id): is text in the source, not bigint-compatible" in found
    assert any(p.startswith("features[") and "(age): is text in the source, not numeric-compatible" in p for p in found)


def test_a_connection_that_fails_is_named_without_its_password(source: str, tmp_path: Path):
    secret = "s3cr3t" + "pw"  # assembled, so that no URL with a password sits in the repo (test_repo_hygiene)
    done = cli("spec", "init", "--uri", "postgresql://someone:" + secret + "@127.0.0.1:1/nodb", "--table", TABLE,
               "--key", "customer_id", "--timestamp", "event_ts", "--label", "churned", uri=source)
    assert done.returncode == 2
    assert "127.0.0.1:1/nodb" in done.stderr and secret not in done.stdout + done.stderr


def test_a_date_column_with_extra_columns_in_a_local_zone_is_onboarded_by_init_and_one_edit(source: str,
                                                                                           tmp_path: Path):
    """Issue 12's acceptance: no view. A `date` timestamp, a boolean, a free-text column and a zone other than
    UTC: the draft reads the date in source.timezone (edited from UTC), casts the boolean to a category,
    leaves the free text out, and the pipeline's own snapshot reads a night of it."""
    from include.nightshift import snapshot

    first = dt.date(2026, 4, 1)
    with psycopg.connect(source) as conn:
        conn.execute("""CREATE TABLE public.shop_orders AS
            SELECT (d * 1000 + i)::bigint AS order_id, (%s::date + d) AS order_day,
                   round((10 + (i * 37 %% 90))::numeric, 2) AS basket, (ARRAY['web', 'store', 'phone'])[1 + i %% 3] AS channel,
                   (i %% 4 = 0) AS is_member, md5((d * 1000 + i)::text) AS note,
                   CASE WHEN d < 12 THEN (i %% 5 = 0)::int::smallint END AS returned
            FROM generate_series(0, 13) AS d, generate_series(1, 200) AS i""", (first,))
    out = tmp_path / "shop.yaml"
    done = cli("spec", "init", "--connection", "onboarding_src", "--table", "public.shop_orders", "--key", "order_id",
               "--timestamp", "order_day", "--label", "returned", "--out", str(out), uri=source)
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert "\n  timezone: UTC\n" in text and "is_member: {cast: text}" in text and "# left out (not read): note:" in text
    out.write_text(text.replace("\n  timezone: UTC\n", "\n  timezone: Europe/Oslo\n"))  # the one edit
    spec = load_spec(out)
    assert (spec.source.timezone, spec.label.delay_days) == ("Europe/Oslo", 2)
    assert {f.name for f in spec.features} == {"basket", "channel", "is_member"}
    done = cli("spec", "check", str(out), uri=source)
    assert done.returncode == 0, done.stdout
    with psycopg.connect(source) as conn:
        night = snapshot.read_day(conn, spec, first + dt.timedelta(days=5))
    assert night.num_rows == 200 and night.column_names == spec.columns
    assert str(night.schema.field("order_day").type) == "timestamp[us, tz=UTC]"
    assert sorted(set(night.column("is_member").to_pylist())) == ["false", "true"]


@pytest.mark.parametrize("task, label", [("regression", "(i %% 97)::float8 * 1.5"),
                                         ("multiclass", "(ARRAY['low', 'mid', 'high'])[1 + i %% 3]")])
def test_init_drafts_the_task_the_label_poses(source: str, tmp_path: Path, task: str, label: str):
    """A number that is not 0/1 is a regression, text classes a multiclass label; either draft loads and checks."""
    table = f"public.target_{task}"
    with psycopg.connect(source) as conn:
        conn.execute(sql.SQL("CREATE TABLE {} AS SELECT (d * 1000 + i)::bigint AS id, "
                             "(%s::timestamptz + d * interval '1 day' + i * interval '1 minute') AS ts, "
                             "(i %% 50)::float8 AS x, (ARRAY['a', 'b'])[1 + i %% 2] AS kind, "
                             "CASE WHEN d < 9 THEN " + label + " END AS y "
                             "FROM generate_series(0, 9) AS d, generate_series(1, 150) AS i").format(
                                 sql.Identifier(*table.split("."))), (dt.datetime(2026, 5, 1, tzinfo=dt.timezone.utc),))
    out = tmp_path / f"{task}.yaml"
    done = cli("spec", "init", "--connection", "onboarding_src", "--table", table, "--key", "id", "--timestamp", "ts",
               "--label", "y", "--out", str(out), uri=source)
    assert done.returncode == 0, done.stderr
    spec = load_spec(out)
    assert (spec.task, spec.label.delay_days) == (task, 1)
    if task == "multiclass":
        assert spec.label.classes == ("high", "low", "mid")
    assert cli("spec", "check", str(out), uri=source).returncode == 0
