"""When to retry a failed stage and how long to wait, using Celery's own backoff formula."""

from __future__ import annotations

import math

from celery import Task
from celery.utils.time import get_exponential_backoff_interval

from pipeline.failures import Failure, FailureClass


def retry_budget(task: Task, failure: Failure) -> int:
    """Retries allowed for this class of failure (the stage's policy in settings)."""
    if failure.failure_class is FailureClass.TRANSIENT:
        return task.transient_retries
    if failure.failure_class is FailureClass.TECHNICAL:
        return task.technical_retries
    return 0


def retry_delay(task: Task, failure: Failure, failed_attempts: int) -> int | None:
    """Seconds before the next attempt, or None when the job must be handed off instead.

    Exponential backoff with full jitter from the task's retry_backoff / retry_backoff_max /
    retry_jitter; a server's Retry-After is a floor, never ignored.
    """
    if failed_attempts >= retry_budget(task, failure):
        return None
    delay = get_exponential_backoff_interval(
        factor=task.retry_backoff,
        retries=failed_attempts,
        maximum=task.retry_backoff_max,
        full_jitter=task.retry_jitter,
    )
    if failure.retry_after:
        delay = max(delay, math.ceil(failure.retry_after))
    return delay
