"""Moving jobs along, from their plans: publish the steps a recorded one starts, or the steps a job still needs.

Every publish goes through `publish`, which stamps the job's headers, the step's scope and task id,
and the step's own options (queue, priority, a countdown split into hops a Redis broker never
delivers twice). A step published twice is harmless: its guard answers the second copy. So each
path here errs on the side of publishing: after a step is recorded, when a redelivered step finds
its result already recorded, when the reconciler finds a stalled job, and when an operator replays one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from functools import partial
from typing import Any

from pipeline.adapter import templates
from pipeline.adapter.app import app, records_carry_publishes
from pipeline.context import NOT_BEFORE, SCOPE, JobContext
from pipeline.failures import FailureClass
from pipeline.jobs import ledger
from pipeline.jobs.guard import COMPLETED, JOINED, Record
from pipeline.jobs.outcomes import compensated, completed, hand_off, just_completed
from pipeline.jobs.pipelines import task_named
from pipeline.jobs.retry import hop
from pipeline.jobs.sink import FailedStep
from pipeline.plan import DELAY_OPTIONS, Plan, Route, Step

log = logging.getLogger("vetro.driver")


def delay_of(step: Step, now: float) -> float:
    """Seconds before the step may run: its signature's countdown, or its eta from now."""
    countdown, eta = (step.options.get(name) for name in DELAY_OPTIONS)
    if eta is not None:
        when = datetime.fromisoformat(eta) if isinstance(eta, str) else eta
        return max(0.0, when.timestamp() - now)
    return float(countdown or 0)


def longest_delay(steps: list[Step]) -> float:
    now = time.time()
    return max((delay_of(step, now) for step in steps), default=0.0)


def _options(job: JobContext, step: Step, task: Any, now: float) -> dict[str, Any]:
    """What `apply_async` is given for a step (a long delay hops, see pipeline.jobs.retry)."""
    headers = {**job.headers(), SCOPE: step.scope}
    options: dict[str, Any] = {name: step.options[name] for name in ("queue", "priority") if name in step.options}
    delay = delay_of(step, now)
    if delay > 0:
        countdown, not_before = hop(task, delay, now)
        options["countdown"] = countdown
        if not_before:
            headers[NOT_BEFORE] = not_before
    return {"headers": headers, **options}


def publish(job: JobContext, steps: list[Step], producer: Any = None) -> None:
    now = time.time()
    for step in steps:
        task = task_named(step.task)
        task.apply_async(
            args=step.args,
            kwargs=dict(step.kwargs),
            task_id=step.id_in(job.job_id),
            producer=producer,
            # No time limits in the message: Celery would otherwise carry the publisher's, and the
            # worker would obey them instead of the stage's own policy in its settings.
            time_limit=None,
            soft_time_limit=None,
            **_options(job, step, task, now),
        )
    delayed = longest_delay(steps)
    if delayed:
        ledger.expect(job.pipeline, job.job_id, delayed)  # a held message is in no queue: not a stalled job


def messages(batches: list[tuple[JobContext, list[Step]]]) -> list[list[tuple[str, str]]]:
    """The (queue key, message) LPUSHes that publishing `batches` would send, one list per batch, built but
    not sent, for a caller that sends them in its own round trip (only when the broker is the result store)."""
    built = iter(
        templates.pushes(
            [
                templates.Message(
                    task_named(step.task),
                    step.id_in(job.job_id),
                    step.args,
                    {**job.headers(), SCOPE: step.scope},
                    partial(publish, job, [step]),
                    plain=not step.kwargs and not step.options,
                )
                for job, steps in batches
                for step in steps
            ]
        )
    )
    return [[push for _ in steps for push in next(built)] for _, steps in batches]


def publish_after(
    pipe: Any, batches: list[tuple[JobContext, list[Step]]], on_publish_error: Callable[[Exception], None] | None = None
) -> list[Any]:
    """Run `pipe` (ledger writes), then publish many jobs' steps: in the same round trip, after its commands,
    when the broker is the result store; else in one kombu batch once it has run. Returns `pipe`'s answers
    (its own commands' first).

    A failed publish after `pipe` ran goes to `on_publish_error` when given (the reconciler publishes
    what the broker never got), else it is raised.
    """
    if records_carry_publishes():
        for pushes in messages(batches):
            for queue, message in pushes:
                pipe.lpush(queue, message)
        answers = pipe.execute()
        for job, steps in batches:
            if delayed := longest_delay(steps):
                ledger.expect(job.pipeline, job.job_id, delayed)
        return answers
    answers = pipe.execute()
    try:
        with app.producer_or_acquire() as producer, producer.batch():
            for job, steps in batches:
                publish(job, steps, producer)
    except Exception as error:
        if on_publish_error is None:
            raise
        on_publish_error(error)
    return answers


def advance(job: JobContext, plan: Plan, route: Route, record: Record, sent: bool) -> None:
    """A step was just recorded (`record`: what the guard made of it): start what follows it.

    `sent`: the steps it starts at once went out with the record.
    """
    if record.outcome == COMPLETED:
        just_completed(job, record.submitted_at)
        completed(job, record.dead_lettered)
        return
    if not sent:
        publish(job, route.next)
    if record.outcome == JOINED:
        publish(job, plan.after_join(route, _results(job, plan.needed(route))))


