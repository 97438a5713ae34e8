"""The evaluation report a person reads: champion, challenger and baseline side by side,
overall and per slice, with every check of the gate and the decision.

Self-contained HTML (no script, no stylesheet from elsewhere), so it opens offline, from the
artifact store, from MLflow's artifact view or from a file. Every value is escaped.
"""

from __future__ import annotations

import html
from typing import Any

ROLES = ("challenger", "champion", "baseline")
STYLE = """body{font-family:system-ui,sans-serif;margin:2em;color:#111}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}th{background:#f3f4f6}td.l,th.l{text-align:left}
.fail{background:#fee2e2}.pass{background:#dcfce7}.verdict{font-size:1.3em;font-weight:600}"""


def _num(value: Any) -> str:
    return "–" if value is None else f"{float(value):.4f}"


def _e(value: Any) -> str:
    return html.escape(str(value))


def _role_cells(values: dict[str, Any]) -> str:
    return "".join(f"<td>{_num(values.get(role))}</td>" for role in ROLES)


def evaluation_report_html(evaluation: dict[str, Any], verdict: dict[str, Any], title: str) -> str:
    """`evaluation` as evaluation.evaluate() returns it; `verdict` as the evaluate task records it."""
    metric = _e(evaluation.get("metric"))
    promoted = bool(verdict.get("promoted"))
    head = "".join(f"<th>{r}</th>" for r in ROLES)
    checks = "".join(
        f'<tr class="{"pass" if c.get("passed") else "fail"}"><td class="l">{_e(c.get("name"))}</td>'
        f'<td class="l">{"passed" if c.get("passed") else "FAILED"}</td><td class="l">{_e(c.get("detail"))}</td></tr>'
        for c in verdict.get("checks") or [])
    slices = "".join(
        f'<tr><td class="l">{_e(s["column"])}</td><td class="l">{_e(s["value"])}</td><td>{s["rows"]}</td>'
        + (f'<td colspan="3" class="l">too few rows: not judged</td>' if s.get("skipped") else _role_cells(s))
        + "</tr>" for s in evaluation.get("slices") or [])
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{_e(title)}</title><style>{STYLE}</style></head>
<body><h1>{_e(title)}</h1>
<p class="verdict {'pass' if promoted else 'fail'}">{'PROMOTED' if promoted else 'NOT PROMOTED'}:
 {_e(verdict.get('policy_note'))} (policy {_e(verdict.get('policy'))})</p>
<p>Challenger v{_e(verdict.get('challenger_version'))} against champion
 {'v' + _e(verdict.get('champion_version')) if verdict.get('champion_version') is not None else '– (none yet)'}
 and the logistic-regression baseline, on the same out-of-time holdout of {_e(evaluation.get('rows'))} rows.</p>
<h2>{metric}, overall</h2><table><tr>{head}</tr><tr>{_role_cells(evaluation.get('overall') or {})}</tr></table>
<h2>The gate</h2><table><tr><th class="l">check</th><th class="l">result</th><th class="l">detail</th></tr>{checks}</table>
<h2>{metric} per slice</h2><table><tr><th class="l">column</th><th class="l">value</th><th>rows</th>{head}</tr>{slices}</table>
</body></html>"""
