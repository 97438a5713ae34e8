"""Nightshift's presentation layer: every HTML page it makes, and the evaluation report.

Every page (evaluation report, validation page, model-health page, the reports app's pages,
the drift fallback page) is a Jinja2 template under ``templates/`` extending ``base.html``,
rendered here with autoescape on: a value from the data, a spec or a record is text, and
data may hold ``<script>``. The one stylesheet (``templates/nightshift.css``) is inlined into
each page, and charts are PNG ``data:`` URIs: a page is one self-contained file that opens
offline, from the artifact store, from MLflow's artifact view or in the reports app's
sandbox, whatever the URL.

Python prepares plain values (numbers formatted by ``num``: 4 decimals, "–" for a model that
was not evaluated, "n/a" for a metric that could not be computed); templates lay them out.
The evaluation report shows the gate's own record (evaluation.gate): the page never applies
a promotion rule itself, so the page and the decision cannot disagree. Jinja2 and
MarkupSafe are the only imports (light: DAG files may import this indirectly).
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin

from include.nightshift.spec import DatasetSpec

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

TEMPLATES = Path(__file__).with_name("templates")
STYLESHEET = TEMPLATES / "nightshift.css"
ROLES = ("challenger", "champion", "baseline")
MISSING = "–"  # a role that was not evaluated
UNDEFINED = "n/a"  # a role that was evaluated but whose metric is undefined (e.g. one class only)


# --------------------------------------------------------------------------- rendering


@lru_cache(maxsize=1)
def _environment() -> Environment:
    """One environment for every page; autoescape on for every template, whatever its name."""
    css = STYLESHEET.read_text(encoding="utf-8")
    if "</" in css:  # it is inlined into <style>: a "</" could end the element early
        raise ValueError(f"{STYLESHEET} must not contain '</'")
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.globals.update(stylesheet=Markup(css), MISSING=MISSING, UNDEFINED=UNDEFINED)
    return env


def render(template: str, **context: Any) -> str:
    """A whole page from `template` (under templates/); every value in `context` is escaped."""
    return _environment().get_template(template).render(**context)


@dataclass(frozen=True)
class Origin:
    """The run a page belongs to, for the line at the top of the page: a report opened from the index, a task's
    button, MLflow's artifact view or a colleague's message says which DAG run wrote it and links back to
    that run in the Airflow UI (and, for a page about a trained model, to its MLflow run).

    :param dag_run_id: the Airflow DAG run that wrote the page.
    :param airflow_url: that run's page in the Airflow UI (root-relative without `[api] base_url`).
    :param mlflow_ui: the MLflow UI's address (Variable `nightshift_mlflow_ui_url`); None: shown as text.
    """

    dag_run_id: str
    airflow_url: str | None = None
    mlflow_ui: str | None = None

    def mlflow_run_url(self, experiment_id: str | None, run_id: str) -> str | None:
        """The MLflow UI's page of a run, when the UI's address is known."""
        if not self.mlflow_ui or not experiment_id:
            return None
        run = f"#/experiments/{quote(experiment_id, safe='')}/runs/{quote(run_id, safe='')}"
        return f"{self.mlflow_ui.rstrip('/')}/{run}"


def airflow_run_url(base_url: str | None, dag_id: str, dag_run_id: str) -> str:
    """A DAG run's page in the Airflow 3 UI; root-relative without a base URL (the reports app shares its origin)."""
    base = (base_url or "/").rstrip("/") + "/"
    return urljoin(base, f"dags/{quote(dag_id, safe='')}/runs/{quote(dag_run_id, safe='')}")


class _BodyStart(HTMLParser):
    """Finds where a page's body starts, as a browser reads the markup (case, attributes, scripts before it)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.end: tuple[int, int, int] | None = None  # (line, column, length) of the body's start tag

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag == "body" and self.end is None:
            self.end = (*self.getpos(), len(self.get_starttag_text() or ""))
            raise _Found


class _Found(Exception):
    pass


def _body_offset(text: str) -> int | None:
    """The offset just after the body's start tag; None for a page that has none."""
    finder = _BodyStart()
    try:
        finder.feed(text)
    except _Found:
        line, column, length = finder.end
        start = 0
        for _ in range(line - 1):  # the parser counts lines by "\n" alone
            start = text.index("\n", start) + 1
        return start + column + length
    return None


def stamp_origin(path: str | Path, origin: Origin | None, *, mlflow_run: tuple[str | None, str] | None = None) -> None:
    """Put the origin line at the top of a page already written, whoever made it (Evidently's report as well
    as Nightshift's templates): one mechanism for every page a run writes. A page with no body is left as it is.

    :param mlflow_run: (experiment id, run id) of the MLflow run the page is about, if any.
    """
    if origin is None:
        return
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    at = _body_offset(text)
    if at is None:
        return
    mlflow = None if mlflow_run is None else {"run_id": mlflow_run[1], "url": origin.mlflow_run_url(*mlflow_run)}
    line = _environment().get_template("origin.html").render(origin=origin, mlflow=mlflow)
    path.write_text(text[:at] + line + text[at:], encoding="utf-8")


