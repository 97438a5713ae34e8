"""Alerts: tell people when a night fails, when its data fails validation, when the inputs
drift, when a night has no model to score it (no_model: no champion after the gate), and when
the production model changes (promotion or rollback).

Two notifiers ship: `LogNotifier` (the default) writes one WARNING line to the task log, and
`WebhookNotifier` posts Slack-style JSON (`{"text": ...}` plus the event's fields) to the
URL held by an Airflow connection of type `slackwebhook` (apache-airflow-providers-slack:
the webhook token, or the whole URL, is the connection's password, so Airflow masks it in
logs). Which notifiers run is the Airflow Variable `nightshift_notifiers`, read at run time:
a comma-separated list of `log` and `webhook:<connection id>`, e.g.
`log,webhook:nightshift_alerts`.

Two ways in:
- operators call `notify(event, message, context, details)` for the pipeline's own events;
- DAGs put `TaskFailureNotifier()` in `default_args["on_failure_callback"]`.

An alert that cannot be delivered is logged and never fails the task: the night's outcome is
already in `pipeline_runs`; losing a message must not lose a run.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow.sdk import BaseNotifier

log = logging.getLogger(__name__)

NOTIFIERS_VARIABLE = "nightshift_notifiers"
DEFAULT_NOTIFIERS = "log"
EVENTS = ("task_failed", "validation_failed", "drift", "no_model", "promotion", "rollback",
          "external_change",  # external_change: the champion alias moved outside Nightshift (external.py)
          "dependency_change")  # the prediction path's libraries differ from the champion's training (environment.py)
EVENTS = (*EVENTS, "task_costs")  # a step slower or bigger than its recent nights (task_costs.py)
TEXT_LIMIT = 500  # characters of the one-line text; the full error goes in details


class NotifierSettingError(ValueError):
    """The `nightshift_notifiers` Variable names a notifier that does not exist."""


@dataclass(frozen=True)
class Alert:
    """One event of one run, in the shape every notifier sends."""

    event: str
    message: str
    dag_id: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """One line a person reads first: what happened, then where."""
        where = ", ".join(f"{k} {v}" for k, v in (("dag", self.dag_id), ("run", self.run_id), ("task", self.task_id)) if v)
        return _one_line(f"nightshift {self.event}: {self.message}" + (f" ({where})" if where else ""))

    def payload(self) -> dict[str, Any]:
        """Slack-style JSON: Slack shows `text`; other receivers can read the fields."""
        return {"text": self.text, "event": self.event, "dag_id": self.dag_id, "run_id": self.run_id,
                "task_id": self.task_id, "details": self.details}


def _one_line(text: str, limit: int = TEXT_LIMIT) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _json_safe(details: Mapping[str, Any] | None) -> dict[str, Any]:
    """Dates, numpy numbers and the like become strings now, not a failed post later."""
    return json.loads(json.dumps(dict(details or {}), default=str))


def alert_from_context(event: str, message: str, context: Mapping[str, Any],
                       details: Mapping[str, Any] | None = None) -> Alert:
    """An Alert for a task (or DAG) context: the ids come from the task instance when there is one."""
    if event not in EVENTS:
        raise ValueError(f"unknown alert event {event!r}; expected one of {', '.join(EVENTS)}")
    ti = context.get("ti") or context.get("task_instance")
    dag_id = getattr(ti, "dag_id", None) or getattr(context.get("dag"), "dag_id", None)
    run_id = getattr(ti, "run_id", None) or context.get("run_id") or getattr(context.get("dag_run"), "run_id", None)
    task_id = getattr(ti, "task_id", None) or getattr(context.get("task"), "task_id", None)
    return Alert(event, message, dag_id, run_id, task_id, _json_safe(details))


def failure_alert(context: Mapping[str, Any]) -> Alert:
    """The `task_failed` alert for a failure callback's context (it carries `exception`)."""
    error = context.get("exception")
    ti = context.get("ti") or context.get("task_instance")
    details: dict[str, Any] = {"try_number": getattr(ti, "try_number", None)}
    if error is not None:
        details |= {"error_type": type(error).__name__ if isinstance(error, BaseException) else None,
                    "error": str(error)}
    log_url = getattr(ti, "log_url", None)
    if log_url:
        details["log_url"] = log_url
    summary = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else str(error or "no error given")
    return alert_from_context("task_failed", summary, context, details)


