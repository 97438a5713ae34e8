"""The local demo: real Airflow DAG runs over simulated nights, on a throwaway local stack.

    python scripts/demo.py run [--nights 12] [--rows 5000]   # what `make demo` runs
    python scripts/demo.py stop                              # what `make stop` runs
    python scripts/demo.py env                               # shell exports for the Airflow CLI on the demo's state
    python scripts/demo.py ui [--port 8080]                  # what `make ui` runs: the Airflow UI on 127.0.0.1

NIGHTSHIFT_HOME moves the demo's state (default .nightshift/), e.g. for a second, private demo.

Each night: the day's rows land in the source table (labels withheld), the previous day's
labels are revealed, and the nightly DAG runs for that date through Airflow (`dag.test`,
the same code path as `airflow dags test`). Covariate drift starts part way through. Night 3
trains a challenger it keeps out of production (force_retrain, promotion_policy never) and night 4
names it the shadow (shadow_version), as a user would in the trigger form: from then on it scores
every night beside the champion into predictions_shadow until a promotion retires it.
Each task's log is written to Airflow's log folder too, the run's start date is when it ran
and its note names the night and conf (local_stack.NightRunner), so `make ui` shows the
demo's runs as it shows runs the scheduler made.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import local_stack  # noqa: E402

SPEC_FILE = local_stack.ROOT / "include" / "specs" / "churn.yaml"
FIRST_NIGHT = dt.date(2026, 2, 1)
KEPT_OUT, SHADOWED = 3, 4  # the night that trains a challenger kept out of production, the night that shadows it


def run(nights: int, rows: int, drift_night: int) -> int:
    local_stack.stop_postgres()
    shutil.rmtree(local_stack.HOME, ignore_errors=True)
    t0 = time.monotonic()
    print(f"state: {local_stack.HOME}", flush=True)
    server, _ = local_stack.start()

    import psycopg

    from include.nightshift import demo_data
    from include.nightshift.spec import load_spec

    spec = load_spec(SPEC_FILE)
    history = spec.training.window_days + spec.training.holdout_days + spec.label.delay_days
    drift = demo_data.DriftPlan(covariate_from=FIRST_NIGHT + dt.timedelta(days=drift_night - 1))
    source = psycopg.connect(local_stack.database_uri(server, "source"))
    demo_data.create_source_table(source, spec.source.table)
    for back in range(history, 0, -1):  # labelled history before the first night
        demo_data.load_day(source, FIRST_NIGHT - dt.timedelta(days=back), rows, table=spec.source.table,
                           drift=drift, with_labels=True)
    print(f"source: {history} days of labelled history x {rows} rows; covariate drift from night {drift_night}",
          flush=True)

    runner = local_stack.NightRunner(spec.dag_id)
    failures, kept = 0, None
    for night in range(nights):
        day = FIRST_NIGHT + dt.timedelta(days=night)
        demo_data.load_day(source, day, rows, table=spec.source.table, drift=drift)
        demo_data.reveal_labels(source, day - dt.timedelta(days=1), rows, table=spec.source.table, drift=drift)
        conf: dict = {"note": f"demo night {night + 1}"}
        if night + 1 == KEPT_OUT:
            conf.update(force_retrain=True, promotion_policy="never", note=f"demo night {night + 1}: a challenger "
                        "kept out of production")
        if night + 1 == SHADOWED and kept is not None:
            conf.update(shadow_version=kept, note=f"demo night {night + 1}: v{kept} shadows the champion")
        done = runner.run(day, conf)
        if night + 1 == KEPT_OUT:
            kept = challenger_of(server, spec, day)
        state = getattr(done.dag_run, "state", "?")
        failures += state != "success"
        print(f"night {night + 1:2d} {day}: DAG run {state} in {done.seconds:.0f} s; {night_score(server, spec, day)}  "
              f"(log: {done.log})", flush=True)
    source.close()

    print_summary(server, spec)
    print_costs(server, spec)
    print(f"\ndemo finished in {time.monotonic() - t0:.0f} s ({failures} failed runs)")
    print_where_to_look(server, spec)
    return 1 if failures else 0


def night_score(server: str, spec, day: dt.date) -> str:
    """The night's ML Test Score as its run recorded it (pipeline_runs.details.ml_test_score, test_score.py),
    and where its shadow stands against the champion (shadow.py), when there is one."""
    import psycopg
    from psycopg import sql

    from include.nightshift.test_score import summary_text

    with psycopg.connect(local_stack.database_uri(server, "warehouse")) as conn:
        row = conn.execute(sql.SQL(
            "SELECT details -> 'ml_test_score', details -> 'decision' -> 'details' -> 'shadow' FROM {} "
            "WHERE logical_date = %s").format(sql.Identifier(spec.warehouse.schema, "pipeline_runs")), (day,)).fetchone()
    score = summary_text(row[0] if row else None) or "ML Test Score not recorded"
    shadow = (row[1] or {}) if row else {}
    if shadow.get("version") is None:
        return score
    standing = shadow.get("not_measured") or (f"won {shadow.get('nights_won')} of {shadow.get('min_nights')} "
                                              f"labelled days{' -> promoted' if shadow.get('wins') else ''}")
    return f"{score}; shadow v{shadow['version']}: {standing}"


def challenger_of(server: str, spec, day: dt.date) -> int | None:
    """The challenger the night registered (pipeline_runs.challenger_version)."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(local_stack.database_uri(server, "warehouse")) as conn:
        row = conn.execute(sql.SQL("SELECT challenger_version FROM {} WHERE logical_date = %s").format(
            sql.Identifier(spec.warehouse.schema, "pipeline_runs")), (day,)).fetchone()
    return row[0] if row else None


