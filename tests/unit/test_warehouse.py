"""The warehouse contract on a real PostgreSQL: DDL, night replacement, run history, quoting."""

from __future__ import annotations

import dataclasses
import datetime as dt
import multiprocessing
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import pytest
from psycopg import sql

from include.nightshift import warehouse as wh

DAY1 = dt.date(2026, 3, 1)
DAY2 = dt.date(2026, 3, 2)


def _predictions(keys, seed: int, run_id: str = "run_1", version: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    score = rng.random(len(keys))
    return pd.DataFrame({
        "customer_id": keys,
        "score": score,
        "predicted_label": (score >= 0.5).astype("int64"),
        "model_name": "nightshift_churn",
        "model_version": version,
        "snapshot_sha256": "ab" * 32,
        "dag_run_id": run_id,
        "scored_at": pd.Timestamp("2026-03-02 01:02:03.456789", tz="UTC"),
    })


def _write(df: pd.DataFrame, path: Path) -> Path:
    df.to_parquet(path, index=False)
    return path


def _rows(conn, spec, table: str = "predictions", where: str = "") -> list[tuple]:
    key = spec.entity_key.name
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT score_date, {k}, score, dag_run_id FROM {t} {w} ORDER BY score_date, {k}").format(
            k=sql.Identifier(key), t=sql.SQL("{}.{}").format(sql.Identifier(spec.warehouse.schema), sql.Identifier(table)),
            w=sql.SQL(where)))
        return cur.fetchall()


def _published(conn, spec, day: dt.date) -> pd.DataFrame:
    """Entity key and score of one published night, ordered by key (what a consumer reads)."""
    key = spec.entity_key.name
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT {k}, score FROM {t} WHERE score_date = %s ORDER BY {k}").format(
            k=sql.Identifier(key), t=wh.table(spec, wh.PREDICTIONS)), (day,))
        return pd.DataFrame(cur.fetchall(), columns=[key, "score"])


def _with_schema(spec, schema: str):
    return dataclasses.replace(spec, warehouse=dataclasses.replace(spec.warehouse, schema=schema))


@pytest.fixture
def spec(churn_spec, pg_conn):
    wh.ensure_warehouse(pg_conn, churn_spec)
    return churn_spec


def test_ensure_warehouse_is_idempotent_and_documented(pg_conn, churn_spec):
    wh.ensure_warehouse(pg_conn, churn_spec)
    wh.ensure_warehouse(pg_conn, churn_spec)
    with pg_conn.transaction(), pg_conn.cursor() as cur:
        cur.execute("SELECT table_name, table_type FROM information_schema.tables WHERE table_schema = 'churn' ORDER BY 1")
        assert cur.fetchall() == [("champion_changes", "BASE TABLE"), ("ml_test_score", "BASE TABLE"),
                                  ("model_staleness", "BASE TABLE"),
                                  ("model_versions", "BASE TABLE"),
                                  ("pipeline_runs", "BASE TABLE"), ("predictions", "BASE TABLE"),
                                  ("predictions_latest", "VIEW"), ("predictions_shadow", "BASE TABLE"),
                                  ("predictions_staging", "BASE TABLE"), ("run_attempts", "BASE TABLE"),
                                  ("schema_version", "BASE TABLE"), ("task_costs", "BASE TABLE")]
        cur.execute("SELECT version FROM churn.schema_version ORDER BY version")
        assert [v for v, in cur.fetchall()] == [m[0] for m in wh.MIGRATIONS]
        cur.execute("SELECT column_name, data_type FROM information_schema.columns "
                    "WHERE table_schema = 'churn' AND table_name = 'predictions' ORDER BY ordinal_position")
        assert cur.fetchall()[:3] == [("score_date", "date"), ("customer_id", "bigint"), ("score", "double precision")]
        cur.execute("SELECT a.attname, col_description(a.attrelid, a.attnum) FROM pg_attribute a "
                    "WHERE a.attrelid = 'churn.predictions'::regclass AND a.attnum > 0")
        undocumented = [name for name, comment in cur.fetchall() if not comment]
        assert undocumented == []
        cur.execute("SELECT a.attname FROM pg_attribute a WHERE a.attrelid = ANY(ARRAY['churn.run_attempts'::regclass, "
                    "'churn.champion_changes'::regclass, 'churn.model_versions'::regclass]) AND a.attnum > 0 "
                    "AND NOT a.attisdropped "
                    "AND col_description(a.attrelid, a.attnum) IS NULL")
        assert cur.fetchall() == []
        cur.execute("SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                    "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = 'churn.predictions'::regclass AND i.indisprimary")
        assert sorted(r[0] for r in cur.fetchall()) == ["customer_id", "score_date"]


def test_ensure_warehouse_repairs_a_missing_view_and_does_not_wait_for_readers(pg_conn, pg_uri, spec):
    with pg_conn.transaction(), pg_conn.cursor() as cur:
        cur.execute("DROP VIEW churn.predictions_latest")
    wh.ensure_warehouse(pg_conn, spec)

    reader = psycopg.connect(pg_uri)  # a consumer's long query holds a lock on the view
    try:
        with reader.cursor() as cur:
            cur.execute("SELECT count(*) FROM churn.predictions_latest")
        with pg_conn.cursor() as cur:
            cur.execute("SET lock_timeout = '500ms'")
        pg_conn.commit()
        wh.ensure_warehouse(pg_conn, spec)  # would raise LockNotAvailable if it replaced the view again
    finally:
        reader.close()
    with pg_conn.transaction(), pg_conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM churn.predictions_latest")
        assert cur.fetchone() == (0,)


def test_ensure_warehouse_concurrently(pg_uri, churn_spec):
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def run() -> None:
        conn = psycopg.connect(pg_uri)
        try:
            barrier.wait()
            wh.ensure_warehouse(conn, churn_spec)
        except BaseException as exc:  # collected, asserted below
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_existing_table_with_other_key_type_is_refused(pg_conn, spec):
    other = dataclasses.replace(spec, entity_key=dataclasses.replace(spec.entity_key, type="text"))
    with pytest.raises(ValueError, match="different entity key"):
        wh.ensure_warehouse(pg_conn, other)


def test_entity_key_clashing_with_contract_column_is_refused(pg_conn, churn_spec):
    clash = dataclasses.replace(churn_spec, entity_key=dataclasses.replace(churn_spec.entity_key, name="score"))
    with pytest.raises(ValueError, match="clashes"):
        wh.ensure_warehouse(pg_conn, clash)


def test_replace_partition_writes_all_rows_with_their_values(pg_conn, spec, tmp_path):
    df = _predictions(np.arange(1, 30_001), seed=1)
    written = wh.replace_partition(pg_conn, spec, DAY1, _write(df, tmp_path / "p.parquet"))
    assert written == 30_000
    with pg_conn.transaction(), pg_conn.cursor() as cur:
        cur.execute("SELECT count(*), count(DISTINCT customer_id), sum(score), sum(predicted_label), "
                    "min(scored_at), max(model_version), min(snapshot_sha256) FROM churn.predictions WHERE score_date = %s",
                    (DAY1,))
        count, distinct, score_sum, positives, scored_at, version, sha = cur.fetchone()
    assert (count, distinct, version, sha) == (30_000, 30_000, 3, "ab" * 32)
    assert score_sum == pytest.approx(df.score.sum(), rel=1e-12)
    assert positives == df.predicted_label.sum()
    assert scored_at == dt.datetime(2026, 3, 2, 1, 2, 3, 456789, tzinfo=dt.timezone.utc)
    assert pg_conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


@pytest.mark.parametrize("scored_at", [pd.Timestamp("2026-03-02 02:02:03", tz="Europe/Paris"),
                                       pd.Timestamp("2026-03-02 01:02:03")], ids=["other zone", "naive UTC"])
def test_scored_at_is_the_same_instant_whatever_the_session_zone(pg_conn, spec, tmp_path, scored_at):
    with pg_conn.transaction(), pg_conn.cursor() as cur:
        cur.execute("SET TimeZone = 'America/New_York'")
    df = _predictions([1], 1).assign(scored_at=scored_at)
    wh.replace_partition(pg_conn, spec, DAY1, _write(df, tmp_path / "p.parquet"))
    with pg_conn.transaction(), pg_conn.cursor() as cur:
        cur.execute("SELECT scored_at FROM churn.predictions")
        assert cur.fetchone()[0] == dt.datetime(2026, 3, 2, 1, 2, 3, tzinfo=dt.timezone.utc)


def test_rerun_replaces_the_night_and_leaves_other_nights(pg_conn, spec, tmp_path):
    wh.replace_partition(pg_conn, spec, DAY1, _write(_predictions([1, 2, 3], 1, "day1"), tmp_path / "d1.parquet"))
    wh.replace_partition(pg_conn, spec, DAY2, _write(_predictions([1, 2, 3, 4], 2, "first"), tmp_path / "a.parquet"))
    second = _predictions([3, 4, 5], 3, "second")
    assert wh.replace_partition(pg_conn, spec, DAY2, _write(second, tmp_path / "b.parquet")) == 3

    rows = _rows(pg_conn, spec)
    assert [(d, k, run) for d, k, _, run in rows] == [
        (DAY1, 1, "day1"), (DAY1, 2, "day1"), (DAY1, 3, "day1"),
        (DAY2, 3, "second"), (DAY2, 4, "second"), (DAY2, 5, "second"),
    ]
    assert [s for d, _, s, _ in rows if d == DAY2] == second.score.tolist()


def _publish_in_child(uri: str, spec, day: dt.date, path: str) -> tuple[str, object]:
    """Runs in a separate process: one publish on its own connection; the outcome, never a raise."""
    conn = psycopg.connect(uri)
    try:
        return "ok", wh.replace_partition(conn, spec, day, path)
    except Exception as exc:  # reported to the parent, which asserts on it
        return "error", repr(exc)
    finally:
        conn.close()


def _wait_for_lock_waiters(uri: str, count: int) -> None:
    """Until `count` other sessions of this database wait on a lock (a hang guard, not a timing check)."""
    monitor = psycopg.connect(uri, autocommit=True)  # pg_stat_activity is frozen for the length of a transaction
    try:
        deadline = time.monotonic() + 120
        while True:
            with monitor.cursor() as cur:
                cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                            "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()")
                if cur.fetchone()[0] >= count:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{count} publishers never both reached the lock")
            time.sleep(0.05)
    finally:
        monitor.close()


