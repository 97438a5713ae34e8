"""What each step costs, watched like any other signal: wall and CPU seconds, peak memory, rows.

The operators' base class (plugins/nightshift_airflow/base.py) starts a `Meter` before a step's
`execute` and stops it after, whatever happened (a failed step's cost is recorded too), and pushes
the measures to XCom under COST_KEY. record_run gathers them, `judge_night` compares tonight with
the step's own history (``<schema>.task_costs``, non-dry nights) and puts tonight's measures and
any finding in the run record (``pipeline_runs.details.costs``); `record_costs` writes the rows.

Peak memory is measured inside the step, not as the process's lifetime peak: the local demo
(``dag.test``) runs every task in one process, so ``ru_maxrss`` would carry the biggest step's
peak into every later one. A daemon thread samples the resident set every SAMPLE_SECONDS; on
Linux the kernel's own high-water mark (VmHWM, reset through /proc/self/clear_refs when the step
starts) also catches a spike between two samples. Child processes are not counted.

Two rules, both per step and measure (wall seconds: slower; peak memory: bigger), with the spec's
``costs`` factors:
- a jump: tonight above factor x the median of the step's last history_nights nights;
- a slow leak: over the last history_nights nights (tonight included) the Theil-Sen line rises by
  the factor, most nights rose, and no single night jumped by the factor (that is a jump, alerted
  on its own night).
Measuring never fails a step: every error here is logged by the caller and the step goes on.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import statistics
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from psycopg import Connection

    from include.nightshift.run_record import RunRecord
    from include.nightshift.spec import Costs, DatasetSpec

log = logging.getLogger(__name__)

COST_KEY = "cost"  # XCom key of a step's measures (base.py pushes, record_run pulls)
SAMPLE_SECONDS = 0.1  # how often the sampler reads the resident set
MB = 1024 * 1024
STEADY_SHARE = 0.5  # a leak: at least this share of the night-to-night steps rose
# measure -> (what a jump is called, what a leak is called, spec factor, spec floor, floor unit)
RULES = {"wall_seconds": ("slower", "slow-down", "slower_factor", "min_seconds", 1.0),
         "rss_peak_bytes": ("bigger", "memory leak", "bigger_factor", "min_megabytes", MB)}
STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


# ------------------------------------------------------------------ measuring one step


class Meter:
    """One step's measures, from its start to `stop`: wall and CPU seconds, resident memory at the start
    and at its peak (sampled, and the kernel's high-water mark where it can be reset)."""

    def __init__(self, interval: float = SAMPLE_SECONDS) -> None:
        import psutil

        self._process = psutil.Process()
        self.started_at = dt.datetime.now(dt.timezone.utc)
        self._wall = time.perf_counter()
        self._cpu = _cpu_seconds(self._process)
        self.rss_start = self._process.memory_info().rss
        self._peak = self.rss_start
        self._high_water = _reset_high_water()
        self._done = threading.Event()
        self._sampler = threading.Thread(target=self._sample, args=(interval,), name="nightshift-rss", daemon=True)
        self._sampler.start()

    def _sample(self, interval: float) -> None:
        while not self._done.wait(interval):
            try:
                self._peak = max(self._peak, self._process.memory_info().rss)
            except Exception:  # noqa: BLE001 - a sampler that cannot read stops; the step goes on
                return

    def stop(self, output: Any = None, outcome: str = "success", try_number: int | None = None) -> dict[str, Any]:
        """The measures (plain JSON, for XCom): ``rows`` from the step's output (rows_processed)."""
        self._done.set()
        self._sampler.join(timeout=1.0)
        wall = time.perf_counter() - self._wall
        peak = max(self._peak, self._process.memory_info().rss, _high_water() if self._high_water else 0)
        rows = rows_processed(output)
        return {"try_number": try_number, "outcome": outcome, "started_at": self.started_at.isoformat(),
                "wall_seconds": round(wall, 4), "cpu_seconds": round(_cpu_seconds(self._process) - self._cpu, 4),
                "rss_start_bytes": int(self.rss_start), "rss_peak_bytes": int(peak), "rows": rows,
                "rows_per_second": round(rows / wall, 2) if rows is not None and wall > 0 else None}


def start() -> Meter | None:
    """A running Meter, or None when this process cannot be measured (logged; the step runs unmeasured)."""
    try:
        return Meter()
    except Exception as exc:  # noqa: BLE001 - measuring never fails a step
        log.warning("the step's cost is not measured: %s", exc)
        return None


def _cpu_seconds(process: Any) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def _reset_high_water() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux >= 4.0); False where that is not possible."""
    try:
        CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def _high_water() -> int:
    """VmHWM of /proc/self/status in bytes (0 when unreadable)."""
    try:
        line = next(x for x in STATUS.read_text().splitlines() if x.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024
    except (OSError, StopIteration, ValueError, IndexError):
        return 0


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def rows_processed(output: Any) -> int | None:
    """Rows a step processed, from its typed output as XCom carries it (steps.py): ``rows`` (validate,
    monitor, score, publish), train + holdout rows (train), the night's snapshot rows (snapshot), the
    current window (drift: details.n_current); None for a step that processes no rows (decide, evaluate)."""
    if not isinstance(output, Mapping):
        return None
    if _count(output.get("rows")) is not None:
        return output["rows"]
    if _count(output.get("train_rows")) is not None:
        return output["train_rows"] + (_count(output.get("holdout_rows")) or 0)
    current = output.get("current")
    if isinstance(current, Mapping) and _count(current.get("rows")) is not None:
        return current["rows"]
    details = output.get("details")
    return _count(details.get("n_current")) if isinstance(details, Mapping) else None


def describe(cost: Mapping[str, Any]) -> str:
    """One line for the task log."""
    rows = "" if cost.get("rows") is None else f", {cost['rows']} rows ({cost.get('rows_per_second')}/s)"
    return (f"{cost['wall_seconds']:.2f} s wall, {cost['cpu_seconds']:.2f} s CPU, peak RSS "
            f"{cost['rss_peak_bytes'] / MB:.0f} MB (start {cost['rss_start_bytes'] / MB:.0f} MB){rows}")


# ------------------------------------------------------------------ the rules (pure)


def theil_sen(x: list[float], y: list[float]) -> tuple[float, float]:
    """Slope and intercept of the Theil-Sen line (the median of the pairwise slopes): one odd night moves it little."""
    slopes = [(y[j] - y[i]) / (x[j] - x[i]) for i, j in itertools.combinations(range(len(x)), 2) if x[j] != x[i]]
    slope = statistics.median(slopes) if slopes else 0.0
    return slope, statistics.median(b - slope * a for a, b in zip(x, y))


def jump(task: str, measure: str, tonight: float, before: list[float], costs: Costs) -> dict[str, Any] | None:
    """Tonight above factor x the median of the nights before (and above it by the floor); None if not, or
    with fewer than min_nights nights before."""
    kind, _, factor_name, floor_name, unit = RULES[measure]
    if len(before) < costs.min_nights:
        return None
    median, factor = statistics.median(before), getattr(costs, factor_name)
    if median <= 0 or tonight <= factor * median or tonight - median < getattr(costs, floor_name) * unit:
        return None
    return {"task": task, "kind": kind, "measure": measure, "tonight": tonight, "median": median,
            "ratio": round(tonight / median, 3), "factor": factor, "nights": len(before)}


def leak(task: str, measure: str, nights: list[dt.date], values: list[float], costs: Costs) -> dict[str, Any] | None:
    """A steady rise over the nights given (tonight last): the Theil-Sen line ends at factor x where it
    starts (and above it by the floor), at least STEADY_SHARE of the steps rose, and no single step rose by
    the factor. None if not, or with fewer than min_nights nights."""
    _, kind, factor_name, floor_name, unit = RULES[measure]
    if len(values) < costs.min_nights:
        return None
    factor = getattr(costs, factor_name)
    x = [float((n - nights[0]).days) for n in nights]
    slope, intercept = theil_sen(x, values)
    start, end = intercept, intercept + slope * x[-1]
    steps = list(zip(values, values[1:]))
    steady = sum(b > a for a, b in steps) >= STEADY_SHARE * len(steps)
    jumped = any(a > 0 and b > factor * a for a, b in steps)
    if start <= 0 or end < factor * start or end - start < getattr(costs, floor_name) * unit or not steady or jumped:
        return None
    return {"task": task, "kind": kind, "measure": measure, "tonight": values[-1], "start": round(start, 4),
            "end": round(end, 4), "ratio": round(end / start, 3), "factor": factor, "nights": len(values)}


def judge(tonight: Mapping[str, Mapping[str, Any]], history: Mapping[str, list[Mapping[str, Any]]],
          costs: Costs, night: dt.date) -> list[dict[str, Any]]:
    """Every finding of tonight's successful steps against their history (oldest first, nights before
    tonight): per measure, a jump, else a leak."""
    return [finding for task, cost in sorted(tonight.items()) if cost.get("outcome") == "success"
            for measure in RULES if cost.get(measure) is not None
            for finding in [_judge_measure(task, measure, float(cost[measure]), history.get(task, []), costs, night)]
            if finding]


def _judge_measure(task: str, measure: str, tonight: float, past: list[Mapping[str, Any]], costs: Costs,
                   night: dt.date) -> dict[str, Any] | None:
    """One step's one measure: a jump over its last history_nights nights, else a leak over them with tonight."""
    known = [p for p in past if p.get(measure) is not None][-costs.history_nights:]
    window = known[-(costs.history_nights - 1):]
    return jump(task, measure, tonight, [float(p[measure]) for p in known], costs) or leak(
        task, measure, [p["night"] for p in window] + [night], [float(p[measure]) for p in window] + [tonight], costs)


