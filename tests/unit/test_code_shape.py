"""The shape the code keeps: small functions, thin operators (radon measures what a reviewer would)."""

from __future__ import annotations

from pathlib import Path

from radon.complexity import cc_visit

ROOT = Path(__file__).resolve().parents[2]
MAX_COMPLEXITY = 12  # cyclomatic complexity of any one function in plugins/ or include/
MAX_OPERATOR_LINES = 300


def _sources() -> list[Path]:
    return sorted([*(ROOT / "include").rglob("*.py"), *(ROOT / "plugins").rglob("*.py")])


def test_no_function_is_too_complex_to_review():
    too_complex = [f"{path.relative_to(ROOT)}:{block.lineno} {block.fullname} ({block.complexity})"
                   for path in _sources() for block in cc_visit(path.read_text())
                   if block.complexity > MAX_COMPLEXITY]
    assert not too_complex, f"above cyclomatic complexity {MAX_COMPLEXITY}: " + "; ".join(too_complex)


def test_operators_stay_adapters():
    lines = len((ROOT / "plugins" / "nightshift_airflow" / "operators.py").read_text().splitlines())
    assert lines < MAX_OPERATOR_LINES, f"operators.py has {lines} lines: move logic into include/nightshift"
