"""The evaluation report: real models evaluated and gated, the page parsed back cell by cell.

Three small real models on the demo data (a strong XGBoost, a weak one, the logistic
baseline) give a real evaluate() output and a real verdict; the page must show those
numbers in the right cells, mark what failed, escape data, and load nothing from anywhere.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from include.nightshift import training
from include.nightshift.demo_data import generate_day
from include.nightshift.evaluation import evaluate, gate
from include.nightshift.reports import evaluation_report_html, message_page, write_evaluation_report
from include.nightshift.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]

EVIL = "<script>alert('x')</script>"


class Page(HTMLParser):
    """Tables by id as rows of (row class, [cell text]), plus every tag seen with its attributes."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tables: dict[str, list[tuple[str, list[str]]]] = {}
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.ids: dict[str, str] = {}  # element id -> its text
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._open_ids: list[tuple[str, str]] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if attrs.get("id"):
            self._open_ids.append((tag, attrs["id"]))
            self.ids[attrs["id"]] = ""
        if tag == "table":
            self._table = attrs.get("id", "")
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append((attrs.get("class", ""), []))
        elif tag in ("td", "th") and self._table is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[self._table][-1][1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None
        if self._open_ids and self._open_ids[-1][0] == tag:
            self._open_ids.pop()

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        for _, element_id in self._open_ids:
            self.ids[element_id] += data

    def rows(self, table_id: str) -> dict[str, tuple[str, dict[str, str]]]:
        """Body rows keyed by their first cell (or first two, joined by '='), cells keyed by header."""
        header, *body = self.tables[table_id]
        out = {}
        for cls, cells in body:
            named = dict(zip(header[1], cells))
            key = f"{cells[0]}={cells[1]}" if table_id == "slices" else cells[0]
            out[key] = (cls, named)
        return out


PNG_URI = "data:image/png;base64,"


def loads_nothing(text: str, page: Page) -> None:
    """No address anywhere, no script, no stylesheet link, no attribute pointing elsewhere: an image is
    a PNG inside the page (a data URI), never fetched."""
    assert "://" not in text
    assert not [t for t, _ in page.tags if t in ("script", "link", "iframe")]
    assert not [(t, a) for t, a in page.tags for k, v in a.items()
                if k in ("src", "href") and v and not (t == "img" and k == "src" and v.startswith(PNG_URI))]


def plots_on(page: Page) -> dict[str, dict[str, str]]:
    """The page's plot images by figure id (plot-<id>), each with its src decoded to bytes and its alt text."""
    figures = [a["id"] for t, a in page.tags if t == "figure"]
    images = [a for t, a in page.tags if t == "img"]
    assert len(figures) == len(images)
    out = {}
    for figure, img in zip(figures, images):
        assert img["src"].startswith(PNG_URI)
        png = base64.b64decode(img["src"][len(PNG_URI):])
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        out[figure.removeprefix("plot-")] = {"alt": img["alt"], "png": png}
    return out


@pytest.fixture(scope="module")
def spec():
    """Small models (fast), slices on plan, region and a segment whose rows are all negative."""
    churn_spec = load_spec(ROOT / "include" / "specs" / "churn.yaml")
    return dataclasses.replace(
        churn_spec,
        training=dataclasses.replace(churn_spec.training, params={**churn_spec.training.params, "n_estimators": 30}),
        promotion=dataclasses.replace(churn_spec.promotion, slice_columns=("plan", "region", "segment")))


@pytest.fixture(scope="module")
def holdout(spec):
    df = generate_day(dt.date(2026, 1, 3), 1500, seed=5)
    df.loc[:99, "region"] = EVIL  # a slice value that is markup: it must come out as text
    negatives = np.flatnonzero(df["churned"].to_numpy() == 0)
    df["segment"] = "mixed"
    df.loc[negatives[:60], "segment"] = "negatives_only"  # roc_auc undefined here for every model
    df.loc[negatives[60:70], "segment"] = "tiny"  # below min_slice_rows: listed, not judged
    return df


@pytest.fixture(scope="module")
def models(spec):
    train = pd.concat([generate_day(dt.date(2026, 1, d), 1500, seed=d) for d in (1, 2)], ignore_index=True)
    weak_spec = dataclasses.replace(spec, training=dataclasses.replace(
        spec.training, params={**spec.training.params, "n_estimators": 2, "max_depth": 1}))
    return {"strong": training.fit(training.build_model(spec), train, spec),
            "weak": training.fit(training.build_model(weak_spec), train.head(300), spec),
            "baseline": training.fit(training.build_baseline(spec), train, spec)}


def run(spec, holdout, models, roles: dict[str, str], **record):
    scores = {role: training.predict_scores(models[name], holdout, spec) for role, name in roles.items()}
    evaluation = evaluate(holdout, training.labels(holdout, spec), scores, spec)
    verdict = gate(evaluation, spec.promotion, challenger_scores=scores["challenger"], roundtrip_equal=True)
    return evaluation, {**verdict.to_dict(), "policy": "auto", "challenger_version": 4, **record}


def test_rejected_challenger_numbers_checks_and_failures_in_their_cells(spec, holdout, models):
    roles = {"challenger": "weak", "champion": "strong", "baseline": "baseline"}
    evaluation, verdict = run(spec, holdout, models, roles, champion_version=3, promoted=False,
                              policy_note="gate failed")
    assert not verdict["promote"]  # the weak model must lose, or this test proves nothing

    text = evaluation_report_html(evaluation, verdict, "churn 2026-01-03: challenger v4", spec=spec)
    page = Page(text)

    assert page.ids["decision"] == "NOT PROMOTED"
    overall = page.rows("overall")
    for role, version in (("challenger", "v4"), ("champion", "v3"), ("baseline", "logistic regression")):
        cls, cells = overall[role]
        assert cells["roc_auc"] == f"{evaluation['overall'][role]:.4f}"
        assert cells["version"] == version
    gain = evaluation["overall"]["challenger"] - evaluation["overall"]["champion"]
    assert overall["champion"][1]["challenger gain"] == f"{gain:+.4f}"
    assert overall["champion"][0] == "fail" and overall["champion"][1]["check"] == "FAILED"
    assert overall["champion"][1]["rule"] == "min_improvement 0.0020"

    checks = page.rows("checks")
    assert list(checks) == [c["name"] for c in verdict["checks"]]
    for c in verdict["checks"]:
        cls, cells = checks[c["name"]]
        assert (cls, cells["result"]) == (("pass", "passed") if c["passed"] else ("fail", "FAILED"))
        assert cells["detail"] == c["detail"]  # the slices detail holds EVIL: escaped, it reads back as written
    assert {"floor", "champion", "slices", "baseline"} <= {n for n, (cls, _) in checks.items() if cls == "fail"}

    slices = page.rows("slices")
    assert len(slices) == len(evaluation["slices"])
    for s in evaluation["slices"]:
        cls, cells = slices[f"{s['column']}={s['value']}"]
        assert cells["rows"] == str(s["rows"])
        if s["skipped"]:
            assert cls == "skip" and cells["challenger"] == "–" and "too few rows" in cells["slice check"]
            continue
        assert cells["challenger"] == ("n/a" if s["challenger"] is None else f"{s['challenger']:.4f}")
        assert cells["champion"] == ("n/a" if s["champion"] is None else f"{s['champion']:.4f}")
        if s["challenger"] is None:
            assert cells["slice check"] == "undefined for both: not judged"
            continue
        regression = s["champion"] - s["challenger"]
        assert (cls == "fail") == (regression > spec.promotion.slice_tolerance)
        assert cells["slice check"].startswith("FAILED") == (cls == "fail")
    evil_cls, evil = slices[f"region={EVIL}"]
    assert evil_cls == "fail" and evil["slice check"].startswith("FAILED: regression")
    assert slices["segment=negatives_only"][1]["challenger"] == "n/a"
    assert slices["segment=tiny"][0] == "skip"

    assert EVIL not in text and "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in text  # MarkupSafe's spelling
    loads_nothing(text, page)


def test_cold_start_shows_no_champion_as_dash_and_the_promotion(spec, holdout, models, tmp_path):
    evaluation, verdict = run(spec, holdout, models, {"challenger": "strong", "baseline": "baseline"},
                              champion_version=None, promoted=True, policy_note="gate passed")
    assert verdict["promote"]

    path = write_evaluation_report(tmp_path / "reports" / "evaluation.html", evaluation, verdict, "churn: first model",
                                   spec=spec)
    text = (tmp_path / "reports" / "evaluation.html").read_text(encoding="utf-8")
    page = Page(text)

    assert path == str(tmp_path / "reports" / "evaluation.html")
    assert page.ids["decision"] == "PROMOTED"
    champion = page.rows("overall")["champion"][1]
    assert (champion["version"], champion["roc_auc"], champion["challenger gain"]) == ("–", "–", "–")
    assert page.rows("overall")["challenger"][1]["roc_auc"] == f"{evaluation['overall']['challenger']:.4f}"
    assert all(cls == "pass" for cls, _ in page.rows("checks").values())
    judged = [cells for cls, cells in page.rows("slices").values() if cls != "skip"]
    assert judged and all(c["champion"] == "–" and c["slice check"] == "no champion: not compared" for c in judged)
    loads_nothing(text, page)


def test_report_without_spec_or_checks_still_renders_and_says_so():
    evaluation = {"metric": "log_loss", "greater_is_better": False, "rows": 10,
                  "overall": {"challenger": 0.3, "baseline": float("nan")}, "slices": []}
    text = evaluation_report_html(evaluation, {"promoted": False, "checks": []}, "bare")
    page = Page(text)

    assert page.ids["decision"] == "NOT PROMOTED"
    assert "No checks were recorded" in text
    overall = page.rows("overall")
    assert overall["baseline"][1]["log_loss"] == "n/a"  # evaluated, undefined
    assert overall["champion"][1]["log_loss"] == "–"  # not evaluated
    assert overall["challenger"][1]["rule"] == "floor"  # no spec: the rule is named, without a number


def test_slice_rows_are_the_gate_s_record_not_a_second_judgement(spec, holdout, models):
    """The page shows what the gate recorded per slice; it applies no slice rule of its own."""
    roles = {"challenger": "strong", "champion": "weak", "baseline": "baseline"}
    evaluation, verdict = run(spec, holdout, models, roles, champion_version=3, promoted=True, policy_note="gate passed")
    slices_check = next(c for c in verdict["checks"] if c["name"] == "slices")
    records = slices_check["slices"]
    assert [(r["column"], r["value"], r["rows"]) for r in records] == [
        (s["column"], s["value"], s["rows"]) for s in evaluation["slices"]]  # every slice, in order

    # Rewrite the record of one judged slice: numbers, tolerance and outcome the evaluation does not give.
    judged = next(i for i, r in enumerate(records) if r["outcome"] == "passed")
    forged = {**records[judged], "challenger": 0.1234, "champion": 0.5678, "regression": 0.4444,
              "tolerance": 0.0101, "outcome": "failed", "passed": False}
    verdict["checks"] = [{**c, "slices": [*records[:judged], forged, *records[judged + 1:]]}
                         if c["name"] == "slices" else c for c in verdict["checks"]]

    text = evaluation_report_html(evaluation, verdict, "record", spec=spec)
    rows = Page(text).rows("slices")
    cls, cells = rows[f"{forged['column']}={forged['value']}"]
    assert cls == "fail"
    assert (cells["challenger"], cells["champion"], cells["challenger vs champion"]) == ("0.1234", "0.5678", "-0.4444")
    assert cells["slice check"] == "FAILED: regression 0.4444 > slice_tolerance 0.0101"
    original = evaluation["slices"][judged]
    assert cells["baseline"] == f"{original['baseline']:.4f}"  # not judged per slice: the evaluation's number
    # Every other slice reads as the gate recorded it.
    for r in records[:judged] + records[judged + 1:]:
        cls, cells = rows[f"{r['column']}={r['value']}"]
        assert cls == {"passed": "pass", "failed": "fail", "too_small": "skip"}.get(r["outcome"], "")
        if r["outcome"] == "passed":
            assert cells["slice check"] == "ok"
            assert cells["challenger vs champion"] == f"{-r['regression']:+.4f}"

    # A verdict without a record (written before the gate kept one): numbers shown, nothing judged here.
    bare = {**verdict, "checks": [{k: v for k, v in c.items() if k != "slices"} for c in verdict["checks"]]}
    rows = Page(evaluation_report_html(evaluation, bare, "no record", spec=spec)).rows("slices")
    for s in evaluation["slices"]:
        cls, cells = rows[f"{s['column']}={s['value']}"]
        assert cells["slice check"] == ("too few rows: not judged" if s["skipped"] else "not recorded by the gate")
        assert cls == ("skip" if s["skipped"] else "")


def test_markup_in_title_policy_note_and_check_details_is_escaped(spec, holdout, models):
    evaluation, verdict = run(spec, holdout, models, {"challenger": "strong", "baseline": "baseline"},
                              champion_version=None, promoted=False, policy=EVIL, policy_note=EVIL)
    verdict["checks"][0] = {**verdict["checks"][0], "name": EVIL, "detail": EVIL}
    text = evaluation_report_html(evaluation, verdict, f"title {EVIL}", spec=spec)
    page = Page(text)

    assert EVIL not in text and not [t for t, _ in page.tags if t == "script"]
    assert page.ids["decision"] == "NOT PROMOTED"
    assert text.count("&lt;script&gt;") >= 5  # <title>, <h1>, policy, policy note, the check (name and detail)
    summary = {cells[0]: cells[1] for _, cells in page.tables["summary"]}
    assert summary["policy"] == EVIL and summary["policy note"] == EVIL  # read back as written: text, not markup
    assert page.rows("checks")[EVIL][1]["detail"] == EVIL


def test_message_page_escapes_and_inlines_the_one_stylesheet():
    text = message_page(f"title {EVIL}", [f"said {EVIL}"], [f"item {EVIL}"])
    page = Page(text)

    assert EVIL not in text and text.count("&lt;script&gt;") == 4  # <title>, <h1>, the paragraph, the item
    assert not [t for t, _ in page.tags if t == "script"]
    css = (ROOT / "include" / "nightshift" / "templates" / "nightshift.css").read_text(encoding="utf-8")
    assert f"<style>{css}</style>" in text
    loads_nothing(text, page)


def test_no_page_is_built_from_strings_in_python():
    """Every page comes from the templates: no HTML document or table scaffold left in Python source."""
    scaffold = re.compile(r"<(html|!doctype|table|body|svg)\b", re.IGNORECASE)
    found = [f"{path.relative_to(ROOT)}:{number}"
             for folder in ("include", "plugins", "dags", "scripts") for path in sorted((ROOT / folder).rglob("*.py"))
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if scaffold.search(line)]
    assert found == []


# --------------------------------------------------------------------------- plots (issue 13)


def test_binary_report_embeds_each_plot_with_the_numbers_in_its_alt_text(spec, holdout, models):
    """ROC, precision-recall, calibration, score histograms, the confusion matrix at the decision threshold
    and the lift: each an <img> inside the page, its alt text naming it with the models' numbers."""
    from sklearn.metrics import average_precision_score, confusion_matrix

    from include.nightshift.plots import evaluation_plots

    roles = {"challenger": "strong", "champion": "weak", "baseline": "baseline"}
    scores = {role: training.predict_scores(models[name], holdout, spec) for role, name in roles.items()}
    y = training.labels(holdout, spec)
    evaluation, verdict = run(spec, holdout, models, roles, champion_version=3, promoted=True, policy_note="ok")
    plots = evaluation_plots(y, scores, spec, evaluation=evaluation)
    text = evaluation_report_html(evaluation, verdict, "with plots", spec=spec, plots=plots)
    page = Page(text)

    shown = plots_on(page)
    assert list(shown) == ["roc", "precision_recall", "calibration", "score_histogram", "confusion_matrix", "lift"]
    alts = {key: shown[key]["alt"] for key in shown}
    assert alts["roc"].startswith("ROC curve: ") and all(
        f"{role} AUC {evaluation['overall'][role]:.4f}" in alts["roc"] for role in roles)
    ap = average_precision_score(y, scores["challenger"])
    assert alts["precision_recall"].startswith("Precision-recall curve: challenger average precision "
                                               f"{ap:.4f}")
    assert alts["calibration"].startswith("Calibration curve: ") and "Brier" in alts["calibration"]
    assert alts["score_histogram"].startswith("Score histograms, champion vs challenger: challenger and champion")
    (tn, fp), (fn, tp) = confusion_matrix(y, (scores["challenger"] >= spec.scoring.decision_threshold).astype(int))
    assert (f"at scoring.decision_threshold {spec.scoring.decision_threshold:g}: challenger: {tp} true positives, "
            f"{fp} false positives, {fn} false negatives, {tn} true negatives") in alts["confusion_matrix"]
    top = int(round(0.1 * len(y)))
    lift = y[np.argsort(-scores["challenger"], kind="stable")][:top].mean() / y.mean()
    assert alts["lift"].startswith(f"Lift: challenger lift {lift:.2f} in the top 10%")
    assert all(f"on {len(y)} holdout rows" in alt for alt in alts.values())
    assert all(p.png == shown[p.id]["png"] for p in plots)  # the same bytes that go to the MLflow run
    assert EVIL not in text
    loads_nothing(text, page)


def _gated(spec, frame: pd.DataFrame, y: np.ndarray, scores: dict) -> tuple[dict, dict]:
    evaluation = evaluate(frame, y, scores, spec)
    verdict = gate(evaluation, spec.promotion, challenger_scores=scores["challenger"], roundtrip_equal=True)
    return evaluation, {**verdict.to_dict(), "policy": "auto", "challenger_version": 2, "champion_version": 1,
                        "promoted": verdict.promote, "policy_note": "gate"}


def test_multiclass_report_shows_recall_per_class_and_the_confusion_matrix():
    """Each class's recall as evaluate() recorded it, for the three models, and the confusion matrix."""
    from include.nightshift.plots import evaluation_plots

    spec = load_spec(ROOT / "examples" / "flights_status" / "flights_status.yaml")
    classes = list(spec.label.classes)
    rng = np.random.default_rng(7)
    n = 3000
    y = rng.integers(0, len(classes), n)

    def probabilities(skill: float) -> np.ndarray:
        p = rng.dirichlet(np.ones(len(classes)), n)
        p[np.arange(n), y] += skill
        return p / p.sum(axis=1, keepdims=True)

    scores = {"challenger": probabilities(1.0), "champion": probabilities(0.4), "baseline": probabilities(0.1)}
    frame = pd.DataFrame({"origin": rng.choice(["EWR", "JFK", "LGA"], n)})
    evaluation, verdict = _gated(spec, frame, y, scores)
    page = Page(evaluation_report_html(evaluation, verdict, "status", spec=spec,
                                       plots=evaluation_plots(y, scores, spec, evaluation=evaluation)))

    shown = plots_on(page)
    assert list(shown) == ["per_class_recall", "confusion_matrix"]
    recall = shown["per_class_recall"]["alt"]
    assert recall.startswith("Recall per class: challenger: ")
    for role in scores:
        said = ", ".join(f"{c} {evaluation['per_class_recall'][role][c]:.2f}" for c in classes)
        assert f"{role}: {said}" in recall
    matrix = shown["confusion_matrix"]["alt"]
    right = int((scores["challenger"].argmax(axis=1) == y).sum())
    assert matrix.startswith("Confusion matrix: ")
    assert f"challenger: {right} of {n} rows predicted as their class" in matrix


def test_regression_report_shows_predicted_against_actual_and_the_residuals():
    from include.nightshift.plots import evaluation_plots

    spec = load_spec(ROOT / "examples" / "flights_delay" / "flights_delay.yaml")
    rng = np.random.default_rng(3)
    n = 2000
    y = rng.normal(10, 30, n)
    scores = {"challenger": y + rng.normal(0, 5, n), "champion": y + rng.normal(3, 20, n), "baseline": np.full(n, 10.0)}
    frame = pd.DataFrame({"origin": rng.choice(["EWR", "JFK", "LGA"], n)})
    evaluation, verdict = _gated(spec, frame, y, scores)
    page = Page(evaluation_report_html(evaluation, verdict, "delay", spec=spec,
                                       plots=evaluation_plots(y, scores, spec, evaluation=evaluation)))

    shown = plots_on(page)
    assert list(shown) == ["predicted_vs_actual", "residuals"]
    scatter = shown["predicted_vs_actual"]["alt"]
    assert scatter.startswith("Predicted vs actual: challenger correlation ")
    assert f"champion correlation {np.corrcoef(y, scores['champion'])[0, 1]:.3f}" in scatter
    residuals = shown["residuals"]["alt"]
    for role, s in scores.items():
        assert f"{role}: mean {np.mean(s - y):+.3f}, standard deviation {np.std(s - y):.3f}" in residuals


def test_the_origin_line_links_the_airflow_run_and_the_mlflow_run_with_every_id_quoted_and_escaped(tmp_path):
    """Stamped on any page, ours or Evidently's: a run id with `+`, `:` and a quote stays one path segment."""
    from include.nightshift.reports import Origin, airflow_run_url, stamp_origin

    run_id = "manual__2026-02-01T00:00:00+00:00\"<x>"
    origin = Origin(run_id, airflow_run_url("https://airflow.example/ops/", "nightshift_churn", run_id),
                    mlflow_ui="http://127.0.0.1:5000/")
    ours = tmp_path / "evaluation.html"
    ours.write_text(message_page("t", ["body text"]), encoding="utf-8")
    stamp_origin(ours, origin, mlflow_run=("7", "abc123"))
    text = ours.read_text(encoding="utf-8")
    airflow = ("https://airflow.example/ops/dags/nightshift_churn/runs/"
               "manual__2026-02-01T00%3A00%3A00%2B00%3A00%22%3Cx%3E")
    assert f'<a href="{airflow}">manual__2026-02-01T00:00:00+00:00&#34;&lt;x&gt;</a>' in text
    assert '· MLflow run <a href="http://127.0.0.1:5000/#/experiments/7/runs/abc123">abc123</a>' in text
    assert text.index('class="origin"') < text.index("body text")  # at the top
    assert not [t for t, _ in Page(text).tags if t in ("script", "link", "iframe")]  # links to follow, nothing loaded

    theirs = tmp_path / "drift.html"  # a page we did not template, with attributes on <body>
    theirs.write_text("<html><head></head><BODY class='x'><div id=app></div></BODY></html>", encoding="utf-8")
    stamp_origin(theirs, Origin("r1"), mlflow_run=("7", "abc123"))  # no UI address: ids as text, no links
    assert theirs.read_text().startswith("<html><head></head><BODY class='x'><p class=\"origin\"")
    assert "Written by DAG run r1 · MLflow run abc123</p>\n<div id=app>" in theirs.read_text()

    bare = tmp_path / "bare.txt"
    bare.write_text("no body here")
    stamp_origin(bare, origin)
    stamp_origin(ours, None)
    assert bare.read_text() == "no body here" and ours.read_text(encoding="utf-8") == text
