"""How a job ends: completed, or handed off to the dead-letter store with everything needed to replay it.

The dead-letter store sits above the core (in `dlq`), so it plugs in here: it registers what
to do with a failed step, and what to do when a job that had failed completes (resolve its rows).
A worker without a store refuses to hand a job off rather than drop it.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipeline import errors, ledger, metrics
from pipeline.context import JobContext
from pipeline.failures import FailureClass
from pipeline.pipelines import destination_of
from settings import ConfigError, get_settings

log = logging.getLogger("vetro.outcomes")


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


def hand_off(
    step: FailedStep,
    failure_class: FailureClass,
    exc: BaseException,
    attempts: int,
    compensations: list[str],
    errbacks: bool = False,
) -> None:
    """Dead-letter the step and mark the job failed (or compensating, with `compensations` to run; still
    watched while the step's `errbacks` run).

    Raises if the step could not be stored: the caller must then keep the message (or the job
    stays in the reconciler's due set) rather than lose the job.
    """
    error = f"{type(exc).__name__}: {exc}"
    load_dead_letter_store()
    for sink in _sinks:
        sink(step, failure_class, exc, attempts)
    ledger.mark_failed(step.job, step.scope, failure_class, exc, compensations, errbacks)
    # One line per job that failed for good: an expected failure (bad input, a rule said no, a partner
    # that kept failing) is a warning; a technical one (a bug of ours) an error with its traceback.
    technical = failure_class == FailureClass.TECHNICAL
    log.log(
        logging.ERROR if technical else logging.WARNING,
        "job %s failed for good at %s (%s after %d attempt(s)): %s",
        step.job.job_id,
        step.scope,
        failure_class,
        attempts,
        error,
        exc_info=exc if technical and exc.__traceback__ is not None else None,
    )
    metrics.count(metrics.DEAD_LETTERS, step.job.pipeline, step.stage, str(failure_class))
    tags = {
        "pipeline": step.job.pipeline,
        "job_id": step.job.job_id,
        "correlation_id": step.job.correlation_id,
        "stage": step.stage,
        "destination": step.destination,
        "failure_class": str(failure_class),
    }
    errors.dead_lettered(tags, exc)
    if not compensations:
        metrics.count(metrics.JOBS_FAILED, step.job.pipeline)


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


def just_completed(job: JobContext, submitted_at: float) -> None:
    """The job's last step was recorded just now (once per job): count it, with its end-to-end time."""
    metrics.count(metrics.JOBS_COMPLETED, job.pipeline)
    if submitted_at:
        metrics.observe(metrics.JOB_DURATION, max(0.0, time.time() - submitted_at), job.pipeline)


def completed(job: JobContext, dead_lettered: bool) -> None:
    """The job's last step is recorded: resolve its dead letters if it had any, then stop watching it."""
    if dead_lettered:
        for callback in _on_recovered:
            callback(job)
    ledger.close(job.pipeline, job.job_id)


def compensated(job: JobContext, plan: list[str], replayed: bool) -> None:
    """Every compensation of the job has run: it has ended (a replayed compensation's rows are resolved)."""
    if replayed:
        for callback in _on_compensated:
            callback(job, plan)
    ledger.mark_compensated(job.pipeline, job.job_id)
    metrics.count(metrics.JOBS_COMPENSATED, job.pipeline)
