"""A shadow that wins on realised labels is promoted (issue 14 part 2), on real DAG runs.

  night 0  cold start on scrambled labels, promotion forced (the spec's floor is 0 here)
                                 -> v1, a champion no better than chance
  night 1  forced retrain on the true labels, promotion_policy never
                                 -> v2, registered and not promoted
  night 2  the trigger form names v2 as the shadow
                                 -> v1 serves predictions; v2 scores the same rows into predictions_shadow;
                                    one labelled day it never saw: 1 of the 2 nights it must win
  night 3  labels of night 2 arrive: v2 beat v1 on both days and passes the gate on their pooled rows
                                 -> reason shadow_wins: v2 promoted through the audited path, the shadow retired
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ROWS = 2000
N = [dt.date(2026, 5, 1) + dt.timedelta(days=i) for i in range(4)]
SCRAMBLE = ("UPDATE churn_events SET churned = (abs(hashtext(customer_id::text || event_ts::text)) % 5 = 0)::int "
            "WHERE churned IS NOT NULL")


def iso(day: dt.date, offset: int = 0) -> str:
    return (day + dt.timedelta(days=offset)).isoformat()


def spec_copy(folder: Path) -> Path:
    """churn.yaml with no floor (the chance-level v1 may serve), a realised tolerance that never retrains it,
    and a shadow that must win 2 labelled days."""
    text = (ROOT / "include" / "specs" / "churn.yaml").read_text()
    text = re.sub(r"\n  floor: [^\n]*", "\n  floor: 0.0", text)
    text = re.sub(r"\n  realised_tolerance: [^\n]*", "\n  realised_tolerance: 0.5", text)
    text += "\nshadow:\n  min_nights: 2\n"
    folder.mkdir()
    path = folder / "churn.yaml"
    path.write_text(text)
    return path


def plan(spec: Path) -> dict:
    return {
        "rows": ROWS, "spec": str(spec), "specs_dir": str(spec.parent),
        "steps": [
            {"load_days": {"from": iso(N[0], -18), "to": iso(N[0], -1), "labels": True}},
            {"load_days": {"from": iso(N[0]), "to": iso(N[0])}}, {"sql": SCRAMBLE},
            {"run": {"day": iso(N[0]), "conf": {"note": "chance-level champion", "promotion_policy": "force"}}},
            *[{"reveal": iso(N[0], -k)} for k in range(0, 19)],  # the true labels again
            {"load_days": {"from": iso(N[1]), "to": iso(N[1])}},
            {"run": {"day": iso(N[1]), "conf": {"force_retrain": True, "promotion_policy": "never"}}},
            {"load_days": {"from": iso(N[2]), "to": iso(N[2])}}, {"reveal": iso(N[1])},
            {"run": {"day": iso(N[2]), "conf": {"shadow_version": 2, "note": "shadow v2"}}},
            {"load_days": {"from": iso(N[3]), "to": iso(N[3])}}, {"reveal": iso(N[2])},
            {"run": {"day": iso(N[3])}},
        ],
    }


@pytest.fixture(scope="module")
def nights(run_plan, tmp_path_factory):
    home = tmp_path_factory.mktemp("nightshift-shadow")
    runs, warehouse = run_plan(plan(spec_copy(home / "specs")), home)
    return {"runs": runs, "warehouse": warehouse, "home": home}


def query(nights, text, args=()):
    with nights["warehouse"].cursor() as cur:
        cur.execute(text, args)
        return cur.fetchall()


def runs_by_night(nights) -> dict[str, dict]:
    rows = query(nights, "SELECT logical_date, decision, retrain_reason, champion_version, challenger_version, "
                         "details FROM churn.pipeline_runs ORDER BY logical_date")
    return {r[0].isoformat(): dict(zip(("decision", "reason", "champion", "challenger", "details"), r[1:]))
            for r in rows}


def test_every_night_succeeded_and_the_champion_changed_only_on_the_last(nights):
    assert [(r["day"], r["state"]) for r in nights["runs"]] == [(iso(n), "success") for n in N]
    assert [r["champion"] for r in nights["runs"]] == [1, 1, 1, 2]
    runs = runs_by_night(nights)
    assert (runs[iso(N[1])]["decision"], runs[iso(N[1])]["challenger"]) == ("rejected", 2)  # policy never


def test_the_shadow_scores_the_same_rows_into_predictions_shadow_and_never_serves(nights):
    served = query(nights, "SELECT model_version, count(*) FROM churn.predictions WHERE score_date = %s "
                           "GROUP BY 1", (N[2],))
    shadowed = query(nights, "SELECT model_version, role, count(*), count(DISTINCT customer_id) "
                             "FROM churn.predictions_shadow WHERE score_date = %s GROUP BY 1, 2", (N[2],))
    assert served == [(1, ROWS)] and shadowed == [(2, "shadow", ROWS, ROWS)]
    same_rows = query(nights, "SELECT count(*) FROM churn.predictions p JOIN churn.predictions_shadow s "
                              "USING (score_date, customer_id) WHERE score_date = %s "
                              "AND p.snapshot_sha256 = s.snapshot_sha256 AND p.dag_run_id = s.dag_run_id", (N[2],))
    assert same_rows == [(ROWS,)]
    # the night it was promoted, v2 serves and nothing shadows
    assert query(nights, "SELECT DISTINCT model_version FROM churn.predictions WHERE score_date = %s", (N[3],)) == [(2,)]
    assert query(nights, "SELECT count(*) FROM churn.predictions_shadow WHERE score_date = %s", (N[3],)) == [(0,)]


def test_the_shadow_is_compared_on_the_labelled_days_it_never_saw(nights):
    named = runs_by_night(nights)[iso(N[2])]
    shadow = named["details"]["decision"]["details"]["shadow"]
    assert named["reason"] is None and named["decision"] == "skipped"
    assert (shadow["version"], shadow["champion_version"], shadow["min_nights"]) == (2, 1, 2)
    assert [d["day"] for d in shadow["days"]] == [iso(N[1])]  # v2 held out up to night 0
    assert shadow["nights_won"] == 1 and shadow["wins"] is False and shadow["verdict"] is None
    day = shadow["days"][0]
    assert day["rows"] == ROWS and day["shadow"] > day["champion"] + 0.1 and day["beats"] is True


def test_a_shadow_that_wins_on_realised_labels_is_promoted_with_reason_shadow_wins_and_an_audit_row(nights):
    won = runs_by_night(nights)[iso(N[3])]
    assert (won["decision"], won["reason"], won["champion"], won["challenger"]) == ("promoted", "shadow_wins", 1, 2)
    evidence = won["details"]["decision"]["details"]["shadow"]
    assert [d["day"] for d in evidence["days"]] == [iso(N[1]), iso(N[2])] and evidence["nights_won"] == 2
    assert evidence["wins"] is True and evidence["verdict"]["promote"] is True
    checks = {c["name"]: c["passed"] for c in won["details"]["verdict"]}
    assert checks == {name: True for name in ("thresholds", "finite", "floor", "champion", "slices", "baseline",
                                              "roundtrip")}
    audit = query(nights, "SELECT event, from_version, to_version, reason, night, state, details "
                          "FROM churn.champion_changes ORDER BY changed_at")
    assert [(a[0], a[1], a[2]) for a in audit] == [("promote", None, 1), ("promote", 1, 2)]
    event, _, _, reason, night, state, details = audit[-1]
    assert reason.startswith("shadow_wins") and night == N[3] and state == "done"
    assert details["basis"] == "realised labels" and details["labelled_days"] == [iso(N[1]), iso(N[2])]
    assert details["challenger"] > details["champion"] + 0.1


def test_the_promotion_retires_the_shadow_alias(nights):
    from mlflow import MlflowClient

    uri = f"sqlite:///{nights['home'] / 'mlflow' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    aliases = client.get_registered_model("nightshift_churn").aliases
    assert str(aliases.get("champion")) == "2" and "shadow" not in aliases


def test_every_night_with_labels_measures_the_champion_against_its_baseline_on_served_rows(nights):
    """The ML Test Score's "a simpler model is not better" on quiet nights too (nightly.served_baseline)."""
    quiet = runs_by_night(nights)[iso(N[2])]["details"]
    served = quiet["decision"]["details"]["served_baseline"]
    assert served["rows"] == 2 * ROWS and served["metric"] == "roc_auc"  # the labelled days N0 and N1
    assert 0.0 <= served["champion"] <= 1.0 and 0.0 <= served["baseline"] <= 1.0
    assert abs(served["gain"] - (served["champion"] - served["baseline"])) < 1e-12
    assert quiet["ml_test_score"]["sections"]["model"] >= 1.0


def test_the_health_page_charts_the_shadow_against_the_champion(nights):
    page = (nights["home"] / "artifacts" / "reports" / "churn" / "health.html").read_text()
    section = page.split("Shadow vs champion on realised labels", 1)[1].split("Skew findings", 1)[0]
    assert '<figure id="shadow"' in section and 'id="shadow-evidence"' in section and 'id="no-shadow"' not in section
    assert "v2" in section and iso(N[3]) in section  # the newest night with a shadow (it won), and its version
