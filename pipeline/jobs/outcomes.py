"""How a job ends: completed, compensated, or handed off to the dead-letter store (pipeline.jobs.sink).

Each end is told to observers (`events`): watching counts it, logs it and sends it to Sentry.
"""

from __future__ import annotations

from pipeline.context import JobContext
from pipeline.events import Events
from pipeline.failures import FailureClass
from pipeline.jobs import closing, ledger, sink
from pipeline.jobs.sink import FailedStep

# Told: "dead_lettered" (step, failure class, exception, attempts, compensations), "completed" (job, submitted
# at), "compensated" (job).
events = Events()


def hand_off(
    step: FailedStep,
    failure_class: FailureClass,
    exc: BaseException,
    attempts: int,
    compensations: list[str],
    errbacks: bool = False,
) -> bool:
    """Dead-letter the step and mark the job failed (or compensating, with `compensations` to run; still
    watched while the step's `errbacks` run). False when the job was revoked meanwhile: start nothing more.

    Raises if the step could not be stored: the caller must then keep the message (or the job
    stays in the reconciler's due set) rather than lose the job.
    """
    sink.store_failed(step, failure_class, exc, attempts)
    taken = ledger.mark_failed(step.job, step.scope, failure_class, exc, compensations, errbacks)
    events.emit("dead_lettered", step, failure_class, exc, attempts, compensations if taken else [])
    return taken


def just_completed(job: JobContext, submitted_at: float) -> None:
    """The job's last step was recorded just now (once per job)."""
    events.emit("completed", job, submitted_at)


def completed(job: JobContext, dead_lettered: bool) -> None:
    """The job's last step is recorded: resolve its dead letters if it had any, then stop watching it."""
    if dead_lettered:
        sink.recovered(job)
    closing.close_soon(job.pipeline, job.job_id)


def compensated(job: JobContext, plan: list[str], replayed: bool) -> None:
    """Every compensation of the job has run: it has ended (a replayed compensation's rows are resolved)."""
    if replayed:
        sink.compensations_replayed(job, plan)
    ledger.mark_compensated(job.pipeline, job.job_id)
    events.emit("compensated", job)
