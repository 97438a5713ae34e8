"""A bad dataset spec is refused when it is loaded, with the dotted key at fault in the message.

Each case starts from include/specs/churn.yaml, breaks one thing, writes the YAML into tmp_path
and loads it with load_spec, as the DAG file does. A typo in a threshold must never silently
become "no threshold", and nothing from a spec that reaches SQL may be anything but a plain name.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from include.nightshift.spec import SpecError, load_spec

CHURN = Path(__file__).resolve().parents[2] / "include" / "specs" / "churn.yaml"
BASE: dict[str, Any] = yaml.safe_load(CHURN.read_text())
# Positions of a few features in churn.yaml, so that the expected dotted keys read plainly.
TENURE, MONTHLY, TOTAL, AGE = 0, 1, 2, 3
PLAN, REGION = 17, 18


def feature(data: dict, index: int) -> dict:
    return data["features"][index]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    return path


def refused(tmp_path: Path, change: Callable[[dict], Any]) -> str:
    """Load churn.yaml changed by `change`; return the SpecError message (and fail if it loads)."""
    data = copy.deepcopy(BASE)
    change(data)
    path = write(tmp_path, yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    message = str(caught.value)
    assert message.startswith("broken.yaml: "), message  # the file is named too
    return message


def set_key(dotted: str, value: Any) -> Callable[[dict], None]:
    """A change that sets one key, e.g. set_key('promotion.floor', 0.5)."""
    def change(data: dict) -> None:
        *parents, last = dotted.split(".")
        for part in parents:
            data = data[part]
        data[last] = value
    return change


def del_key(dotted: str) -> Callable[[dict], None]:
    def change(data: dict) -> None:
        *parents, last = dotted.split(".")
        for part in parents:
            data = data[part]
        del data[last]
    return change


def set_feature(index: int, key: str, value: Any) -> Callable[[dict], None]:
    return lambda data: feature(data, index).__setitem__(key, value)


def test_the_shipped_churn_spec_loads(tmp_path):
    """The control: the unchanged spec, written the same way, loads."""
    spec = load_spec(write(tmp_path, yaml.safe_dump(copy.deepcopy(BASE), sort_keys=False)))
    assert spec.name == "churn" and len(spec.features) == 21 and spec.feature_names[REGION] == "region"
    assert spec.feature_names[:AGE + 1] == ["tenure_months", "monthly_charges", "total_charges", "age"]


# change -> (the dotted key the message must start with, words the message must contain)
CASES: dict[str, tuple[Callable[[dict], Any], str, str]] = {
    # unknown keys, at every level
    "unknown top-level key": (set_key("schedul", "@daily"), "schedul", "unknown key"),
    "unknown key in a section": (set_key("promotion.flor", 0.7), "promotion.flor", "unknown key"),
    "unknown key in a feature": (set_feature(AGE, "maximum", 100), f"features[{AGE}].maximum", "unknown key"),
    "bounds on a categorical feature": (set_feature(PLAN, "min", 0), f"features[{PLAN}].min", "unknown key"),
    "categories on a numeric feature": (set_feature(AGE, "categories", ["a"]), f"features[{AGE}].categories",
                                        "unknown key"),
    # wrong types
    "number as text": (set_key("validation.min_rows", "100"), "validation.min_rows", "expected an integer"),
    "fraction for an integer": (set_key("training.window_days", 14.5), "training.window_days", "expected an integer"),
    "boolean for a number": (set_key("promotion.floor", True), "promotion.floor", "got a boolean"),
    "text for a threshold": (set_key("drift.share_threshold", "a quarter"), "drift.share_threshold",
                             "expected a number"),
    "section not a mapping": (set_key("validation", 5), "validation", "expected a mapping"),
    "features not a list": (set_key("features", {"name": "age"}), "features", "expected a list"),
    "bad start date": (set_key("start_date", "yesterday"), "start_date", "not an ISO date"),
    # missing thresholds and sections
    "missing threshold": (del_key("promotion.floor"), "promotion.floor", "required key is missing"),
    "missing row floor": (del_key("validation.min_rows"), "validation.min_rows", "required key is missing"),
    "missing section": (del_key("drift"), "drift", "required section is missing"),
    "no features": (set_key("features", []), "features", "at least one feature"),
    # names that reach SQL: plain identifiers only
    "SQL in the table name": (set_key("source.table", "public.x; DROP TABLE y"), "source.table",
                              "'x; DROP TABLE y' is not a plain SQL identifier"),
    "three-part table name": (set_key("source.table", "db.public.churn_events"), "source.table",
                              "must be 'table' or 'schema.table'"),
    "quote in the warehouse schema": (set_key("warehouse.schema", 'churn"; DROP SCHEMA public; --'),
                                      "warehouse.schema", "not a plain SQL identifier"),
    "quote in a feature name": (set_feature(AGE, "name", 'age"'), f"features[{AGE}].name",
                                "not a plain SQL identifier"),
    "space in the entity key": (set_key("entity_key.name", "customer id"), "entity_key.name",
                                "not a plain SQL identifier"),
    "SQL in the timestamp column": (set_key("timestamp", "event_ts) OR (1=1"), "timestamp",
                                    "not a plain SQL identifier"),
    # shares, counts and thresholds out of range
    "share above 1": (set_key("validation.min_row_ratio", 1.5), "validation.min_row_ratio",
                      "must be between 0 and 1, got 1.5"),
    "negative share": (set_key("drift.share_threshold", -0.1), "drift.share_threshold", "must be between 0 and 1"),
    "null share above 1": (set_feature(TOTAL, "max_null_share", 2), f"features[{TOTAL}].max_null_share",
                           "must be between 0 and 1"),
    "negative unseen share": (set_feature(REGION, "max_unseen_share", -0.5), f"features[{REGION}].max_unseen_share",
                              "must be between 0 and 1"),
    "decision threshold above 1": (set_key("scoring.decision_threshold", 1.2), "scoring.decision_threshold",
                                   "must be between 0 and 1"),
    "zero training window": (set_key("training.window_days", 0), "training.window_days", "must be at least 1"),
    "negative row floor": (set_key("validation.min_rows", -5), "validation.min_rows", "must be at least 1"),
    "zero chunk size": (set_key("scoring.chunk_rows", 0), "scoring.chunk_rows", "must be at least 1"),
    "negative label delay": (set_key("label.delay_days", -1), "label.delay_days", "must be 0 or more"),
    "min above max": (lambda d: feature(d, AGE).update(min=100, max=18), f"features[{AGE}].min", "above max"),
    # a floor outside [0, 1] for a metric that lives there: negative silently removes the floor
    "negative floor for roc_auc": (set_key("promotion.floor", -0.2), "promotion.floor", "between 0 and 1"),
    "floor above 1 for roc_auc": (set_key("promotion.floor", 1.5), "promotion.floor", "between 0 and 1"),
    "NaN floor": (set_key("promotion.floor", float("nan")), "promotion.floor", "finite"),
    # margins and tolerances: a negative one lets a worse model through
    "negative min_improvement": (set_key("promotion.min_improvement", -0.05), "promotion.min_improvement",
                                 "must be 0 or more"),
    "negative baseline_margin": (set_key("promotion.baseline_margin", -0.05), "promotion.baseline_margin",
                                 "must be 0 or more"),
    "negative slice_tolerance": (set_key("promotion.slice_tolerance", -0.03), "promotion.slice_tolerance",
                                 "must be 0 or more"),
    "negative realised_tolerance": (set_key("promotion.realised_tolerance", -0.05), "promotion.realised_tolerance",
                                    "must be 0 or more"),
    # columns and the names they refer to
    "duplicate feature": (set_feature(MONTHLY, "name", "tenure_months"), f"features[{MONTHLY}].name",
                          "'tenure_months' is named more than once"),
    "feature named like the label": (set_feature(AGE, "name", "churned"), f"features[{AGE}].name",
                                     "'churned' is named more than once"),
    "slice column not categorical": (set_key("promotion.slice_columns", ["plan", "age"]),
                                     "promotion.slice_columns[1]", "'age' is not a categorical feature"),
    "slice column unknown": (set_key("promotion.slice_columns", ["planet"]), "promotion.slice_columns[0]",
                             "'planet' is not a categorical feature"),
    "unknown feature type": (set_feature(AGE, "type", "float"), f"features[{AGE}].type",
                             "must be one of ['categorical', 'numeric'], got 'float'"),
    "unknown entity key type": (set_key("entity_key.type", "uuid"), "entity_key.type", "must be one of"),
    "unknown metric": (set_key("promotion.metric", "auc"), "promotion.metric", "must be one of"),
    "categorical without categories": (set_feature(PLAN, "categories", []), f"features[{PLAN}].categories",
                                       "non-empty list of strings"),
    "category not a string": (set_feature(PLAN, "categories", ["basic", 2]), f"features[{PLAN}].categories",
                              "non-empty list of strings"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_spec_is_refused_naming_the_key(tmp_path, case):
    change, key, words = CASES[case]
    message = refused(tmp_path, change)
    assert message.startswith(f"broken.yaml: {key}: "), message
    assert words in message, message


def test_a_key_given_twice_is_refused(tmp_path):
    """YAML parsers keep the last of two equal keys silently: a second `floor:` further down a
    hand-edited file would replace the first without a word. The loader must refuse it."""
    text = CHURN.read_text().replace("  floor: 0.70", "  floor: 0.70\n  floor: 0.0", 1)
    assert text.count("floor:") == 2
    with pytest.raises(SpecError) as caught:
        load_spec(write(tmp_path, text))
    assert "promotion.floor" in str(caught.value) and "more than once" in str(caught.value), str(caught.value)


def test_not_yaml_is_refused_naming_the_file(tmp_path):
    with pytest.raises(SpecError, match=r"broken\.yaml: not valid YAML"):
        load_spec(write(tmp_path, "name: churn\nfeatures: [unclosed\n"))


def test_empty_file_is_refused(tmp_path):
    with pytest.raises(SpecError, match=r"broken\.yaml: <root>: expected a mapping"):
        load_spec(write(tmp_path, ""))
