"""What vetro does around every task, from Celery's signals: count it, give its log lines the job, trace it.

Counts use the Celery exporter's names (pipeline.metrics). Every process that publishes counts
what it sent; a worker's main process counts what it received, its pool processes what they
started and how it ended. The hostname label is the machine's name, never a process's, so label
sets stay bounded however often processes restart. One receiver per signal does all three
(each receiver costs Celery's dispatch on every task).
"""

from __future__ import annotations

import time
from typing import Any

from celery import states
from celery.signals import (
    after_task_publish,
    task_failure,
    task_postrun,
    task_prerun,
    task_received,
    task_retry,
    task_revoked,
    worker_process_shutdown,
)

from pipeline import logs, metrics, phases, tracing
from pipeline.context import SENT_AT
from pipeline.metrics import HOSTNAME

UNKNOWN_QUEUE = "unknown"
_started: dict[str, float] = {}  # task id -> when this pool process started it


def _queue(request: Any) -> str:
    return ((getattr(request, "delivery_info", None) or {}).get("routing_key")) or UNKNOWN_QUEUE


def _labels(name: str, request: Any) -> tuple[str, str, str]:
    return name, HOSTNAME, _queue(request)


@after_task_publish.connect
def _sent(sender: Any = None, routing_key: str | None = None, **_: Any) -> None:
    metrics.count(metrics.TASK_SENT, str(sender), HOSTNAME, routing_key or UNKNOWN_QUEUE)


@task_received.connect
def _received(request: Any = None, **_: Any) -> None:
    metrics.count(metrics.TASK_RECEIVED, *_labels(request.name, request))


@task_prerun.connect
def _prerun(task_id: str | None = None, task: Any = None, args: tuple | None = None, **_: Any) -> None:
    now = time.time()
    request = task.request
    try:
        fields = logs.job_context(task, tuple(args or ()))
    except Exception:  # a message the shield let through but no pipeline knows: its lines carry no job
        fields = {"task_id": request.id}
    logs.bind(fields)
    if task_id and tracing.on():
        tracing.start(task_id, task.name, fields)
    labels = _labels(task.name, request)
    metrics.count(metrics.TASK_STARTED, *labels)
    sent_at = request.get(SENT_AT)
    if isinstance(sent_at, int | float) and 0 < sent_at <= now:
        metrics.observe(metrics.TASK_QUEUE_WAIT, now - sent_at, *labels)
    if task_id:
        _started[task_id] = time.monotonic()


@task_postrun.connect
def _postrun(task_id: str | None = None, task: Any = None, state: str | None = None, **_: Any) -> None:
    started = _started.pop(task_id or "", None)
    if tracing.on():
        tracing.end(task_id or "", state)
    logs.unbind()
    labels = _labels(task.name, task.request)
    if state == states.SUCCESS:
        metrics.count(metrics.TASK_SUCCEEDED, *labels)
    elif state == states.REJECTED:
        metrics.count(metrics.TASK_REJECTED, *labels)
    if started is not None:
        metrics.observe(metrics.TASK_RUNTIME, time.monotonic() - started, *labels)


@task_failure.connect
def _failed(sender: Any = None, exception: BaseException | None = None, **_: Any) -> None:
    name = getattr(sender, "name", None) or "unknown"
    request = getattr(sender, "request", None)
    exception_name = type(exception).__name__ if exception is not None else "unknown"
    metrics.count(metrics.TASK_FAILED, name, HOSTNAME, exception_name, _queue(request))


@task_retry.connect
def _retried(sender: Any = None, request: Any = None, **_: Any) -> None:
    metrics.count(metrics.TASK_RETRIED, *_labels(getattr(sender, "name", "unknown"), request))


@task_revoked.connect
def _revoked(sender: Any = None, request: Any = None, **_: Any) -> None:
    metrics.count(metrics.TASK_REVOKED, *_labels(getattr(sender, "name", None) or request.name, request))


@worker_process_shutdown.connect
def _flush_at_exit(**_: Any) -> None:
    """A pool process ends with os._exit, which skips atexit: flush what it counted first."""
    metrics.flush()


# The step's phases (pipeline.phases) tell what happened to a step; here it is counted.
@phases.events.on("done_already")
def _idempotency_hit(run: phases.StepRun) -> None:
    metrics.count(metrics.IDEMPOTENCY_HITS, run.task.pipeline_name, run.task.stage)


@phases.events.on("waiting")
def _dependency_wait(run: phases.StepRun) -> None:
    metrics.count(metrics.DEPENDENCY_WAITS, run.task.pipeline_name, run.task.stage)


@phases.events.on("failed")
def _step_failed(run: phases.StepRun, failure_class: str) -> None:
    metrics.count(metrics.STEP_FAILURES, run.task.pipeline_name, run.task.stage, str(failure_class))


@phases.events.on("retrying")
def _step_retried(run: phases.StepRun, failure_class: str) -> None:
    metrics.count(metrics.STEP_RETRIES, run.task.pipeline_name, run.task.stage, str(failure_class))
