"""Rollback against a real MLflow SQLite store and a real PostgreSQL warehouse.

What "previous champion" means, which versions may be restored, refusals that name what is
wrong, the tags on both versions, idempotency per rollback id (including a retry after a
crash between the tags and the alias), the audit table, and re-publishing the latest night.

The rules only read and write tags and the alias, so most tests register versions straight
through the registry (create_model_version, milliseconds each) instead of logging a trained
model (seconds each); the re-publish test logs and loads real models.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from psycopg import sql

from include.nightshift import audit, training, warehouse
from include.nightshift.artifacts import ArtifactStore
from include.nightshift.demo_data import generate_day
from include.nightshift.rollback import (RollbackRefused, latest_night, latest_published, republish_latest,
                                      rollback, rollback_change, run_rollback)
from include.nightshift.scoring import score_snapshot
from include.nightshift.snapshot import read_snapshot, write_snapshot

SPEC_PATH = Path(__file__).resolve().parents[2] / "include" / "specs" / "churn.yaml"
_names = itertools.count(1)


@pytest.fixture
def model(registry, tmp_path) -> str:
    """A registered model (a name no other test uses) with versions 1..7, none champion yet."""
    name = f"rbtest{next(_names)}"
    registry.client.create_registered_model(name)
    for _ in range(7):
        registry.client.create_model_version(name, source=str(tmp_path))
    return name


def _champion(registry, name) -> int:
    return registry.champion(name).version


def _promote(registry, name, *versions) -> None:
    for v in versions:
        registry.promote(name, v, {"promote": True})


def _rollback(registry, name, to_version=None, rollback_id="r1", actor="ana", reason="v5 scores everyone 0.5"):
    return rollback(registry, name, to_version=to_version, actor=actor, reason=reason, rollback_id=rollback_id)


# --- previous champion ---------------------------------------------------------------------------


def test_previous_champion_is_the_latest_earlier_champion_not_rolled_back_from(registry, model):
    assert registry.previous_champion(model) is None  # no champion yet
    _promote(registry, model, 1, 3, 5)
    assert registry.previous_champion(model).version == 3

    result = _rollback(registry, model)
    assert (result.from_version, result.to_version, result.changed) == (5, 3, True)
    assert _champion(registry, model) == 3
    assert registry.previous_champion(model).version == 1  # v5 was rolled back from

    _promote(registry, model, 7)
    assert registry.previous_champion(model).version == 3  # v3 became champion after v1 (by the rollback)


def test_an_explicit_rollback_skips_only_the_version_left(registry, model):
    _promote(registry, model, 1, 2, 3)
    _rollback(registry, model, to_version=1)
    assert registry.previous_champion(model).version == 2  # champion before v3, never rolled back from


def test_a_version_restored_after_being_rolled_back_from_counts_again(registry, model):
    _promote(registry, model, 1, 2)
    _rollback(registry, model, rollback_id="r1")  # 2 -> 1: v2 rolled back from
    assert registry.previous_champion(model) is None
    _rollback(registry, model, to_version=2, rollback_id="r2")  # v2 passed the gate once: may be named
    assert _champion(registry, model) == 2
    assert registry.previous_champion(model) is None  # v1 was just rolled back from
    _promote(registry, model, 3)
    assert registry.previous_champion(model).version == 2  # restored since its rollback


def test_previous_champion_of_an_unknown_model_is_none(registry):
    assert registry.previous_champion("rbtest_nobody") is None


# --- rolling back --------------------------------------------------------------------------------


def test_rollback_tags_both_versions_then_moves_the_alias(registry, model):
    _promote(registry, model, 1, 3, 5)
    before = dt.datetime.now(dt.UTC)
    result = _rollback(registry, model, rollback_id="manual__2026-03-01")

    restored, left = registry.version(model, 3), registry.version(model, 5)
    assert restored.aliases == ["champion"] and left.aliases == []
    assert {k: v for k, v in restored.tags.items() if k.startswith("nightshift.rollback.")} == {
        "nightshift.rollback.by": "ana", "nightshift.rollback.reason": "v5 scores everyone 0.5",
        "nightshift.rollback.from": "5", "nightshift.rollback.id": "manual__2026-03-01",
        "nightshift.rollback.at": result.at.isoformat()}
    assert {k: v for k, v in left.tags.items() if k.startswith("nightshift.rolled_back.")} == {
        "nightshift.rolled_back.by": "ana", "nightshift.rolled_back.reason": "v5 scores everyone 0.5",
        "nightshift.rolled_back.to": "3", "nightshift.rolled_back.id": "manual__2026-03-01",
        "nightshift.rolled_back.at": result.at.isoformat()}
    assert before <= result.at <= dt.datetime.now(dt.UTC)
    # the promotion's own record is left as it was
    assert restored.tags["nightshift.blessed"] == "true" and restored.tags["nightshift.gate"] == "passed"
    assert result.to_dict()["at"] == result.at.isoformat() and result.resumed is False


def test_rollback_to_a_chosen_version(registry, model):
    _promote(registry, model, 1, 3, 5)
    result = _rollback(registry, model, to_version=1)
    assert (result.from_version, result.to_version, result.changed) == (5, 1, True)
    assert _champion(registry, model) == 1


def test_rollback_to_the_champion_is_a_no_op(registry, model):
    _promote(registry, model, 1, 3)
    result = _rollback(registry, model, to_version=3)
    assert (result.from_version, result.to_version, result.changed) == (3, 3, False)
    assert _champion(registry, model) == 3
    assert not any(k.startswith("nightshift.rollback") for k in registry.version(model, 3).tags)


def test_a_version_the_gate_passed_but_a_policy_held_back_may_be_restored(registry, model):
    _promote(registry, model, 1, 3)
    registry.record_verdict(model, 2, {"promote": True, "promoted": False, "policy_note": "promotion_policy=never"})
    assert _rollback(registry, model, to_version=2).to_version == 2


@pytest.mark.parametrize("target, words", [
    (9, r"has no version 9"),
    (2, r"v2 never passed the promotion gate \(nightshift.blessed=false"),  # a rejected challenger
    (4, r"v4 never passed the promotion gate \(nightshift.blessed=unset"),  # never judged
    (0, r"must be a positive integer, got 0"),
    (True, r"must be a positive integer, got True"),
])
def test_refused_targets_are_named_and_nothing_moves(registry, model, target, words):
    _promote(registry, model, 1, 3)
    registry.record_verdict(model, 2, {"promote": False, "reason": "below the champion"})
    with pytest.raises(RollbackRefused, match=words) as refused:
        _rollback(registry, model, to_version=target)
    assert model in str(refused.value)
    assert _champion(registry, model) == 3
    assert not any(k.startswith("nightshift.rolled_back.") for k in registry.version(model, 3).tags)


def test_refused_without_a_champion_or_a_previous_one(registry, model):
    with pytest.raises(RollbackRefused, match=f"{model} has no champion .*name the version to restore"):
        _rollback(registry, model)
    with pytest.raises(RollbackRefused, match=f"{model} v1 never passed the promotion gate"):
        _rollback(registry, model, to_version=1)
    with pytest.raises(RollbackRefused, match="rbtest_nobody has no champion"):
        _rollback(registry, "rbtest_nobody")
    _promote(registry, model, 1)
    with pytest.raises(RollbackRefused, match=r"no previous champion .* from v1 .*name the version to restore"):
        _rollback(registry, model)
    for field, kwargs in (("reason", {"reason": " "}), ("actor", {"actor": ""}), ("rollback_id", {"rollback_id": ""})):
        with pytest.raises(RollbackRefused, match=f"{field} must be a non-empty string"):
            _rollback(registry, model, to_version=1, **kwargs)
    assert _champion(registry, model) == 1


def test_a_named_version_is_restored_when_the_champion_alias_is_gone(registry, model):
    """The champion's version was deleted (its alias went with it): naming a version that passed the
    gate once puts it back, recorded as a rollback from no champion."""
    _promote(registry, model, 1, 2)
    registry.client.delete_model_version(model, "2")
    assert registry.champion(model) is None
    result = _rollback(registry, model, to_version=1, rollback_id="after-delete")
    assert (result.from_version, result.to_version, result.changed) == (None, 1, True)
    assert _champion(registry, model) == 1
    assert registry.version(model, 1).tags["nightshift.rollback.from"] == "None"
    assert _rollback(registry, model, to_version=1, rollback_id="after-delete").resumed  # a retry finds it done


# --- idempotency ---------------------------------------------------------------------------------


def test_the_same_rollback_id_rolls_back_once_and_audits_once(registry, model, pg_conn, churn_spec):
    _promote(registry, model, 1, 3, 5)
    audit.ensure_audit(pg_conn, churn_spec)
    first = _rollback(registry, model, rollback_id="manual__1")
    again = _rollback(registry, model, rollback_id="manual__1")  # an Airflow retry, after the alias moved

    assert _champion(registry, model) == 3  # not one step further back to v1
    assert (again.from_version, again.to_version, again.changed, again.at) == (5, 3, True, first.at)
    assert again.resumed is True
    assert registry.version(model, 3).tags["nightshift.rollback.at"] == first.at.isoformat()
    written = [audit.record_change(pg_conn, churn_spec, _change(model, r)) for r in (first, again)]
    assert written == [True, False]
    assert [(c["from_version"], c["to_version"]) for c in audit.changes(pg_conn, churn_spec)] == [(5, 3)]
    with pytest.raises(RollbackRefused, match="already restored v3, not v1"):
        _rollback(registry, model, to_version=1, rollback_id="manual__1")


def test_a_retry_after_a_crash_before_the_alias_finishes_the_rollback(registry, model, monkeypatch):
    """The fault (the registry unreachable when the alias is set) cannot be caused for real here."""
    _promote(registry, model, 1, 3, 5)

    def unreachable(*args, **kwargs):
        raise ConnectionError("registry unreachable")

    with monkeypatch.context() as mp:
        mp.setattr(registry.client, "set_registered_model_alias", unreachable)
        with pytest.raises(ConnectionError):
            _rollback(registry, model, rollback_id="manual__2")
    assert _champion(registry, model) == 5  # tags written, alias not moved

    result = _rollback(registry, model, rollback_id="manual__2")
    assert (result.from_version, result.to_version, result.changed, result.resumed) == (5, 3, True, True)
    assert _champion(registry, model) == 3


@pytest.mark.parametrize("failing_tag", ["nightshift.rollback.from", "nightshift.rollback.at",
                                         "nightshift.rollback.id", "nightshift.rolled_back.at"])
def test_a_retry_after_a_crash_between_tags_completes_the_same_rollback(registry, model, monkeypatch, failing_tag):
    """Killed part-way through the tags, on a version that still carries an earlier rollback's tags:
    the retry must finish this rollback (from v7), never read the stale one (from v5)."""
    _promote(registry, model, 1, 3, 5)
    _rollback(registry, model, rollback_id="earlier")  # 5 -> 3: v3 carries nightshift.rollback.from=5
    _promote(registry, model, 7)
    real = registry.client.set_model_version_tag

    def fail_once_on(name, version, key, value):
        if key == failing_tag:
            raise ConnectionError("registry unreachable")
        return real(name, version, key, value)

    with monkeypatch.context() as mp:
        mp.setattr(registry.client, "set_model_version_tag", fail_once_on)
        with pytest.raises(ConnectionError):
            _rollback(registry, model, to_version=3, rollback_id="manual__3")
    assert _champion(registry, model) == 7

    result = _rollback(registry, model, to_version=3, rollback_id="manual__3")
    assert (result.from_version, result.to_version, result.changed) == (7, 3, True)
    assert _champion(registry, model) == 3
    restored, left = registry.version(model, 3).tags, registry.version(model, 7).tags
    assert (restored["nightshift.rollback.from"], restored["nightshift.rollback.id"]) == ("7", "manual__3")
    assert (left["nightshift.rolled_back.to"], left["nightshift.rolled_back.id"]) == ("3", "manual__3")
    assert restored["nightshift.rollback.at"] == left["nightshift.rolled_back.at"] == result.at.isoformat()


def test_a_replay_after_the_champion_moved_on_is_refused(registry, model):
    _promote(registry, model, 1, 3, 5)
    _rollback(registry, model, rollback_id="manual__4")
    _promote(registry, model, 7)
    with pytest.raises(RollbackRefused, match="champion is now v7: start a new rollback"):
        _rollback(registry, model, rollback_id="manual__4")
    assert _champion(registry, model) == 7


# --- promotions name what they replaced ----------------------------------------------------------


def test_promote_records_the_version_it_replaced(registry, model):
    assert registry.promote(model, 1, {"promote": True}) is None
    assert registry.promote(model, 3, {"promote": True}) == 1
    assert registry.promote(model, 3, {"promote": True}) == 1  # a retried promotion keeps its predecessor
    assert registry.version(model, 3).tags["nightshift.replaced_version"] == "1"
    assert "nightshift.replaced_version" not in registry.version(model, 1).tags


# --- the audit table -----------------------------------------------------------------------------


def _change(model, result, run_id="manual__1") -> dict:
    return {"event": "rollback", "model_name": model, "from_version": result.from_version,
            "to_version": result.to_version, "actor": "ana", "reason": "why", "dag_run_id": run_id,
            "changed_at": result.at, "details": {"rollback_id": result.rollback_id}}


def _with_schema(spec, schema: str):
    return dataclasses.replace(spec, warehouse=dataclasses.replace(spec.warehouse, schema=schema))


def test_audit_table_is_created_once_with_comments_in_a_quoted_schema(pg_conn, churn_spec):
    spec = _with_schema(churn_spec, "Audit Schema")
    assert audit.changes(pg_conn, spec) == []  # before the table exists
    audit.ensure_audit(pg_conn, spec)
    audit.ensure_audit(pg_conn, spec)
    with pg_conn.transaction(), pg_conn.cursor() as cur:
        cur.execute("SELECT obj_description(%s::regclass), col_description(%s::regclass, 1)",
                    ['"Audit Schema".champion_changes'] * 2)
        table_comment, event_comment = cur.fetchone()
    assert "champion" in table_comment and event_comment.startswith("promote")


def test_audit_rows_are_appended_once_per_change(pg_conn, churn_spec):
    spec = churn_spec
    audit.ensure_audit(pg_conn, spec)
    promote = {"event": "promote", "model_name": "m", "from_version": None, "to_version": 1, "actor": "nightshift",
               "reason": "gate passed", "dag_run_id": "scheduled__1", "details": {"metric": 0.8}}
    at = dt.datetime(2026, 3, 1, 2, 0, tzinfo=dt.UTC)
    assert audit.record_change(pg_conn, spec, {**promote, "changed_at": at}) is True
    assert audit.record_change(pg_conn, spec, {**promote, "reason": "retried"}) is False  # a retry: first row stands
    # the run cleared and run again under the same id promoted another version: a second, real change
    assert audit.record_change(pg_conn, spec, {**promote, "from_version": 1, "to_version": 2}) is True
    rows = audit.changes(pg_conn, spec)
    assert [(r["to_version"], r["reason"]) for r in rows] == [(1, "gate passed"), (2, "gate passed")]
    assert rows[0]["changed_at"] == at and rows[0]["details"] == {"metric": 0.8}

    refused = (({**promote, "event": "delete"}, "audit event"),
               ({**promote, "actr": "x"}, "unknown key 'actr'"),
               ({**promote, "reason": " "}, "'reason' is required"),
               ({**promote, "to_version": None}, "'to_version' is required"))
    for bad, words in refused:
        with pytest.raises(ValueError, match=words):
            audit.record_change(pg_conn, spec, bad)
    assert len(audit.changes(pg_conn, spec)) == 2


# --- re-publishing the latest night --------------------------------------------------------------


@pytest.fixture(scope="module")
def train_data() -> pd.DataFrame:
    return pd.concat([generate_day(dt.date(2026, 1, d), 800) for d in (1, 2)], ignore_index=True)


def _log_versions(registry, spec, data, n: int) -> list:
    """n real versions; version k has 5k trees of depth 2, so their scores differ."""
    models = []
    for k in range(1, n + 1):
        s = dataclasses.replace(spec, training=dataclasses.replace(
            spec.training, params={**spec.training.params, "n_estimators": 5 * k, "max_depth": 2}))
        model = training.fit(training.build_model(s), data, s)
        registry.log_challenger(model, training.fit(training.build_baseline(s), data, s), spec=s, train_df=data,
                                reference=data.head(100), params={"n_estimators": 5 * k}, metrics={}, tags={})
        models.append(model)
    return models


def _publish_night(registry, store, conn, spec, day, version, run_id="night") -> str:
    ref = write_snapshot(pa.Table.from_pandas(generate_day(day, 300), preserve_index=False), store, spec, day,
                         labelled=False)
    out = store.url("predictions", spec.name, day.isoformat(), f"{run_id}.parquet")
    score_snapshot(store, ref.url, out, spec, model=registry.load_model(spec.model_name, version),
                   model_version=version, snapshot_sha256=ref.sha256, dag_run_id=run_id)
    with store.local_copy(out) as path:
        warehouse.replace_partition(conn, spec, day, path)
    return ref.url


def _published(conn, spec, day) -> pd.DataFrame:
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT customer_id, score, model_version, dag_run_id, snapshot_sha256 FROM {} "
                            "WHERE score_date = %s ORDER BY customer_id").format(
            sql.Identifier(spec.warehouse.schema, "predictions")), (day,))
        return pd.DataFrame(cur.fetchall(), columns=["customer_id", "score", "model_version", "dag_run_id", "sha"])


def test_republish_rescores_the_latest_night_with_the_restored_model(registry, train_data, pg_conn, tmp_path,
                                                                     churn_spec):
    spec = dataclasses.replace(churn_spec, name=f"rbtest{next(_names)}")
    models = _log_versions(registry, spec, train_data, 2)
    _promote(registry, spec.model_name, 1, 2)
    store = ArtifactStore(tmp_path / "artifacts")
    assert republish_latest(pg_conn, store, registry, spec, 2, "rb") is None  # no table yet
    warehouse.ensure_warehouse(pg_conn, spec)
    assert republish_latest(pg_conn, store, registry, spec, 2, "rb") is None  # nothing published yet

    d3, d4 = dt.date(2026, 1, 3), dt.date(2026, 1, 4)
    _publish_night(registry, store, pg_conn, spec, d3, 2)
    snapshot_url = _publish_night(registry, store, pg_conn, spec, d4, 2)
    before = _published(pg_conn, spec, d4)
    with pytest.raises(RollbackRefused, match=r"v1 is not the champion \(v2 is\)"):
        republish_latest(pg_conn, store, registry, spec, 1, "rb")

    rollback(registry, spec.model_name, to_version=None, actor="ana", reason="v2 is off", rollback_id="rb")
    done = republish_latest(pg_conn, store, registry, spec, 1, "rb")

    after = _published(pg_conn, spec, d4)
    assert done == {"score_date": d4, "rows": 300, "model_version": 1, "snapshot_sha256": before["sha"][0]}
    assert len(after) == len(before) == 300 and after["customer_id"].is_unique
    assert after["customer_id"].tolist() == before["customer_id"].tolist()
    assert set(zip(after["model_version"], after["dag_run_id"], after["sha"])) == {(1, "rb", before["sha"][0])}
    expected = training.predict_scores(models[0], read_snapshot(store, snapshot_url).sort_values("customer_id"), spec)
    assert np.allclose(after["score"].to_numpy(), expected, rtol=0, atol=1e-12)
    assert not np.allclose(after["score"].to_numpy(), before["score"].to_numpy())
    assert set(_published(pg_conn, spec, d3)["model_version"]) == {2}  # older nights untouched


def test_republish_refuses_when_the_snapshot_is_gone(registry, train_data, pg_conn, tmp_path, churn_spec):
    spec = dataclasses.replace(churn_spec, name=f"rbtest{next(_names)}")
    _log_versions(registry, spec, train_data, 1)
    _promote(registry, spec.model_name, 1)
    store = ArtifactStore(tmp_path / "artifacts")
    warehouse.ensure_warehouse(pg_conn, spec)
    day = dt.date(2026, 1, 5)
    snapshot_url = _publish_night(registry, store, pg_conn, spec, day, 1)
    before = _published(pg_conn, spec, day)
    store.fs.rm(store._path(snapshot_url))

    with pytest.raises(FileNotFoundError, match=r"is gone from the artifact store: .*" + before["sha"][0]):
        republish_latest(pg_conn, store, registry, spec, 1, "rb")
    pd.testing.assert_frame_equal(_published(pg_conn, spec, day), before)  # the night is left as it was
    assert latest_published(pg_conn, spec) == (day, before["sha"][0])


def test_a_rollback_belongs_to_the_latest_published_night(registry, model, pg_conn, churn_spec, tmp_path):
    """champion_changes.night of a rollback: the night its republish re-scores (None before any night)."""
    spec = _with_schema(churn_spec, f"rbnight{next(_names)}")
    _promote(registry, model, 1, 3)
    result = _rollback(registry, model, rollback_id="manual__night")
    warehouse.ensure_warehouse(pg_conn, spec)
    change = rollback_change(pg_conn, spec, result, actor="ana", reason="why", requested=None, dag_run_id="manual__night")
    assert change["night"] is None and latest_night(pg_conn, spec) is None

    for day in (dt.date(2026, 1, 5), dt.date(2026, 1, 6)):
        frame = pd.DataFrame({"customer_id": [1, 2], "score": [0.1, 0.9], "predicted_label": [0, 1],
                              "model_name": model, "model_version": 3, "snapshot_sha256": "ab" * 32,
                              "dag_run_id": "n", "scored_at": pd.Timestamp("2026-01-06", tz="UTC")})
        frame.to_parquet(tmp_path / "p.parquet", index=False)
        warehouse.replace_partition(pg_conn, spec, day, tmp_path / "p.parquet")
    change = rollback_change(pg_conn, spec, result, actor="ana", reason="why", requested=None, dag_run_id="manual__night")
    assert (change["event"], change["from_version"], change["to_version"], change["night"]) == (
        "rollback", 3, 1, dt.date(2026, 1, 6))
    assert audit.record_change(pg_conn, spec, change) is True
    assert [(c["event"], c["night"]) for c in audit.changes(pg_conn, spec)] == [("rollback", dt.date(2026, 1, 6))]


def test_a_publish_after_the_alias_moved_scores_the_night_again_with_the_champion_now(
        registry, train_data, pg_conn, tmp_path, churn_spec):
    """A rollback between the nightly score and publish steps (issue 11 item 5): publish checks, under the
    serving lock, that the version that scored is still the champion, and scores again with the one
    serving now, so the night is never published with the replaced champion."""
    from include.nightshift.history import RunRefused
    from include.nightshift.nightly import publish_night, score_night
    from include.nightshift.steps import SnapshotStep

    spec = dataclasses.replace(churn_spec, name=f"rbtest{next(_names)}")
    _log_versions(registry, spec, train_data, 2)
    _promote(registry, spec.model_name, 1, 2)
    store = ArtifactStore(tmp_path / "artifacts")
    warehouse.ensure_warehouse(pg_conn, spec)
    day = dt.date(2026, 1, 6)
    ref = write_snapshot(pa.Table.from_pandas(generate_day(day, 300), preserve_index=False), store, spec, day,
                         labelled=False)
    snapshot = SnapshotStep(day=day, current=ref, labelled=ref)
    registry.client.set_model_version_tag(spec.model_name, "2", "nightshift.run_date", "2026-01-09")
    with pytest.raises(RunRefused, match="v2, the champion, was trained on the night of 2026-01-09, after night "
                                         "2026-01-06"):  # a past night is not scored with what came later
        score_night(store, registry, spec, snapshot, "night")
    scored = score_night(store, registry, spec, snapshot, "night", allow_later_model=True)
    assert scored.model_version == 2
    rollback(registry, spec.model_name, to_version=1, actor="ana", reason="v2 is off", rollback_id="rb")

    published = publish_night(pg_conn, store, registry, spec, scored, snapshot, "night")

    assert (published.model_version, published.rows) == (1, 300)
    assert set(_published(pg_conn, spec, day)["model_version"]) == {1}


def test_the_serving_lock_makes_a_publish_wait_for_a_move_of_the_alias(pg_conn, pg_uri, churn_spec):
    """While one session holds the serving lock (a rollback moving the alias), another spec's session
    is not held up, and the same spec's publish waits until it is released."""
    import threading

    import psycopg

    other = dataclasses.replace(churn_spec, warehouse=dataclasses.replace(churn_spec.warehouse, schema="other"))
    entered = threading.Event()
    with psycopg.connect(pg_uri) as second, psycopg.connect(pg_uri) as third:
        with warehouse.serving_lock(pg_conn, churn_spec):
            with warehouse.serving_lock(third, other):
                pass  # another schema: no wait

            def publish() -> None:
                with warehouse.serving_lock(second, churn_spec):
                    entered.set()

            waiter = threading.Thread(target=publish)
            waiter.start()
            assert not entered.wait(1.0), "the second session got the lock while the first held it"
        waiter.join(10)
        assert entered.is_set()


