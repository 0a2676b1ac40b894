"""The base every stage shares: the idempotency guard around the body, then what follows it.

Stage code raises; this base decides: retry a transient or technical failure with backoff
(each class has its own budget, kept with the step in the guard, so waiting on a busy lease,
an open breaker or a rate limit costs nothing), or hand the job off to the dead-letter store.
After the body it records the result and publishes the steps that follow (pipeline.driver).

Everything around the body is vetro's own bookkeeping (the guard, the ledger, publishing, the
hand-off). When that fails (Redis or the broker unreachable, say), the message goes back to
the queue: it is never acknowledged as a failure, so an outage loses no job.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from celery import Task
from celery.exceptions import Ignore, Reject, Retry, SoftTimeLimitExceeded
from kombu.utils.json import dumps

from pipeline import driver, ledger, metrics, privacy, quarantine
from pipeline.app import app, records_carry_publishes
from pipeline.context import JOB_ID, NOT_BEFORE, SENT_AT, JobContext
from pipeline.failures import Failure, FailureClass, FailureClassifier, TechnicalError, default_classifier
from pipeline.guard import BUSY, DONE, DUPLICATE, UNDOING, UNKNOWN, Guard, Record, encode
from pipeline.outcomes import FailedStep
from pipeline.pipelines import Pipeline, Role, check_branches, check_name, get_pipeline
from pipeline.producer import InvalidJobError
from pipeline.retry import hop, retry_budget, retry_delay
from pipeline.store import redis_client, sent_with_scripts
from settings import StagePolicy, get_settings

log = logging.getLogger("vetro.stage")

LEASE_MARGIN = 5  # seconds a lease outlives the hard time limit, so a live attempt never loses it
KEEP_PAUSE = 2  # seconds to wait before giving a message back when vetro's own bookkeeping failed
FRONTIER_EVERY = 1.0  # seconds between two updates of the queue frontier by one process
MESSAGE_SHOWN = 1000  # characters of a failure's message that Celery (its log, Flower) is given


class PoisonJobError(TechnicalError):
    """The step's process died too often while running it (a poison message): handed off, not retried."""


class UnknownJobError(TechnicalError):
    """The job's ledger has no record of it: expired, or a message vetro did not publish."""


class UnsupportedCanvasError(InvalidJobError):
    """A stage published by Celery's own API (`.delay()`, a chain, group or chord) rather than by vetro:
    refused before anything is sent, so no job is published only to be quarantined by the worker."""


@dataclass(frozen=True)
class HandedOff:
    """The step failed for good and is in the dead-letter store; the task then fails with DeadLettered."""

    error: BaseException
    failure_class: FailureClass


class DeadLettered(Exception):  # noqa: N818 (it names what happened, and Flower shows it)
    """What Celery is told of a step that failed for good: its failure class and the failure, in one line (its
    traceback is in the dead-letter row). A task's expected error (`Task.throws`): Celery logs it without a
    traceback, and its failure info walks two frames, not the failure's own (issue 11: a third of a dead letter's
    cost). Flower shows this text as the task's exception."""

    @classmethod
    def of(cls, handed_off: HandedOff) -> DeadLettered:
        error = handed_off.error
        kind = f"{type(error).__module__}.{type(error).__qualname__}"
        return cls(f"[{handed_off.failure_class}] {kind}: {str(error)[:MESSAGE_SHOWN]}")


_frontier_written = {"at": 0.0}


