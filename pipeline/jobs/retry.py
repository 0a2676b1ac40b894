"""When to retry a failed stage and how long to wait, using Celery's own backoff formula.

A worker holds a retry's message, unacknowledged, until its countdown ends; Redis gives a
message held longer than the visibility timeout to another worker as well. So a countdown is
never longer than the stage may be held (`hold_limit`): a longer wait is split into hops, each
message carrying the time before which the step must not run (`pipeline.context.NOT_BEFORE`).
"""

from __future__ import annotations

import logging
import math
from typing import Any

from celery import Task

from pipeline.adapter.internals import backoff_interval
from pipeline.failures import Failure, FailureClass
from settings import get_settings

CELERY_RETRY_OPTIONS = (
    "autoretry_for",
    "dont_autoretry_for",
    "retry_backoff",
    "retry_backoff_max",
    "retry_jitter",
    "default_retry_delay",
)
CELERY_DEFAULT_RETRY_DELAY = 180  # Celery's Task.default_retry_delay: a retry without backoff waits this long
CELERY_BACKOFF_MAX = 600  # Celery's retry_backoff_max
# Each of Celery's options and the knob of vetro's it sets, when both are given (vetro's knob wins).
SAME_KNOB = {"retry_backoff": "backoff_base", "retry_backoff_max": "backoff_max", "retry_jitter": "jitter"}
log = logging.getLogger("vetro.stage")

HOLD_MARGIN = 2  # seconds between the longest hold and the visibility timeout (settings.MIN_HOLD_SECONDS - 1)


def exception_classes(stage: str, option: str, value: Any) -> tuple[type[BaseException], ...]:
    """`autoretry_for` or `dont_autoretry_for` as Celery takes it: exception classes (a tuple, or one)."""
    classes = tuple(value) if isinstance(value, list | tuple) else (value,)
    bad = [item for item in classes if not (isinstance(item, type) and issubclass(item, BaseException))]
    if bad:
        raise TypeError(f"stage {stage}: {option} takes exception classes, not {bad[0]!r}")
    return classes


def knobs_of_celery_options(stage: str, celery: dict[str, Any], knobs: dict[str, Any]) -> dict[str, Any]:
    """vetro's policy knobs for a stage's Celery retry options (what they mean in Celery), under the knobs
    given; a knob given beside the Celery option it overlaps wins, and one line says so.

    `retry_backoff` True or a number: exponential backoff from that factor (Celery's own formula), capped
    by `retry_backoff_max` (600) with `retry_jitter` (on). `retry_backoff` False, or `autoretry_for` with no
    `retry_backoff`: Celery retries every `default_retry_delay` (180) seconds, so every retry waits that long.
    """
    derived: dict[str, Any] = {}
    backoff = celery.get("retry_backoff")
    fixed = backoff is False or (backoff is None and "autoretry_for" in celery)
    if fixed:
        delay = math.ceil(celery.get("default_retry_delay", CELERY_DEFAULT_RETRY_DELAY))
        derived = {"backoff_base": delay, "backoff_max": max(delay, 1), "jitter": False}
    elif backoff is not None:
        derived = {"backoff_base": int(max(1.0, float(backoff))), "backoff_max": CELERY_BACKOFF_MAX}
    if not fixed:
        derived |= {SAME_KNOB[name]: celery[name] for name in ("retry_backoff_max", "retry_jitter") if name in celery}
    for name, knob in SAME_KNOB.items():
        if name in celery and knob in knobs:
            log.warning("stage %s: %s and %s both given: %s (vetro's) wins", stage, name, knob, knob)
    return derived | knobs


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