def _amount(measure: str, value: float) -> str:
    return f"{value:.1f} s" if measure == "wall_seconds" else f"{value / MB:.0f} MB"


def finding_words(f: Mapping[str, Any]) -> str:
    """One finding in a short clause: "train 2.4x slower (120.0 s vs median 50.0 s over 14 nights)"."""
    what = "wall time" if f["measure"] == "wall_seconds" else "peak memory"
    if "median" in f:
        return (f"{f['task']} {f['ratio']:.1f}x {f['kind']} ({_amount(f['measure'], f['tonight'])} vs median "
                f"{_amount(f['measure'], f['median'])} over {f['nights']} nights)")
    return (f"{f['task']} {what} rose {f['ratio']:.1f}x over {f['nights']} nights "
            f"({f['kind']}: {_amount(f['measure'], f['start'])} to {_amount(f['measure'], f['end'])})")


def costs_alert(spec: DatasetSpec, night: dt.date, findings: list[dict[str, Any]]) -> tuple[str, dict] | None:
    """The alert of tonight's findings (None when there is none): one sentence, and the findings."""
    if not findings:
        return None
    return (f"{spec.name} {night}: " + "; ".join(finding_words(f) for f in findings),
            {"findings": findings, "table": f"{spec.warehouse.schema}.task_costs"})