class Stage(Task):
    """A pipeline stage: a Celery task run at most once to success per job (and branch)."""

    abstract = True
    throws = (DeadLettered,)
    stage: str = ""
    pipeline_name: str = ""
    dependencies: tuple[str, ...] = ()
    transient_retries: int = 8
    technical_retries: int = 2
    lease_seconds: float = 35
    classifier: FailureClassifier = default_classifier

    @property
    def job(self) -> JobContext | None:
        """The running job, as its ledger knows it (falling back on the message's headers)."""
        return getattr(self.request, "vetro_job", None) or JobContext.from_headers(self.request)

    @property
    def pipeline(self) -> Pipeline:
        return get_pipeline(self.pipeline_name)

    def apply_async(self, args: Any = None, kwargs: Any = None, task_id: str | None = None, **options: Any) -> Any:
        """Publish this stage's message: only vetro does, for a job it has opened (or a running step's retry)."""
        if not (options.get("headers") or {}).get(JOB_ID) and not self._own_retry(task_id):
            raise UnsupportedCanvasError(
                f"{self.name}: vetro cannot yet run a stage sent with Celery's own API (.delay(), apply_async, a "
                f"chain, group or chord); submit the job with pipeline.submit(payload, "
                f"pipeline={self.pipeline_name!r}): nothing was published"
            )
        return super().apply_async(args, kwargs, task_id=task_id, **options)

    def _own_retry(self, task_id: str | None) -> bool:
        """A running step publishing its own message again (Celery's retry keeps the task id)."""
        request = self.request
        return bool(task_id) and not request.called_directly and request.id == task_id and bool(request.get(JOB_ID))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        job_id = self.request.get(JOB_ID)
        if not job_id:
            if self.request.called_directly:  # a plain function call, outside any job: nothing to guard
                return super().__call__(*args, **kwargs)
            # A message with no job (the shield quarantines these before they get here): never run it.
            raise Reject(f"{self.name}: a message without a job ({JOB_ID})", requeue=False)
        try:
            result = self._run_guarded(job_id, args, kwargs)
        except (Retry, Ignore, Reject):
            raise
        except Exception as exc:
            log.warning(
                "job %s at %s: vetro could not record its progress (%s: %s); the message goes back to the queue",
                job_id,
                self.stage,
                type(exc).__name__,
                exc,
            )
            if not isinstance(exc, SoftTimeLimitExceeded):  # out of time: the hard limit is seconds away
                time.sleep(KEEP_PAUSE)  # the store or broker is down: do not spin on the message
            raise Reject(exc, requeue=True) from exc
        if isinstance(result, HandedOff):
            raise DeadLettered.of(result) from None
        # What Celery logs and sends to Flower; the next steps already have the whole result.
        return privacy.redact(result)

    def _run_guarded(self, job_id: str, args: tuple, kwargs: dict) -> Any:
        settings = get_settings()
        now = time.time()
        not_before = float(self.request.get(NOT_BEFORE) or 0)
        if not_before > now + 0.5:  # a long wait still under way: hop again without running
            self._wait(job_id, not_before - now)
        pipeline = self.pipeline
        role = pipeline.role(self.stage)
        if role is Role.PART and args[-1] not in ledger.planned_branches(pipeline.name, job_id):
            # Checked before claiming: a forged part never takes the step's lease, so it never delays a real one.
            return self._refuse(f"branch {args[-1]!r} was not planned for job {job_id}", args, kwargs)
        guard = Guard(pipeline.name, job_id, pipeline.scope(self.stage, args))
        owner = uuid.uuid4().hex
        claim = guard.parse_claim(self._claim(guard, owner, now, role is Role.UNDO))
        if claim.status == UNKNOWN:
            job = JobContext.from_headers(self.request)
            return self._hand_off(job, guard.scope, UnknownJobError(f"job {job_id} has no ledger record"), args)
        job = claim.job
        self.request.vetro_job = job
        self.request.vetro_began = now
        if claim.status == UNDOING:
            log.info("job %s is being compensated: %s does not run", job_id, guard.scope)
            return None
        if claim.status == DONE:
            metrics.count(metrics.IDEMPOTENCY_HITS, pipeline.name, self.stage)
            driver.resume(job, pipeline, self.stage, args, claim.result)
            return claim.result
        if claim.status == BUSY:
            # Another attempt holds the lease: come back when it ends, without spending a retry.
            self._wait(job_id, max(1.0, claim.retry_in))
        if claim.crashed_runs >= settings.max_deliveries:
            guard.release(owner, time.time())
            poison = PoisonJobError(f"{guard.scope} started {claim.crashed_runs} times and never finished")
            return self._hand_off(job, guard.scope, poison, args, kwargs, attempts=claim.crashed_runs)
        try:
            result = super().__call__(*args, **kwargs)
            encoded = encode(result)  # as stored: a result JSON cannot hold fails the step here
            branches = check_branches(result) if role is Role.PLANNER else []
        except (Retry, Ignore, Reject):
            guard.release(owner, time.time())
            raise
        except Exception as exc:
            return self._failed(job, guard, owner, exc, args, kwargs)
        try:
            record = self._record(job, guard, role, args, result, encoded, branches)
        except Exception:
            with contextlib.suppress(Exception):  # if Redis is gone, the lease ends by itself
                guard.release(owner, time.time())
            raise
        if record is None:  # its next steps went out with the record
            return result
        if record.outcome == DUPLICATE:
            metrics.count(metrics.IDEMPOTENCY_HITS, pipeline.name, self.stage)
            driver.resume(job, pipeline, self.stage, args, result)
        else:
            driver.advance(job, pipeline, self.stage, args, result, record)
        return result

    def _record(
        self, job: JobContext, guard: Guard, role: Role, args: tuple, result: Any, encoded: str, branches: list[str]
    ) -> Record | None:
        """Record the step; None when the messages of the steps it starts went in the same script.

        A step followed by known steps (the next stage, or a planner's parts) sends their messages
        with its record when the broker is the result store: one round trip, and no moment where
        the step is recorded but what follows it is not yet queued. Should the step turn out
        recorded already, the copies are answered by their guards. Otherwise the record comes
        first and the driver publishes after it (pipeline.driver).
        """
        pipeline = self.pipeline
        first = self.stage == pipeline.stages[0].stage
        if role not in (Role.STEP, Role.PLANNER) or not records_carry_publishes():
            return guard.record(encoded, time.time(), role, branches, first, ran=self._ran())
        (pushes,) = driver.messages([(job, pipeline.after(self.stage, args, result))])
        guard.record(encoded, time.time(), role, branches, first, pushes, self._ran())
        return None

    def _ran(self) -> tuple[float, str]:
        """When this run began and on which worker (the job's timeline)."""
        return getattr(self.request, "vetro_began", 0.0), self.request.hostname or ""

    def _refuse(self, reason: str, args: tuple, kwargs: dict) -> None:
        """A message no job asked for (forged, or a bug): kept in the quarantine, never run, the job untouched."""
        headers = {"task": self.name, "id": self.request.id, **JobContext.from_headers(self.request).headers()}
        body = dumps([list(args), kwargs, None])
        queue = (self.request.delivery_info or {}).get("routing_key")
        quarantine.put(reason, headers, body, "application/json", queue)

    def _claim(self, guard: Guard, owner: str, now: float, compensation: bool) -> list:
        """Claim the step, push the job's due time and the queue's frontier: one round trip."""
        return sent_with_scripts(lambda: self._claim_once(guard, owner, now, compensation))

    def _claim_once(self, guard: Guard, owner: str, now: float, compensation: bool) -> list:
        pipe = redis_client().pipeline(transaction=False)
        guard.claim(owner, self.lease_seconds, pipe, compensation)
        ledger.expect(guard.pipeline, guard.job_id, pipe=pipe)
        sent_at = self.request.get(SENT_AT)
        if sent_at and now - _frontier_written["at"] >= FRONTIER_EVERY:
            queue = (self.request.delivery_info or {}).get("routing_key") or get_settings().queue
            ledger.advance_frontier(pipe, queue, float(sent_at))
            _frontier_written["at"] = now
        return pipe.execute()[0]

    def _classify(self, exc: Exception) -> Failure:
        try:
            return self.classifier.classify(exc)
        except Exception:  # a broken classification rule is our bug; the stage's failure still counts
            log.exception("classifying %s failed; treating it as technical", type(exc).__name__)
            return Failure(FailureClass.TECHNICAL)

    def _failed(self, job: JobContext, guard: Guard, owner: str, exc: Exception, args: tuple, kwargs: dict) -> Any:
        """The body raised: retry within the step's budget, else hand the job off."""
        failure = self._classify(exc)
        settings = get_settings()
        labels = (self.pipeline_name, self.stage)
        if failure.waiting:
            # An open breaker or a spent rate limit: come back when it clears, without spending a retry.
            release = guard.release(owner, time.time(), "waits", settings.max_dependency_waits, self.stage, self._ran())
            if release.retry:
                metrics.count(metrics.DEPENDENCY_WAITS, *labels)
                self._wait(job.job_id, (failure.retry_after or 1) + random.uniform(0, 1), exc)
        else:
            metrics.count(metrics.STEP_FAILURES, *labels, str(failure.failure_class))
            release = guard.release(owner, time.time(), "failed", retry_budget(self, failure), self.stage, self._ran())
            if release.retry:
                metrics.count(metrics.STEP_RETRIES, *labels, str(failure.failure_class))
                self._wait(job.job_id, retry_delay(self, failure, release.count), exc)
        return self._hand_off(job, guard.scope, exc, args, kwargs, failure.failure_class, release.count)

    def _wait(self, job_id: str, seconds: float, exc: BaseException | None = None) -> None:
        """Retry this message after `seconds` (in hops no longer than a worker may hold it)."""
        countdown, not_before = hop(self, seconds, time.time())
        ledger.expect(self.pipeline_name, job_id, countdown)
        try:
            raise self.retry(exc=exc, countdown=countdown, max_retries=None, headers={NOT_BEFORE: not_before or 0})
        except Reject as rejected:  # Celery drops the message when the retry cannot be published: keep it
            raise Reject(rejected.reason, requeue=True) from None

    def _hand_off(
        self,
        job: JobContext,
        scope: str,
        exc: BaseException,
        args: tuple,
        kwargs: dict | None = None,
        failure_class: FailureClass = FailureClass.TECHNICAL,
        attempts: int = 1,
    ) -> HandedOff:
        step = FailedStep(job, self.stage, scope, list(args), dict(kwargs or {}), self.request.hostname)
        driver.fail(step, failure_class, exc, attempts)
        return HandedOff(exc, failure_class)


