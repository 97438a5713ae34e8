"""`python -m include.nightshift spec init|check`: onboarding a data set from the command line.

    spec init  --connection CONN_ID | --uri URI  --table SCHEMA.TABLE --key COL --timestamp COL --label COL
               [--days N] [--name NAME] [--out FILE]
    spec check FILE [--connection CONN_ID | --uri URI] [--nights N]

The logic is in onboarding.py; this module parses arguments, opens the connection and prints.
A connection id is resolved as the pipeline resolves it: Airflow's AIRFLOW_CONN_<ID> environment
variable first (JSON or URI form, as the local stack and the deployed stack set it), then, only when
that is unset, Airflow's own lookup (its secrets backends and metadata database). No password is
ever printed: a failed connection is named by its id, host, port and database.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlparse

import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from include.nightshift import onboarding, source_check

APPLICATION = "nightshift-onboarding"


class ConnectionProblem(Exception):
    """The source could not be reached; the message never holds a password."""


# --- connections -----------------------------------------------------------------------------


def _libpq_keywords() -> set[str]:
    return {option.keyword.decode() for option in pq.Conninfo.get_defaults()}


def _from_json(text: str) -> dict[str, Any]:
    data = json.loads(text)
    extra = data.get("extra") or {}
    return {"host": data.get("host"), "port": data.get("port"), "user": data.get("login"),
            "password": data.get("password"), "dbname": data.get("schema"),
            **(json.loads(extra) if isinstance(extra, str) else extra)}


def _from_uri(text: str) -> dict[str, Any]:
    """Airflow's URI form: conn-type://login:password@host:port/schema?extra=value."""
    url = urlparse(text)
    extra = dict(parse_qsl(url.query))
    if "__extra__" in extra:
        extra = json.loads(extra.pop("__extra__"))
    return {"host": unquote(url.hostname or "") or None, "port": url.port, "user": unquote(url.username or "") or None,
            "password": unquote(url.password or "") or None, "dbname": unquote(url.path.lstrip("/")) or None, **extra}


def _from_airflow(conn_id: str) -> dict[str, Any]:
    """A connection Airflow keeps elsewhere (secrets backend, metadata database); imported only then."""
    try:
        from airflow.models.connection import Connection
    except ImportError as exc:
        raise ConnectionProblem(f"connection {conn_id!r}: AIRFLOW_CONN_{conn_id.upper()} is not set and Airflow "
                                "is not importable; pass --uri instead") from exc
    try:
        found = Connection.get_connection_from_secrets(conn_id)
    except Exception as exc:  # noqa: BLE001  (Airflow's own "not defined" error, named by id)
        raise ConnectionProblem(f"connection {conn_id!r} is not defined: set AIRFLOW_CONN_{conn_id.upper()} "
                                f"or pass --uri ({type(exc).__name__})") from None
    return {"host": found.host, "port": found.port, "user": found.login, "password": found.password,
            "dbname": found.schema, **found.extra_dejson}


def airflow_conninfo(conn_id: str) -> str:
    """libpq connection string of an Airflow connection id (extras that are libpq keywords kept, e.g. sslmode)."""
    raw = os.environ.get(f"AIRFLOW_CONN_{conn_id.upper()}")
    if raw:
        fields = _from_json(raw) if raw.lstrip().startswith("{") else _from_uri(raw)
    else:
        fields = _from_airflow(conn_id)
    keywords = _libpq_keywords()
    return make_conninfo(**{k: v for k, v in fields.items() if k in keywords and v not in (None, "")})


def where(conninfo: str) -> str:
    """host:port/database of a connection string, for messages (never the password)."""
    params = conninfo_to_dict(conninfo)
    return f"{params.get('host') or 'localhost'}:{params.get('port') or 5432}/{params.get('dbname') or ''}"


def connect(conn_id: str | None, uri: str | None) -> psycopg.Connection:
    conninfo = uri if uri else airflow_conninfo(conn_id or "nightshift_source")
    name = "--uri" if uri else f"connection {conn_id!r}"
    try:
        return psycopg.connect(conninfo, application_name=APPLICATION, connect_timeout=10)
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConnectionProblem(f"{name} ({where(conninfo)}) failed: {reason}") from None


