"""Rollback against a real MLflow SQLite store and a real PostgreSQL warehouse.

Which version may be restored, what "previous" means, refusals that name what is wrong,
idempotency per rollback id, the audit table, and re-publishing the latest night.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from include.nightshift import audit, training, warehouse
from include.nightshift.artifacts import ArtifactStore
from include.nightshift.demo_data import generate_day
from include.nightshift.registry import Registry
from include.nightshift.rollback import RollbackRefused, previous_champion, republish_latest, rollback
from include.nightshift.scoring import score_snapshot
from include.nightshift.snapshot import write_snapshot
from include.nightshift.spec import load_spec

SPEC_PATH = Path(__file__).resolve().parents[2] / "include" / "specs" / "churn.yaml"
_names = itertools.count(1)


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> Registry:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
        mp.chdir(tmp_path_factory.mktemp("cwd"))
        yield Registry(f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db")
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return pd.concat([generate_day(dt.date(2026, 1, d), 800) for d in (1, 2)], ignore_index=True)


@pytest.fixture
def spec():
    base = load_spec(SPEC_PATH)
    return dataclasses.replace(base, name=f"rbtest{next(_names)}",
                               training=base.training)


def _versions(registry, spec, data, n: int) -> None:
    """Register n versions; version k has 5 + 5k trees, so that their scores differ."""
    for k in range(1, n + 1):
        s = dataclasses.replace(spec, training=dataclasses.replace(spec.training, params={"n_estimators": 5 + 5 * k,
                                                                                          "max_depth": 2}))
        model = training.fit(training.build_model(s), data, s)
        registry.log_challenger(model, training.fit(training.build_baseline(s), data, s), spec=s, train_df=data,
                                reference=data.head(100), params={"n_estimators": 5 + 5 * k}, metrics={}, tags={})


def _champion(registry, spec) -> int:
    return registry.champion(spec.model_name).version


def test_previous_champion_skips_versions_rolled_back_from(registry, spec, data):
    _versions(registry, spec, data, 4)
    for v in (1, 2, 3):
        registry.promote(spec.model_name, v, {"promote": True})
    assert previous_champion(registry, spec.model_name) == 2

    result = rollback(registry, spec.model_name, to_version=None, actor="ana", reason="v3 scores drift", rollback_id="r1")
    assert (result.from_version, result.to_version, result.changed) == (3, 2, True)
    assert _champion(registry, spec) == 2
    assert previous_champion(registry, spec.model_name) == 1

    registry.promote(spec.model_name, 4, {"promote": True})
    assert previous_champion(registry, spec.model_name) == 2  # v3 was rolled back from: never "previous"

    restored, left = registry.version(spec.model_name, 2).tags, registry.version(spec.model_name, 3).tags
    assert restored["nightshift.rollback.by"] == "ana" and restored["nightshift.rollback.reason"] == "v3 scores drift"
    assert restored["nightshift.rollback.from"] == "3" and restored["nightshift.rollback.id"] == "r1"
    assert left["nightshift.rolled_back.to"] == "2" and "nightshift.rolled_back.at" in left


def test_rollback_to_a_chosen_version_is_idempotent_per_id(registry, spec, data):
    _versions(registry, spec, data, 3)
    for v in (1, 2, 3):
        registry.promote(spec.model_name, v, {"promote": True})
    first = rollback(registry, spec.model_name, to_version=1, actor="ana", reason="bad night", rollback_id="r9")
    again = rollback(registry, spec.model_name, to_version=None, actor="ana", reason="bad night", rollback_id="r9")
    assert first == again and _champion(registry, spec) == 1  # the retry did not go back one more
    same = rollback(registry, spec.model_name, to_version=1, actor="bob", reason="again", rollback_id="r10")
    assert same.changed is False and _champion(registry, spec) == 1


@pytest.mark.parametrize("target, words", [(7, "has no version 7"), (2, "never passed the promotion gate")])
def test_refusals_name_the_version(registry, spec, data, target, words):
    _versions(registry, spec, data, 3)
    registry.promote(spec.model_name, 1, {"promote": True})
    registry.record_verdict(spec.model_name, 2, {"promote": False})  # a rejected challenger
    registry.promote(spec.model_name, 3, {"promote": True})
    with pytest.raises(RollbackRefused, match=words):
        rollback(registry, spec.model_name, to_version=target, actor="ana", reason="why", rollback_id="x")
    assert _champion(registry, spec) == 3  # nothing moved


def test_nothing_to_go_back_to_is_refused(registry, spec, data):
    _versions(registry, spec, data, 1)
    with pytest.raises(RollbackRefused, match="no champion"):
        rollback(registry, spec.model_name, to_version=1, actor="a", reason="why", rollback_id="x")
    registry.promote(spec.model_name, 1, {"promote": True})
    with pytest.raises(RollbackRefused, match="name the version"):
        rollback(registry, spec.model_name, to_version=None, actor="a", reason="why", rollback_id="x")
    with pytest.raises(RollbackRefused, match="reason"):
        rollback(registry, spec.model_name, to_version=1, actor="a", reason=" ", rollback_id="x")


def test_audit_rows_are_written_once_per_run(pg_conn, spec):
    audit.ensure_audit(pg_conn, spec)
    audit.ensure_audit(pg_conn, spec)
    change = {"event": "rollback", "model_name": spec.model_name, "from_version": 3, "to_version": 2,
              "actor": "ana", "reason": "why", "dag_run_id": "manual__1", "details": {"requested_version": None}}
    assert audit.record_change(pg_conn, spec, change) is True
    assert audit.record_change(pg_conn, spec, change) is False  # a retried task
    rows = audit.changes(pg_conn, spec)
    assert len(rows) == 1 and rows[0]["actor"] == "ana" and rows[0]["details"] == {"requested_version": None}
    with pytest.raises(ValueError, match="audit event"):
        audit.record_change(pg_conn, spec, {**change, "event": "delete"})


def test_republish_rescores_the_latest_night_with_the_restored_model(registry, spec, data, pg_conn, tmp_path):
    _versions(registry, spec, data, 2)
    registry.promote(spec.model_name, 1, {"promote": True})
    registry.promote(spec.model_name, 2, {"promote": True})
    store = ArtifactStore(str(tmp_path / "artifacts"))
    warehouse.ensure_warehouse(pg_conn, spec)
    assert republish_latest(pg_conn, store, registry, spec, 1, "rb") is None  # nothing published yet

    import pyarrow as pa

    for day in (dt.date(2026, 1, 3), dt.date(2026, 1, 4)):
        ref = write_snapshot(pa.Table.from_pandas(generate_day(day, 300), preserve_index=False), store, spec, day,
                             labelled=False)
        out = store.url("predictions", spec.name, day.isoformat(), "night.parquet")
        score_snapshot(store, ref.url, out, spec, model=registry.load_model(spec.model_name, 2), model_version=2,
                       snapshot_sha256=ref.sha256, dag_run_id="night")
        with store.local_copy(out) as path:
            warehouse.replace_partition(pg_conn, spec, day, path)
    before = warehouse.published_predictions(pg_conn, spec, dt.date(2026, 1, 4))

    done = republish_latest(pg_conn, store, registry, spec, 1, "rb")
    after = warehouse.published_predictions(pg_conn, spec, dt.date(2026, 1, 4))
    assert done == {"score_date": dt.date(2026, 1, 4), "rows": 300, "model_version": 1}
    assert len(after) == len(before) == 300 and after["customer_id"].is_unique
    assert _published_by(pg_conn, spec, dt.date(2026, 1, 4)) == [(1, "rb", 300)]
    assert not after.sort_values("customer_id")["score"].reset_index(drop=True).equals(
        before.sort_values("customer_id")["score"].reset_index(drop=True))
    assert _published_by(pg_conn, spec, dt.date(2026, 1, 3)) == [(2, "night", 300)]  # older nights untouched


def _published_by(conn, spec, day):
    with conn.cursor() as cur:
        cur.execute(f'SELECT model_version, dag_run_id, count(*) FROM "{spec.warehouse.schema}".predictions '
                    "WHERE score_date = %s GROUP BY 1, 2", (day,))
        return cur.fetchall()
