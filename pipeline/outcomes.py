"""How a job ends: completed, or handed off to the dead-letter store with everything needed to replay it."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pipeline import jobs
from pipeline.context import JobContext
from pipeline.failures import FailureClass

log = logging.getLogger("vetro.outcomes")


@dataclass(frozen=True)
class FailedStep:
    """The step that failed for good, as the dead-letter store keeps it."""

    job: JobContext | None
    stage: str
    scope: str  # the stage, or "<stage>.<destination>"
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    worker_host: str | None = None

    @property
    def destination(self) -> str | None:
        return self.scope.split(".", 1)[1] if "." in self.scope else None


def hand_off(step: FailedStep, failure_class: FailureClass, exc: BaseException, attempts: int) -> None:
    """Dead-letter the step (spooled if the database is down) and mark the job failed.

    Raises only if neither the database nor Redis can take the row: the caller must then keep
    the message (retry later) rather than lose the job.
    """
    from dlq.store import DeadLetterEvent, record  # dlq builds on pipeline: imported when needed

    error = f"{type(exc).__name__}: {exc}"
    job = step.job
    log.error(
        "job %s failed for good at %s (%s after %d attempt(s)): %s",
        job.job_id if job else "?",
        step.scope,
        failure_class,
        attempts,
        error,
    )
    if job is None:
        return
    record(DeadLetterEvent.from_failure(step, failure_class, exc, attempts, "".join(traceback.format_exception(exc))))
    jobs.record_failed(job, step.scope, failure_class, error)


def complete(job: JobContext, destinations: Iterable[str]) -> None:
    """Mark the job completed; a replayed job's dead letters become resolved."""
    jobs.record_completed(job, destinations)
    if job.replay:
        from dlq.store import resolve_job

        resolve_job(job.job_id)
