"""The evaluation report a person reads: champion, challenger and baseline side by side,
overall and per slice, with every check of the gate and the decision.

Self-contained HTML (no script, no stylesheet, no font or image from elsewhere), so it opens
offline, from the artifact store, from MLflow's artifact view or from a file, whatever the
URL. Every value from the data or the record is escaped: a slice value is data, and data may
hold ``<script>``. Numbers show 4 decimals; a model that was not evaluated (no champion on
the first night) shows "–", a metric that could not be computed "n/a".

The page helpers at the bottom (``page``, ``esc``, ``num``) give the health page
(health.py) the same look. No heavy import here: the report is plain string building.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

ROLES = ("challenger", "champion", "baseline")
MISSING = "–"  # a role that was not evaluated
UNDEFINED = "n/a"  # a role that was evaluated but whose metric is undefined (e.g. one class only)
EPS = 1e-12  # the gate's slack for ">=" comparisons (evaluation.EPS), so page and gate agree at the edge

STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:75em;color:#111}
table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:4px 10px;text-align:right;vertical-align:top}
th{background:#f3f4f6}td.l,th.l{text-align:left}
tr.fail td{background:#fee2e2}tr.pass td.status{background:#dcfce7}tr.skip td{color:#6b7280}
span.fail{color:#b00020;font-weight:600}span.pass{color:#137333;font-weight:600}
.verdict{font-size:1.3em;font-weight:600;padding:.4em .6em;display:inline-block}
p.verdict.fail{background:#fee2e2;color:#b00020}p.verdict.pass{background:#dcfce7;color:#137333}
p.fail{color:#b00020;font-weight:600}
figure{margin:0 0 1.5em}figcaption{color:#374151;margin:.3em 0}svg{max-width:100%;height:auto}
.note{color:#4b5563}"""


# --------------------------------------------------------------------------- page helpers


def esc(value: Any) -> str:
    """Any value as escaped text (quotes too: values also land in attributes)."""
    return html.escape(str(value), quote=True)


def num(value: Any, missing: str = MISSING) -> str:
    """A number with 4 decimals; `missing` for None, "n/a" for NaN/inf or what is not a number."""
    if value is None:
        return missing
    try:
        value = float(value)
    except (TypeError, ValueError):
        return UNDEFINED
    return f"{value:.4f}" if math.isfinite(value) else UNDEFINED


def page(title: str, body: str) -> str:
    """A whole HTML document: title escaped here, `body` already HTML (the caller escaped its values)."""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{STYLE}</style></head>\n"
            f"<body><h1>{esc(title)}</h1>\n{body}\n</body></html>\n")


def table(table_id: str, headers: list[tuple[str, bool]], rows: list[tuple[str, list[tuple[str, bool]]]]) -> str:
    """A table: headers as (text, left-aligned); rows as (row class, [(cell HTML, left-aligned)]).

    Cell contents are HTML: escape values before passing them in.
    """
    left_class = {True: ' class="l"', False: ""}
    head = "".join(f"<th{left_class[left]}>{esc(text)}</th>" for text, left in headers)
    body = "".join(
        f'<tr class="{esc(cls)}">' + "".join(f"<td{left_class[left]}>{cell}</td>" for cell, left in cells)
        + "</tr>" for cls, cells in rows)
    return f'<table id="{esc(table_id)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def status(passed: bool | None, text_pass: str = "passed", text_fail: str = "FAILED") -> str:
    if passed is None:
        return MISSING
    return f'<span class="pass">{esc(text_pass)}</span>' if passed else f'<span class="fail">{esc(text_fail)}</span>'


# --------------------------------------------------------------------------- the evaluation report


def _number(value: Any) -> float:
    try:
        return math.nan if value is None else float(value)
    except (TypeError, ValueError):
        return math.nan


def _gain(challenger: Any, other: Any, greater_is_better: bool) -> float:
    """How much better the challenger is than `other`, in the metric's direction (NaN when unknown)."""
    a, b = _number(challenger), _number(other)
    return a - b if greater_is_better else b - a


def _signed(value: float) -> str:
    return UNDEFINED if math.isnan(value) else f"{value:+.4f}"


