"""The evaluation report shows the numbers and the verdict, escapes values, and needs no network."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pandas as pd

from include.nightshift.evaluation import evaluate, gate
from include.nightshift.reports import evaluation_report_html


def test_report_shows_roles_slices_checks_and_verdict(churn_spec):
    spec = dataclasses.replace(churn_spec, promotion=dataclasses.replace(
        churn_spec.promotion, slice_columns=["plan"], min_slice_rows=10))
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    holdout = pd.DataFrame({"plan": np.where(np.arange(400) < 395, "basic", "<script>x</script>")})
    scores = {"challenger": np.clip(y * 0.3 + rng.random(400) * 0.7, 0, 1), "champion": rng.random(400),
              "baseline": rng.random(400)}
    evaluation = evaluate(holdout, y, scores, spec)
    verdict = {**gate(evaluation, spec.promotion, challenger_scores=scores["challenger"], roundtrip_equal=False).to_dict(),
               "promoted": False, "policy": "auto", "policy_note": "gate failed", "champion_version": 3,
               "challenger_version": 4}
    page = evaluation_report_html(evaluation, verdict, "churn 2026-03-01: v4 vs v3")

    assert "NOT PROMOTED" in page and "gate failed" in page
    assert f"{evaluation['overall']['challenger']:.4f}" in page and f"{evaluation['overall']['champion']:.4f}" in page
    assert re.search(r'class="fail"><td class="l">roundtrip</td><td class="l">FAILED', page)  # the failed check, marked
    assert "&lt;script&gt;x&lt;/script&gt;" in page and "<script>x" not in page  # a slice value, escaped
    assert "too few rows" in page  # the 5-row slice is listed, not judged
    assert not re.search(r"(src|href)=", page)  # nothing to fetch: opens offline


def test_cold_start_has_no_champion_column_values(churn_spec):
    evaluation = {"metric": "roc_auc", "rows": 10, "overall": {"challenger": 0.8, "baseline": 0.7}, "slices": []}
    page = evaluation_report_html(evaluation, {"promoted": True, "policy_note": "gate passed", "checks": [],
                                               "challenger_version": 1, "champion_version": None}, "first")
    assert "PROMOTED" in page and "– (none yet)" in page and "<td>–</td>" in page
