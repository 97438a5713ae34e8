"""The run's note (plugins/nightshift_airflow/run_note.py): the night a run processed and its conf,
where Airflow's run header shows it (issue 13 item 6). The listener that writes it runs in the
scheduler; the e2e suite checks it there (tests/e2e/test_e2e_demo_ui.py)."""

from __future__ import annotations

import datetime as dt

import pytest

from nightshift_airflow.run_note import MAX_NOTE, merged, night_of, note_line

pytestmark = pytest.mark.pure

UTC = dt.timezone.utc
AFTER = dt.datetime(2026, 3, 5, 9, 30, tzinfo=UTC)


def test_the_night_is_the_run_date_param_first_then_the_interval_then_the_logical_date_then_the_day_before():
    interval, logical = dt.datetime(2026, 3, 1, tzinfo=UTC), dt.datetime(2026, 3, 2, tzinfo=UTC)
    assert night_of({"run_date": "2026-02-12"}, interval, logical, AFTER) == dt.date(2026, 2, 12)
    assert night_of({"run_date": None}, interval, logical, AFTER) == dt.date(2026, 3, 1)
    assert night_of({}, None, logical, AFTER) == dt.date(2026, 3, 2)
    assert night_of(None, None, None, AFTER) == dt.date(2026, 3, 4)  # REST with a null logical date
    assert night_of({"run_date": "12/02/2026"}, interval, logical, AFTER) is None  # the first task refuses it


def test_the_line_names_the_night_and_only_what_differs_from_the_defaults():
    defaults = {"force_retrain": False, "promotion_policy": "auto", "note": None, "run_date": None}
    conf = {**defaults, "force_retrain": True, "run_date": "2026-02-12"}
    line = note_line("nightshift_churn", conf, dt.date(2026, 2, 12), defaults)
    assert line == 'night 2026-02-12 · conf {"force_retrain": true, "run_date": "2026-02-12"}'
    assert note_line("nightshift_churn", defaults, dt.date(2026, 3, 1), defaults) == \
        "night 2026-03-01 · conf {} (defaults)"
    # without the DAG's defaults: every value that is set
    assert note_line("nightshift_churn", conf, dt.date(2026, 2, 12)) == \
        'night 2026-02-12 · conf {"force_retrain": true, "promotion_policy": "auto", "run_date": "2026-02-12"}'
    # a rollback has no night: its conf alone
    assert note_line("nightshift_churn_rollback", {"reason": "v2 is off", "version": 1}, None) == \
        'conf {"reason": "v2 is off", "version": 1}'


def test_a_person_s_note_is_kept_the_line_is_added_once_and_the_note_fits_airflow_s_column():
    line = "night 2026-02-12 · conf {}"
    assert merged(None, line) == line
    assert merged("rerun after the outage", line) == f"rerun after the outage\n\n{line}"
    assert merged(merged("rerun after the outage", line), line) == merged("rerun after the outage", line)  # cleared run
    long = merged("x" * 990, line)
    assert len(long) == MAX_NOTE and long.endswith("…")