def print_summary(server: str, spec) -> None:
    import psycopg
    from psycopg import sql

    conn = psycopg.connect(local_stack.database_uri(server, "warehouse"))
    with conn.cursor() as cur:
        cur.execute(sql.SQL(
            "SELECT logical_date, rows_in, drift_share, retrain_reason, decision, champion_version, "
            "challenger_version, round(champion_metric::numeric, 4), round(challenger_metric::numeric, 4), rows_published "
            "FROM {}.pipeline_runs ORDER BY logical_date").format(sql.Identifier(spec.warehouse.schema)))
        rows = cur.fetchall()
        cur.execute(sql.SQL("SELECT count(*), count(DISTINCT (score_date, {})) FROM {}.predictions").format(
            sql.Identifier(spec.entity_key.name), sql.Identifier(spec.warehouse.schema)))
        total, distinct = cur.fetchone()
    conn.close()
    header = ("date", "rows", "drift", "reason", "decision", "champion", "challenger", "champ_m", "chall_m", "published")
    print("\n" + " | ".join(f"{h:>10}" for h in header))
    for row in rows:
        cells = [str(row[0]), row[1], f"{row[2]:.2f}" if row[2] is not None else "-", row[3] or "-", row[4],
                 row[5] or "-", row[6] or "-", row[7] or "-", row[8] or "-", row[9]]
        print(" | ".join(f"{str(c):>10}" for c in cells))
    print(f"\n{spec.warehouse.schema}.predictions: {total} rows, {distinct} distinct (score_date, "
          f"{spec.entity_key.name})")


def print_costs(server: str, spec) -> None:
    """What each night's steps cost (task_costs, written by record_run; task_costs.py): wall seconds of all
    steps and of the slowest, the biggest peak memory, and the cost alerts of the night."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(local_stack.database_uri(server, "warehouse")) as conn:
        rows = conn.execute(sql.SQL(
            "SELECT c.night, round(sum(c.wall_seconds)::numeric, 1), "
            "(array_agg(c.task_id || ' ' || round(c.wall_seconds::numeric, 1) || ' s' ORDER BY c.wall_seconds DESC))[1], "
            "round(max(c.rss_peak_bytes) / 1048576.0), jsonb_array_length(coalesce(r.details -> 'costs' -> 'findings', "
            "'[]')) FROM {} c JOIN {} r ON r.dag_run_id = c.dag_run_id GROUP BY c.night, r.details ORDER BY c.night"
        ).format(sql.Identifier(spec.warehouse.schema, "task_costs"),
                 sql.Identifier(spec.warehouse.schema, "pipeline_runs"))).fetchall()
    print(f"\nstep costs ({spec.warehouse.schema}.task_costs):")
    print(" | ".join(f"{h:>14}" for h in ("night", "wall s (all)", "slowest step", "peak MB", "cost alerts")))
    for row in rows:
        print(" | ".join(f"{str(c):>14}" for c in row))


def print_where_to_look(server: str, spec) -> None:
    home = local_stack.HOME
    reader = "" if not spec.warehouse.reader_role else (
        f"  as a consumer (read-only role {spec.warehouse.reader_role}):\n"
        f"              psql \"{local_stack.as_user(local_stack.database_uri(server, 'warehouse'), spec.warehouse.reader_role)}\"\n")
    print(f"""
Where to look (the PostgreSQL server keeps running until `make stop`):
  warehouse:  psql "{local_stack.database_uri(server, 'warehouse')}"
              SELECT * FROM {spec.warehouse.schema}.pipeline_runs ORDER BY logical_date;
{reader}  Airflow UI: make ui        then http://127.0.0.1:8080 (the demo's runs, each task's log, the reports)
  MLflow UI:  make mlflow-ui then http://localhost:5000 (model {spec.model_name}, alias champion)
  reports:    {home / 'artifacts' / 'reports' / spec.name}""")


def stop() -> int:
    """Stop the demo's PostgreSQL and check it is gone; exit 1 saying so when it could not be stopped."""
    try:
        stopped = local_stack.stop_postgres()
    except local_stack.PostgresStillRunning as error:
        print(f"could not stop the demo's PostgreSQL: {error}", file=sys.stderr)
        return 1
    print(f"stopped the demo's PostgreSQL ({local_stack.PG_DIR})" if stopped else "nothing to stop")
    return 0


def env() -> int:
    """The environment `make ui` runs Airflow in: the demo's state, created if missing."""
    server = local_stack.start_postgres()
    local_stack.create_databases(server)
    local_stack.init_mlflow_store()
    for key, value in local_stack.airflow_env(server).items():
        print(f"export {key}='{value}'")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run")
    run_p.add_argument("--nights", type=int, default=12)
    run_p.add_argument("--rows", type=int, default=5000, help="rows per day")
    run_p.add_argument("--drift-night", type=int, default=7, help="first night with covariate drift")
    sub.add_parser("stop")
    sub.add_parser("env")
    ui_p = sub.add_parser("ui")
    ui_p.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    if args.command == "run":
        return run(args.nights, args.rows, args.drift_night)
    if args.command == "ui":
        return local_stack.serve_ui(args.port)
    return stop() if args.command == "stop" else env()


if __name__ == "__main__":
    sys.exit(main())
