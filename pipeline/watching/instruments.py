"""What vetro does around every task, from Celery's signals: count it, give its log lines the job, trace it.

Counts use the Celery exporter's names (pipeline.telemetry.metrics). Every process that publishes counts
what it sent; a worker's main process counts what it received, its pool processes what they
started and how it ended. The hostname label is the machine's name, never a process's, so label
sets stay bounded however often processes restart. One receiver per signal does all three
(each receiver costs Celery's dispatch on every task).
"""

from __future__ import annotations

import logging
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

from pipeline import batching
from pipeline.adapter.internals import header, queue_of
from pipeline.adapter.job_headers import job_of
from pipeline.context import SCOPE, SENT_AT, JobContext
from pipeline.failures import FailureClass
from pipeline.jobs import outcomes, phases
from pipeline.jobs.pipelines import declared_plan, destination_of
from pipeline.jobs.sink import FailedStep
from pipeline.telemetry import logs, metrics, sentry, tracing
from pipeline.telemetry.metrics import HOSTNAME

UNKNOWN_QUEUE = "unknown"
_started: dict[str, float] = {}  # task id -> when this pool process started it
_bound: dict[str, Any] = {}  # task id -> the log fields bound while it runs (pipeline.telemetry.logs)


def _queue(request: Any) -> str:
    return queue_of(request) or UNKNOWN_QUEUE


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
        fields = job_context(task, tuple(args or ()))
    except Exception:  # a message the shield let through but no pipeline knows: its lines carry no job
        fields = {"task_id": request.id}
    _bound[task_id or ""] = logs.bind(fields)
    if task_id and tracing.on():
        tracing.start(task_id, task.name, fields)
    labels = _labels(task.name, request)
    metrics.count(metrics.TASK_STARTED, *labels)
    sent_at = header(request, SENT_AT)
    if isinstance(sent_at, int | float) and 0 < sent_at <= now:
        metrics.observe(metrics.TASK_QUEUE_WAIT, now - sent_at, *labels)
    if task_id:
        _started[task_id] = time.monotonic()


@task_postrun.connect
def _postrun(task_id: str | None = None, task: Any = None, state: str | None = None, **_: Any) -> None:
    started = _started.pop(task_id or "", None)
    if tracing.on():
        tracing.end(task_id or "", state)
    logs.unbind(_bound.pop(task_id or "", {}))
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
    """A pool process ends with os._exit, which skips atexit: flush what it counted (and closed) first."""
    batching.flush_all()


# The step's phases (pipeline.jobs.phases) tell what happened to a step; here it is counted.
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


def _declared_scope(task: Any, args: tuple) -> str | None:
    """The step a message of the first format runs (it names none): its stage in its declared pipeline."""
    try:
        return declared_plan(task.pipeline_name).scope_for(task.name, args)
    except (AttributeError, ValueError):
        return None


def job_context(task: Any, args: tuple) -> dict[str, Any]:
    """The context fields of a running task; {} outside a job."""
    request = task.request
    job = job_of(request)
    context: dict[str, Any] = {"task_id": request.id}
    if job is None:
        return context
    stage = getattr(task, "stage", "") or task.name
    scope = header(request, SCOPE) or _declared_scope(task, args)
    destination = destination_of(scope) if scope else None
    context |= {
        "pipeline": job.pipeline,
        "job_id": job.job_id,
        "correlation_id": job.correlation_id,
        "stage": stage,
        "attempt": int(request.retries or 0) + 1,
    }
    if destination is not None:
        context["destination"] = destination
    return context


# How a job ends (pipeline.jobs.outcomes): counted, logged once, and sent to Sentry.
_outcomes_log = logging.getLogger("vetro.outcomes")


@outcomes.events.on("dead_lettered")
def _dead_lettered(
    step: FailedStep, failure_class: FailureClass, exc: BaseException, attempts: int, compensations: list[str]
) -> None:
    # One line per job that failed for good: an expected failure (bad input, a rule said no, a partner
    # that kept failing) is a warning; a technical one (a bug of ours) an error with its traceback.
    technical = failure_class == FailureClass.TECHNICAL
    _outcomes_log.log(
        logging.ERROR if technical else logging.WARNING,
        "job %s failed for good at %s (%s after %d attempt(s)): %s",
        step.job.job_id,
        step.scope,
        failure_class,
        attempts,
        f"{type(exc).__name__}: {exc}",
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
    sentry.dead_lettered(tags, exc)
    if not compensations:
        metrics.count(metrics.JOBS_FAILED, step.job.pipeline)


@outcomes.events.on("completed")
def _job_completed(job: JobContext, submitted_at: float) -> None:
    metrics.count(metrics.JOBS_COMPLETED, job.pipeline)
    if submitted_at:
        metrics.observe(metrics.JOB_DURATION, max(0.0, time.time() - submitted_at), job.pipeline)


@outcomes.events.on("compensated")
def _job_compensated(job: JobContext) -> None:
    metrics.count(metrics.JOBS_COMPENSATED, job.pipeline)