def test_two_processes_publishing_the_same_night_leave_one_row_per_entity(pg_conn, pg_uri, spec, tmp_path):
    """Two publishes of one night at the same moment, from two processes with their own connections.

    A session holding a SHARE lock on the table stops both inside their transaction until
    both are waiting; then it lets go. Without the advisory lock both would delete the old
    night and both COPY, and the second would fail on the primary key (or, with a weaker key,
    leave two rows per entity). With it they queue: both succeed and the night is exactly
    one of the two files, whole.
    """
    wh.replace_partition(pg_conn, spec, DAY1, _write(_predictions(np.arange(1, 501), 1, "old"), tmp_path / "old.parquet"))
    files = {run: _write(_predictions(np.arange(1, 2001), seed, run), tmp_path / f"{run}.parquet")
             for seed, run in ((2, "a"), (3, "b"))}
    blocker = psycopg.connect(pg_uri)
    try:
        with blocker.cursor() as cur:
            cur.execute("LOCK TABLE churn.predictions IN SHARE MODE")  # held until the commit below
        with multiprocessing.get_context("spawn").Pool(2) as pool:
            pending = [pool.apply_async(_publish_in_child, (pg_uri, spec, DAY1, str(path))) for path in files.values()]
            _wait_for_lock_waiters(pg_uri, 2)
            blocker.commit()
            outcomes = [p.get(timeout=120) for p in pending]
    finally:
        blocker.close()

    assert outcomes == [("ok", 2000), ("ok", 2000)]
    rows = _rows(pg_conn, spec)
    assert len(rows) == 2000 and len({k for _, k, _, _ in rows}) == 2000
    runs = {run for _, _, _, run in rows}
    assert len(runs) == 1, f"the night mixes runs {runs}"
    winner = _predictions(np.arange(1, 2001), {"a": 2, "b": 3}[runs.pop()])
    assert [s for _, _, s, _ in rows] == winner.score.tolist()


@pytest.mark.parametrize("bad_keys", [[7, 8, 8], [7.0, None, 9.0]], ids=["duplicate key", "null key"])
def test_failed_copy_rolls_back_and_keeps_previous_night(pg_conn, spec, tmp_path, bad_keys):
    wh.replace_partition(pg_conn, spec, DAY1, _write(_predictions([1, 2], 1, "good"), tmp_path / "good.parquet"))
    bad = _predictions(bad_keys, 2, "bad")
    bad["customer_id"] = bad["customer_id"].astype("Int64")
    with pytest.raises(psycopg.IntegrityError):
        wh.replace_partition(pg_conn, spec, DAY1, _write(bad, tmp_path / "bad.parquet"))
    assert [(k, run) for _, k, _, run in _rows(pg_conn, spec)] == [(1, "good"), (2, "good")]
    assert pg_conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_error_while_streaming_rolls_back(pg_conn, spec, tmp_path, monkeypatch):
    """A failure on our side mid-COPY (here: a later batch that cannot be cast) also rolls back."""
    wh.replace_partition(pg_conn, spec, DAY1, _write(_predictions([1, 2], 1, "good"), tmp_path / "good.parquet"))
    monkeypatch.setattr(wh, "BATCH_ROWS", 10)
    bad = _predictions(np.arange(100, 130), 2, "bad")
    bad["model_version"] = bad["model_version"].astype("int64")
    bad.loc[25, "model_version"] = 2**40  # does not fit the integer column: the 3rd batch fails to cast
    with pytest.raises(pa.ArrowInvalid, match="not in range"):  # the real error, not a driver's QueryCanceled
        wh.replace_partition(pg_conn, spec, DAY1, _write(bad, tmp_path / "bad.parquet"))
    assert [(k, run) for _, k, _, run in _rows(pg_conn, spec)] == [(1, "good"), (2, "good")]