# ------------------------------------------------------------------ the warehouse


def record_costs(conn: Connection, spec: DatasetSpec, record: RunRecord) -> int:
    """Write the run's task_costs rows from its record (details.costs.tasks; a rerun of a try replaces its
    row); the number of rows written."""
    from include.nightshift import warehouse

    tasks = ((record.details or {}).get("costs") or {}).get("tasks") or {}
    written = 0
    for task, cost in sorted(tasks.items()):
        row = {"night": record.logical_date, "dag_run_id": record.dag_run_id, "task_id": task,
               "dry_run": bool(record.dry_run), **{k: v for k, v in cost.items() if k in warehouse.TASK_COST_COLUMNS}}
        row["try_number"] = row.get("try_number") or 1
        written += warehouse.insert_row(conn, warehouse.table(spec, warehouse.TASK_COSTS), row,
                                        warehouse.TASK_COST_KEY, update=True)
    return written


def read_costs(conn: Connection, spec: DatasetSpec, night: dt.date | None = None) -> list[dict[str, Any]]:
    """task_costs rows (of one night, if given) by night, run and task; [] before the table exists."""
    from psycopg import sql
    from psycopg.rows import dict_row

    from include.nightshift import warehouse

    if not warehouse.table_exists(conn, spec, warehouse.TASK_COSTS):
        return []
    where = sql.SQL("WHERE night = %s") if night else sql.SQL("")
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql.SQL("SELECT * FROM {} {} ORDER BY night, recorded_at, dag_run_id, task_id, try_number").format(
            warehouse.table(spec, warehouse.TASK_COSTS), where), (night,) if night else ())
        return cur.fetchall()