POLICY_KNOBS = frozenset(StagePolicy.model_fields)


def stage(name: str, pipeline: str, *, dependencies: Iterable[str] = (), **policy: Any) -> Callable[[Callable], Stage]:
    """Declare the stage `name` of `pipeline` (a Celery task named '<pipeline>.<name>').

    The function receives the previous step's result (the payload for the first stage) and
    returns its own. `policy` sets this stage's values of the StagePolicy knobs (max_retries,
    technical_retries, backoff_base, backoff_max, jitter, soft_time_limit, time_limit), over
    the named defaults; settings override both (VETRO_STAGES__<PIPELINE>__<STAGE>__<KNOB>).
    `dependencies` names the external services it calls (their breakers and rate limits).
    """
    check_name("pipeline", pipeline)
    check_name("stage", name)
    unknown = set(policy) - POLICY_KNOBS
    if unknown:
        raise TypeError(f"stage {pipeline}.{name}: unknown policy {sorted(unknown)}; known: {sorted(POLICY_KNOBS)}")
    resolved = get_settings().stage_policy(pipeline, name, policy)
    return app.task(
        base=Stage,
        bind=True,
        name=f"{pipeline}.{name}",
        stage=name,
        pipeline_name=pipeline,
        dependencies=tuple(dependencies),
        ignore_result=True,  # the guard records every result; Celery's result backend is not needed
        time_limit=resolved.time_limit,
        soft_time_limit=resolved.soft_time_limit,
        lease_seconds=resolved.time_limit + LEASE_MARGIN,
        max_retries=None,  # vetro's per-class budgets decide, not Celery's single counter
        transient_retries=resolved.max_retries,
        technical_retries=resolved.technical_retries,
        retry_backoff=resolved.backoff_base,
        retry_backoff_max=resolved.backoff_max,
        retry_jitter=resolved.jitter,
    )
