"""A bad dataset spec is refused when it is loaded, with the dotted key at fault in the message.

Each case starts from include/specs/churn.yaml, breaks one thing, writes the YAML into tmp_path
and loads it with load_spec, as the DAG file does. A typo in a threshold must never silently
become "no threshold", and nothing from a spec that reaches SQL may be anything but a plain name.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import json
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from include.nightshift.spec import (METRICS, DatasetSpec, Metric, SpecError, json_schema, load_spec,
                                     load_specs)

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
    "boolean for a number": (set_key("promotion.floor", True), "promotion.floor",
                             "expected a number, got true, which YAML reads as the boolean true"),
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
    "row ceiling at the floor": (lambda d: d["validation"].update(min_row_ratio=1.0, max_row_ratio=1.0),
                                 "validation.max_row_ratio", "must be above validation.min_row_ratio (1.0), got 1.0"),
    "row ceiling below the median": (set_key("validation.max_row_ratio", 0.8), "validation.max_row_ratio",
                                     "must be at least 1"),
    "text row ceiling": (set_key("validation.max_row_ratio", "ten"), "validation.max_row_ratio",
                         "expected a number"),
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
    # the item at fault, and how to write it
    "category not a string": (set_feature(PLAN, "categories", ["basic", 2]), f"features[{PLAN}].categories[1]",
                              "2 was read by YAML as a number; quote it: '2'"),
    "a file cannot set its own path": (set_key("path", "/elsewhere/churn.yaml"), "path", "unknown key"),
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


def test_a_renamed_key_is_reported_as_unknown_before_the_key_it_hid(tmp_path):
    """`flor:` for `floor:` leaves floor missing too; the typo is the one problem, reported as the
    unknown key with the key it was probably meant to be, and not again as a missing floor."""
    text = CHURN.read_text().replace("  floor: 0.70", "  flor: 0.70", 1)
    with pytest.raises(SpecError) as caught:
        load_spec(write(tmp_path, text))
    assert str(caught.value).splitlines() == [
        "broken.yaml: promotion.flor: unknown key; did you mean floor? (allowed here: metric, floor, "
        "min_improvement, slice_tolerance, slice_columns, min_slice_rows, baseline_margin, max_model_age_days, "
        "realised_tolerance, realised_window_days, realised_confidence, realised_resamples, realised_max_rows)"]


def test_an_unknown_key_unlike_any_other_leaves_the_missing_key_reported(tmp_path):
    """Only the key an unknown one stands for is spared: a missing key with no look-alike is still named."""
    text = CHURN.read_text().replace("  floor: 0.70", "  zzz: 0.70", 1)
    with pytest.raises(SpecError) as caught:
        load_spec(write(tmp_path, text))
    assert str(caught.value).splitlines() == [
        "broken.yaml: promotion.zzz: unknown key (allowed here: metric, floor, min_improvement, slice_tolerance, "
        "slice_columns, min_slice_rows, baseline_margin, max_model_age_days, realised_tolerance, "
        "realised_window_days, realised_confidence, realised_resamples, realised_max_rows)",
        "broken.yaml: promotion.floor: required key is missing"]


def test_every_problem_is_reported_one_line_each_naming_file_and_key(tmp_path):
    data = copy.deepcopy(BASE)
    data["validation"]["min_rows"] = 0
    data["drift"]["share_threshold"] = 2
    feature(data, AGE)["maximum"] = 100
    with pytest.raises(SpecError) as caught:
        load_spec(write(tmp_path, yaml.safe_dump(data, sort_keys=False)))
    assert str(caught.value).splitlines() == [
        f"broken.yaml: features[{AGE}].maximum: unknown key; did you mean max? "
        "(allowed here: name, type, min, max, max_null_share)",
        "broken.yaml: validation.min_rows: must be at least 1, got 0",
        "broken.yaml: drift.share_threshold: must be between 0 and 1, got 2",
    ]


@pytest.mark.parametrize(("written", "read_as"), [("NO", "false"), ("yes", "true"), ("off", "false")])
def test_a_category_yaml_reads_as_a_boolean_is_named_with_a_fix(tmp_path, written, read_as):
    """Country and airport codes (NO, YES, ON) are booleans to YAML 1.1: the error must show the
    value as written and say to quote it, not complain about `False`."""
    text = CHURN.read_text().replace("categories: [north, south,", f"categories: [north, {written},", 1)
    with pytest.raises(SpecError) as caught:
        load_spec(write(tmp_path, text))
    assert str(caught.value) == (
        f"broken.yaml: features[{REGION}].categories[1]: {written} was read by YAML as the boolean {read_as}; "
        f"quote it: '{written}'")
    quoted = load_spec(write(tmp_path, text.replace(f"[north, {written},", f"[north, '{written}',")))
    assert quoted.features[REGION].categories[:2] == ("north", written)


def test_a_key_written_without_a_value_is_absent(tmp_path):
    """As before pydantic: `description:` means the default, and a required key left empty is missing."""
    text = CHURN.read_text().replace("description: Will a subscriber", "description:\nx_was: Will a subscriber", 1)
    text = text.replace("\nx_was: ", "\n# ", 1)
    assert load_spec(write(tmp_path, text)).description == ""
    with pytest.raises(SpecError, match=r"^broken\.yaml: promotion\.floor: required key is missing$"):
        load_spec(write(tmp_path, CHURN.read_text().replace("  floor: 0.70", "  floor:", 1)))


def test_parsed_spec_keeps_its_types_and_path(tmp_path):
    spec = load_spec(CHURN)
    assert spec.path == str(CHURN)
    assert spec.start_date == dt.date(2026, 1, 1) and spec.promotion.floor == 0.7
    assert isinstance(spec.features, tuple) and spec.features[PLAN].categories == ("basic", "standard", "premium",
                                                                                  "family")
    age, plan = spec.features[AGE], spec.features[PLAN]  # every feature answers every feature attribute
    assert (age.min, age.max, age.categories, age.max_unseen_share) == (18, 100, (), 0.0)
    assert (plan.min, plan.max, plan.max_unseen_share) == (None, None, 0.0)
    assert spec.promotion.slice_columns == ("plan", "region") and spec.promotion.greater_is_better
    assert spec.training.params["n_estimators"] == 150 and spec.warehouse.reader_role == "nightshift_reader"
    quoted_date = CHURN.read_text().replace("start_date: 2026-01-01", "start_date: '2026-01-01'", 1)
    assert load_spec(write(tmp_path, quoted_date)).start_date == dt.date(2026, 1, 1)


def test_a_derived_spec_is_not_validated_again():
    """Callers derive specs with dataclasses.replace, and tests of the core build specs the loader
    would refuse (a schema with a space) to prove every name is quoted: replace must not validate."""
    spec = load_spec(CHURN)
    odd = dataclasses.replace(spec, warehouse=dataclasses.replace(spec.warehouse, schema="Audit Schema"))
    assert odd.warehouse.schema == "Audit Schema" and odd.path == spec.path
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "other"  # type: ignore[misc]


def test_metrics_and_their_literal_agree():
    assert set(typing.get_args(Metric)) == set(METRICS)


# --- the published JSON Schema ----------------------------------------------------------------

SCHEMA_FILE = CHURN.parents[2] / "docs" / "dataset-spec.schema.json"


def _as_json(data: Any) -> Any:
    """What an editor's YAML plugin hands to the schema: dates are text."""
    return json.loads(json.dumps(data, default=str))