def history(conn: Connection, spec: DatasetSpec, before: dt.date, nights: int) -> dict[str, list[dict[str, Any]]]:
    """Each step's baseline: its last `nights` recorded nights before `before`, oldest first, one row a night
    (the night's latest successful non-dry try): {task: [{night, wall_seconds, rss_peak_bytes}]}."""
    from psycopg import sql
    from psycopg.rows import dict_row

    from include.nightshift import warehouse

    if not warehouse.table_exists(conn, spec, warehouse.TASK_COSTS):
        return {}
    query = sql.SQL(
        "SELECT task_id, night, wall_seconds, rss_peak_bytes FROM ("
        " SELECT *, row_number() OVER (PARTITION BY task_id ORDER BY night DESC) AS k FROM ("
        "  SELECT DISTINCT ON (task_id, night) task_id, night, wall_seconds, rss_peak_bytes FROM {}"
        "  WHERE NOT dry_run AND outcome = 'success' AND night < %s"
        "  ORDER BY task_id, night, recorded_at DESC, try_number DESC) AS latest) AS ranked "
        "WHERE k <= %s ORDER BY task_id, night").format(warehouse.table(spec, warehouse.TASK_COSTS))
    found: dict[str, list[dict[str, Any]]] = {}
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, (before, nights))
        for row in cur.fetchall():
            found.setdefault(row.pop("task_id"), []).append(row)
    return found


def judge_night(conn: Connection, spec: DatasetSpec, record: RunRecord) -> list[dict[str, Any]]:
    """Judge tonight's measures (record.details["costs"]["tasks"], put there by record_run) against each step's
    history, and keep the findings beside them in the record (details.costs: run_attempts and pipeline_runs
    keep them, the summary line says the first); the findings. A history that cannot be read leaves the
    night unjudged (logged), never failed."""
    evidence = record.details.setdefault("costs", {})
    measured = evidence.setdefault("tasks", {})
    try:
        past = history(conn, spec, record.logical_date, spec.costs.history_nights)
    except Exception as exc:  # noqa: BLE001 - the night is recorded either way
        log.warning("the task_costs history of %s could not be read: %s", spec.name, exc)
        past = {}
    evidence["findings"] = judge(measured, past, spec.costs, record.logical_date)
    evidence["baseline_nights"] = {t: len(rows) for t, rows in sorted(past.items())}
    for finding in evidence["findings"]:
        log.warning("cost finding: %s", finding_words(finding))
    return evidence["findings"]


def night_alert(spec: DatasetSpec, record: RunRecord) -> tuple[str, dict] | None:
    """The alert of the night's cost findings (judge_night put them in the record); None without one."""
    return costs_alert(spec, record.logical_date, _costs(record.details).get("findings") or [])


def _costs(details: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return ((details or {}).get("costs")) or {}


def findings_clause(details: Mapping[str, Any] | None) -> str:
    """The run summary's clause for the night's cost findings ("" when there is none)."""
    found = _costs(details).get("findings") or []
    if not found:
        return ""
    more = f" (+{len(found) - 1} more)" if len(found) > 1 else ""
    return f"cost alert: {finding_words(found[0])}{more}"


def series(runs: list[Mapping[str, Any]], measure: str) -> dict[str, list[float | None]]:
    """Each step's `measure` per run (the health page's nights, in order; None where it was not recorded)."""
    nights = [_costs(r.get("details")).get("tasks") or {} for r in runs]
    tasks = sorted({t for tasks in nights for t in tasks})
    return {t: [(tasks.get(t) or {}).get(measure) for tasks in nights] for t in tasks}