def _results(job: JobContext, scopes: list[str]) -> dict[str, Any]:
    return dict(zip(scopes, ledger.results_of(job.pipeline, job.job_id, scopes), strict=True))


def resume(job: JobContext, plan: Plan, route: Route) -> None:
    """A redelivered step found its result recorded: start again whatever it started that has not run.

    The first attempt may have died between recording and publishing; the steps it starts are
    published again unless their results are recorded (a duplicate is answered by their guards).
    The fan-ins it belongs to are checked from the recorded results, not from their counters.
    """
    _publish_unrecorded(job, route.next)
    levels = route.levels
    recorded = _results(job, sorted({scope for level in levels for scope in level.terminals}))
    for level in levels:
        if any(recorded[scope] is None for scope in level.terminals):
            return
    if levels and levels[-1].node is None and route.then is None:
        state = ledger.load(job.pipeline, job.job_id)
        if state is not None and state.status != ledger.COMPLETED and state.compensations is None:
            finish(state)
        elif state is not None:
            completed(job, state.record.get("dead_lettered") == "1")
    elif levels:
        _publish_unrecorded(job, plan.after_join(route, _results(job, plan.needed(route))))


def _publish_unrecorded(job: JobContext, steps: list[Step]) -> None:
    recorded = ledger.results_of(job.pipeline, job.job_id, [step.scope for step in steps])
    publish(job, [step for step, done in zip(steps, recorded, strict=True) if done is None])


def compensate_next(job: JobContext) -> None:
    """A compensation is recorded: publish the plan's next one, or end the job compensated."""
    state = ledger.load(job.pipeline, job.job_id)
    if state is None:
        return
    steps = state.plan.pending_compensation(state.compensations or [], state.results)
    if steps:
        publish(job, steps)
    else:
        _end_compensated(state)


def _end_compensated(state: ledger.JobState) -> None:
    plan = state.compensations or []
    # Only a replay revives a job whose compensation was dead-lettered, so only a replayed job has rows to resolve.
    compensated(state.context, plan, int(state.number("replays")) > 0)


def fail(step: FailedStep, failure_class: FailureClass, exc: BaseException, attempts: int, plan: Plan | None) -> None:
    """A step failed for good: dead-letter it, and undo the job's recorded steps if its plan says how.

    A compensation that fails for good ends the job failed; replaying it goes on compensating.
    """
    state, undo = None, []
    if plan is not None and plan.compensations and not plan.is_compensation(step.scope):
        state = ledger.load(step.job.pipeline, step.job.job_id)
        if state is not None and state.compensations is None:
            undo = plan.compensation_plan(state.results)
    errbacks = plan.errbacks(step.scope, plan.task_id_of(step.job.job_id, step.scope)) if plan else []
    if not hand_off(step, failure_class, exc, attempts, undo, bool(errbacks)):
        log.warning("job %s was revoked while %s ran: its failure starts nothing", step.job.job_id, step.scope)
        return
    if undo:
        log.warning("job %s: compensating %s", step.job.job_id, ", ".join(undo))
        publish(step.job, plan.pending_compensation(undo, state.results))
    if errbacks:
        publish(step.job, errbacks)


def errback_recorded(job: JobContext) -> None:
    """An errback's step is recorded: once every errback of the failed job has run, stop watching it."""
    state = ledger.load(job.pipeline, job.job_id)
    if state is not None and not pending(state):
        ledger.close(job.pipeline, job.job_id)


def finish(state: ledger.JobState) -> None:
    """Every step the job needs is recorded but its ending is not (a crash in between): end it now."""
    job = state.context
    if state.compensations is not None:
        _end_compensated(state)
    elif state.errbacks_for is not None:
        ledger.close(job.pipeline, job.job_id)
    else:
        ledger.mark_completed(job.pipeline, job.job_id)
        just_completed(job, state.number("submitted_at"))
        completed(job, state.record.get("dead_lettered") == "1")


def pending(state: ledger.JobState) -> list[Step]:
    """What a job still needs, from its ledger alone: its next steps, or once it is undoing, its next compensation."""
    if state.compensations is not None:
        return state.plan.pending_compensation(state.compensations, state.results)
    if state.errbacks_for is not None:
        failed = state.errbacks_for
        return state.plan.pending_errbacks(failed, state.plan.task_id_of(state.context.job_id, failed), state.results)
    return [_as_edited(state, step) for step in state.plan.pending(state.results)]


def _as_edited(state: ledger.JobState, step: Step) -> Step:
    """The step with the arguments an operator corrected for it, if they did (ledger.edit_input)."""
    edited = state.edited_input(step.scope)
    return replace(step, args=edited[0], kwargs=edited[1]) if edited else step


def redrive(state: ledger.JobState, steps: list[Step], reason: str) -> None:
    """Publish `steps` of a job found not moving, and note why on its record."""
    job = state.context
    log.warning("re-driving job %s at %s: %s", job.job_id, ", ".join(step.scope for step in steps), reason)
    ledger.note_redrive(job.pipeline, job.job_id, [step.scope for step in steps], reason)
    publish(job, steps)
    ledger.expect(job.pipeline, job.job_id)