def test_published_schema_is_up_to_date():
    assert json.loads(SCHEMA_FILE.read_text()) == json_schema(), (
        "docs/dataset-spec.schema.json is stale: python -m include.nightshift.spec --schema > "
        "docs/dataset-spec.schema.json")


def test_shipped_specs_validate_against_the_schema():
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text()))
    for path in sorted((CHURN.parent).glob("*.y*ml")):
        assert list(validator.iter_errors(_as_json(yaml.safe_load(path.read_text())))) == [], path


@pytest.mark.parametrize("case", ["unknown key in a section", "share above 1", "unknown feature type",
                                  "bounds on a categorical feature", "missing section", "negative floor for roc_auc",
                                  "SQL in the table name", "no features"])
def test_schema_refuses_what_the_loader_refuses(case):
    """The schema is not a looser second opinion: for rules it can express, it agrees with the loader."""
    data = copy.deepcopy(BASE)
    CASES[case][0](data)
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text()))
    assert list(validator.iter_errors(_as_json(data))), case


def test_log_loss_floor_is_a_ceiling_above_1_in_schema_and_loader(tmp_path):
    data = copy.deepcopy(BASE)
    data["promotion"].update(metric="log_loss", floor=1.5)
    assert load_spec(write(tmp_path, yaml.safe_dump(data))).promotion.floor == 1.5
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text()))
    assert list(validator.iter_errors(_as_json(data))) == []


