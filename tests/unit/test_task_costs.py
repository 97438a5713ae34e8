"""What each step costs (task_costs.py): the measuring, the jump and leak rules, and the task_costs table."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time

import pytest

from include.nightshift import task_costs as tc
from include.nightshift.run_record import RunRecord
from include.nightshift.spec import Costs
from include.nightshift.steps import PublishStep, ScoringStep, TrainingStep, ValidationStep

MB = tc.MB
NIGHT = dt.date(2026, 3, 20)
COSTS = Costs()  # the spec's defaults: slower 2.0, bigger 1.5, 14 nights, at least 5, floors 5 s and 100 MB


def nights(n: int, last: dt.date = NIGHT - dt.timedelta(days=1)) -> list[dt.date]:
    return [last - dt.timedelta(days=n - 1 - i) for i in range(n)]


def past(values: list[float], measure: str = "wall_seconds") -> list[dict]:
    return [{"night": night, measure: v} for night, v in zip(nights(len(values)), values)]


# ------------------------------------------------------------------ measuring


@pytest.mark.pure
def test_a_step_that_allocates_200_mb_peaks_that_much_above_its_start():
    meter = tc.Meter()
    block = bytearray(200 * MB)  # touched: resident, not only reserved
    time.sleep(0.35)  # the sampler sees it too
    del block
    cost = meter.stop({"rows": 1000})
    grew = (cost["rss_peak_bytes"] - cost["rss_start_bytes"]) / MB
    assert 180 <= grew <= 260, cost
    assert cost["rows"] == 1000 and cost["rows_per_second"] == pytest.approx(1000 / cost["wall_seconds"], rel=0.01)
    assert cost["outcome"] == "success" and dt.datetime.fromisoformat(cost["started_at"]).tzinfo is not None


@pytest.mark.pure
def test_the_sampler_alone_sees_a_peak_the_step_held(monkeypatch):
    """Where the kernel's high-water mark cannot be reset (not Linux, no /proc), the sampled peak still counts."""
    monkeypatch.setattr(tc, "_reset_high_water", lambda: False)  # the fault: no resettable high-water mark
    meter = tc.Meter(interval=0.05)
    block = bytearray(150 * MB)
    time.sleep(0.3)
    del block
    cost = meter.stop()
    assert (cost["rss_peak_bytes"] - cost["rss_start_bytes"]) / MB >= 130, cost


@pytest.mark.pure
def test_a_sleep_costs_wall_time_but_almost_no_cpu_and_a_busy_loop_both():
    meter = tc.Meter()
    time.sleep(0.5)
    slept = meter.stop()
    assert slept["wall_seconds"] >= 0.5 and slept["cpu_seconds"] < 0.15, slept
    meter, cpu = tc.Meter(), time.process_time()
    sum(i * i for i in range(3_000_000))  # a fixed amount of work (the machine may be busy: time is not fixed)
    busy, cpu = meter.stop(), time.process_time() - cpu
    assert busy["cpu_seconds"] == pytest.approx(cpu, abs=0.05) and busy["cpu_seconds"] > 0.1, busy
    assert busy["cpu_seconds"] <= busy["wall_seconds"] + 0.05  # one thread cannot use more CPU than time
    assert busy["rows"] is None and busy["rows_per_second"] is None  # no output, no rows


@pytest.mark.pure
def test_rows_come_from_each_steps_typed_output():
    day = dt.date(2026, 3, 1)
    snapshot = {"day": "2026-03-01", "current": {"rows": 2000, "day": "2026-03-01"}, "labelled": {"rows": 1900}}
    trained = TrainingStep(version=1, run_id="r", train_rows=700, holdout_rows=300, holdout_end=day,
                           holdout_scores_url="u", snapshots_url="s").to_xcom()
    assert tc.rows_processed(snapshot) == 2000  # the night's rows
    assert tc.rows_processed(ValidationStep(passed=True, rows=2000).to_xcom()) == 2000
    assert tc.rows_processed(trained) == 1000
    assert tc.rows_processed(ScoringStep(url="u", rows=1500, model_version=1, day=day).to_xcom()) == 1500
    assert tc.rows_processed(PublishStep(rows=1500, day=day, model_version=1).to_xcom()) == 1500
    assert tc.rows_processed({"share": 0.1, "details": {"n_current": 2000, "n_reference": 5000}}) == 2000
    assert tc.rows_processed({"retrain": False, "reason": None, "details": {}}) is None  # decide: no rows
    assert tc.rows_processed(None) is None and tc.rows_processed({"passed": True, "rows": True}) is None


# ------------------------------------------------------------------ the rules