class NightshiftNotifier(BaseNotifier):
    """A notifier that sends Alerts. Used as a callback, it reports the task's failure."""

    def send(self, alert: Alert) -> None:
        raise NotImplementedError

    def notify(self, context: Any) -> None:
        self.send(failure_alert(context))


class LogNotifier(NightshiftNotifier):
    """The default: one WARNING line in the task log, always delivered."""

    def send(self, alert: Alert) -> None:
        log.warning("%s | details %s", alert.text, json.dumps(alert.details, sort_keys=True))


class WebhookNotifier(NightshiftNotifier):
    """Posts the alert's Slack-style JSON to the webhook of a `slackwebhook` Airflow connection.

    The URL comes from the connection (password: the token after `host`, or a whole URL),
    never from code. Delivery is tried once with a short timeout; any failure (refused,
    timeout, non-200, missing connection) is logged as a warning and swallowed.

    :param conn_id: the Airflow connection id.
    :param timeout: seconds to wait for the receiver.
    """

    def __init__(self, conn_id: str, *, timeout: int = 5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.conn_id = conn_id
        self.timeout = timeout

    def send(self, alert: Alert) -> None:
        from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook

        try:
            # No retry handlers: slack_sdk logs the full URL when it retries, and one try is enough.
            hook = SlackWebhookHook(slack_webhook_conn_id=self.conn_id, timeout=self.timeout, retry_handlers=[])
            hook.send_dict(alert.payload())
        except Exception as err:  # an undelivered alert must never fail the task
            log.warning("alert %s not delivered to webhook connection %r: %s: %s",
                        alert.event, self.conn_id, type(err).__name__, _one_line(str(err), 300))


def notifiers_from_setting(value: str) -> list[NightshiftNotifier]:
    """Parse the Variable's value: `log` and `webhook:<connection id>`, comma-separated."""
    notifiers: list[NightshiftNotifier] = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        name, _, arg = item.partition(":")
        name, arg = name.strip(), arg.strip()
        if name == "log" and not arg:
            notifiers.append(LogNotifier())
        elif name == "webhook" and arg:
            notifiers.append(WebhookNotifier(arg))
        else:
            raise NotifierSettingError(
                f"Airflow Variable {NOTIFIERS_VARIABLE!r}: unknown notifier {item!r} in {value!r}; "
                f"use a comma-separated list of 'log' and 'webhook:<connection id>'")
    return notifiers


def configured_notifiers() -> list[NightshiftNotifier]:
    """The notifiers the Variable asks for (read at run time; `log` when it is unset)."""
    from nightshift_airflow import runtime

    return notifiers_from_setting(runtime.variable(NOTIFIERS_VARIABLE, default=DEFAULT_NOTIFIERS))


def send(alert: Alert) -> None:
    for notifier in configured_notifiers():
        notifier.send(alert)


def notify(event: str, message: str, context: Mapping[str, Any], details: Mapping[str, Any] | None = None) -> None:
    """Send one pipeline event through every configured notifier.

    :param event: one of EVENTS: task_failed, validation_failed, drift, no_model, promotion, rollback.
    :param message: one human sentence (it becomes the first part of the text line).
    :param context: the task's Airflow context (for the dag, run and task ids).
    :param details: small JSON-able facts (versions, metrics, columns); sent as `details`.
    """
    send(alert_from_context(event, message, context, details))


class TaskFailureNotifier(BaseNotifier):
    """`on_failure_callback` for default_args: reports the failure through the configured notifiers.

    The Variable is read when a task fails, not when the DAG file is parsed.
    """

    def notify(self, context: Any) -> None:
        send(failure_alert(context))
