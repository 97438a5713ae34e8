"""A night scored in shards publishes exactly what a night scored whole publishes (issue 15 item 2), on real DAG runs.

  night 0, run 1   scoring.shard_rows unset: the score task scores the 2000 rows itself (the single-task night)
  night 0, run 2   shard_rows 700, rerun_published: score chooses and checks v1, plan_shards says 3 shards,
                   three mapped score_shard tasks (700, 700, 600 rows) stage them, publish swaps them in at once
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from include.nightshift.artifacts import safe_name

ROOT = Path(__file__).resolve().parents[2]
ROWS, SHARD_ROWS = 2000, 700
NIGHT = dt.date(2026, 5, 1)
COLUMNS = ("customer_id", "score", "predicted_label", "model_name", "model_version", "snapshot_sha256")


def spec_copy(folder: Path) -> Path:
    folder.mkdir()
    path = folder / "churn.yaml"
    path.write_text((ROOT / "include" / "specs" / "churn.yaml").read_text())
    return path


def plan(spec: Path) -> dict:
    night = NIGHT.isoformat()
    return {
        "rows": ROWS, "spec": str(spec), "specs_dir": str(spec.parent),
        "steps": [
            {"load_days": {"from": (NIGHT - dt.timedelta(days=18)).isoformat(),
                           "to": (NIGHT - dt.timedelta(days=1)).isoformat(), "labels": True}},
            {"load_days": {"from": night, "to": night}},
            {"run": {"day": night, "conf": {"note": "scored whole"}}},
            {"edit_spec": {"path": str(spec), "replace": ["  chunk_rows: 100000\n",
                                                          f"  chunk_rows: 100000\n  shard_rows: {SHARD_ROWS}\n"]}},
            {"run": {"day": night, "conf": {"note": "scored in shards", "rerun_published": True}}},
        ],
    }


@pytest.fixture(scope="module")
def nights(run_plan, tmp_path_factory):
    home = tmp_path_factory.mktemp("nightshift-shards")
    runs, warehouse = run_plan(plan(spec_copy(home / "specs")), home)
    return {"runs": runs, "warehouse": warehouse, "home": home}


def query(nights, text, args=()):
    with nights["warehouse"].cursor() as cur:
        cur.execute(text, args)
        return cur.fetchall()


def whole_night_file(nights) -> Path:
    """The single-task run's predictions file: what its publish copied into the night's partition."""
    path = (nights["home"] / "artifacts" / "predictions" / "churn" / NIGHT.isoformat()
            / f"{safe_name(nights['runs'][0]['run_id'])}.parquet")
    assert path.exists(), sorted(p.name for p in path.parent.iterdir())
    return path


def test_both_runs_succeeded_and_the_second_ran_three_shards(nights):
    assert [r["state"] for r in nights["runs"]] == ["success", "success"]
    (details,) = query(nights, "SELECT details FROM churn.pipeline_runs WHERE logical_date = %s", (NIGHT,))[0]
    tasks = details["costs"]["tasks"]  # record_run reads each mapped instance's cost (base._pull)
    shards = {k: v for k, v in tasks.items() if k.startswith("score_shard_")}
    assert sorted(shards) == ["score_shard_0", "score_shard_1", "score_shard_2"]
    assert details["serving"]["round_trip"]["passed"] is True
    # The skew checks ran in the shards only, on every row here (skew.sample_rows 20000): joined in the record.
    skew = details["serving"]["skew"]
    assert (skew["shards"], skew["rows"], skew["passed"]) == (3, ROWS, True)
    assert details["serving"]["round_trip"]["shards"] == {"checked": 3, "passed": True, "max_difference": 0.0}
    (judged,) = query(nights, "SELECT passed FROM churn.ml_test_score WHERE night = %s AND test = %s",
                      (NIGHT, "monitoring.3"))
    assert judged == (True,)  # the ML Test Score's skew test (monitoring.3) ran on the shards' evidence


def test_the_shards_publish_bit_for_bit_what_the_whole_night_published(nights):
    whole = pq.read_table(whole_night_file(nights), columns=list(COLUMNS)).to_pylist()
    published = query(nights, f"SELECT {', '.join(COLUMNS)}, dag_run_id FROM churn.predictions "
                              "WHERE score_date = %s ORDER BY customer_id", (NIGHT,))
    assert len(published) == ROWS == len(whole)
    assert {r[-1] for r in published} == {nights["runs"][1]["run_id"]}  # the sharded run's rows
    by_key = {r["customer_id"]: tuple(r[c] for c in COLUMNS) for r in whole}
    assert [r[:-1] for r in published] == [by_key[r[0]] for r in published]  # floats compared exactly
    assert len(query(nights, "SELECT DISTINCT scored_at FROM churn.predictions WHERE score_date = %s", (NIGHT,))) == 1


def test_nothing_is_left_in_staging_after_the_swap(nights):
    assert query(nights, "SELECT count(*) FROM churn.predictions_staging") == [(0,)]