def test_missing_column_fails_before_touching_the_night(pg_conn, spec, tmp_path):
    wh.replace_partition(pg_conn, spec, DAY1, _write(_predictions([1], 1, "good"), tmp_path / "good.parquet"))
    with pytest.raises(ValueError, match="snapshot_sha256"):
        wh.replace_partition(pg_conn, spec, DAY1,
                             _write(_predictions([5], 1).drop(columns="snapshot_sha256"), tmp_path / "bad.parquet"))
    assert len(_rows(pg_conn, spec)) == 1


def test_text_entity_key(pg_conn, churn_spec, tmp_path):
    spec = dataclasses.replace(
        _with_schema(churn_spec, "accounts"),
        entity_key=dataclasses.replace(churn_spec.entity_key, name="account_ref", type="text"),
    )
    wh.ensure_warehouse(pg_conn, spec)
    keys = ["A-1", "", "quote\"comma,", "line\nbreak", "ünï"]
    df = _predictions(keys, 4).rename(columns={"customer_id": "account_ref"})
    assert wh.replace_partition(pg_conn, spec, DAY1, _write(df, tmp_path / "t.parquet")) == 5
    assert sorted(k for _, k, _, _ in _rows(pg_conn, spec)) == sorted(keys)

    back = _published(pg_conn, spec, DAY1)
    assert sorted(back.account_ref) == sorted(keys)
    assert dict(zip(back.account_ref, back.score)) == dict(zip(df.account_ref, df.score))


def test_predictions_latest_shows_only_newest_date(pg_conn, spec, tmp_path):
    wh.replace_partition(pg_conn, spec, DAY2, _write(_predictions([1, 2, 3], 1, "new"), tmp_path / "a.parquet"))
    wh.replace_partition(pg_conn, spec, DAY1, _write(_predictions([1, 9], 2, "old"), tmp_path / "b.parquet"))
    assert {(d, run) for d, _, _, run in _rows(pg_conn, spec, "predictions_latest")} == {(DAY2, "new")}
    assert len(_rows(pg_conn, spec, "predictions_latest")) == 3


def test_published_scores_are_the_files_scores_to_the_bit(pg_conn, spec, tmp_path):
    df = _predictions(np.arange(10, 2010), 5)
    wh.replace_partition(pg_conn, spec, DAY1, _write(df, tmp_path / "p.parquet"))
    back = _published(pg_conn, spec, DAY1)
    assert back.customer_id.tolist() == df.customer_id.tolist()
    assert back.score.to_numpy().tobytes() == df.score.to_numpy().tobytes()  # CSV text round-trips float64 exactly
    assert _published(pg_conn, spec, DAY2).empty


def test_upsert_run_inserts_then_updates_one_row(pg_conn, spec):
    started = dt.datetime(2026, 3, 2, 1, 0, tzinfo=dt.timezone.utc)
    wh.upsert_run(pg_conn, spec, {"logical_date": DAY1, "dag_run_id": "r1", "rows_in": 100, "started_at": started,
                                  "details": {"error": "boom"}})
    wh.upsert_run(pg_conn, spec, {"logical_date": DAY1, "dag_run_id": "r2", "validation_passed": True,
                                  "decision": "promoted", "champion_metric": 0.81, "challenger_metric": 0.83,
                                  "metric_name": "roc_auc", "details": {"verdict": {"passed": True, "reasons": []}}})
    with pg_conn.transaction(), pg_conn.cursor() as cur:
        cur.execute("SELECT logical_date, dag_run_id, rows_in, started_at, validation_passed, decision, "
                    "challenger_metric, retrain_reason, details FROM churn.pipeline_runs")
        rows = cur.fetchall()
    assert rows == [(DAY1, "r2", 100, started, True, "promoted", 0.83, None,
                     {"verdict": {"passed": True, "reasons": []}})]


def test_upsert_run_refuses_unknown_key_and_bad_decision(pg_conn, spec):
    with pytest.raises(ValueError, match="'row_in'"):
        wh.upsert_run(pg_conn, spec, {"logical_date": DAY1, "row_in": 5})
    with pytest.raises(psycopg.errors.CheckViolation):
        wh.upsert_run(pg_conn, spec, {"logical_date": DAY1, "decision": "maybe"})


def test_recent_row_counts_uses_validated_runs_before_the_date(pg_conn, churn_spec):
    assert wh.recent_row_counts(pg_conn, churn_spec, DAY1, 7) == []  # no table yet
    wh.ensure_warehouse(pg_conn, churn_spec)
    for i in range(10):
        day = DAY1 + dt.timedelta(days=i)
        wh.upsert_run(pg_conn, churn_spec, {"logical_date": day, "rows_in": 1000 + i, "validation_passed": i != 7})
    before = DAY1 + dt.timedelta(days=9)
    assert wh.recent_row_counts(pg_conn, churn_spec, before, 3) == [1008, 1006, 1005]
    assert wh.recent_row_counts(pg_conn, churn_spec, DAY1, 3) == []


def test_schema_name_is_quoted_not_folded(pg_conn, churn_spec, tmp_path):
    spec = _with_schema(churn_spec, "Churn_X")
    wh.ensure_warehouse(pg_conn, spec)
    wh.replace_partition(pg_conn, spec, DAY1, _write(_predictions([1, 2], 1), tmp_path / "p.parquet"))
    wh.upsert_run(pg_conn, spec, {"logical_date": DAY1, "rows_in": 2, "validation_passed": True})
    with pg_conn.transaction(), pg_conn.cursor() as cur:
        cur.execute("SELECT nspname FROM pg_namespace WHERE lower(nspname) = 'churn_x'")
        assert cur.fetchall() == [("Churn_X",)]
        cur.execute('SELECT count(*) FROM "Churn_X".predictions_latest')
        assert cur.fetchone() == (2,)
    assert wh.recent_row_counts(pg_conn, spec, DAY2, 7) == [2]
    assert len(_published(pg_conn, spec, DAY1)) == 2


# --- versioned DDL ----------------------------------------------------------------------------------


def _versions(conn, schema: str = "churn") -> list[tuple[int, dt.datetime]]:
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT version, applied_at FROM {}.schema_version ORDER BY version").format(
            sql.Identifier(schema)))
        return cur.fetchall()