def message_page(title: str, paragraphs: list[str] = (), items: list[str] = ()) -> str:
    """A page that only says something (a notice, a list): the drift fallback, the reports app's notices."""
    return render("message.html", title=title, paragraphs=list(paragraphs), items=list(items))


def png_data_uri(fig: Any, dpi: int = 100) -> str:
    """A matplotlib figure as a ``data:image/png;base64,...`` URI for an <img>: nothing to fetch,
    allowed by the reports app's CSP, and no SVG markup (ids, namespaces) to fix up in the page."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(fig, dpi)).decode("ascii")


def png_bytes(fig: Any, dpi: int = 100) -> bytes:
    """A matplotlib figure as PNG bytes (for a data URI, or a file logged to MLflow). Metadata dropped
    so that the same figure gives the same bytes on another matplotlib version."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    return buffer.getvalue()


def num(value: Any, missing: str = MISSING) -> str:
    """A number with 4 decimals; `missing` for None, "n/a" for NaN/inf or what is not a number."""
    if value is None:
        return missing
    try:
        value = float(value)
    except (TypeError, ValueError):
        return UNDEFINED
    return f"{value:.4f}" if math.isfinite(value) else UNDEFINED


def _number(value: Any) -> float:
    try:
        return math.nan if value is None else float(value)
    except (TypeError, ValueError):
        return math.nan


def _signed(value: float) -> str:
    return UNDEFINED if math.isnan(value) else f"{value:+.4f}"


def _version(version: Any) -> str:
    return MISSING if version is None else f"v{version}"


# --------------------------------------------------------------------------- the evaluation report


def _decision(evaluation: dict[str, Any], verdict: dict[str, Any]) -> dict[str, Any]:
    champion = verdict.get("champion_version")
    failed = [str(c.get("name")) for c in verdict.get("checks") or [] if not c.get("passed")]
    if failed:
        gate_text = f"{len(failed)} check(s) failed: " + ", ".join(failed)
    else:
        gate_text = "every check passed" if verdict.get("checks") else "no checks recorded"
    return {
        "promoted": bool(verdict.get("promoted", verdict.get("promote"))),
        "gate_passed": bool(verdict.get("promote")),
        "challenger_version": verdict.get("challenger_version"),
        "against": f"champion v{champion}" if champion is not None else f"no champion ({MISSING}: first model)",
        "rows": evaluation.get("rows"),
        "gate_text": gate_text,
        "policy": verdict.get("policy", MISSING),
        "policy_note": verdict.get("policy_note", MISSING),
    }


def _overall(evaluation: dict[str, Any], verdict: dict[str, Any], spec: DatasetSpec) -> list[dict[str, Any]]:
    """One row per role, with the gate check that judged it (floor, champion, baseline) and its rule."""
    overall, gib = evaluation.get("overall") or {}, bool(evaluation.get("greater_is_better", True))
    checks = {str(c.get("name")): c for c in verdict.get("checks") or []}
    promotion = getattr(spec, "promotion", None)
    versions = {"challenger": verdict.get("challenger_version"), "champion": verdict.get("champion_version")}
    rules = {"challenger": ("floor", "floor"), "champion": ("champion", "min_improvement"),
             "baseline": ("baseline", "baseline_margin")}
    rows = []
    for role in ROLES:
        check_name, setting = rules[role]
        check = checks.get(check_name)
        if role == "challenger" or role not in overall:
            gain = MISSING
        else:
            a, b = _number(overall.get("challenger")), _number(overall.get(role))
            gain = _signed(a - b if gib else b - a)
        rows.append({
            "role": role,
            "version": "logistic regression" if role == "baseline" else _version(versions.get(role)),
            "value": num(overall[role], UNDEFINED) if role in overall else MISSING,
            "gain": gain,
            "rule": setting if promotion is None else f"{setting} {num(getattr(promotion, setting, None))}",
            "passed": None if check is None else bool(check.get("passed")),
        })
    return rows


# How each outcome the gate records for a slice (evaluation.SLICE_OUTCOMES) reads on the page.
_SLICE_TEXT = {
    "passed": lambda r: "ok",
    "failed": lambda r: f"FAILED: regression {r['regression']:.4f} > slice_tolerance {r['tolerance']:.4f}",
    "cannot_compare": lambda r: "FAILED: cannot compare",
    "undefined": lambda r: "undefined for both: not judged",
    "too_small": lambda r: (f"too few rows (< min_slice_rows {r['min_rows']}): not judged"
                            if r.get("min_rows") is not None else "too few rows: not judged"),
    "no_champion": lambda r: "no champion: not compared",
    "no_tolerance": lambda r: "not judged: promotion.slice_tolerance is not set",
}
_SLICE_CLASS = {"passed": "pass", "failed": "fail", "cannot_compare": "fail", "too_small": "skip"}