@pytest.mark.pure
def test_a_step_twice_as_slow_as_its_median_is_a_jump_and_a_jitter_is_not():
    before = [10.0, 11.0, 9.5, 10.5, 10.0, 12.0, 9.0, 10.0, 11.0, 10.0, 10.5, 9.5, 10.0, 11.0]
    found = tc.jump("train", "wall_seconds", 25.0, before, COSTS)
    assert found is not None and found["kind"] == "slower" and found["median"] == 10.0 and found["ratio"] == 2.5
    assert tc.jump("train", "wall_seconds", 19.0, before, COSTS) is None  # 1.85x: under the factor
    assert tc.jump("decide", "wall_seconds", 0.5, [0.1] * 14, COSTS) is None  # 5x, but 0.4 s: under min_seconds
    assert tc.jump("train", "wall_seconds", 25.0, before[:4], COSTS) is None  # 4 nights < min_nights
    memory = tc.jump("score", "rss_peak_bytes", 700.0 * MB, [400.0 * MB] * 14, COSTS)
    assert memory is not None and memory["kind"] == "bigger"
    assert "score 1.8x bigger (700 MB vs median 400 MB over 14 nights)" == tc.finding_words(memory)


@pytest.mark.pure
def test_a_steady_rise_over_fourteen_nights_is_a_leak_and_a_step_change_is_not():
    rising = [300 + 18 * i + (7 if i % 3 == 0 else -4) for i in range(14)]  # 300 MB to ~540 MB, noisy, no jump
    values = [v * MB for v in rising]
    found = tc.leak("score", "rss_peak_bytes", nights(14, NIGHT), values, COSTS)
    assert found is not None and found["kind"] == "memory leak" and found["ratio"] >= 1.5, found
    step = [400 * MB] * 7 + [590 * MB] * 7  # one night rose 1.48x, then flat: neither steady nor a leak
    assert tc.leak("score", "rss_peak_bytes", nights(14, NIGHT), step, COSTS) is None
    jumped = [300 * MB + i * MB for i in range(13)] + [600 * MB]  # a rise that is one night's jump
    assert tc.leak("score", "rss_peak_bytes", nights(14, NIGHT), jumped, COSTS) is None
    flat = [400 * MB + (i % 2) * 5 * MB for i in range(14)]
    assert tc.leak("score", "rss_peak_bytes", nights(14, NIGHT), flat, COSTS) is None
    slope, intercept = tc.theil_sen([0, 1, 2, 3, 4], [1, 3, 5, 100, 9])  # one wild night barely moves it
    assert (slope, intercept) == (2.0, 1.0)


@pytest.mark.pure
def test_judge_checks_tonights_successful_steps_against_their_own_history():
    history = {"train": past([10.0] * 14), "score": past([300.0 * MB + 18 * MB * i for i in range(13)], "rss_peak_bytes")}
    tonight = {"train": {"outcome": "success", "wall_seconds": 30.0, "rss_peak_bytes": None},
               "score": {"outcome": "success", "wall_seconds": 4.0, "rss_peak_bytes": 540.0 * MB},
               "validate": {"outcome": "failed", "wall_seconds": 99.0}}  # a failed step is cut short: not judged
    found = tc.judge(tonight, history, COSTS, NIGHT)
    assert [(f["task"], f["kind"]) for f in found] == [("score", "memory leak"), ("train", "slower")]
    assert tc.judge(tonight, history, dataclasses.replace(COSTS, slower_factor=4.0, bigger_factor=3.0), NIGHT) == []


# ------------------------------------------------------------------ the table


def _record(night: dt.date, run_id: str, tasks: dict, *, dry_run: bool = False) -> RunRecord:
    return RunRecord(logical_date=night, dag_run_id=run_id, rows_in=2000, validation_passed=True, drift_share=None,
                     retrain_reason=None, decision="skipped", champion_version=1, challenger_version=None,
                     champion_metric=None, challenger_metric=None, metric_name="roc_auc", rows_published=2000,
                     started_at=None, finished_at=dt.datetime.now(dt.timezone.utc), note=None,
                     details={"costs": {"tasks": tasks}}, dry_run=dry_run)


def _cost(wall: float, peak_mb: float, *, outcome: str = "success", try_number: int = 1, rows: int | None = 2000):
    return {"try_number": try_number, "outcome": outcome, "started_at": "2026-03-20T01:00:00+00:00",
            "wall_seconds": wall, "cpu_seconds": wall / 2, "rss_start_bytes": 100 * MB,
            "rss_peak_bytes": int(peak_mb * MB), "rows": rows, "rows_per_second": rows / wall if rows else None}


@pytest.fixture
def spec(churn_spec, pg_conn):
    from include.nightshift import warehouse

    warehouse.ensure_warehouse(pg_conn, churn_spec)
    with pg_conn.transaction(), pg_conn.cursor() as cur:
        cur.execute("TRUNCATE churn.task_costs")
    return churn_spec