def test_a_version_1_warehouse_made_before_versioning_is_upgraded_in_place(pg_conn, churn_spec, tmp_path, monkeypatch):
    """A warehouse as the pipeline made it before DDL was versioned: the three relations of
    version 1, rows in them, no audit table and no schema_version table. The next
    ensure_warehouse brings it to the last version and keeps every row."""
    monkeypatch.setattr(wh, "MIGRATIONS", wh.MIGRATIONS[:1])
    wh.ensure_warehouse(pg_conn, churn_spec)
    wh.replace_partition(pg_conn, churn_spec, DAY1, _write(_predictions([1, 2, 3], 1, "v1"), tmp_path / "p.parquet"))
    wh.upsert_run(pg_conn, churn_spec, {"logical_date": DAY1, "rows_in": 3, "validation_passed": True})
    with pg_conn.transaction(), pg_conn.cursor() as cur:
        cur.execute("DROP TABLE churn.schema_version")
    assert not wh.table_exists(pg_conn, churn_spec, wh.CHANGES)
    assert not wh.table_exists(pg_conn, churn_spec, wh.SCHEMA_VERSION)
    monkeypatch.undo()

    wh.ensure_warehouse(pg_conn, churn_spec)

    assert [v for v, _ in _versions(pg_conn)] == [m[0] for m in wh.MIGRATIONS] == list(range(1, wh.MIGRATIONS[-1][0] + 1))
    assert [(k, run) for _, k, _, run in _rows(pg_conn, churn_spec)] == [(1, "v1"), (2, "v1"), (3, "v1")]
    assert wh.recent_row_counts(pg_conn, churn_spec, DAY2, 7) == [3]
    assert wh.table_exists(pg_conn, churn_spec, wh.CHANGES)
    with pg_conn.transaction(), pg_conn.cursor() as cur:  # the reader is granted the new table too
        cur.execute("SELECT has_table_privilege(%s, 'churn.champion_changes', 'SELECT')", (churn_spec.warehouse.reader_role,))
        assert cur.fetchone() == (True,)


def test_a_later_migration_adds_a_column_to_an_existing_warehouse_once(pg_conn, spec, monkeypatch):
    """How a later issue changes the warehouse: a new last entry in MIGRATIONS. An existing
    warehouse (rows included) gets it on the next ensure_warehouse, exactly once."""
    wh.upsert_run(pg_conn, spec, {"logical_date": DAY1, "rows_in": 5})

    def add_column(cur, spec, key_name, key_type):
        cur.execute(sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS realised_metric double precision").format(
            wh.table(spec, wh.PIPELINE_RUNS)))

    last = wh.MIGRATIONS[-1][0]
    monkeypatch.setattr(wh, "MIGRATIONS", (*wh.MIGRATIONS, (last + 1, "pipeline_runs.realised_metric", add_column)))
    wh.ensure_warehouse(pg_conn, spec)
    applied = _versions(pg_conn)
    assert [v for v, _ in applied] == list(range(1, last + 2))
    wh.ensure_warehouse(pg_conn, spec)
    assert _versions(pg_conn) == applied  # applied once: nothing ran again
    [run] = wh.runs(pg_conn, spec, 7)
    assert run["rows_in"] == 5 and "realised_metric" in run and run["realised_metric"] is None


def test_runs_gives_every_column_of_the_window_oldest_first(pg_conn, churn_spec):
    assert wh.runs(pg_conn, churn_spec, 7) == []  # no table yet
    wh.ensure_warehouse(pg_conn, churn_spec)
    assert wh.runs(pg_conn, churn_spec, 7) == []  # no row yet
    for i in range(5):
        wh.upsert_run(pg_conn, churn_spec, {"logical_date": DAY1 + dt.timedelta(days=i), "rows_in": i,
                                            "details": {"night": i}})
    rows = wh.runs(pg_conn, churn_spec, 2)
    assert [(r["logical_date"], r["rows_in"], r["details"]) for r in rows] == [
        (DAY1 + dt.timedelta(days=3), 3, {"night": 3}), (DAY1 + dt.timedelta(days=4), 4, {"night": 4})]
    assert set(rows[0]) == set(wh.RUN_COLUMNS)
    assert [r["rows_in"] for r in wh.runs(pg_conn, churn_spec, 2, until=DAY1 + dt.timedelta(days=1))] == [0, 1]
    assert pg_conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_the_csv_worker_stays_a_few_batches_ahead_and_hands_on_its_error():
    """Memory of a publish is bounded: the worker making CSV batches runs at most two ahead of the COPY."""
    made, lead = [], []

    def batches():
        for i in range(20):
            made.append(i)
            yield i
        raise ValueError("batch 20 is broken")

    taken = []
    with pytest.raises(ValueError, match="batch 20 is broken"):
        for item in wh._ahead(batches(), depth=2):
            time.sleep(0.005)  # a slow server: the worker must wait, not run ahead
            lead.append(len(made) - len(taken))
            taken.append(item)
    assert taken == list(range(20))  # in order, every batch, then the worker's error
    assert max(lead) <= 4  # the item in hand, two queued, one being made
    assert not any(t.name == "nightshift-csv" for t in threading.enumerate())  # the worker is gone


# --- no_model, run_attempts, champion_changes.night (migrations 3-5) ---------------------------------


def _attempt(run_id: str, day: dt.date, decision: str, **more) -> dict:
    return {"dag_run_id": run_id, "logical_date": day, "decision": decision, **more}


def test_a_warehouse_at_version_2_with_rows_gets_no_model_run_attempts_and_night_once(pg_conn, churn_spec,
                                                                                       monkeypatch):
    """The warehouse as the pipeline left it before this change (migrations 1-2, a night recorded, a
    promotion audited): the next ensure_warehouse lets pipeline_runs take no_model, creates
    run_attempts (readable by the reader role) and gives champion_changes its night, the existing
    promotion's night taken from the pipeline_runs row of the same run."""
    from include.nightshift import audit

    monkeypatch.setattr(wh, "MIGRATIONS", wh.MIGRATIONS[:2])
    monkeypatch.setattr(wh, "RELATIONS", tuple(r for r in wh.RELATIONS
                                               if r not in (wh.RUN_ATTEMPTS, wh.MODEL_VERSIONS, wh.MODEL_STALENESS)))
    wh.ensure_warehouse(pg_conn, churn_spec)
    wh.upsert_run(pg_conn, churn_spec, {"logical_date": DAY1, "dag_run_id": "night_1", "decision": "promoted"})
    wh.insert_row(pg_conn, wh.table(churn_spec, wh.CHANGES), {
        "event": "promote", "model_name": "m", "to_version": 1, "actor": "nightshift", "reason": "gate passed",
        "dag_run_id": "night_1"}, wh.CHANGE_KEY, update=False)
    with pytest.raises(psycopg.errors.CheckViolation):
        wh.upsert_run(pg_conn, churn_spec, {"logical_date": DAY2, "decision": "no_model"})
    monkeypatch.undo()

    wh.ensure_warehouse(pg_conn, churn_spec)
    wh.ensure_warehouse(pg_conn, churn_spec)

    assert [v for v, _ in _versions(pg_conn)] == list(range(1, wh.MIGRATIONS[-1][0] + 1))
    wh.upsert_run(pg_conn, churn_spec, {"logical_date": DAY2, "decision": "no_model"})
    with pytest.raises(psycopg.errors.CheckViolation):
        wh.upsert_run(pg_conn, churn_spec, {"logical_date": DAY2, "decision": "maybe"})
    [change] = audit.changes(pg_conn, churn_spec)
    assert (change["dag_run_id"], change["night"]) == ("night_1", DAY1)
    with pg_conn.transaction(), pg_conn.cursor() as cur:
        cur.execute("SELECT has_table_privilege(%s, 'churn.run_attempts', 'SELECT'), "
                    "has_table_privilege(%s, 'churn.run_attempts', 'INSERT')", (churn_spec.warehouse.reader_role,) * 2)
        assert cur.fetchone() == (True, False)