def test_a_rollback_keeps_model_versions_serving_periods_in_line(registry, train_data, pg_conn, churn_spec):
    """model_versions after a rollback: the restored version serves from the rollback, the one left served
    until it; versions that served but were never judged here get their row from the registry."""
    name = f"rbmv{next(_names)}"
    spec = dataclasses.replace(churn_spec, name=name,
                               warehouse=dataclasses.replace(churn_spec.warehouse, schema=name, reader_role=None))
    _log_versions(registry, spec, train_data, 2)
    audit.ensure_audit(pg_conn, spec)
    for before, version in ((None, 1), (1, 2)):
        registry.promote(spec.model_name, version, {"promote": True})
        audit.record_change(pg_conn, spec, {"event": "promote", "model_name": spec.model_name, "from_version": before,
                                            "to_version": version, "actor": "nightshift", "reason": "gate passed",
                                            "dag_run_id": f"night_{version}"})

    result, change = run_rollback(pg_conn, registry, spec, to_version=None, actor="ana", reason="v2 misbehaves",
                                  rollback_id="manual__mv")
    run_rollback(pg_conn, registry, spec, to_version=None, actor="ana", reason="v2 misbehaves",
                 rollback_id="manual__mv")  # a retry changes nothing

    rows = {r["version"]: r for r in warehouse.model_versions(pg_conn, spec, spec.model_name)}
    promoted = {c["to_version"]: c["changed_at"] for c in audit.changes(pg_conn, spec) if c["event"] == "promote"}
    assert (result.from_version, result.to_version) == (2, 1)
    assert (rows[1]["champion_from"], rows[1]["champion_to"]) == (change["changed_at"], None)
    assert (rows[2]["champion_from"], rows[2]["champion_to"]) == (promoted[2], change["changed_at"])
    assert rows[1]["run_id"] == registry.version(spec.model_name, 1).run_id and rows[1]["blessed"] is True