# --- uniqueness across spec files -------------------------------------------------------------


def _spec_files(tmp_path: Path, **variants: dict[str, Any]) -> Path:
    """One churn.yaml copy per file name, each changed by its dict of dotted keys."""
    for file_name, changes in variants.items():
        data = copy.deepcopy(BASE)
        for dotted, value in changes.items():
            set_key(dotted, value)(data)
        (tmp_path / f"{file_name}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return tmp_path


def test_specs_sharing_a_name_are_all_refused_naming_each_other(tmp_path):
    loaded = dict(load_specs(_spec_files(tmp_path, a={}, b={"warehouse.schema": "churn_b"},
                                         c={"name": "other", "warehouse.schema": "other"})))
    a, b, c = (loaded[tmp_path / f"{n}.yaml"] for n in "abc")
    assert isinstance(a, SpecError) and isinstance(b, SpecError)
    assert str(a) == "a.yaml: name: 'churn' is also the name of b.yaml (spec files must not share it)"
    assert str(b) == "b.yaml: name: 'churn' is also the name of a.yaml (spec files must not share it)"
    assert isinstance(c, DatasetSpec) and c.name == "other"


def test_specs_sharing_a_warehouse_schema_are_refused_ignoring_case(tmp_path):
    loaded = dict(load_specs(_spec_files(tmp_path, a={"name": "a"}, b={"name": "b", "warehouse.schema": "Churn"})))
    assert str(loaded[tmp_path / "a.yaml"]) == (
        "a.yaml: warehouse.schema: 'churn' is also the warehouse.schema of b.yaml (spec files must not share it)")
    assert "b.yaml: warehouse.schema: 'Churn' is also the warehouse.schema of a.yaml" in str(loaded[tmp_path / "b.yaml"])


def test_exact_copies_clash_on_every_unique_key_and_a_broken_file_stays_its_own_error(tmp_path):
    _spec_files(tmp_path, churn={}, copy={}, typo={"promotion.flor": 0.7})
    loaded = dict(load_specs(tmp_path))
    assert str(loaded[tmp_path / "copy.yaml"]).splitlines() == [
        "copy.yaml: name: 'churn' is also the name of churn.yaml (spec files must not share it)",
        "copy.yaml: warehouse.schema: 'churn' is also the warehouse.schema of churn.yaml (spec files must not share it)",
    ]
    assert str(loaded[tmp_path / "typo.yaml"]).startswith("typo.yaml: promotion.flor: unknown key")  # not a clash
    assert [p.name for p in loaded] == ["churn.yaml", "copy.yaml", "typo.yaml"]


def test_distinct_specs_all_load(tmp_path):
    specs = [spec for _, spec in load_specs(_spec_files(tmp_path, a={}, b={"name": "b", "warehouse.schema": "b"}))]
    assert [(s.name, s.warehouse.schema, s.model_name) for s in specs] == [
        ("churn", "churn", "nightshift_churn"), ("b", "b", "nightshift_b")]
