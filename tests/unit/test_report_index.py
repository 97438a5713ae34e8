"""Reports per DAG run, the per-night index the reports app shows, and a dry run that leaves MLflow alone.

On real PostgreSQL (the source and the warehouse), a real local artifact store and a real MLflow
registry on SQLite: a dry run trains, keeps its challenger in the artifact store, judges it there
and writes its reports in its own run folder, and the registry has no model, version or run after it.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from include.nightshift import demo_data, report_index, training
from include.nightshift import warehouse as wh
from include.nightshift.artifacts import ArtifactStore, run_folder, safe_name
from include.nightshift.nightly import judge_challenger, settle_verdict, train_challenger
from include.nightshift.reports import Origin
from include.nightshift.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]
SPEC = load_spec(ROOT / "include" / "specs" / "churn.yaml")
NIGHT = dt.date(2026, 3, 20)
FIRST, RERUN, DRY = "scheduled__2026-03-20T00:00:00+00:00", "manual__2026-03-22T08:15:00+00:00", "manual__dry"


def test_a_run_s_folder_is_its_night_and_its_run_id_made_safe_for_a_path():
    assert run_folder("churn", NIGHT, RERUN) == ("reports", "churn", "2026-03-20", "manual__2026-03-22T08_15_00_00_00")
    assert run_folder("churn", "2026-03-20", DRY, top="dry_runs") == ("dry_runs", "churn", "2026-03-20", DRY)
    assert safe_name("a/../b c") == "a_.._b_c"  # no separator survives: one folder, never a path


@pytest.fixture
def source(pg_conn):
    """The churn source with 17 labelled days before NIGHT (14 training + 3 holdout) and the night itself."""
    demo_data.create_source_table(pg_conn, SPEC.source.table)
    _, days = training.training_days(SPEC, NIGHT)
    for day in days:
        demo_data.load_day(pg_conn, day, 150, table=SPEC.source.table, with_labels=True)
    demo_data.load_day(pg_conn, NIGHT, 150, table=SPEC.source.table)
    return pg_conn


def test_a_dry_run_trains_and_judges_its_challenger_without_a_run_or_version_in_mlflow(source, registry, tmp_path):
    store = ArtifactStore(tmp_path / "artifacts")
    # no registry at all for training: any call to it would fail the dry run
    trained = train_challenger(source, store, None, SPEC, NIGHT, None, DRY, dry_run=True)
    kept = run_folder(SPEC.name, NIGHT, DRY, top="dry_runs")
    assert (trained.version, trained.run_id, trained.model_url) == (None, "", store.url(*kept, "challenger.zip"))
    assert trained.holdout_scores_url == store.url(*kept, "challenger.npz") and store.exists(trained.model_url)

    verdict = judge_challenger(store, registry, SPEC, trained, day=NIGHT, policy="force", dry_run=True,
                               origin=Origin(DRY, "/dags/nightshift_churn/runs/x"), reports={}, conn=source)
    assert verdict.promoted is False and verdict.challenger_version is None and verdict.challenger is not None
    roundtrip = next(c for c in verdict.checks if c["name"] == "roundtrip")
    assert roundtrip["passed"], roundtrip  # the kept model scores the holdout exactly as the fresh fit did
    assert verdict.report_url == store.url(*run_folder(SPEC.name, NIGHT, DRY), "evaluation.html")
    page = store.read_text(verdict.report_url)
    assert "challenger of a dry run (not registered)" in page and "vNone" not in page
    assert f'Written by DAG run <a href="/dags/nightshift_churn/runs/x">{DRY}</a></p>' in page  # no MLflow run
    assert settle_verdict(registry, source, SPEC, verdict) is None

    client = registry.client
    assert client.search_registered_models() == []
    experiments = client.search_experiments()
    assert [r for e in experiments for r in client.search_runs([e.experiment_id])] == []
    assert not wh.table_exists(source, SPEC, "champion_changes")  # nothing audited: nothing moved


def _night(run_id: str, day: dt.date, decision: str, rows: int, hour: int, **more) -> dict:
    return {"dag_run_id": run_id, "logical_date": day, "decision": decision, "rows_published": rows,
            "finished_at": dt.datetime(2026, 3, 22, hour, tzinfo=dt.timezone.utc), **more}


def test_the_index_names_the_run_that_published_each_night_and_lists_the_others_under_it(pg_conn, tmp_path):
    """Night 20: published, republished by a rerun, then a dry run. Night 21: failed. Night 22: dry runs only."""
    wh.ensure_warehouse(pg_conn, SPEC)
    day2, day3 = NIGHT + dt.timedelta(days=1), NIGHT + dt.timedelta(days=2)
    runs = [(_night(FIRST, NIGHT, "skipped", 150, 1), False), (_night(RERUN, NIGHT, "skipped", 150, 2, note="rerun"), False),
            (_night(DRY, NIGHT, "rejected", 0, 3, note="dry"), True), (_night("failed_run", day2, "failed", 0, 4), False),
            (_night("dry_only", day3, "rejected", 0, 5), True)]
    for row, dry in runs:
        wh.record_attempt(pg_conn, SPEC, {**row, "dry_run": dry})
        if not dry:
            wh.upsert_run(pg_conn, SPEC, row)
    store = ArtifactStore(tmp_path / "artifacts")

    url = report_index.write_index(pg_conn, store, SPEC)

    assert url == store.url("reports", "churn", "nights.json")
    nights = {n["night"]: n for n in json.loads(store.read_text(url))["nights"]}
    assert list(nights) == [day3.isoformat(), day2.isoformat(), NIGHT.isoformat()]  # newest first
    night = nights[NIGHT.isoformat()]
    assert (night["status"], night["run"]["run"], night["run"]["folder"], night["run"]["note"]) == (
        "published", RERUN, safe_name(RERUN), "rerun")
    assert [(r["run"], r["status"]) for r in night["runs"]] == [(DRY, "dry run"), (FIRST, "replaced")]
    assert (nights[day2.isoformat()]["status"], nights[day2.isoformat()]["run"]["status"]) == ("failed", "failed")
    assert nights[day3.isoformat()]["status"] == "dry run only" and nights[day3.isoformat()]["run"] is None
    newest = [n["night"] for n in report_index.read_index(pg_conn, SPEC, nights=1)]
    assert newest == [day3.isoformat(), day2.isoformat()]  # each table's newest night: a bounded read


def test_no_warehouse_yet_is_an_empty_index(pg_conn):
    assert report_index.read_index(pg_conn, SPEC) == []