@pytest.mark.postgres
def test_costs_are_written_read_back_and_a_night_is_judged_against_non_dry_nights(pg_conn, spec):
    for i, night in enumerate(nights(14)):
        tc.record_costs(pg_conn, spec, _record(night, f"run-{i}", {"train": _cost(10.0 + i % 2, 400)}))
    # a dry run and a failed try of the last night are stored, and kept out of the baseline
    tc.record_costs(pg_conn, spec, _record(nights(1)[0], "dry", {"train": _cost(99.0, 900)}, dry_run=True))
    tc.record_costs(pg_conn, spec, _record(nights(1)[0], "run-13", {"train": _cost(70.0, 900, outcome="failed",
                                                                                  try_number=2)}))
    rows = tc.read_costs(pg_conn, spec, nights(1)[0])
    assert [(r["dag_run_id"], r["try_number"], r["dry_run"], r["outcome"]) for r in rows] == [
        ("run-13", 1, False, "success"), ("dry", 1, True, "success"), ("run-13", 2, False, "failed")]
    assert rows[0]["rows_per_second"] == pytest.approx(2000 / 11.0) and rows[0]["started_at"].tzinfo is not None
    baseline = tc.history(pg_conn, spec, NIGHT, 14)["train"]
    assert len(baseline) == 14 and max(b["wall_seconds"] for b in baseline) == 11.0

    record = _record(NIGHT, "tonight", {"train": _cost(31.0, 420), "decide": _cost(0.2, 420, rows=None)})
    assert [f["kind"] for f in tc.judge_night(pg_conn, spec, record)] == ["slower"]
    assert record.details["costs"]["baseline_nights"] == {"train": 14}
    message, facts = tc.night_alert(spec, record)
    assert message == "churn 2026-03-20: train 3.0x slower (31.0 s vs median 10.5 s over 14 nights)"
    assert facts["table"] == "churn.task_costs"
    assert "cost alert: train 3.0x slower" in record.summary()
    assert tc.record_costs(pg_conn, spec, record) == 2
    tc.record_costs(pg_conn, spec, record)  # record_run retried: the same rows, rewritten
    assert [(r["task_id"], r["rows"]) for r in tc.read_costs(pg_conn, spec, NIGHT)] == [("decide", None),
                                                                                        ("train", 2000)]


@pytest.mark.postgres
def test_task_costs_columns_are_all_commented_and_a_bad_row_names_its_column(pg_conn, spec):
    with pg_conn.transaction(), pg_conn.cursor() as cur:
        cur.execute("SELECT a.attname FROM pg_attribute a WHERE a.attrelid = 'churn.task_costs'::regclass "
                    "AND a.attnum > 0 AND NOT a.attisdropped AND col_description(a.attrelid, a.attnum) IS NULL")
        assert cur.fetchall() == []
    import psycopg

    with pytest.raises(psycopg.errors.NotNullViolation, match="wall_seconds"):
        tc.record_costs(pg_conn, spec, _record(NIGHT, "r", {"train": {**_cost(1.0, 1), "wall_seconds": None}}))


# ------------------------------------------------------------------ the Model health page


@pytest.mark.pure
def test_the_health_page_charts_each_steps_wall_and_memory_and_lists_the_newest_night(churn_spec):
    from include.nightshift import health

    runs = [{"logical_date": night, "decision": "skipped", "champion_version": 1, "rows_published": 2000,
             "details": {"costs": {"tasks": {"train": _cost(10.0 + i, 400 + 10 * i), "decide": _cost(0.2, 390, rows=None)},
                                   "findings": [] if i < 5 else [{"task": "train", "kind": "slower",
                                                                  "measure": "wall_seconds", "tonight": 30.0,
                                                                  "median": 12.0, "ratio": 2.5, "nights": 5}]}}}
            for i, night in enumerate(nights(6))]
    runs.insert(0, {"logical_date": nights(7)[0], "decision": "skipped", "details": {}})  # before costs were kept
    fig = health.task_costs_chart(runs)
    wall = {line.get_gid(): line.get_ydata() for ax in fig.axes for line in ax.get_lines()}
    assert list(wall["wall-train"][1:]) == [10.0, 11.0, 12.0, 13.0, 14.0, 15.0] and str(wall["wall-train"][0]) == "nan"
    assert wall["rss-train"][-1] == pytest.approx(450.0)
    page = health.health_page_html(churn_spec, runs)
    assert 'id="task-costs"' in page and 'id="task-costs-tasks"' in page and "churn.task_costs" in page
    assert "Cost alert: train 2.5x slower (30.0 s vs median 12.0 s over 5 nights)" in page
    assert "<td>decide</td><td class=\"n\">0.20</td><td class=\"n\">0.10</td><td class=\"n\">390</td>" in page
