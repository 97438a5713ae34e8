"""The promotion policy (pure), and the promotion itself: alias and audit row as one step,
against a real MLflow SQLite registry and a real PostgreSQL warehouse."""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path

import pytest

from include.nightshift import audit
from include.nightshift.evaluation import Check, Verdict
from include.nightshift.promotion import apply_policy, promote
from include.nightshift.registry import RUN_DATE_TAG
from include.nightshift.spec import load_spec
from include.nightshift.steps import VerdictStep

SPEC_TEXT = (Path(__file__).resolve().parents[2] / "include" / "specs" / "churn.yaml").read_text()
_names = itertools.count(1)


def _verdict(*failed: str) -> Verdict:
    names = ("thresholds", "finite", "floor", "champion", "slices", "baseline", "roundtrip")
    checks = [Check(n, n not in failed, f"{n} {'failed' if n in failed else 'ok'}") for n in names]
    return Verdict(promote=not failed, checks=checks, metric="roc_auc", challenger=0.8, champion=0.79, baseline=0.7)


@pytest.mark.parametrize(("failed", "policy", "dry_run", "expected"), [
    ((), "auto", False, (True, "gate passed")),
    (("champion",), "auto", False, (False, "gate failed")),
    ((), "never", False, (False, "promotion_policy=never")),  # the gate passed, the run said never
    (("champion", "slices"), "force", False, (True, "promotion_policy=force")),  # relative checks overridden
    (("floor",), "force", False, (False, "force refused: floor failed")),  # never the floor
    (("roundtrip",), "force", False, (False, "force refused: roundtrip failed")),  # nor a sanity check
    ((), "force", True, (False, "dry run: nothing is promoted")),
    ((), "auto", True, (False, "dry run: nothing is promoted")),
])
def test_the_policy_on_top_of_the_gate(failed, policy, dry_run, expected):
    assert apply_policy(_verdict(*failed), policy, dry_run=dry_run) == expected


def test_an_unknown_policy_is_refused_naming_it():
    with pytest.raises(ValueError, match="'sometimes'"):
        apply_policy(_verdict(), "sometimes", dry_run=False)


@pytest.fixture
def spec(tmp_path, registry):
    """The churn spec under a name of its own, its model registered with two versions."""
    name = f"promo{next(_names)}"
    path = tmp_path / f"{name}.yaml"
    path.write_text(SPEC_TEXT.replace("name: churn", f"name: {name}").replace("schema: churn", f"schema: {name}"))
    spec = load_spec(path)
    registry.client.create_registered_model(spec.model_name)
    for _ in range(2):
        registry.client.create_model_version(spec.model_name, source=str(tmp_path))
    return spec


def _judged(version: int, champion: int | None) -> VerdictStep:
    return VerdictStep(promote=True, metric="roc_auc", challenger=0.8, champion=None, baseline=0.7, message="PROMOTE",
                       checks=[], policy="auto", dag_run_id=f"run_v{version}", champion_version=champion,
                       challenger_version=version, promoted=True, policy_note="gate passed")


def test_a_promotion_moves_the_alias_and_appends_its_audit_row(registry, spec, pg_conn):
    assert promote(registry, pg_conn, spec, _judged(1, None)) is None
    assert promote(registry, pg_conn, spec, _judged(2, 1)) == 1
    assert registry.champion(spec.model_name).version == 2
    rows = audit.changes(pg_conn, spec)
    assert [(r["event"], r["from_version"], r["to_version"], r["dag_run_id"], r["state"]) for r in rows] == [
        ("promote", None, 1, "run_v1", "done"), ("promote", 1, 2, "run_v2", "done")]
    assert rows[1]["reason"] == "gate passed" and rows[1]["details"]["challenger"] == 0.8


def test_a_warehouse_that_cannot_take_the_audit_row_stops_the_promotion_before_the_alias_moves(registry, spec,
                                                                                                pg_conn):
    pg_conn.close()  # the warehouse is gone before anything happens
    with pytest.raises(Exception):
        promote(registry, pg_conn, spec, _judged(1, None))
    assert registry.champion(spec.model_name) is None  # production untouched


def test_an_audit_table_that_refuses_the_intent_stops_the_promotion_before_the_alias_moves(registry, spec, pg_conn):
    """issue 11 item 3: the audit row is written first (as an intent); one that cannot be written stops the
    promotion with production untouched, and the error names what refused it."""
    audit.ensure_audit(pg_conn, spec)
    with pg_conn.cursor() as cur:  # the pipeline's role may no longer write the audit table
        cur.execute(f'ALTER TABLE "{spec.warehouse.schema}".champion_changes ADD CONSTRAINT no_rows CHECK (false)')
    pg_conn.commit()
    with pytest.raises(Exception, match="no_rows"):
        promote(registry, pg_conn, spec, _judged(1, None))
    assert registry.champion(spec.model_name) is None  # the alias never moved
    assert "nightshift.blessed" not in registry.version(spec.model_name, 1).tags


def test_a_promotion_names_its_night_given_or_the_challengers_own(registry, spec, pg_conn):
    """champion_changes.night: the run's date when the caller gives it, else the night whose run
    trained (and so judged) the challenger, from its nightshift.run_date tag."""
    promote(registry, pg_conn, spec, _judged(1, None), night=dt.date(2026, 3, 1))
    registry.client.set_model_version_tag(spec.model_name, "2", RUN_DATE_TAG, "2026-03-04")
    promote(registry, pg_conn, spec, _judged(2, 1))
    assert [(r["to_version"], r["night"]) for r in audit.changes(pg_conn, spec)] == [
        (1, dt.date(2026, 3, 1)), (2, dt.date(2026, 3, 4))]