def test_every_run_is_an_attempt_and_a_retry_updates_its_own_row(pg_conn, spec):
    wh.record_attempt(pg_conn, spec, _attempt("r1", DAY1, "failed", failed_tasks=["score", "publish"],
                                              conf={"note": "first", "dry_run": False}, details={"x": 1}))
    wh.record_attempt(pg_conn, spec, _attempt("r1", DAY1, "no_model", failed_tasks=["publish", "score"]))  # a retry
    wh.record_attempt(pg_conn, spec, _attempt("r2", DAY1, "promoted", rows_published=10, dry_run=False))
    wh.record_attempt(pg_conn, spec, _attempt("r3", DAY2, "rejected", dry_run=True))
    rows = wh.attempts(pg_conn, spec)
    assert [(r["dag_run_id"], r["logical_date"], r["decision"], r["dry_run"]) for r in rows] == [
        ("r1", DAY1, "no_model", False), ("r2", DAY1, "promoted", False), ("r3", DAY2, "rejected", True)]
    first = rows[0]
    assert first["failed_tasks"] == ["publish", "score"] and first["conf"] == {"note": "first", "dry_run": False}
    assert first["details"] == {"x": 1} and rows[1]["rows_published"] == 10 and rows[2]["rows_published"] == 0
    assert [r["dag_run_id"] for r in wh.attempts(pg_conn, spec, DAY2)] == ["r3"]


def test_record_attempt_refuses_unknown_keys_missing_keys_and_bad_decisions(pg_conn, spec):
    with pytest.raises(ValueError, match="'rows_publish'"):
        wh.record_attempt(pg_conn, spec, _attempt("r1", DAY1, "failed", rows_publish=3))
    with pytest.raises(ValueError, match="'decision' is required"):
        wh.record_attempt(pg_conn, spec, {"dag_run_id": "r1", "logical_date": DAY1})
    with pytest.raises(psycopg.errors.CheckViolation):
        wh.record_attempt(pg_conn, spec, _attempt("r1", DAY1, "maybe"))
    assert wh.attempts(pg_conn, spec) == []


def test_attempts_before_the_table_exists_is_empty(pg_conn, churn_spec):
    assert wh.attempts(pg_conn, churn_spec) == []


# --- model_versions: what made each version, and when it served ------------------------------------------


def _change(conn, spec, event: str, before, version: int, at: dt.datetime, state: str = "done") -> None:
    from include.nightshift import audit

    audit.record_change(conn, spec, {
        "event": event, "model_name": "nightshift_churn", "from_version": before, "to_version": version,
        "actor": "nightshift", "reason": "test", "dag_run_id": f"{event}_{version}_{at:%H%M}", "changed_at": at,
        "state": state})


def _judged(version: int, blessed: bool, **more) -> dict:
    return {"model_name": "nightshift_churn", "version": version, "run_id": f"run{version}", "family": "xgboost",
            "trained_for": DAY1, "train_from": DAY1 - dt.timedelta(days=14), "train_to": DAY1 - dt.timedelta(days=3),
            "holdout_from": DAY1 - dt.timedelta(days=2), "holdout_to": DAY1 - dt.timedelta(days=1),
            "snapshot_sha256": ["ab" * 32, "cd" * 32], "metric_name": "roc_auc", "holdout_metric": 0.8,
            "baseline_metric": 0.7, "holdout_metrics": {"challenger": {"roc_auc": 0.8}}, "blessed": blessed,
            "verdict": "gate passed" if blessed else "gate failed", **more}


def _versions_table(conn, spec) -> dict[int, dict]:
    return {r["version"]: r for r in wh.model_versions(conn, spec, "nightshift_churn")}


def test_model_versions_keep_blessed_once_blessed_and_refuse_unknown_keys(pg_conn, spec):
    assert wh.model_versions(pg_conn, _with_schema(spec, "nowhere")) == []  # no table yet: no history
    wh.upsert_model_version(pg_conn, spec, _judged(1, True))
    wh.upsert_model_version(pg_conn, spec, _judged(1, False, verdict="judged again", holdout_metric=0.75))
    wh.upsert_model_version(pg_conn, spec, _judged(2, False))
    rows = _versions_table(pg_conn, spec)
    assert (rows[1]["blessed"], rows[1]["verdict"], rows[1]["holdout_metric"]) == (True, "judged again", 0.75)
    assert rows[2]["blessed"] is False and rows[2]["snapshot_sha256"] == ["ab" * 32, "cd" * 32]
    assert rows[1]["holdout_metrics"] == {"challenger": {"roc_auc": 0.8}}
    for bad, words in (({**_judged(3, True), "blesed": True}, "unknown key 'blesed'"),
                       ({**_judged(3, True), "champion_from": DAY1}, "unknown key 'champion_from'"),
                       ({**_judged(3, True), "version": None}, "'version' is required")):
        with pytest.raises(ValueError, match=words):
            wh.upsert_model_version(pg_conn, spec, bad)