def _checks_by_name(verdict: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {str(c.get("name")): c for c in verdict.get("checks") or []}


def _decision(evaluation: dict[str, Any], verdict: dict[str, Any]) -> str:
    promoted = bool(verdict.get("promoted", verdict.get("promote")))
    gate_passed = bool(verdict.get("promote"))
    champion = verdict.get("champion_version")
    against = f"champion v{esc(champion)}" if champion is not None else f"no champion ({MISSING}: first model)"
    failed = [c for c in verdict.get("checks") or [] if not c.get("passed")]
    if failed:
        gate_text = f"{len(failed)} check(s) failed: " + ", ".join(esc(c.get("name")) for c in failed)
    else:
        gate_text = "every check passed" if verdict.get("checks") else "no checks recorded"
    return (f'<p id="decision" class="verdict {"pass" if promoted else "fail"}">'
            f'{"PROMOTED" if promoted else "NOT PROMOTED"}</p>\n'
            f'<table id="summary"><tbody>'
            f'<tr><th class="l">challenger</th><td class="l">v{esc(verdict.get("challenger_version"))}</td></tr>'
            f'<tr><th class="l">compared with</th><td class="l">{against} and the logistic-regression baseline, '
            f'on the same out-of-time holdout of {esc(evaluation.get("rows"))} rows</td></tr>'
            f'<tr class="{"pass" if gate_passed else "fail"}"><th class="l">gate</th>'
            f'<td class="l status">{status(gate_passed)}: {gate_text}</td></tr>'
            f'<tr><th class="l">policy</th><td class="l">{esc(verdict.get("policy", MISSING))}</td></tr>'
            f'<tr class="{"pass" if promoted else "fail"}"><th class="l">policy note</th>'
            f'<td class="l status">{esc(verdict.get("policy_note", MISSING))}</td></tr>'
            f"</tbody></table>")


def _overall(evaluation: dict[str, Any], verdict: dict[str, Any], spec: Any) -> str:
    """One row per role, with the gate check that judged it (floor, champion, baseline) and its rule."""
    overall, gib = evaluation.get("overall") or {}, bool(evaluation.get("greater_is_better", True))
    checks, promotion = _checks_by_name(verdict), getattr(spec, "promotion", None)
    versions = {"challenger": verdict.get("challenger_version"), "champion": verdict.get("champion_version")}
    rules = {"challenger": ("floor", "floor"), "champion": ("champion", "min_improvement"),
             "baseline": ("baseline", "baseline_margin")}
    rows = []
    for role in ROLES:
        check_name, setting = rules[role]
        check = checks.get(check_name)
        rule = setting if promotion is None else f"{setting} {num(getattr(promotion, setting, None))}"
        version = versions.get(role)
        shown_version = "logistic regression" if role == "baseline" else (MISSING if version is None else f"v{version}")
        gain = MISSING if role == "challenger" or role not in overall else _signed(
            _gain(overall.get("challenger"), overall.get(role), gib))
        passed = None if check is None else bool(check.get("passed"))
        value = num(overall[role], UNDEFINED) if role in overall else MISSING
        rows.append(("" if passed is None else ("pass" if passed else "fail"), [
            (esc(role), True), (esc(shown_version), True), (value, False),
            (gain, False), (esc(rule), True), (status(passed), True)]))
    direction = "greater is better" if gib else "lower is better"
    return (f'<h2>{esc(evaluation.get("metric"))} on the holdout ({direction})</h2>'
            + table("overall", [("model", True), ("version", True), (str(evaluation.get("metric")), False),
                                ("challenger gain", False), ("rule", True), ("check", True)], rows))


def _gate(verdict: dict[str, Any]) -> str:
    rows = [("pass" if c.get("passed") else "fail",
             [(esc(c.get("name")), True), (status(bool(c.get("passed"))), True), (esc(c.get("detail")), True)])
            for c in verdict.get("checks") or []]
    if not rows:
        return '<h2>The gate</h2><p class="fail">No checks were recorded (fail closed: nothing is promoted).</p>'
    return "<h2>The gate</h2>" + table("checks", [("check", True), ("result", True), ("detail", True)], rows)


def _slice_status(s: dict[str, Any], gib: bool, tolerance: float | None, min_rows: Any) -> tuple[str, str]:
    """(row class, status HTML) of one slice, by the gate's slice rule."""
    if s.get("skipped"):
        return "skip", esc(f"too few rows (< min_slice_rows {min_rows}): not judged" if min_rows is not None
                           else "too few rows: not judged")
    if "champion" not in s:
        return "", esc("no champion: not compared")
    ch, champ = _number(s.get("challenger")), _number(s.get("champion"))
    if math.isnan(ch) and math.isnan(champ):
        return "", esc("undefined for both: not judged")
    if math.isnan(ch) or math.isnan(champ):
        return "fail", status(False, text_fail="FAILED: cannot compare")
    if tolerance is None:
        return "", MISSING
    loss = -_gain(ch, champ, gib)
    if loss > tolerance + EPS:
        return "fail", status(False, text_fail=f"FAILED: regression {loss:.4f} > slice_tolerance {tolerance:.4f}")
    return "pass", status(True, text_pass="ok")


def _slices(evaluation: dict[str, Any], spec: Any) -> str:
    slices, gib = evaluation.get("slices") or [], bool(evaluation.get("greater_is_better", True))
    promotion = getattr(spec, "promotion", None)
    tolerance = None if promotion is None else _number(getattr(promotion, "slice_tolerance", None))
    tolerance = None if tolerance is None or math.isnan(tolerance) else tolerance
    min_rows = getattr(promotion, "min_slice_rows", None)
    if not slices:
        return f'<h2>{esc(evaluation.get("metric"))} per slice</h2><p class="note">No slice columns configured.</p>'
    rows = []
    for s in slices:
        cls, shown = _slice_status(s, gib, tolerance, min_rows)
        change = (_signed(_gain(s.get("challenger"), s.get("champion"), gib))
                  if "champion" in s and not s.get("skipped") else MISSING)
        value = "(missing)" if s.get("value") is None else s.get("value")
        rows.append((cls, [(esc(s.get("column")), True), (esc(value), True), (esc(s.get("rows")), False),
                           *((num(s[r], UNDEFINED) if r in s else MISSING, False) for r in ROLES),
                           (change, False), (shown, True)]))
    return (f'<h2>{esc(evaluation.get("metric"))} per slice</h2>'
            + table("slices", [("column", True), ("value", True), ("rows", False), *((r, False) for r in ROLES),
                               ("challenger vs champion", False), ("slice check", True)], rows))


def _thresholds(spec: Any) -> str:
    promotion = getattr(spec, "promotion", None)
    if promotion is None:
        return ""
    names = ("metric", "floor", "min_improvement", "slice_tolerance", "baseline_margin", "min_slice_rows")
    rows = [("", [(esc(f"promotion.{n}"), True), (esc(getattr(promotion, n, MISSING)), False)]) for n in names]
    return "<h2>Thresholds (from the spec)</h2>" + table("thresholds", [("setting", True), ("value", False)], rows)


def evaluation_report_html(evaluation: dict[str, Any], verdict: dict[str, Any], title: str, *,
                           spec: Any = None) -> str:
    """The evaluation report as one self-contained HTML page.

    `evaluation` as evaluation.evaluate() returns it; `verdict` as the evaluate task records it
    (Verdict.to_dict() plus policy, champion_version, challenger_version, promoted,
    policy_note). With `spec`, the rules show their thresholds and each slice is marked
    passed or failed by ``promotion.slice_tolerance`` (the gate's own rule); without it, the
    slices show their numbers only and the gate's checks still say what failed.
    """
    body = "\n".join([
        _decision(evaluation, verdict),
        _overall(evaluation, verdict, spec),
        _gate(verdict),
        _slices(evaluation, spec),
        _thresholds(spec),
        '<p class="note">Machine-readable: evaluation.json beside this page. "–": not evaluated; '
        '"n/a": could not be computed (e.g. one class only).</p>',
    ])
    return page(title, body)


def write_evaluation_report(path: str | Path, evaluation: dict[str, Any], verdict: dict[str, Any], title: str, *,
                            spec: Any = None) -> str:
    """Write the report to a local file (folders created); returns the path as a string."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(evaluation_report_html(evaluation, verdict, title, spec=spec), encoding="utf-8")
    return str(path)
