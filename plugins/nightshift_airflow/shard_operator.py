"""The score step of a large night, fanned out: one mapped task per shard of the night's snapshot.

The score task (operators.ScoreOperator) chooses and checks the champion and, when the night has more
rows than scoring.shard_rows, says how many shards score it instead of scoring; plan_shards turns that
into the list Airflow maps ScoreShardOperator over (dynamic task mapping maps only over a task's return
value), so each shard runs on any worker and a failed or killed shard is retried alone. An empty list (a
night scored whole) skips the mapped task.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import task

from nightshift_airflow import runtime
from nightshift_airflow.base import NightshiftOperator

PLAN_SHARDS, SCORE_SHARD = "plan_shards", "score_shard"


@task(task_id=PLAN_SHARDS, retries=0)
def plan_shards(scored: dict | None) -> list[int]:
    """The shard numbers score_shard maps over: none when the score task scored the night whole."""
    return list(range(int((scored or {}).get("shards") or 0)))


class ScoreShardOperator(NightshiftOperator):
    """Score one shard of the night's snapshot with the version the score step chose, and stage it
    (predictions_staging); publish swaps the whole night in at once. Nothing is staged on a dry run."""

    inputs = ("scored", "snapshot")
    ui_color = "#fed7aa"

    def __init__(self, *, shard: int, scored: Any = None, snapshot: Any = None, **kwargs: Any) -> None:
        super().__init__(scored=scored, snapshot=snapshot, **kwargs)  # named: partial() checks the signature
        self.shard = shard

    def execute(self, context: Any) -> dict:
        from include.nightshift.nightly import score_shard

        got = self.received()
        args = (runtime.artifact_store(), runtime.registry(), self.spec, got["scored"], got["snapshot"],
                context["run_id"], int(self.shard))
        if self.param(context, "dry_run", False):
            return score_shard(None, *args).to_xcom()
        with self.connect() as conn:
            return score_shard(conn, *args).to_xcom()