def test_serving_periods_follow_the_done_changes_and_a_served_version_gets_a_row(pg_conn, spec):
    t = [dt.datetime(2026, 3, d, 2, 0, tzinfo=dt.UTC) for d in (1, 2, 3, 4)]
    for version in (1, 2):
        wh.upsert_model_version(pg_conn, spec, _judged(version, True))
    _change(pg_conn, spec, "promote", None, 1, t[0])
    _change(pg_conn, spec, "promote", 1, 2, t[1])
    _change(pg_conn, spec, "external", 2, 5, t[2])  # set by hand in MLflow: never judged, no row yet
    _change(pg_conn, spec, "rollback", 5, 1, t[3])
    _change(pg_conn, spec, "promote", 1, 2, t[3] + dt.timedelta(hours=1), state="abandoned")  # never moved: not a period

    assert wh.refresh_champion_periods(pg_conn, spec, "nightshift_churn") == [5]
    assert wh.refresh_champion_periods(pg_conn, spec, "nightshift_churn") == []  # idempotent
    rows = _versions_table(pg_conn, spec)
    assert {v: (r["champion_from"], r["champion_to"]) for v, r in rows.items()} == {
        1: (t[3], None),  # serving again since the rollback (its latest period)
        2: (t[1], t[2]),
        5: (t[2], t[3])}
    assert rows[5]["blessed"] is None and rows[5]["run_id"] is None


def test_a_prediction_joins_its_model_version(pg_conn, spec, tmp_path):
    """The README's example query: from a prediction row to the run and data that made its model."""
    wh.upsert_model_version(pg_conn, spec, _judged(3, True))
    wh.replace_partition(pg_conn, spec, DAY1, _write(_predictions([1, 2], 1, version=3), tmp_path / "p.parquet"))
    with pg_conn.transaction(), pg_conn.cursor() as cur:
        cur.execute("""
            SELECT p.customer_id, p.score, v.run_id, v.train_from, v.train_to, v.snapshot_sha256, v.blessed
            FROM churn.predictions p
            JOIN churn.model_versions v ON v.model_name = p.model_name AND v.version = p.model_version
            WHERE p.score_date = %s ORDER BY p.customer_id""", (DAY1,))
        rows = cur.fetchall()
    assert [(r[0], r[2], r[3], r[4], r[6]) for r in rows] == [
        (k, "run3", DAY1 - dt.timedelta(days=14), DAY1 - dt.timedelta(days=3), True) for k in (1, 2)]


def test_the_readme_s_model_versions_queries_run_on_the_warehouse(pg_conn, spec):
    """Every example query of the README that reads model_versions or external changes is valid SQL here."""
    import re

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    blocks = re.findall(r"```sql\n(.*?)```", readme, re.S)
    statements = [s.strip() for b in blocks for s in b.split(";") if "model_versions" in s or "'external'" in s]
    assert len(statements) >= 4, statements
    wh.upsert_model_version(pg_conn, spec, _judged(3, True))
    for statement in statements:
        with pg_conn.transaction(), pg_conn.cursor() as cur:
            cur.execute(statement)
            cur.fetchall()


def test_a_schema_made_for_another_task_is_refused_naming_the_setting(pg_conn, churn_spec):
    """A spec switched between tasks over the same warehouse.schema: by the predictions columns
    (multiclass has its own), or by the metric its nights were judged by (binary and regression share them)."""
    wh.ensure_warehouse(pg_conn, churn_spec)
    multiclass = dataclasses.replace(churn_spec, task="multiclass")
    with pytest.raises(ValueError, match=r"warehouse.schema 'churn' was made for another task: .* lacks "
                                         r"\['class_probabilities', 'predicted_class'\] for task multiclass"):
        wh.ensure_warehouse(pg_conn, multiclass)
    regression = dataclasses.replace(churn_spec, task="regression")
    wh.ensure_warehouse(pg_conn, regression)  # no night recorded yet: nothing says which task it served
    wh.upsert_run(pg_conn, churn_spec, {"logical_date": dt.date(2026, 1, 5), "dag_run_id": "r1",
                                        "metric_name": "roc_auc", "decision": "skipped"})
    pg_conn.commit()
    with pytest.raises(ValueError, match="holds nights judged by roc_auc, a metric of another task than regression"):
        wh.ensure_warehouse(pg_conn, regression)
    wh.ensure_warehouse(pg_conn, churn_spec)  # the spec it was made for still passes


# --- predictions_shadow (migration 13): a shadow version's predictions, never served ---------------------


def _columns(conn, table: str) -> list[tuple]:
    """(name, type, NOT NULL, comment) of every column of churn.<table>, in order."""
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, "
                    "col_description(a.attrelid, a.attnum) FROM pg_attribute a "
                    "WHERE a.attrelid = format('churn.%%I', %s::text)::regclass AND a.attnum > 0 "
                    "AND NOT a.attisdropped ORDER BY a.attnum", (table,))
        return cur.fetchall()


def test_a_multiclass_shadow_table_has_the_multiclass_columns_too(pg_conn, churn_spec):
    multiclass = _with_schema(dataclasses.replace(churn_spec, task="multiclass"), "churn_mc")
    wh.ensure_warehouse(pg_conn, multiclass)
    with pg_conn.transaction(), pg_conn.cursor() as cur:
        cur.execute("SELECT table_name, array_agg(column_name::text ORDER BY ordinal_position) FROM "
                    "information_schema.columns WHERE table_schema = 'churn_mc' AND table_name IN "
                    "('predictions', 'predictions_shadow') GROUP BY 1 ORDER BY 1")
        (_, predictions), (_, shadow) = cur.fetchall()
    assert shadow == [*predictions, "role"] and predictions[-2:] == ["predicted_class", "class_probabilities"]


def _shadow_rows(conn) -> list[tuple]:
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SELECT score_date, customer_id, dag_run_id, role FROM churn.predictions_shadow "
                    "ORDER BY score_date, customer_id")
        return cur.fetchall()


def test_the_shadow_table_has_the_predictions_columns_plus_role_all_commented(pg_conn, spec):
    predictions, shadow = _columns(pg_conn, "predictions"), _columns(pg_conn, "predictions_shadow")
    assert shadow[:-1] == predictions  # same names, types, NOT NULLs and comments, in the same order
    name, kind, not_null, comment = shadow[-1]
    assert (name, kind, not_null) == ("role", "text", True) and comment.startswith("Which kind of unserved model")
    with pg_conn.transaction(), pg_conn.cursor() as cur:
        cur.execute("SELECT obj_description('churn.predictions_shadow'::regclass, 'pg_class')")
        assert "never served" in cur.fetchone()[0]
        cur.execute("SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                    "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = 'churn.predictions_shadow'::regclass "
                    "AND i.indisprimary")
        assert sorted(r[0] for r in cur.fetchall()) == ["customer_id", "score_date"]
        cur.execute("SELECT has_table_privilege(%s, 'churn.predictions_shadow', 'SELECT'), "
                    "has_table_privilege(%s, 'churn.predictions_shadow', 'INSERT')", (spec.warehouse.reader_role,) * 2)
        assert cur.fetchone() == (True, False)
    with pytest.raises(psycopg.errors.CheckViolation), pg_conn.transaction(), pg_conn.cursor() as cur:
        cur.execute("INSERT INTO churn.predictions_shadow (score_date, customer_id, role) VALUES (%s, 1, 'champion')",
                    (DAY1,))


