"""Moving jobs along: publish the steps that follow a recorded one, or the steps a job still needs.

Every publish goes through `publish`, which stamps the job's headers and task ids and
pushes the job's due time. A step published twice is harmless: its guard answers the second
copy. So each path here errs on the side of publishing: after a step is recorded, when a
redelivered step finds its result already recorded, when the reconciler finds a stalled job,
and when an operator replays one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any

from pipeline import ledger, templates
from pipeline.app import app, records_carry_publishes
from pipeline.context import JobContext
from pipeline.failures import FailureClass
from pipeline.guard import COMPLETED, JOINED, Record
from pipeline.outcomes import FailedStep, compensated, completed, hand_off, just_completed
from pipeline.pipelines import Pipeline, Role, Step, check_branches, get_pipeline, task_id

log = logging.getLogger("vetro.driver")


def publish(job: JobContext, steps: list[Step], producer: Any = None) -> None:
    for step in steps:
        step.task.apply_async(
            args=step.args,
            task_id=task_id(job.job_id, step.scope),
            headers=job.headers(),
            producer=producer,
            # No time limits in the message: Celery would otherwise carry the publisher's, and the
            # worker would obey them instead of the stage's own policy in its settings.
            time_limit=None,
            soft_time_limit=None,
        )


def messages(batches: list[tuple[JobContext, list[Step]]]) -> list[list[tuple[str, str]]]:
    """The (queue key, message) LPUSHes that publishing `batches` would send, one list per batch, built but
    not sent, for a caller that sends them in its own round trip (only when the broker is the result store)."""
    built = iter(
        templates.pushes(
            [
                templates.Message(
                    step.task, task_id(job.job_id, step.scope), step.args, job.headers(), partial(publish, job, [step])
                )
                for job, steps in batches
                for step in steps
            ]
        )
    )
    return [[push for _ in steps for push in next(built)] for _, steps in batches]


def publish_after(
    pipe: Any, batches: list[tuple[JobContext, list[Step]]], on_publish_error: Callable[[Exception], None] | None = None
) -> None:
    """Run `pipe` (ledger writes), then publish many jobs' steps: in the same round trip, after its commands,
    when the broker is the result store; else in one kombu batch once it has run.

    A failed publish after `pipe` ran goes to `on_publish_error` when given (the reconciler publishes
    what the broker never got), else it is raised.
    """
    if records_carry_publishes():
        for pushes in messages(batches):
            for queue, message in pushes:
                pipe.lpush(queue, message)
        pipe.execute()
        return
    pipe.execute()
    try:
        with app.producer_or_acquire() as producer, producer.batch():
            for job, steps in batches:
                publish(job, steps, producer)
    except Exception as error:
        if on_publish_error is None:
            raise
        on_publish_error(error)


def advance(job: JobContext, pipeline: Pipeline, stage: str, args: tuple, result: Any, record: Record) -> None:
    """A step was just recorded (`record`: what the guard made of it): start what follows it."""
    if record.outcome == COMPLETED:
        just_completed(job, record.submitted_at)
        return completed(job, record.dead_lettered)
    if pipeline.role(stage) is Role.UNDO:
        return compensate_next(job, pipeline)
    if pipeline.role(stage) is Role.PART:
        if record.outcome == JOINED:
            publish_join(job, pipeline)
        return None
    publish(job, pipeline.after(stage, args, result))
    return None


def resume(job: JobContext, pipeline: Pipeline, stage: str, args: tuple, result: Any) -> None:
    """A redelivered step found its result recorded: start again whatever it started that has not run.

    The first attempt may have died between recording and publishing; the steps it starts are
    published again unless their results are recorded (a duplicate is answered by their guards).
    """
    role = pipeline.role(stage)
    if role is Role.LAST:
        state = ledger.load(job.pipeline, job.job_id)
        return completed(job, state is not None and state.record.get("dead_lettered") == "1")
    if role is Role.PART:
        return publish_join(job, pipeline)
    if role is Role.UNDO:
        return compensate_next(job, pipeline)
    following = pipeline.after(stage, args, result)
    recorded = ledger.results_of(job.pipeline, job.job_id, [step.scope for step in following])
    publish(job, [step for step, done in zip(following, recorded, strict=True) if done is None])
    return None


def publish_join(job: JobContext, pipeline: Pipeline) -> None:
    """Publish the join when every part is recorded and the join is not."""
    planner = pipeline.stages[-1].stage
    (planned,) = ledger.results_of(job.pipeline, job.job_id, [planner])
    branches = check_branches(planned)
    scopes = pipeline.part_scopes(branches)
    *parts, joined = ledger.results_of(job.pipeline, job.job_id, [*scopes, pipeline.fan_out.join.stage])
    if joined is None and all(part is not None for part in parts):
        publish(job, [pipeline.join(parts)])


def compensate_next(job: JobContext, pipeline: Pipeline) -> None:
    """A compensation is recorded: publish the plan's next one, or end the job compensated."""
    state = ledger.load(job.pipeline, job.job_id)
    if state is None:
        return
    steps = pipeline.pending_compensation(state.compensations or [], state.results)
    if steps:
        publish(job, steps)
    else:
        _end_compensated(state)


def _end_compensated(state: ledger.JobState) -> None:
    plan = state.compensations or []
    # Only a replay revives a job whose compensation was dead-lettered, so only a replayed job has rows to resolve.
    compensated(state.context, plan, int(state.number("replays")) > 0)


def fail(step: FailedStep, failure_class: FailureClass, exc: BaseException, attempts: int) -> None:
    """A step failed for good: dead-letter it, and undo the job's recorded steps if its pipeline says how.

    A compensation that fails for good ends the job failed; replaying it goes on compensating.
    """
    pipeline = get_pipeline(step.job.pipeline)
    state, plan = None, []
    if pipeline.compensations and pipeline.role(step.stage) is not Role.UNDO:
        state = ledger.load(step.job.pipeline, step.job.job_id)
        if state is not None and state.compensations is None:
            plan = pipeline.compensation_plan(state.results)
    hand_off(step, failure_class, exc, attempts, plan)
    if plan:
        log.warning("job %s: compensating %s", step.job.job_id, ", ".join(plan))
        publish(step.job, pipeline.pending_compensation(plan, state.results))


def finish(state: ledger.JobState) -> None:
    """Every step the job needs is recorded but its ending is not (a crash in between): end it now."""
    job = state.context
    if state.compensations is not None:
        _end_compensated(state)
    else:
        ledger.mark_completed(job.pipeline, job.job_id)
        just_completed(job, state.number("submitted_at"))
        completed(job, state.record.get("dead_lettered") == "1")


def pending(state: ledger.JobState) -> list[Step]:
    """What a job still needs, from its ledger alone: its next steps, or once it is undoing, its next compensation."""
    pipeline = get_pipeline(state.context.pipeline)
    if state.compensations is not None:
        return pipeline.pending_compensation(state.compensations, state.results)
    return pipeline.pending(state.payload, state.results)


def redrive(state: ledger.JobState, steps: list[Step], reason: str) -> None:
    """Publish `steps` of a job found not moving, and note why on its record."""
    job = state.context
    log.warning("re-driving job %s at %s: %s", job.job_id, ", ".join(step.scope for step in steps), reason)
    ledger.note_redrive(job.pipeline, job.job_id, [step.scope for step in steps], reason)
    publish(job, steps)
    ledger.expect(job.pipeline, job.job_id)
