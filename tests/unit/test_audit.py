"""Issue 11 items 1-4: the registry cannot lie about what served, on a real MLflow registry (SQLite store,
real logged models) and a real PostgreSQL warehouse.

1. A promotion whose alias write failed leaves no serving tags, and "previous champion" is what served
   by the audit table, so a rollback never restores a version that never served.
2. A rollback target whose artifacts are gone is refused before the alias moves, naming the version and
   where its model should be.
3. Promotion and rollback are intent -> move -> done in champion_changes; an interrupted one is completed
   (or abandoned, when the alias never moved) by a retry or the next change; no error is swallowed.
4. A champion that vanished from MLflow is told apart from "never had one" by the audit table: the gate's
   champion check fails naming it, and an alert goes out.

Only faults that cannot be caused for real here are injected: the registry refusing the alias write and
the warehouse connection dropping between the move and the mark (monkeypatched to raise once).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import shutil
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd
import pytest

from include.nightshift import audit, training, warehouse
from include.nightshift.demo_data import generate_day
from include.nightshift.evaluation import gate
from include.nightshift.nightly import lost_champion, verdict_alerts
from include.nightshift.promotion import promote, repair_pending
from include.nightshift.registry import BLESSED_TAG, PROMOTED_AT_TAG
from include.nightshift.rollback import ModelUnavailable, check_serves, run_rollback
from include.nightshift.run_record import run_outcome
from include.nightshift.steps import VerdictStep

_names = itertools.count(1)


@pytest.fixture(scope="module")
def train_data() -> pd.DataFrame:
    return generate_day(dt.date(2026, 1, 1), 400)


@pytest.fixture
def spec(churn_spec, registry, train_data, pg_conn):
    """The churn spec under a model name and warehouse schema of its own, with three real, loadable versions."""
    name = f"audit{next(_names)}"
    spec = dataclasses.replace(churn_spec, name=name,
                               warehouse=dataclasses.replace(churn_spec.warehouse, schema=name, reader_role=None))
    for k in (1, 2, 3):
        s = dataclasses.replace(spec, training=dataclasses.replace(
            spec.training, params={**spec.training.params, "n_estimators": 3 * k, "max_depth": 2}))
        model = training.fit(training.build_model(s), train_data, s)
        registry.log_challenger(model, training.fit(training.build_baseline(s), train_data, s), spec=s,
                                train_df=train_data, reference=train_data.head(60), params={}, metrics={}, tags={})
    audit.ensure_audit(pg_conn, spec)
    return spec


def _verdict(version: int, champion: int | None, run: str | None = None) -> VerdictStep:
    return VerdictStep(promote=True, metric="roc_auc", challenger=0.8, champion=None, baseline=0.7, message="PROMOTE",
                       checks=[], policy="auto", dag_run_id=run or f"night_v{version}", champion_version=champion,
                       challenger_version=version, promoted=True, policy_note="gate passed")


def _rows(conn, spec) -> list[tuple]:
    return [(r["event"], r["from_version"], r["to_version"], r["state"]) for r in audit.changes(conn, spec)]


def _fail_once(monkeypatch, owner, attr: str, error: Exception) -> None:
    real = getattr(owner, attr)
    calls = {"n": 0}

    def once(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, attr, once)


def _rollback(conn, registry, spec, to_version=None, run="manual__rb"):
    return run_rollback(conn, registry, spec, to_version=to_version, actor="ana", reason="v2 misbehaves",
                        rollback_id=run)


# --- 1. a promotion that failed at the alias never counts as having served ------------------------


def test_a_promotion_refused_at_the_alias_leaves_no_serving_tags_and_is_never_the_previous_champion(
        registry, spec, pg_conn, monkeypatch):
    name = spec.model_name
    promote(registry, pg_conn, spec, _verdict(1, None))
    promote(registry, pg_conn, spec, _verdict(2, 1))
    with monkeypatch.context() as mp:
        _fail_once(mp, registry.client, "set_registered_model_alias", ConnectionError("registry refused the alias"))
        with pytest.raises(ConnectionError, match="refused the alias"):
            promote(registry, pg_conn, spec, _verdict(3, 2))
    assert registry.champion(name).version == 2
    tags = registry.version(name, 3).tags
    assert BLESSED_TAG not in tags and PROMOTED_AT_TAG not in tags  # it never served, and says nothing else
    assert _rows(pg_conn, spec)[-1] == ("promote", 2, 3, "intent")
    assert registry.previous_champion(name).version == 1  # the tags agree with the alias too
    assert audit.previous_champion(pg_conn, spec, name, 2) == 1

    result, change = _rollback(pg_conn, registry, spec)
    assert (result.from_version, result.to_version, registry.champion(name).version) == (2, 1, 1)
    assert _rows(pg_conn, spec) == [("promote", None, 1, "done"), ("promote", 1, 2, "done"),
                                    ("promote", 2, 3, "abandoned"), ("rollback", 2, 1, "done")]
    assert change["to_version"] == 1


def test_previous_champion_is_read_from_the_audit_table_not_from_tags(registry, spec, pg_conn):
    """Tags that claim v3 served (written by hand, or by an older version of the pipeline) are not read."""
    name = spec.model_name
    promote(registry, pg_conn, spec, _verdict(1, None))
    promote(registry, pg_conn, spec, _verdict(2, 1))
    registry.client.set_model_version_tag(name, "3", BLESSED_TAG, "true")
    registry.client.set_model_version_tag(name, "3", PROMOTED_AT_TAG, dt.datetime.now(dt.UTC).isoformat())
    assert registry.previous_champion(name).version == 3  # the tags lie
    result, _ = _rollback(pg_conn, registry, spec)
    assert result.to_version == 1 and registry.champion(name).version == 1


# --- 2. a target that cannot load is refused before the alias moves ------------------------------


def test_a_rollback_to_a_version_whose_artifacts_are_gone_is_refused_naming_it(registry, spec, pg_conn):
    name = spec.model_name
    promote(registry, pg_conn, spec, _verdict(1, None))
    promote(registry, pg_conn, spec, _verdict(2, 1))
    assert check_serves(registry, spec, 1) == 50  # SAMPLE_ROWS of its reference sample
    uri = registry.client.get_model_version_download_uri(name, "1")
    shutil.rmtree(unquote(urlparse(uri).path))  # the model's files are gone from the artifact store

    for to_version in (None, 1):
        with pytest.raises(ModelUnavailable, match=rf"{name} v1 \(run \w+, model artifacts at {uri}\) cannot serve"):
            _rollback(pg_conn, registry, spec, to_version=to_version, run=f"manual__{to_version}")
    assert registry.champion(name).version == 2  # production untouched
    assert "nightshift.rollback.id" not in registry.version(name, 1).tags
    assert [r[0] for r in _rows(pg_conn, spec)] == ["promote", "promote"]  # not even an intent


# --- 3. intent -> move -> done, recoverable -----------------------------------------------------


def test_a_promotion_killed_between_the_move_and_its_mark_is_completed_by_the_next_change(registry, spec, pg_conn,
                                                                                          monkeypatch):
    name = spec.model_name
    promote(registry, pg_conn, spec, _verdict(1, None))
    with monkeypatch.context() as mp:
        _fail_once(mp, audit, "finish", ConnectionError("server closed the connection unexpectedly"))
        with pytest.raises(ConnectionError, match="closed the connection"):  # not swallowed: the run fails
            promote(registry, pg_conn, spec, _verdict(2, 1))
    assert registry.champion(name).version == 2
    assert _rows(pg_conn, spec)[-1] == ("promote", 1, 2, "intent")

    settled = repair_pending(registry, pg_conn, spec)  # what the next promotion or rollback does first
    assert [(row["to_version"], state) for row, state in settled] == [(2, "done")]
    assert _rows(pg_conn, spec) == [("promote", None, 1, "done"), ("promote", 1, 2, "done")]
    assert registry.version(name, 2).tags[BLESSED_TAG] == "true"
    assert audit.previous_champion(pg_conn, spec, name, 2) == 1


def test_a_retried_promotion_adopts_its_own_intent(registry, spec, pg_conn, monkeypatch):
    name = spec.model_name
    promote(registry, pg_conn, spec, _verdict(1, None))
    with monkeypatch.context() as mp:
        _fail_once(mp, registry.client, "set_registered_model_alias", ConnectionError("registry unreachable"))
        with pytest.raises(ConnectionError):
            promote(registry, pg_conn, spec, _verdict(2, 1))
    assert promote(registry, pg_conn, spec, _verdict(2, 1)) == 1  # the same run again: completes it
    assert registry.champion(name).version == 2
    assert _rows(pg_conn, spec) == [("promote", None, 1, "done"), ("promote", 1, 2, "done")]


def test_a_rollback_killed_between_the_move_and_its_mark_is_done_by_its_retry(registry, spec, pg_conn, monkeypatch):
    name = spec.model_name
    promote(registry, pg_conn, spec, _verdict(1, None))
    promote(registry, pg_conn, spec, _verdict(2, 1))
    with monkeypatch.context() as mp:
        _fail_once(mp, audit, "finish", ConnectionError("server closed the connection unexpectedly"))
        with pytest.raises(ConnectionError):
            _rollback(pg_conn, registry, spec, run="manual__kill")
    assert registry.champion(name).version == 1
    assert _rows(pg_conn, spec)[-1] == ("rollback", 2, 1, "intent")

    result, _ = _rollback(pg_conn, registry, spec, run="manual__kill")  # the Airflow retry
    assert (result.to_version, result.resumed, registry.champion(name).version) == (1, True, 1)
    assert _rows(pg_conn, spec)[-1] == ("rollback", 2, 1, "done") and len(_rows(pg_conn, spec)) == 3


def test_a_night_whose_evaluate_died_is_failed_not_rejected():
    """A kill between the move and the mark leaves no verdict: the night is failed (and the next change
    settles the intent), never `rejected` while its challenger serves."""
    assert run_outcome(["evaluate", "record_run"], None) == "failed"


def test_an_intent_of_a_migrated_warehouse_defaults_to_done(pg_conn, churn_spec):
    """Rows written before migration 7 were completed changes: they read as done."""
    spec = dataclasses.replace(churn_spec, warehouse=dataclasses.replace(churn_spec.warehouse, schema="audit_mig",
                                                                         reader_role=None))
    audit.ensure_audit(pg_conn, spec)
    warehouse.insert_row(pg_conn, warehouse.table(spec, warehouse.CHANGES), {
        "event": "promote", "model_name": "m", "to_version": 4, "actor": "nightshift", "reason": "gate passed",
        "dag_run_id": "old"}, warehouse.CHANGE_KEY, update=False)
    assert audit.last_served(pg_conn, spec, "m") == 4
    with pytest.raises(LookupError, match="no row for promote of m v5"):
        audit.finish(pg_conn, spec, {"event": "promote", "model_name": "m", "to_version": 5, "dag_run_id": "x"})


# --- 4. a champion that vanished is not a cold start ---------------------------------------------


def test_a_champion_deleted_in_mlflow_fails_the_champion_check_and_alerts(registry, spec, pg_conn):
    name = spec.model_name
    promote(registry, pg_conn, spec, _verdict(1, None))
    promote(registry, pg_conn, spec, _verdict(2, 1))
    assert lost_champion(pg_conn, spec, registry.champion(name)) is None
    registry.client.delete_model_version(name, "2")  # deleted in MLflow: its alias goes with it
    assert registry.champion(name) is None
    assert lost_champion(pg_conn, spec, registry.champion(name)) == 2

    evaluation = {"metric": "roc_auc", "rows": 100, "overall": {"challenger": 0.9, "baseline": 0.6}, "slices": []}
    verdict = gate(evaluation, spec.promotion, challenger_scores=np.full(100, 0.5), roundtrip_equal=True,
                   lost_champion=2)
    (check,) = [c for c in verdict.checks if c.name == "champion"]
    assert not verdict.promote and not check.passed and "v2 served" in check.detail
    step = dataclasses.replace(_verdict(3, None), promote=False, promoted=False, checks=[c.to_dict() for c in verdict.checks])
    ((event, (message, details)),) = verdict_alerts(spec, step, None)
    assert event == "no_model" and f"{name}: the champion v2 served" in message and details["check"]["name"] == "champion"


def test_a_model_that_never_had_a_champion_is_a_cold_start(registry, spec, pg_conn):
    assert lost_champion(pg_conn, spec, registry.champion(spec.model_name)) is None
    evaluation = {"metric": "roc_auc", "rows": 100, "overall": {"challenger": 0.9, "baseline": 0.6}, "slices": []}
    verdict = gate(evaluation, spec.promotion, challenger_scores=np.full(100, 0.5), roundtrip_equal=True,
                   lost_champion=None)
    assert [c.passed for c in verdict.checks if c.name == "champion"] == [True]


def test_the_next_nightly_evaluate_settles_an_intent_even_when_it_promotes_nothing(registry, spec, pg_conn,
                                                                                   monkeypatch):
    """nightly.settle_verdict (every evaluate) repairs first: a rejected night completes the intent a killed
    promotion left, and a move that never happened is abandoned, not redone."""
    from include.nightshift.nightly import settle_verdict

    promote(registry, pg_conn, spec, _verdict(1, None))
    with monkeypatch.context() as mp:
        _fail_once(mp, audit, "finish", ConnectionError("server closed the connection unexpectedly"))
        with pytest.raises(ConnectionError):
            promote(registry, pg_conn, spec, _verdict(2, 1))
    audit.record_intent(pg_conn, spec, {"event": "promote", "model_name": spec.model_name, "from_version": 2,
                                        "to_version": 3, "actor": "nightshift", "reason": "gate passed",
                                        "dag_run_id": "killed_before_the_move"})
    rejected = dataclasses.replace(_verdict(3, 2, run="night_rejected"), promote=False, promoted=False,
                                   policy_note="gate failed")
    assert settle_verdict(registry, pg_conn, spec, rejected) is None
    assert _rows(pg_conn, spec) == [("promote", None, 1, "done"), ("promote", 1, 2, "done"),
                                    ("promote", 2, 3, "abandoned")]
    assert registry.champion(spec.model_name).version == 2
    assert registry.version(spec.model_name, 3).tags[BLESSED_TAG] == "false"


def test_an_evaluate_cleared_after_its_alias_moved_completes_the_promotion_not_rejects_it(registry, spec, pg_conn,
                                                                                          monkeypatch):
    """Killed between the move and the mark, then cleared: the rerun finds its challenger serving. It is the
    night's promotion (promoted, the intent completed), never a `rejected` night while the challenger serves;
    a version reused by training key that already serves is `reproduced`, as before."""
    from include.nightshift.nightly import already_champion, settle_verdict
    from include.nightshift.steps import TrainingStep

    promote(registry, pg_conn, spec, _verdict(1, None))
    with monkeypatch.context() as mp:
        _fail_once(mp, audit, "finish", ConnectionError("killed"))
        with pytest.raises(ConnectionError):
            promote(registry, pg_conn, spec, _verdict(2, 1, run="night_2"))
    champion = registry.champion(spec.model_name)
    fields = {name: None for name in TrainingStep.__dataclass_fields__}
    trained = dataclasses.replace(TrainingStep(**fields), version=2, reused=False)
    promoted, why = already_champion(champion, trained)
    assert promoted is True and "earlier attempt of this run" in why
    assert already_champion(champion, dataclasses.replace(trained, reused=True))[0] is False
    assert already_champion(champion, dataclasses.replace(trained, version=3)) is None

    again = dataclasses.replace(_verdict(2, 2, run="night_2"), promoted=promoted, policy_note=why)
    assert settle_verdict(registry, pg_conn, spec, again) == 1  # the predecessor, from the first attempt's intent
    assert run_outcome([], again) == "promoted"
    assert _rows(pg_conn, spec) == [("promote", None, 1, "done"), ("promote", 1, 2, "done")]


def test_the_actor_says_what_airflow_knows_of_the_caller():
    """Issue 13 item 9: "Anonymous" and "root" said nothing. Airflow records one name per run; the cases
    it lets us tell apart are spelled out in the audit row (README "Who changed the champion")."""
    from include.nightshift.audit import actor_of

    assert actor_of("ana") == "ana"  # a logged-in Airflow user (UI or REST API)
    assert actor_of("Anonymous", login_disabled=True) == (
        "Anonymous (login disabled: anyone who could reach the Airflow UI or API)")
    assert actor_of("Anonymous", login_disabled=False) == "Anonymous"  # a real account of that name
    assert actor_of("root") == "root"  # `airflow dags trigger`: the OS account (README)
    assert actor_of("dag_test").startswith("dag_test (airflow dags test")
    assert actor_of(None) == actor_of("  ") == "unknown (Airflow recorded no user)"
    assert actor_of("ana", run_type="backfill") == "ana (backfill run)"
    assert actor_of("ana", run_type="manual") == "ana"
