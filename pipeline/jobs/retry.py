"""When to retry a failed stage and how long to wait, using Celery's own backoff formula.

A worker holds a retry's message, unacknowledged, until its countdown ends; Redis gives a
message held longer than the visibility timeout to another worker as well. So a countdown is
never longer than the stage may be held (`hold_limit`): a longer wait is split into hops, each
message carrying the time before which the step must not run (`pipeline.context.NOT_BEFORE`).
"""

from __future__ import annotations

import math

from celery import Task

from pipeline.adapter.internals import backoff_interval
from pipeline.failures import Failure, FailureClass
from settings import get_settings

HOLD_MARGIN = 2  # seconds between the longest hold and the visibility timeout (settings.MIN_HOLD_SECONDS - 1)


def retry_budget(task: Task, failure: Failure) -> int:
    """Retries allowed for this class of failure (the stage's policy in settings)."""
    if failure.failure_class is FailureClass.TRANSIENT:
        return task.transient_retries
    if failure.failure_class is FailureClass.TECHNICAL:
        return task.technical_retries
    return 0


def retry_delay(task: Task, failure: Failure, failed_attempts: int) -> int:
    """Seconds before attempt `failed_attempts + 1`.

    Exponential backoff with full jitter from the task's retry_backoff / retry_backoff_max /
    retry_jitter; a server's Retry-After is a floor, never ignored.
    """
    delay = backoff_interval(task.retry_backoff, failed_attempts - 1, task.retry_backoff_max, task.retry_jitter)
    if failure.retry_after:
        delay = max(delay, math.ceil(failure.retry_after))
    return delay


def hold_limit(task: Task) -> float:
    """The longest countdown a worker may hold this stage's message before running it."""
    return get_settings().visibility_timeout - task.time_limit - HOLD_MARGIN


def hop(task: Task, seconds: float, now: float) -> tuple[float, float | None]:
    """(the countdown to publish, the not-before time if the wait needs more hops than this one)."""
    limit = hold_limit(task)
    if seconds <= limit:
        return seconds, None
    return limit, now + seconds
