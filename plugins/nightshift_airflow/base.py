"""The base of every Nightshift step operator: one dataset spec, one run date, typed upstream outputs.

Kept apart from the steps (operators.py) so the steps stay adapters and the rollback steps share it.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from contextlib import closing
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseOperator

from nightshift_airflow import runtime
from nightshift_airflow.notifiers import notify

if TYPE_CHECKING:
    from include.nightshift.spec import DatasetSpec

log = logging.getLogger(__name__)


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

    def received(self) -> dict[str, Any]:
        """The upstream steps' outputs, typed (None for a step that did not run)."""
        from include.nightshift.steps import read_outputs

        return read_outputs({name: getattr(self, name) for name in self.inputs})

    @staticmethod
    def param(context: Any, name: str, default: Any = None) -> Any:
        return (context.get("params") or {}).get(name, default)

    def connect(self, conn_id: str | None = None) -> closing:
        """`with self.connect() as conn`: the spec's warehouse (or `conn_id`), closed at the end."""
        return closing(runtime.postgres_connection(conn_id or self.spec.warehouse.connection_id))
