"""The base of every Nightshift step operator: one dataset spec, one run date, typed upstream outputs.

Kept apart from the steps (operators.py) so the steps stay adapters and the rollback steps share it.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
from collections.abc import Callable, Sequence
from contextlib import closing
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import (AirflowFailException, AirflowNotFoundException, AirflowRescheduleException,
                                    AirflowSkipException, DagRunTriggerException, DownstreamTasksSkipped)

from include.nightshift import quiet, task_costs
from include.nightshift.errors import Diagnosis, classify, describe
from nightshift_airflow import runtime
from nightshift_airflow.notifiers import NotifierSettingError, notify

if TYPE_CHECKING:
    from include.nightshift.spec import DatasetSpec

log = logging.getLogger(__name__)

ERROR_KEY = "error"  # XCom key: how a step failed ({"message", "permanent", "try_number"}), for record_run
# Airflow's ways for a step to say "skip" or "come back later": not failures, passed through untouched.
CONTROL = (AirflowSkipException, AirflowRescheduleException, DownstreamTasksSkipped, DagRunTriggerException)
# Permanent errors of this layer, which the core's classifier (include/nightshift/errors.py) cannot import.
PERMANENT = {runtime.SettingMissing: "a required Airflow Variable or setting is missing",
             NotifierSettingError: "an alert setting is invalid",
             AirflowNotFoundException: "an Airflow connection or variable the spec names is not defined"}
STEP_FAILED = Diagnosis(True, "the step failed the run", "AirflowFailException")  # a step's own refusal


def reporting(execute: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a step's `execute`: a failure is pushed to XCom (ERROR_KEY) so that record_run names the root
    cause, and a permanent one (errors.classify) fails the task at once, without the retries and their
    back-off, as AirflowFailException chained to the original. Transient and unknown errors are re-raised
    unchanged (retried as the DAG says); skips, deferrals and reschedules pass through. Whatever happens, the
    step's cost (wall and CPU seconds, peak memory, rows: task_costs.py) is pushed under task_costs.COST_KEY."""
    if getattr(execute, "nightshift_reporting", False):
        return execute

    @functools.wraps(execute)
    def run(self: NightshiftOperator, *args: Any, **kwargs: Any) -> Any:
        context = kwargs.get("context", args[0] if args else None)
        quiet.install()  # library noise out of the task log (include/nightshift/quiet.py)
        meter, outcome, result = task_costs.start(), "failed", None  # the step's cost, pushed whatever happens
        try:
            result = execute(self, *args, **kwargs)
            refuse_non_finite(result, type(self).__name__)
            outcome = "success"
            return result
        except CONTROL as exc:
            outcome = "skipped" if isinstance(exc, AirflowSkipException) else "success"  # a branch, a deferral
            raise
        except AirflowFailException as exc:  # the step's own verdict (a failed check, a refusal): already final
            if not getattr(exc, "nightshift_reported", False):
                _report(context, _step_verdict(exc), True)
            raise
        except Exception as exc:
            diagnosis = classify(exc, PERMANENT)
            text = describe(exc, diagnosis)
            _report(context, text, diagnosis.permanent)
            if not diagnosis.permanent:
                raise
            log.error("permanent error, failing without retries: %s", text)
            final = AirflowFailException(text)
            final.nightshift_reported = True  # an outer wrapper (super().execute) does not report it again
            raise final from exc
        finally:
            _push_cost(context, meter, result, outcome)

    run.nightshift_reporting = True
    return run


def refuse_non_finite(value: Any, where: str) -> None:
    """A NaN or infinity in a step's output would fail Airflow's XCom push after the step, outside this
    wrapper, with a message naming no key ("Out of range float values are not JSON compliant"): name it
    here, where the failure is reported."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where} is {value}, which XCom (JSON) cannot store: a step must record an "
                         "unmeasured or unbounded number as null")
    if isinstance(value, dict):
        for key, item in value.items():
            refuse_non_finite(item, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            refuse_non_finite(item, f"{where}[{i}]")


def _step_verdict(exc: AirflowFailException) -> str:
    """A step's own AirflowFailException, named by the error it was raised from (NotEnoughRows: ...)."""
    text = describe(exc, STEP_FAILED, named=False)
    return f"{type(exc.__cause__).__name__}: {text}" if exc.__cause__ is not None else text


def _report(context: Any, message: str, permanent: bool) -> None:
    """Push how the step failed; a failure to push is logged, never raised over the step's own error."""
    try:
        ti = context["ti"]
        ti.xcom_push(key=ERROR_KEY, value={"message": message, "permanent": permanent,
                                           "try_number": getattr(ti, "try_number", None)})
    except Exception as exc:  # noqa: BLE001 - the original error is what must surface
        log.warning("could not push the step's error to XCom (%s): %s", exc, message)


def _push_cost(context: Any, meter: task_costs.Meter | None, result: Any, outcome: str) -> None:
    """Push the step's measures (task_costs.COST_KEY) for record_run; measuring never fails a step."""
    if meter is None:
        return
    try:
        ti = context["ti"]
        cost = meter.stop(result, outcome, try_number=getattr(ti, "try_number", None))
        ti.xcom_push(key=task_costs.COST_KEY, value=cost)
        log.info("cost of the step: %s", task_costs.describe(cost))
    except Exception as exc:  # noqa: BLE001 - the step's own result or error is what must surface
        log.warning("could not measure or push the step's cost (%s)", exc)