def _recorded_slices(verdict: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The gate's record of every slice (the "slices" check), or None when the verdict has none."""
    for check in verdict.get("checks") or []:
        if check.get("name") == "slices" and isinstance(check.get("slices"), list):
            return check["slices"]
    return None


def _slice_row(record: dict[str, Any], evaluated: dict[str, Any] | None) -> dict[str, Any]:
    """One slice as the gate recorded it; only the baseline's number (not judged per slice) comes
    from the evaluation. A slice without a record says so rather than being judged here."""
    outcome = record.get("outcome")
    numbers = []
    for role in ROLES:
        source = record if role != "baseline" else (evaluated or {})
        numbers.append(num(source[role], UNDEFINED) if role in source and outcome != "too_small" else MISSING)
    if record.get("regression") is not None:
        change = _signed(-float(record["regression"]))
    else:
        change = UNDEFINED if outcome in ("undefined", "cannot_compare") else MISSING
    text = _SLICE_TEXT[outcome](record) if outcome in _SLICE_TEXT else "not recorded by the gate"
    return {"column": record.get("column"),
            "value": "(missing)" if record.get("value") is None else record.get("value"),
            "rows": record.get("rows"), "numbers": numbers, "change": change, "check": text,
            "passed": record.get("passed") if outcome in _SLICE_TEXT else None,
            "cls": _SLICE_CLASS.get(outcome, "")}


def _slices(evaluation: dict[str, Any], verdict: dict[str, Any]) -> list[dict[str, Any]]:
    evaluated = list(evaluation.get("slices") or [])
    records = _recorded_slices(verdict)
    if records is None:  # a verdict without the gate's record: the numbers, and no judgement
        records = [{k: v for k, v in s.items() if k != "baseline"} for s in evaluated]
        for r, s in zip(records, evaluated):
            r["outcome"] = "too_small" if s.get("skipped") else None
    same = {(s.get("column"), repr(s.get("value"))): s for s in evaluated}
    return [_slice_row(r, same.get((r.get("column"), repr(r.get("value"))))) for r in records]


def _slice_rule(verdict: dict[str, Any]) -> str:
    records = _recorded_slices(verdict) or []
    tolerance = next((r["tolerance"] for r in records if r.get("tolerance") is not None), None)
    if tolerance is None:
        return "no slice_tolerance recorded"
    return f"a slice fails when the challenger is worse than the champion by more than slice_tolerance {tolerance:.4f}"


def _thresholds(spec: DatasetSpec) -> list[tuple[str, Any]]:
    promotion = getattr(spec, "promotion", None)
    if promotion is None:
        return []
    names = ("metric", "floor", "min_improvement", "slice_tolerance", "baseline_margin", "min_slice_rows")
    return [(n, getattr(promotion, n, MISSING)) for n in names]


def _seconds(value: Any) -> str:
    return MISSING if value is None else f"{_number(value):.2f}"


def _candidates(verdict: dict[str, Any]) -> list[dict[str, Any]]:
    """Every candidate family's holdout metric and fit time, the chosen one marked (VerdictStep.candidates)."""
    return [{"family": family, "value": num(c.get("metric"), UNDEFINED), "seconds": _seconds(c.get("fit_seconds")),
             "chosen": family == verdict.get("family")}
            for family, c in (verdict.get("candidates") or {}).items()]


def evaluation_report_html(evaluation: dict[str, Any], verdict: dict[str, Any], title: str, *,
                           spec: DatasetSpec | None = None, plots: Sequence[Any] = ()) -> str:
    """The evaluation report as one self-contained HTML page.

    `evaluation` as evaluation.evaluate() returns it; `verdict` as the evaluate task records it
    (Verdict.to_dict() plus policy, champion_version, challenger_version, promoted,
    policy_note). Each slice shows the gate's record of it (numbers, tolerance, outcome);
    with `spec`, the overall rules show their thresholds and the thresholds are listed.
    `plots` (plots.evaluation_plots) are embedded as PNG data URIs, each with its alt text.
    """
    gib = bool(evaluation.get("greater_is_better", True))
    return render(
        "evaluation.html", title=title, metric=str(evaluation.get("metric")),
        direction="greater is better" if gib else "lower is better", roles=ROLES,
        decision=_decision(evaluation, verdict), overall=_overall(evaluation, verdict, spec),
        checks=[{"name": c.get("name"), "passed": bool(c.get("passed")), "detail": c.get("detail")}
                for c in verdict.get("checks") or []],
        slices=_slices(evaluation, verdict), slice_rule=_slice_rule(verdict), thresholds=_thresholds(spec),
        candidates=_candidates(verdict), reused=bool(verdict.get("reused")),
        plots=[{"id": p.id, "title": p.title, "alt": p.alt, "src": p.data_uri} for p in plots])


def write_evaluation_report(path: str | Path, evaluation: dict[str, Any], verdict: dict[str, Any], title: str, *,
                            spec: DatasetSpec | None = None, plots: Sequence[Any] = ()) -> str:
    """Write the report to a local file (folders created); returns the path as a string."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(evaluation_report_html(evaluation, verdict, title, spec=spec, plots=plots), encoding="utf-8")
    return str(path)