def test_a_shadow_publish_and_a_champion_publish_never_touch_each_other(pg_conn, spec, tmp_path):
    champion = _write(_predictions([1, 2, 3], 1, "champion", version=5), tmp_path / "c.parquet")
    shadow = _write(_predictions([1, 2, 3, 4], 2, "shadow", version=7), tmp_path / "s.parquet")
    assert wh.replace_partition(pg_conn, spec, DAY1, champion) == 3
    assert wh.replace_partition(pg_conn, spec, DAY1, shadow, relation=wh.PREDICTIONS_SHADOW) == 4
    assert [r[3] for r in _rows(pg_conn, spec)] == ["champion"] * 3
    assert _shadow_rows(pg_conn) == [(DAY1, k, "shadow", "shadow") for k in (1, 2, 3, 4)]  # role: its default

    again = _write(_predictions([1, 2], 3, "champion again", version=5), tmp_path / "c2.parquet")
    assert wh.replace_partition(pg_conn, spec, DAY1, again) == 2  # the champion's rerun leaves the shadow's rows
    assert _shadow_rows(pg_conn) == [(DAY1, k, "shadow", "shadow") for k in (1, 2, 3, 4)]
    rerun = _write(_predictions([5, 6], 4, "shadow again", version=7), tmp_path / "s2.parquet")
    assert wh.replace_partition(pg_conn, spec, DAY1, rerun, relation=wh.PREDICTIONS_SHADOW) == 2  # replaced, not added
    assert _shadow_rows(pg_conn) == [(DAY1, k, "shadow again", "shadow") for k in (5, 6)]
    assert [(r[1], r[3]) for r in _rows(pg_conn, spec)] == [(1, "champion again"), (2, "champion again")]


def test_a_shadow_publish_does_not_wait_for_the_champion_s(pg_conn, pg_uri, spec, tmp_path):
    """The champion's publish of the same night holds its lock (mid-transaction): the shadow's goes through."""
    other = psycopg.connect(pg_uri)
    try:
        with other.cursor() as cur:  # the lock replace_partition takes for predictions, held open
            cur.execute("SELECT pg_advisory_xact_lock(%s::integer, %s::integer)",
                        wh._partition_lock(spec, wh.PREDICTIONS, DAY1))
        with pg_conn.cursor() as cur:
            cur.execute("SET lock_timeout = '500ms'")
        pg_conn.commit()
        shadow = _write(_predictions([1], 2, "shadow"), tmp_path / "s.parquet")
        assert wh.replace_partition(pg_conn, spec, DAY1, shadow, relation=wh.PREDICTIONS_SHADOW) == 1
        with pytest.raises(psycopg.errors.LockNotAvailable):  # while the champion's own path does wait
            wh.replace_partition(pg_conn, spec, DAY1, _write(_predictions([1], 1), tmp_path / "c.parquet"))
    finally:
        other.close()


def test_clear_partition_deletes_one_night_of_one_table(pg_conn, spec, tmp_path):
    for day in (DAY1, DAY2):
        wh.replace_partition(pg_conn, spec, day, _write(_predictions([1, 2], 1, "c"), tmp_path / f"c{day}.parquet"))
        wh.replace_partition(pg_conn, spec, day, _write(_predictions([1, 2, 3], 2, "s"), tmp_path / f"s{day}.parquet"),
                             relation=wh.PREDICTIONS_SHADOW)
    assert wh.clear_partition(pg_conn, spec, DAY2, wh.PREDICTIONS_SHADOW) == 3
    assert wh.clear_partition(pg_conn, spec, DAY2, wh.PREDICTIONS_SHADOW) == 0  # nothing left: idempotent
    assert [r[:2] for r in _shadow_rows(pg_conn)] == [(DAY1, 1), (DAY1, 2), (DAY1, 3)]
    assert [r[:2] for r in _rows(pg_conn, spec)] == [(DAY1, 1), (DAY1, 2), (DAY2, 1), (DAY2, 2)]
    assert wh.clear_partition(pg_conn, spec, DAY1, wh.PREDICTIONS) == 2
    assert [r[:2] for r in _rows(pg_conn, spec)] == [(DAY2, 1), (DAY2, 2)]


def test_an_unknown_relation_is_refused_by_name_before_anything_is_written(pg_conn, spec, tmp_path):
    wh.replace_partition(pg_conn, spec, DAY1, _write(_predictions([1], 1, "kept"), tmp_path / "c.parquet"))
    for relation in (wh.PREDICTIONS_LATEST, wh.PIPELINE_RUNS, "predictions_shadw"):
        with pytest.raises(ValueError, match=f"relation {relation!r} is not a predictions table"):
            wh.replace_partition(pg_conn, spec, DAY1, tmp_path / "c.parquet", relation=relation)
        with pytest.raises(ValueError, match=f"relation {relation!r}"):
            wh.clear_partition(pg_conn, spec, DAY1, relation)
    assert [r[3] for r in _rows(pg_conn, spec)] == ["kept"]


def test_a_warehouse_at_version_12_gets_the_shadow_and_staging_tables_once_and_keeps_its_nights(
        pg_conn, churn_spec, tmp_path, monkeypatch):
    monkeypatch.setattr(wh, "MIGRATIONS", tuple(m for m in wh.MIGRATIONS if m[0] <= 12))
    monkeypatch.setattr(wh, "RELATIONS", tuple(r for r in wh.RELATIONS
                                               if r not in (wh.PREDICTIONS_SHADOW, wh.PREDICTIONS_STAGING)))
    wh.ensure_warehouse(pg_conn, churn_spec)
    wh.replace_partition(pg_conn, churn_spec, DAY1, _write(_predictions([1, 2], 1, "v12"), tmp_path / "p.parquet"))
    assert not wh.table_exists(pg_conn, churn_spec, wh.PREDICTIONS_SHADOW)
    assert [v for v, _ in _versions(pg_conn)] == list(range(1, 13))
    monkeypatch.undo()

    wh.ensure_warehouse(pg_conn, churn_spec)
    applied = _versions(pg_conn)
    assert [v for v, _ in applied] == list(range(1, 16)) and wh.MIGRATIONS[-1][0] == 15
    assert wh.table_exists(pg_conn, churn_spec, wh.PREDICTIONS_STAGING)
    wh.ensure_warehouse(pg_conn, churn_spec)
    assert _versions(pg_conn) == applied  # applied once
    assert [r[3] for r in _rows(pg_conn, churn_spec)] == ["v12", "v12"]
    shadow = _write(_predictions([1], 2, "first shadow"), tmp_path / "s.parquet")
    assert wh.replace_partition(pg_conn, churn_spec, DAY1, shadow, relation=wh.PREDICTIONS_SHADOW) == 1
    with pg_conn.transaction(), pg_conn.cursor() as cur:  # the reader is granted the new table too
        cur.execute("SELECT has_table_privilege(%s, 'churn.predictions_shadow', 'SELECT')",
                    (churn_spec.warehouse.reader_role,))
        assert cur.fetchone() == (True,)