def _pull(context: Any, task_key: str, key: str) -> Any:
    """XCom `key` of a task as runtime.task_states names it: a mapped task's instance is "<task_id>_<map_index>"."""
    task_id, map_index = task_key, None
    dag = context.get("dag")
    base, _, index = task_key.rpartition("_")
    if dag is not None and not dag.has_task(task_key) and index.isdigit() and dag.has_task(base):
        task_id, map_index = base, int(index)
    return context["ti"].xcom_pull(task_ids=task_id, key=key,
                                   **({"map_indexes": map_index} if map_index is not None else {}))


def pushed_costs(context: Any, task_ids: Sequence[str]) -> dict[str, dict]:
    """What each of `task_ids` pushed under task_costs.COST_KEY (tasks that pushed nothing are left out)."""
    found: dict[str, dict] = {}
    for task_id in task_ids:
        try:
            value = _pull(context, task_id, task_costs.COST_KEY)
        except Exception as exc:  # noqa: BLE001 - the record is still written, without this task's cost
            log.warning("could not read the cost of %s (%s)", task_id, exc)
            continue
        if isinstance(value, dict):
            found[task_id] = value
    return found


def pushed_errors(context: Any, task_ids: Sequence[str]) -> dict[str, dict]:
    """What each of `task_ids` pushed under ERROR_KEY when it failed (tasks that pushed nothing are left out)."""
    found: dict[str, dict] = {}
    for task_id in task_ids:
        try:
            value = _pull(context, task_id, ERROR_KEY)
        except Exception as exc:  # noqa: BLE001 - the record is still written, without this task's message
            log.warning("could not read the error of %s (%s)", task_id, exc)
            continue
        if value:
            found[task_id] = value if isinstance(value, dict) else {"message": str(value)}
    return found


def alert(context: Any, event: str, found: tuple[str, dict] | None) -> None:
    """Send a core-made alert (a sentence and its facts) through the configured notifiers; None sends nothing."""
    if found is not None:
        notify(event, found[0], context, details=found[1])


class NightshiftOperator(BaseOperator):
    """Base for the steps: every step is about one dataset spec and one run date.

    :param spec_path: path of the dataset spec YAML (templated).
    Each name in a subclass's `inputs` is an argument too: an upstream step's output (an XComArg
    in the DAG file, which also makes that step upstream); `received()` gives them typed.
    """

    inputs: ClassVar[tuple[str, ...]] = ()
    template_fields: Sequence[str] = ("spec_path",)
    ui_color = "#e8f0fe"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.template_fields = ("spec_path", *cls.inputs)  # Airflow resolves XComArgs in template fields
        if "execute" in cls.__dict__:  # every step fails the same way: named, and at once when permanent
            cls.execute = reporting(cls.__dict__["execute"])

    def __init__(self, *, spec_path: str, **kwargs: Any) -> None:
        kwargs.setdefault("doc_md", inspect.cleandoc(type(self).__doc__ or ""))  # the task's docs in the UI
        given = {name: kwargs.pop(name, None) for name in self.inputs}
        super().__init__(**kwargs)
        self.spec_path = spec_path
        for name, value in given.items():
            setattr(self, name, value)

    @cached_property
    def spec(self) -> DatasetSpec:
        from include.nightshift.spec import load_spec

        return load_spec(self.spec_path)

    def render_template_fields(self, context: Any, jinja_env: Any = None) -> None:
        """Airflow resolves the inputs (XComArgs) here; those of steps that did not succeed are read
        first without its "XCom not found" ERROR line (runtime.unsettled_outputs)."""
        every_upstream_succeeded = self.trigger_rule == "all_success"  # inputs are upstream: nothing to read
        settled = {} if every_upstream_succeeded else runtime.unsettled_outputs(
            context, {name: getattr(self, name) for name in self.inputs})
        for name in settled:
            setattr(self, name, None)  # rendered as nothing, then given the value read
        super().render_template_fields(context, jinja_env)
        for name, value in settled.items():
            setattr(self, name, value)

    def received(self) -> dict[str, Any]:
        """The upstream steps' outputs, typed (None for a step that did not run)."""
        from include.nightshift.steps import read_outputs

        return read_outputs({name: getattr(self, name) for name in self.inputs})

    @staticmethod
    def param(context: Any, name: str, default: Any = None) -> Any:
        return (context.get("params") or {}).get(name, default)

    def refuse_unknown_conf(self, context: Any) -> None:
        """Called by the first step of a DAG before it reads anything: a conf key that no parameter of
        the DAG declares fails the run, naming it (history.refuse_unknown_conf)."""
        from include.nightshift.history import refuse_unknown_conf

        refuse_unknown_conf(getattr(context.get("dag_run"), "conf", None), self.dag.params.keys())

    def connect(self, conn_id: str | None = None) -> closing:
        """`with self.connect() as conn`: the spec's warehouse (or `conn_id`), closed at the end."""
        return closing(runtime.postgres_connection(conn_id or self.spec.warehouse.connection_id))
