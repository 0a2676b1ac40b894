"""A step's life, as an ordered list of phases: admission, claim, run, record and advance; on failure, classify,
then retry or hand off.

Each phase takes the step's run (`StepRun`) and either lets it go on (returns None), ends it with
an outcome (`Ended`), or raises Celery's Retry (a wait) or Reject. Observers (metrics, for one)
hear what happened through `events`, as Dramatiq's middleware does, so no phase counts anything
itself. What follows a recorded step comes from the job's plan (pipeline.plan), for a Celery
canvas and a declared pipeline alike.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from celery import Task
from celery.exceptions import Ignore, Reject, Retry
from kombu.utils.json import dumps

from pipeline.adapter.app import records_carry_publishes
from pipeline.adapter.internals import attach, header, queue_of, run_body
from pipeline.adapter.job_headers import job_of
from pipeline.context import NOT_BEFORE, PIPELINE, SCOPE, SENT_AT, JobContext
from pipeline.events import Events
from pipeline.failures import (
    Failure,
    FailureClass,
    PoisonJobError,
    RetryRequestedError,
    TechnicalError,
    UnknownJobError,
)
from pipeline.jobs import driver, ledger, quarantine
from pipeline.jobs.guard import BUSY, CLAIMED, DONE, DUPLICATE, REVOKED, UNDOING, UNKNOWN, Claim, Guard, encode
from pipeline.jobs.pipelines import canvas_plan, declared_plan
from pipeline.jobs.retry import hop, retry_budget, retry_delay
from pipeline.jobs.sink import FailedStep
from pipeline.plan import Plan, PlannerError, check_branches
from pipeline.store import redis_client, sent_with_scripts
from settings import get_settings

log = logging.getLogger("vetro.stage")

FRONTIER_EVERY = 1.0  # seconds between two updates of the queue frontier by one process
PLANS_KEPT = 1024  # canvas plans a process keeps by job id, so a claim need not send them again


@dataclass(frozen=True)
class HandedOff:
    """The step failed for good and is in the dead-letter store; the task then fails with DeadLettered."""

    error: BaseException
    failure_class: FailureClass


@dataclass(frozen=True)
class Ended:
    """The run is over: `value` is what the task returns (a result, or HandedOff)."""

    value: Any = None


@dataclass
class StepRun:
    """One delivery of a step, as it goes through the phases."""

    task: Any  # the Stage
    job_id: str
    args: tuple
    kwargs: dict
    began: float = field(default_factory=time.time)
    namespace: str = ""  # where the job's keys live (its pipeline)
    scope: str = ""
    plan: Plan | None = None
    job: JobContext | None = None
    guard: Guard | None = None
    owner: str = field(default_factory=lambda: uuid.uuid4().hex)
    claim: Claim | None = None
    branches: list[str] = field(default_factory=list)  # a part's planned branches, a planner's named ones
    result: Any = None
    encoded: str = ""  # the result as stored

    @property
    def request(self) -> Any:
        return self.task.request

    @property
    def ran(self) -> tuple[float, str]:
        """When this run began and on which worker (the job's timeline)."""
        return self.began, self.request.hostname or ""


JOB_ATTACHED = "vetro_job"  # the claimed job, kept on the running request: a stage's `self.job`


# Told: "done_already" (an idempotency hit), "failed" (failure class), "retrying" (failure class), "waiting".
events = Events()
_frontier_written = {"at": 0.0}
_plans: dict[str, Plan] = {}  # job id -> its canvas's plan, oldest first


def run_step(run: StepRun) -> Any:
    """Take one delivered step through its phases; returns what the task returns (or HandedOff)."""
    for phase in (admit, claim, execute):
        ended = phase(run)
        if ended is not None:
            return ended.value
    return record(run).value


# -- admission


def admit(run: StepRun) -> Ended | None:
    """Whether the message may run now: a long wait still under way hops again without claiming anything."""
    not_before = float(header(run.request, NOT_BEFORE) or 0)
    now = time.time()
    if not_before > now + 0.5:
        wait(run, not_before - now)
    run.namespace = header(run.request, PIPELINE) or run.task.pipeline_name
    run.scope = header(run.request, SCOPE) or _declared_scope(run)
    if run.scope is None:
        return Ended(refuse(run, f"{run.task.name} is no step of pipeline {run.namespace!r}"))
    return None


def _declared_scope(run: StepRun) -> str | None:
    """The step a message of the first format runs (it names no scope): its stage in the declared pipeline."""
    try:
        plan = declared_plan(run.namespace)
    except ValueError:
        return None
    return plan.scope_for(run.task.name, run.args)


# -- claim


def claim(run: StepRun) -> Ended | None:
    """Claim the step's lease; answer a recorded step from its guard; wait for a lease another attempt holds."""
    run.guard = guard = Guard(run.namespace, run.job_id, run.scope)
    compensation = _declared_compensation(run)
    answer = guard.parse_claim(sent_with_scripts(lambda: _claim_once(run, compensation)))
    run.claim = answer
    if answer.status == UNKNOWN:
        job = job_of(run.request)
        return Ended(hand_off(run, job, UnknownJobError(f"job {run.job_id} has no ledger record")))
    run.job = answer.job
    if answer.status in (CLAIMED, DONE) and ledger.due_soon(answer.due_at):
        ledger.expect(run.namespace, run.job_id)  # the job is moving: the next sweep need not look at it
    attach(run.request, JOB_ATTACHED, answer.job)
    run.plan = _plan_of(run, answer.plan)
    refused = _check_step(run)
    if refused:
        if answer.status not in (DONE, UNDOING, BUSY):
            guard.release(run.owner, time.time())
        return Ended(refuse(run, refused))
    if answer.status == UNDOING:
        log.info("job %s is being compensated: %s does not run", run.job_id, run.scope)
        return Ended(None)
    if answer.status == REVOKED:
        log.info("job %s was revoked: %s does not run", run.job_id, run.scope)
        raise Ignore()
    if answer.status == DONE:
        events.emit("done_already", run)
        _resume(run, answer.result)
        return Ended(answer.result)
    if answer.status == BUSY:
        # Another attempt holds the lease: come back when it ends, without spending a retry.
        wait(run, max(1.0, answer.retry_in))
    if answer.crashed_runs >= get_settings().max_deliveries:
        guard.release(run.owner, time.time())
        poison = PoisonJobError(f"{run.scope} started {answer.crashed_runs} times and never finished")
        return Ended(hand_off(run, run.job, poison, attempts=answer.crashed_runs))
    return None


def _plan_of(run: StepRun, stored: str | None) -> Plan:
    """The job's plan: a canvas's, sent with the claim unless this process has it, else its pipeline's."""
    if stored:
        _plans[run.job_id] = plan = canvas_plan(stored)
        while len(_plans) > PLANS_KEPT:
            del _plans[next(iter(_plans))]
        return plan
    return _plans.get(run.job_id) or declared_plan(run.job.pipeline)


def _declared_compensation(run: StepRun) -> bool:
    try:
        return declared_plan(run.namespace).is_compensation(run.scope)
    except ValueError:
        return False


def _claim_once(run: StepRun, compensation: bool) -> list:
    """Claim the step and push the queue's frontier: one round trip (`claim` pushes the job's due time after it,
    when that is near)."""
    pipe = redis_client().pipeline(transaction=False)
    run.guard.claim(run.owner, run.task.lease_seconds, pipe, compensation, have_plan=run.job_id in _plans)
    sent_at = header(run.request, SENT_AT)
    if sent_at and run.began - _frontier_written["at"] >= FRONTIER_EVERY:
        queue = queue_of(run.request) or get_settings().queue
        ledger.advance_frontier(pipe, queue, float(sent_at))
        _frontier_written["at"] = run.began
    return pipe.execute()[0]


def _check_step(run: StepRun) -> str | None:
    """Why this message is no step of its job's plan (forged, or a bug), or None."""
    plan, scope = run.plan, run.scope
    leaf = plan.leaf(scope)
    if leaf is None or leaf.task != run.task.name:
        return f"{run.task.name} is no step {scope!r} of job {run.job_id}'s plan"
    planner = plan.planner_of(scope)
    if planner is not None:
        run.branches = ledger.planned_branches(run.namespace, run.job_id, plan.branches_field(planner.scope))
        branch = scope.split(".", 1)[1]
        if branch not in run.branches or run.args[-1:] != (branch,):
            return f"branch {branch!r} was not planned for job {run.job_id}"
    expected = plan.task_id_of(run.job_id, scope)
    if run.request.id != expected:
        return f"message id {run.request.id!r} is not {expected!r}"
    return None


def _resume(run: StepRun, result: Any) -> None:
    if run.plan.is_compensation(run.scope):
        driver.compensate_next(run.job)
    else:
        driver.resume(run.job, run.plan, run.plan.route(run.scope, run.args, result, run.branches))


# -- run


def execute(run: StepRun) -> Ended | None:
    """Run the stage's body; a failure goes to `failed`."""
    try:
        run.result = run_body(run.task, run.args, run.kwargs)
        run.encoded = encode(run.result)  # as stored: a result JSON cannot hold fails the step here
        if run.plan.is_planner(run.scope):
            try:
                run.branches = check_branches(run.result)
            except PlannerError as error:
                raise TechnicalError(str(error)) from None
    except (Retry, Ignore, Reject):
        run.guard.release(run.owner, time.time())
        raise
    except Exception as exc:
        return Ended(failed(run, exc))
    return None


# -- record and advance


def record(run: StepRun) -> Ended:
    """Record the step and start what follows it, from the plan.

    The steps it starts at once (the next of its chain, a planner's parts, its callbacks) go out with
    its record when the broker is the result store: one round trip, and no moment where the step is
    recorded but what follows it is not queued. Should the step turn out recorded already, the copies
    are answered by their guards. What follows a fan-in it completes is published after the record.
    """
    plan, job, guard = run.plan, run.job, run.guard
    route = plan.route(run.scope, run.args, run.result, run.branches)
    note = (plan.branches_field(run.scope), dumps(run.branches)) if plan.is_planner(run.scope) else ("", "")
    fan_ins = [(level.counter, level.size) for level in route.levels]
    completes_job = bool(route.levels) and route.levels[-1].node is None and route.then is None
    pushes = []
    try:
        if route.next and records_carry_publishes():
            (pushes,) = driver.messages([(job, route.next)])
        outcome = guard.record(
            run.encoded, time.time(), fan_ins, completes_job, plan.is_first(run.scope), pushes, run.ran, note
        )
    except Exception:
        try:
            guard.release(run.owner, time.time())
        except Exception:  # if Redis is gone, the lease ends by itself
            log.debug("could not release %s's lease", run.scope)
        raise
    if outcome.outcome == REVOKED:
        log.info("job %s was revoked while %s ran: its result is kept, nothing follows it", job.job_id, run.scope)
        return Ended(run.result)
    if pushes and (delayed := driver.longest_delay(route.next)):
        ledger.expect(job.pipeline, job.job_id, delayed)
    if plan.is_compensation(run.scope):
        driver.compensate_next(job)
    elif plan.is_errback(run.scope):
        if not pushes:
            driver.publish(job, route.next)
        driver.errback_recorded(job)
    elif outcome.outcome == DUPLICATE:
        events.emit("done_already", run)
        driver.resume(job, plan, route)
    else:
        driver.advance(job, plan, route, outcome, sent=bool(pushes))
    return Ended(run.result)


# -- failure


def failed(run: StepRun, exc: Exception) -> Any:
    """The body raised: retry within the step's budget, else hand the job off."""
    task, guard = run.task, run.guard
    failure = _classify(task, exc)
    settings = get_settings()
    if failure.waiting:
        # An open breaker or a spent rate limit: come back when it clears, without spending a retry.
        release = guard.release(run.owner, time.time(), "waits", settings.max_dependency_waits, task.stage, run.ran)
        if release.retry:
            events.emit("waiting", run)
            wait(run, (failure.retry_after or 1) + random.uniform(0, 1), exc)
    else:
        events.emit("failed", run, failure.failure_class)
        asked = exc if isinstance(exc, RetryRequestedError) else None  # the stage's own self.retry(...)
        budget = asked.max_retries if asked and asked.max_retries is not None else retry_budget(task, failure)
        release = guard.release(run.owner, time.time(), "failed", budget, task.stage, run.ran)
        if release.retry:
            events.emit("retrying", run, failure.failure_class)
            wait(run, asked.countdown if asked else retry_delay(task, failure, release.count), exc)
        if asked and asked.cause is not None:
            exc = asked.cause  # out of retries: the job is handed off with what the stage retried for
    return hand_off(run, run.job, exc, failure.failure_class, release.count)


def _classify(task: Any, exc: Exception) -> Failure:
    try:
        return task.classifier.classify(exc)
    except Exception:  # a broken classification rule is our bug; the stage's failure still counts
        log.exception("classifying %s failed; treating it as technical", type(exc).__name__)
        return Failure(FailureClass.TECHNICAL)


def wait(run: StepRun, seconds: float, exc: BaseException | None = None) -> None:
    """Retry this message after `seconds` (in hops no longer than a worker may hold it)."""
    task = run.task
    countdown, not_before = hop(task, seconds, time.time())
    ledger.expect(run.namespace or task.pipeline_name, run.job_id, countdown)
    try:
        raise Task.retry(task, exc=exc, countdown=countdown, max_retries=None, headers={NOT_BEFORE: not_before or 0})
    except Reject as rejected:  # Celery drops the message when the retry cannot be published: keep it
        raise Reject(rejected.reason, requeue=True) from None


def hand_off(
    run: StepRun,
    job: JobContext,
    exc: BaseException,
    failure_class: FailureClass = FailureClass.TECHNICAL,
    attempts: int = 1,
) -> HandedOff:
    step = FailedStep(job, run.task.stage, run.scope, list(run.args), dict(run.kwargs), run.request.hostname)
    driver.fail(step, failure_class, exc, attempts, run.plan)
    return HandedOff(exc, failure_class)


def refuse(run: StepRun, reason: str) -> None:
    """A message no job asked for (forged, or a bug): kept in the quarantine, never run, the job untouched."""
    request = run.request
    job = job_of(request)
    headers = {"task": run.task.name, "id": request.id, **(job.headers() if job else {})}
    if header(request, SCOPE):
        headers[SCOPE] = header(request, SCOPE)
    body = dumps([list(run.args), run.kwargs, None])
    queue = queue_of(request)
    quarantine.put(reason, headers, body, "application/json", queue)
