"""The hand-off of a job that cannot finish: record why, where and with what input."""

from __future__ import annotations

import logging

from pipeline import jobs
from pipeline.context import JobContext
from pipeline.failures import FailureClass

log = logging.getLogger("vetro.handoff")


def hand_off(
    job: JobContext | None, stage: str, failure_class: FailureClass, exc: BaseException, attempts: int
) -> None:
    """Mark the job failed with its failure class so operators see why it stopped."""
    error = f"{type(exc).__name__}: {exc}"
    log.error(
        "job %s failed for good at %s (%s after %d attempt(s)): %s",
        job.job_id if job else "?",
        stage,
        failure_class,
        attempts,
        error,
    )
    if job is not None:
        jobs.record_failed(job, stage, failure_class, error)