@contextlib.contextmanager
def _reader(spec: Any, args: argparse.Namespace) -> Iterator[Any]:
    """The reader the nightly run would use (a query on PostgreSQL: this module's connection, so --uri
    works; any other kind: runtime.source_reader, with plugins/ on the path as Airflow puts it)."""
    from include.nightshift.sources import PostgresReader

    if spec.source.kind == "postgres":
        with connect(args.connection or spec.source.connection_id, args.uri) as conn:
            yield PostgresReader(conn)
        return
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins"))
    from nightshift_airflow import runtime

    with contextlib.ExitStack() as stack:
        try:
            reader = stack.enter_context(runtime.source_reader(spec))
        except Exception as exc:  # noqa: BLE001  (Airflow's own "not defined", a provider missing: named)
            raise ConnectionProblem(f"{spec.source.described} (connection {spec.source.connection_id!r}): "
                                    f"{type(exc).__name__}: {exc}") from None
        yield reader


# --- commands --------------------------------------------------------------------------------


def init(args: argparse.Namespace) -> int:
    started = time.monotonic()
    with connect(args.connection, args.uri) as conn:
        found = onboarding.profile(conn, args.table, key=args.key, timestamp=args.timestamp, label=args.label,
                                   days=args.days, timezone=args.timezone)
    name = args.name or args.table.split(".")[-1]
    text = onboarding.draft_yaml(found, name=name, connection_id=args.connection or "nightshift_source")
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}: {len(found.columns)} columns, {sum(n.rows for n in found.nights)} rows over "
              f"{len(found.nights)} nights profiled in {time.monotonic() - started:.1f} s; "
              f"read its CHECK comments, then: python -m include.nightshift spec check {args.out}")
    else:
        sys.stdout.write(text)
    return 0


def check(args: argparse.Namespace) -> int:
    from include.nightshift.spec import SpecError, load_spec

    started = time.monotonic()
    try:
        spec = load_spec(args.file)
    except SpecError as exc:
        print(f"{args.file}: the spec does not load:\n{exc}")
        return 1
    if onboarding.reads_catalog(spec):
        with connect(args.connection or spec.source.connection_id, args.uri) as conn:
            report = onboarding.check_spec(conn, spec, args.nights)
    else:
        with _reader(spec, args) as reader:
            report = source_check.check_by_reading(reader, spec, args.nights)
    took = time.monotonic() - started
    span = f"{report.nights[0].day}..{report.nights[-1].day}" if report.nights else "no night"
    head = (f"{args.file}: {report.table}, nights {span}, {report.sample_rows} rows sampled, "
            f"checked in {took:.1f} s")
    if not report.problems:
        print(f"{head}: OK, no problem")
        return 0
    print(f"{head}: {len(report.problems)} problem(s)")
    for problem in report.problems:
        print(f"  - {problem}")
    return 1


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m include.nightshift", description=__doc__.split("\n\n")[0])
    specs = top.add_subparsers(dest="group", required=True).add_parser("spec", help="draft or check a dataset spec")
    commands = specs.add_subparsers(dest="command", required=True)
    init_cmd = commands.add_parser("init", help="profile a source table and write a commented spec draft")
    check_cmd = commands.add_parser("check", help="check a spec against its live source, every problem at once")
    for sub in (init_cmd, check_cmd):
        source = sub.add_mutually_exclusive_group(required=sub is init_cmd)
        source.add_argument("--connection", help="Airflow connection id (AIRFLOW_CONN_<ID> or Airflow's lookup)")
        source.add_argument("--uri", help="a libpq URI instead of a connection id")
    init_cmd.add_argument("--table", required=True, help="SCHEMA.TABLE (or TABLE, in public)")
    init_cmd.add_argument("--key", required=True, help="entity key column")
    init_cmd.add_argument("--timestamp", required=True, help="timestamptz, timestamp or date column of the night")
    init_cmd.add_argument("--label", required=True, help="label column (null until known)")
    init_cmd.add_argument("--days", type=int, default=28, help="nights profiled, ending at the newest (default 28)")
    init_cmd.add_argument("--timezone", default="UTC",
                          help="IANA zone of the night's day boundary (default UTC; a date column is its own day)")
    init_cmd.add_argument("--name", help="the data set's name (default: the table's)")
    init_cmd.add_argument("--out", help="file to write (default: standard output)")
    check_cmd.add_argument("file", help="the spec file")
    check_cmd.add_argument("--nights", type=int, help="nights checked, ending at the newest (default: at least 7)")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return init(args) if args.command == "init" else check(args)
    except (ConnectionProblem, onboarding.SourceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