def _break_round_trip(registry, spec, version: int, tmp_path) -> None:
    """The scores v`version` logged for its fixed training sample, shifted by 1e-6: loaded on this environment it no
    longer gives them back (what a changed library would do to a model)."""
    from include.nightshift import skew

    run_id = registry.version(spec.model_name, version).run_id
    logged = skew.load_serving_check(registry, run_id)
    folder = tmp_path / "serving_check"
    folder.mkdir()
    np.save(folder / skew.SCORES_FILE, logged.scores + 1e-6)
    registry.client.log_artifact(run_id, str(folder / skew.SCORES_FILE), skew.FOLDER)
    skew._CACHE.clear()  # this process downloaded the old file


def test_a_version_that_does_not_reproduce_its_training_scores_is_neither_restored_nor_republished(
        registry, train_data, pg_conn, tmp_path, churn_spec):
    """The nightly score step's round trip guards the rollback too: before the alias moves (check_serves) and
    before a republish re-scores the night with the version serving (ServingSkew, the night left as it was)."""
    from include.nightshift.rollback import ModelUnavailable, check_serves
    from include.nightshift.skew import ServingSkew

    spec = dataclasses.replace(churn_spec, name=f"rbtest{next(_names)}")
    _log_versions(registry, spec, train_data, 2)
    _promote(registry, spec.model_name, 1, 2)
    assert check_serves(registry, spec, 1) > 0  # reproduces: restorable
    _break_round_trip(registry, spec, 1, tmp_path)
    with pytest.raises(ModelUnavailable, match=r"v1 .*cannot serve: .*does not reproduce the scores"):
        check_serves(registry, spec, 1)

    store = ArtifactStore(tmp_path / "artifacts")
    warehouse.ensure_warehouse(pg_conn, spec)
    day = dt.date(2026, 1, 4)
    _publish_night(registry, store, pg_conn, spec, day, 2)
    before = _published(pg_conn, spec, day)
    rollback(registry, spec.model_name, to_version=1, actor="ana", reason="by hand", rollback_id="rb-skew")
    with pytest.raises(ServingSkew, match=r"v1 does not reproduce"):
        republish_latest(pg_conn, store, registry, spec, 1, "rb-skew")
    assert _published(pg_conn, spec, day).equals(before)  # still v2's night
