"""A quiet night at 1M, 5M and 10M rows on the native Celery stack with two workers (issue 15 item 5).

For each size: the stack of tests/celery (Redis, the metadata DB, API server, scheduler, DAG processor,
two `airflow celery worker` processes of one slot each, the artifact store on an S3-compatible endpoint)
starts from nothing; the cold start trains on a small labelled history (`--history-rows` a day: training
cost is bench_training.py's subject) and serves night 1 at the size; night 1's labels arrive; night 2 at
the size is the quiet night measured. Every step's wall seconds, CPU and peak RSS are what the pipeline
itself records in <schema>.task_costs (task_costs.py), and the worker of each task comes from Airflow.
The spec is the demo's churn.yaml with `scoring.shard_rows` (`--shard-rows`; default about two shards per worker,
at least 500,000 rows each): above it, score_shard tasks score the night on both workers.

Floors, measured here on the same night's rows:
- read: `COPY (SELECT the night's rows) TO STDOUT` from the source, as `psql \\copy` does; and the same for
  the newly labelled day (read_labelled), which the snapshot step reads too (floors recorded before 2026-12-01
  have no read_labelled: their night floor counted one read);
- write: `COPY ... FROM STDIN` of the published partition's rows (CSV) into a table like predictions;
- predict: the champion's estimator alone on its feature matrix (XGBoost's `inplace_predict`; the
  preprocessing done first, untimed).
The quiet night's floor is the reads + 2 x predict (score and monitor each score a night) + write. Each step that
has a floor is also shown against its own (own_floors): that says which steps carry the night's overhead.

    python benchmarks/bench_scaling.py [--rows 1000000 5000000 10000000] [--history-rows 20000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts"), str(ROOT / "plugins")]

import psycopg  # noqa: E402

D1, D2 = dt.date(2026, 1, 15), dt.date(2026, 1, 16)
HISTORY_DAYS = 17
QUIET_STEPS = ("snapshot", "validate", "drift", "monitor", "decide", "score", "score_shard", "publish", "record_run")


def midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.timezone.utc)


def spec_dir(home: Path, shard_rows: int) -> Path:
    """churn.yaml with scoring.shard_rows set (its source and warehouse are the stack's databases)."""
    folder = home / "specs"
    folder.mkdir(parents=True, exist_ok=True)
    text = (ROOT / "include" / "specs" / "churn.yaml").read_text()
    old = "  chunk_rows: 100000\n"
    assert text.count(old) == 1, "churn.yaml's scoring.chunk_rows line moved: update bench_scaling.spec_dir"
    text = text.replace(old, f"{old}  shard_rows: {shard_rows}\n")
    # the history is deliberately small (training is bench_training.py's subject): the measured nights may hold
    # many times its rows without failing the row-count rule against its median
    norm = "  row_norm_days: 7\n"
    assert text.count(norm) == 1, "churn.yaml's validation.row_norm_days line moved: update bench_scaling.spec_dir"
    text = text.replace(norm, f"{norm}  max_row_ratio: 100000\n")
    (folder / "churn.yaml").write_text(text)
    return folder


def load_source(uri: str, rows: int, history_rows: int) -> dict[str, float]:
    """Labelled history at history_rows a day, then night 1 at `rows`, unlabelled: seconds each."""
    from include.nightshift import demo_data

    began = time.monotonic()
    with psycopg.connect(uri) as conn:
        demo_data.create_source_table(conn)
        for back in range(HISTORY_DAYS, 0, -1):
            demo_data.load_day(conn, D1 - dt.timedelta(days=back), history_rows, with_labels=True)
        history = time.monotonic() - began
        demo_data.load_day(conn, D1, rows, with_labels=False)
    return {"history_load": history, "night_load": time.monotonic() - began - history}


def next_night(uri: str, rows: int) -> None:
    """Night 1's labels arrive; night 2's rows land."""
    from include.nightshift import demo_data

    with psycopg.connect(uri) as conn:
        demo_data.reveal_labels(conn, D1, rows)
        demo_data.load_day(conn, D2, rows, with_labels=False)


def run_night(stack, api, day: dt.date, note: str) -> dict:
    from tests.e2e.scenario import NIGHTLY

    run_id = f"bench_{day.isoformat()}"
    began = time.monotonic()
    api.trigger(NIGHTLY, {"note": note, "run_date": day.isoformat()}, run_id=run_id, logical_date=midnight(day),
                data_interval=(midnight(day), midnight(day + dt.timedelta(days=1))))
    (run,) = api.wait(NIGHTLY, [run_id], timeout=6 * 3600)
    found = api.get(f"/dags/{NIGHTLY}/dagRuns/{run_id}/taskInstances", params={"limit": 200})["task_instances"]
    hosts = {(ti["task_id"], ti.get("map_index", -1)): ti["hostname"] for ti in found}
    if run["state"] != "success":
        states = {f"{ti['task_id']}[{ti.get('map_index', -1)}]": ti["state"] for ti in found}
        raise RuntimeError(f"{run_id} ended {run['state']}: {states}; logs in {stack.logs}")
    print(f"{run_id}: {run['state']} in {time.monotonic() - began:.0f} s", flush=True)
    return {"run_id": run_id, "state": run["state"], "seconds": time.monotonic() - began, "hosts": hosts}


def task_costs(uri: str, run_id: str) -> list[dict]:
    with psycopg.connect(uri) as conn, conn.cursor() as cur:
        cur.execute("SELECT task_id, try_number, wall_seconds, cpu_seconds, rss_peak_bytes, rows FROM churn.task_costs "
                    "WHERE dag_run_id = %s ORDER BY started_at", (run_id,))
        return [dict(zip(("task", "try", "wall", "cpu", "peak", "rows"), r)) for r in cur.fetchall()]


def read_floor(uri: str, day: dt.date) -> float:
    """COPY TO STDOUT of the night's source rows (what `psql \\copy` does), bytes discarded."""
    began = time.perf_counter()
    with psycopg.connect(uri) as conn, conn.cursor() as cur:
        with cur.copy("COPY (SELECT * FROM public.churn_events WHERE event_ts >= %s AND event_ts < %s) TO STDOUT",
                      (midnight(day), midnight(day + dt.timedelta(days=1)))) as copy:
            for _ in copy:
                pass
    return time.perf_counter() - began


def write_floor(uri: str, day: dt.date, workdir: Path) -> float:
    """COPY FROM STDIN of the published partition's rows (CSV, from a file) into a table like predictions."""
    path = workdir / "partition.csv"
    with psycopg.connect(uri) as conn, conn.cursor() as cur, open(path, "wb") as out:
        with cur.copy("COPY (SELECT * FROM churn.predictions WHERE score_date = %s) TO STDOUT (FORMAT csv)",
                      (day,)) as copy:
            for data in copy:
                out.write(data)
    with psycopg.connect(uri) as conn:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS churn.floor_write (LIKE churn.predictions INCLUDING ALL)")
            cur.execute("TRUNCATE churn.floor_write")
        conn.commit()
        began = time.perf_counter()
        with conn.cursor() as cur, open(path, "rb") as handle:
            with cur.copy("COPY churn.floor_write FROM STDIN (FORMAT csv)") as copy:
                while block := handle.read(1 << 20):
                    copy.write(block)
        conn.commit()
        seconds = time.perf_counter() - began
        with conn.cursor() as cur:
            cur.execute("DROP TABLE churn.floor_write")
        conn.commit()
    path.unlink()
    return seconds


def predict_floor(stack) -> float:
    """XGBoost's inplace_predict alone on night 2's snapshot, preprocessed first (untimed), in the stack's env."""
    code = f"""
import json, time, sys
sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'plugins')!r}]
import pyarrow.parquet as pq
from nightshift_airflow import runtime
from include.nightshift.spec import load_spec
from include.nightshift.training import features_frame
spec = load_spec({str(stack.home.parent / 'specs' / 'churn.yaml')!r})
store, registry = runtime.artifact_store(), runtime.registry()
champion = registry.champion(spec.model_name)
model = registry.load_model(spec.model_name, champion.version)
folder = store.url("snapshots", spec.name, "{D2.isoformat()}")
(name,) = [p.rsplit("/", 1)[-1] for p in store.list(folder) if p.endswith(".parquet")]
snapshot = folder + "/" + name
with store.open(snapshot) as handle:
    frame = pq.read_table(handle).to_pandas()
x = model[:-1].transform(features_frame(frame, spec))
final = model[-1]
predict = final.get_booster().inplace_predict if hasattr(final, "get_booster") else final.predict_proba
began = time.perf_counter()
predict(x)
print(json.dumps({{"seconds": time.perf_counter() - began, "rows": len(frame)}}))
"""
    return json.loads(stack.python(code).strip().splitlines()[-1])["seconds"]


def one_size(server_uri: str, rows: int, history_rows: int, shard_rows: int, home: Path) -> dict:
    from tests.celery.celery_stack import DATABASES, CeleryStack
    from tests.celery.test_celery_night import wait_for_workers
    from tests.e2e.airflow_stack import local_stack
    from tests.e2e.scenario import NIGHTLY

    os.environ["NIGHTSHIFT_SPECS_DIR"] = str(spec_dir(home, shard_rows))
    local_stack.create_reader_roles(server_uri)  # warehouse.reader_role, as the demo's start creates it
    stack = CeleryStack.launch(server_uri, home / "stack", dag_ids=(NIGHTLY,))
    try:
        source = local_stack.database_uri(server_uri, DATABASES["source"])
        warehouse = local_stack.database_uri(server_uri, DATABASES["warehouse"])
        loads = load_source(source, rows, history_rows)
        wait_for_workers(stack)
        api = stack.api()
        first = run_night(stack, api, D1, f"bench: cold start, {rows} rows")
        began = time.monotonic()
        next_night(source, rows)
        loads["next_night_load"] = time.monotonic() - began
        quiet = run_night(stack, api, D2, f"bench: quiet night, {rows} rows")
        floors = {"read": read_floor(source, D2), "read_labelled": read_floor(source, D1),
                  "write": write_floor(warehouse, D2, home),
                  "predict": predict_floor(stack)}
        return {"rows": rows, "shard_rows": shard_rows, "loads": loads, "first": _plain(first),
                "quiet": _plain(quiet), "costs": task_costs(warehouse, quiet["run_id"]), "floors": floors}
    finally:
        stack.stop()


def _plain(night: dict) -> dict:
    return {**night, "hosts": {f"{task}[{index}]" if index >= 0 else task: host
                               for (task, index), host in night["hosts"].items()}}


def own_floors(costs: list[dict], floors: dict[str, float]) -> str:
    """The steps that have a floor, each against its own: the snapshot against the read; the scoring (the score
    task and its shards) against predict, plus a write when it ran in shards (each shard COPYs its rows into
    predictions_staging); publish against the write. The other steps (validate, drift, monitor, decide,
    record_run) have none in the issue's list, so all their seconds are above it."""
    def wall(*tasks: str) -> float:  # a mapped task's costs are named task_<index>
        return sum(c["wall"] for c in costs if c["task"] in tasks or c["task"].rsplit("_", 1)[0] in tasks)

    sharded = wall("score_shard") > 0
    scoring_floor = floors["predict"] + (floors["write"] if sharded else 0.0)
    reads = floors["read"] + floors.get("read_labelled", 0.0)
    pairs = [("snapshot", wall("snapshot"), reads, "the reads" if "read_labelled" in floors else "read"),
             ("scoring", wall("score", "score_shard"), scoring_floor, "predict + write" if sharded else "predict"),
             ("publish", wall("publish"), floors["write"], "write")]
    rest = sum(c["wall"] for c in costs) - sum(seconds for _, seconds, _, _ in pairs)
    return ("against their own floors: " + ", ".join(f"{step} {seconds:.1f} s = {seconds / floor:.1f}x {name}"
                                                     for step, seconds, floor, name in pairs)
            + f"; the steps without a floor {rest:.1f} s")


def report(results: list[dict]) -> None:
    print("\nquiet night on the Celery stack (2 workers, one task each), per step: wall s / peak RSS GB / worker")
    for result in results:
        rows, costs, floors = result["rows"], result["costs"], result["floors"]
        print(f"\n{rows:,} rows a night (shard_rows {result['shard_rows']:,}); the run {result['quiet']['seconds']:.0f} s "
              f"end to end ({result['quiet']['state']}); cold start {result['first']['seconds']:.0f} s")
        for cost in costs:
            per_second = f"{cost['rows'] / cost['wall']:,.0f} rows/s" if cost["rows"] and cost["wall"] else ""
            print(f"  {cost['task']:<14} {cost['wall']:8.1f} s {cost['peak'] / 1e9:6.2f} GB  {per_second}")
        steps = sum(c["wall"] for c in costs)
        floor = floors["read"] + floors.get("read_labelled", 0.0) + 2 * floors["predict"] + floors["write"]
        peak = max(c["peak"] for c in costs)
        labelled = f", read of the labelled day {floors['read_labelled']:.1f} s" if "read_labelled" in floors else ""
        print(f"  floors: read {floors['read']:.1f} s{labelled}, predict {floors['predict']:.1f} s, write {floors['write']:.1f} s;"
              f" sum of the steps {steps:.0f} s against a floor of {floor:.1f} s ({steps / floor:.1f}x); "
              f"the largest peak RSS of a task {peak / 1e9:.2f} GB")
        print("  " + own_floors(costs, floors))
    if len(results) > 1:
        base = results[0]
        for result in results[1:]:
            scale = result["rows"] / base["rows"]
            ratio = sum(c["wall"] for c in result["costs"]) / sum(c["wall"] for c in base["costs"])
            print(f"{result['rows']:,} against {base['rows']:,} rows: {scale:.0f}x the rows, {ratio:.1f}x the step seconds")


def shard_rows_for(rows: int, workers: int = 2) -> int:
    """The README's advice: about two shards per worker (a shard's fixed cost, its process and the model's
    download and round trip, is paid once per shard), never under 500,000 rows a shard."""
    return max(500_000, -(-rows // (2 * workers)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000, 10_000_000])
    parser.add_argument("--history-rows", type=int, default=20_000)
    parser.add_argument("--shard-rows", type=int, default=None,
                        help="scoring.shard_rows (default: shard_rows_for, the README's advice for two workers)")
    parser.add_argument("--out", type=Path, default=ROOT / "test-artifacts" / "bench_scaling.json")
    args = parser.parse_args()
    import pgserver

    results = []
    with tempfile.TemporaryDirectory(prefix="nightshift-scaling-") as tmp:
        server = pgserver.get_server(Path(tmp) / "pg", cleanup_mode="stop").get_uri()
        for rows in args.rows:
            home = args.out.resolve().parent / "bench-scaling" / f"rows-{rows}"  # the stack's logs stay there
            shutil.rmtree(home, ignore_errors=True)
            results.append(one_size(server, rows, args.history_rows, args.shard_rows or shard_rows_for(rows), home))
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=1, default=str))
            report(results[-1:])
    report(results)


if __name__ == "__main__":
    main()
