"""Publish one predictions Parquet file into the warehouse, in a process of its own, so a test can kill it.

    python tests/faults/publish_partition.py URI YYYY-MM-DD PATH

The same two core calls PublishOperator makes (ensure_warehouse, then replace_partition),
on the churn spec, with application_name APPLICATION so the test can find its backend in
pg_stat_activity. Prints the number of rows written.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

APPLICATION = "nightshift-fault-publish"


def main(uri: str, day: str, path: str) -> int:
    import psycopg

    from include.nightshift import warehouse
    from include.nightshift.spec import load_spec

    spec = load_spec(ROOT / "include" / "specs" / "churn.yaml")
    conn = psycopg.connect(uri, application_name=APPLICATION)
    try:
        warehouse.ensure_warehouse(conn, spec)
        print(warehouse.replace_partition(conn, spec, dt.date.fromisoformat(day), path), flush=True)
    finally:
        conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
