"""Where a job that cannot finish goes: the dead-letter store plugs in here.

The store sits above the core (in `dlq`), so it registers what to do with a failed step, and what
to do when a job that had failed completes (resolve its rows) or ends compensated. A worker without
a store refuses to hand a job off rather than drop it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipeline.context import JobContext
from pipeline.failures import FailureClass
from pipeline.jobs.pipelines import destination_of
from settings import ConfigError, get_settings


@dataclass(frozen=True)
class FailedStep:
    """The step that failed for good, as the dead-letter store keeps it."""

    job: JobContext
    stage: str
    scope: str  # the stage, or "<stage>.<branch>"
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    worker_host: str | None = None

    @property
    def destination(self) -> str | None:
        return destination_of(self.scope)


DeadLetterSink = Callable[[FailedStep, FailureClass, BaseException, int], None]
_sinks: list[DeadLetterSink] = []
_on_recovered: list[Callable[[JobContext], None]] = []
_on_compensated: list[Callable[[JobContext, list[str]], None]] = []


def dead_letter_sink(sink: DeadLetterSink) -> DeadLetterSink:
    """Register where failed steps go (the dead-letter store does this when imported)."""
    if sink not in _sinks:
        _sinks.append(sink)
    return sink


def on_recovered(callback: Callable[[JobContext], None]) -> Callable[[JobContext], None]:
    """Register a callback run when a job that had a step dead-lettered completes (e.g. after a replay).

    It may run more than once for a job (a redelivered last step, the reconciler): make it idempotent.
    """
    if callback not in _on_recovered:
        _on_recovered.append(callback)
    return callback


def on_compensated(callback: Callable[[JobContext, list[str]], None]) -> Callable[[JobContext, list[str]], None]:
    """Register a callback run when a replayed job (its compensation had been dead-lettered) ends
    compensated, given the compensations' scopes. Like `on_recovered`, make it idempotent."""
    if callback not in _on_compensated:
        _on_compensated.append(callback)
    return callback


def load_dead_letter_store() -> None:
    """Import the module VETRO_DEAD_LETTER_STORE names, which registers its sink; raise if none did."""
    if _sinks:
        return
    module = get_settings().dead_letter_store
    try:
        importlib.import_module(module)
    except ImportError as error:
        raise ConfigError(f"VETRO_DEAD_LETTER_STORE: cannot import {module!r} ({error})") from None
    if not _sinks:
        raise ConfigError(f"VETRO_DEAD_LETTER_STORE: {module!r} registered no dead-letter sink")


def store_failed(step: FailedStep, failure_class: FailureClass, exc: BaseException, attempts: int) -> None:
    """Hand the failed step to every registered sink (raises if one cannot store it)."""
    load_dead_letter_store()
    for sink in _sinks:
        sink(step, failure_class, exc, attempts)


def recovered(job: JobContext) -> None:
    for callback in _on_recovered:
        callback(job)


def compensations_replayed(job: JobContext, plan: list[str]) -> None:
    for callback in _on_compensated:
        callback(job, plan)