# ---------------------------------------------------------------- sharded nights (scoring.shard_rows)


def _stage(conn, spec, tmp_path, keys, shard: int, run_id: str = "sharded", seed: int = 7) -> int:
    path = _write(_predictions(keys, seed + shard, run_id), tmp_path / f"{run_id}-{shard}.parquet")
    return wh.stage_shard(conn, spec, DAY1, path, dag_run_id=run_id, shard=shard)


def test_staged_shards_swap_in_at_once_and_leave_staging_empty(pg_conn, spec, tmp_path):
    wh.replace_partition(pg_conn, spec, DAY1, _write(_predictions([1, 2, 3], 1, "before"), tmp_path / "b.parquet"))
    assert _stage(pg_conn, spec, tmp_path, [10, 11, 12], 0) == 3
    assert _stage(pg_conn, spec, tmp_path, [13, 14], 1) == 2
    assert [k for _, k, _, _ in _rows(pg_conn, spec)] == [1, 2, 3]  # staged rows are not published rows
    assert wh.swap_staged(pg_conn, spec, DAY1, dag_run_id="sharded", shards=2, rows=5) == 5
    assert [(k, run) for _, k, _, run in _rows(pg_conn, spec)] == [(k, "sharded") for k in range(10, 15)]
    assert _rows(pg_conn, spec, wh.PREDICTIONS_STAGING) == []


def test_a_retried_shard_replaces_only_its_own_staged_rows(pg_conn, spec, tmp_path):
    _stage(pg_conn, spec, tmp_path, [10, 11], 0)
    _stage(pg_conn, spec, tmp_path, [12, 13], 1)
    _stage(pg_conn, spec, tmp_path, [12, 13], 1, seed=99)  # the retry of shard 1 (its first try had committed)
    staged = _rows(pg_conn, spec, wh.PREDICTIONS_STAGING)
    assert [k for _, k, _, _ in staged] == [10, 11, 12, 13]
    retried = _predictions([12, 13], 100, "sharded").score.tolist()
    assert [s for _, k, s, _ in staged if k >= 12] == retried  # the retry's scores, exactly


def test_a_shard_that_fails_mid_copy_stages_nothing(pg_conn, spec, tmp_path, monkeypatch):
    monkeypatch.setattr(wh, "BATCH_ROWS", 10)
    bad = _predictions(np.arange(100, 130), 2, "sharded")
    bad["model_version"] = bad["model_version"].astype("int64")
    bad.loc[25, "model_version"] = 2**40
    with pytest.raises(pa.ArrowInvalid, match="not in range"):
        wh.stage_shard(pg_conn, spec, DAY1, _write(bad, tmp_path / "bad.parquet"), dag_run_id="sharded", shard=0)
    assert _rows(pg_conn, spec, wh.PREDICTIONS_STAGING) == []


@pytest.mark.parametrize("shards, rows", [(3, 5), (2, 6)], ids=["a shard missing", "rows missing"])
def test_a_swap_with_shards_or_rows_missing_is_refused_and_the_night_kept(pg_conn, spec, tmp_path, shards, rows):
    wh.replace_partition(pg_conn, spec, DAY1, _write(_predictions([1, 2], 1, "before"), tmp_path / "b.parquet"))
    _stage(pg_conn, spec, tmp_path, [10, 11, 12], 0)
    _stage(pg_conn, spec, tmp_path, [13, 14], 1)
    with pytest.raises(ValueError, match=r"holds 5 rows from 2 shard\(s\) of run sharded .* nothing is published"):
        wh.swap_staged(pg_conn, spec, DAY1, dag_run_id="sharded", shards=shards, rows=rows)
    assert [(k, run) for _, k, _, run in _rows(pg_conn, spec)] == [(1, "before"), (2, "before")]
    assert len(_rows(pg_conn, spec, wh.PREDICTIONS_STAGING)) == 5  # kept for a look; the rerun replaces them


def test_a_key_staged_by_two_shards_fails_the_swap_and_the_published_night_is_kept(pg_conn, spec, tmp_path):
    """Staging is indexed by shard, not keyed by entity (migration 15): predictions' own key refuses the night."""
    wh.replace_partition(pg_conn, spec, DAY1, _write(_predictions([1, 2], 1, "before"), tmp_path / "b.parquet"))
    _stage(pg_conn, spec, tmp_path, [10, 11], 0)
    _stage(pg_conn, spec, tmp_path, [11, 12], 1)
    with pytest.raises(psycopg.errors.UniqueViolation, match="11"):
        wh.swap_staged(pg_conn, spec, DAY1, dag_run_id="sharded", shards=2, rows=4)
    assert [(k, run) for _, k, _, run in _rows(pg_conn, spec)] == [(1, "before"), (2, "before")]


def test_a_warehouse_at_version_14_re_indexes_staging_by_shard_and_keeps_its_staged_rows(
        pg_conn, churn_spec, tmp_path, monkeypatch):
    monkeypatch.setattr(wh, "MIGRATIONS", tuple(m for m in wh.MIGRATIONS if m[0] <= 14))
    wh.ensure_warehouse(pg_conn, churn_spec)
    _stage(pg_conn, churn_spec, tmp_path, [10, 11], 0)
    monkeypatch.undo()

    def indexes() -> dict[str, str]:
        with pg_conn.transaction(), pg_conn.cursor() as cur:
            cur.execute("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'churn' "
                        "AND tablename = 'predictions_staging'")
            return dict(cur.fetchall())

    assert list(indexes()) == ["predictions_staging_pkey"]
    wh.ensure_warehouse(pg_conn, churn_spec)
    assert list(indexes()) == ["predictions_staging_shard"]
    assert indexes()["predictions_staging_shard"].endswith("(dag_run_id, score_date, shard)")
    assert [k for _, k, _, _ in _rows(pg_conn, churn_spec, wh.PREDICTIONS_STAGING)] == [10, 11]
    assert wh.swap_staged(pg_conn, churn_spec, DAY1, dag_run_id="sharded", shards=1, rows=2) == 2


def test_another_runs_staged_rows_are_not_swapped_in(pg_conn, spec, tmp_path):
    _stage(pg_conn, spec, tmp_path, [10, 11], 0, run_id="other")
    _stage(pg_conn, spec, tmp_path, [20, 21], 0, run_id="mine")
    wh.swap_staged(pg_conn, spec, DAY1, dag_run_id="mine", shards=1, rows=2)
    assert [(k, run) for _, k, _, run in _rows(pg_conn, spec)] == [(20, "mine"), (21, "mine")]
    assert [(k, run) for _, k, _, run in _rows(pg_conn, spec, wh.PREDICTIONS_STAGING)] == [(10, "other"), (11, "other")]
