"""The base every stage shares: the idempotency guard around the body, then failure handling.

Stage code raises; this base decides: retry a transient or technical failure with backoff
(each class has its own budget, counted in a header, so waiting on a busy lease, an open
breaker or a rate limit costs nothing), or hand the job off to the dead-letter store. Task
options (time limits, budgets, backoff) come from the stage's policy in settings, as Celery's
own task attributes.
"""

from __future__ import annotations

import inspect
import logging
import random
import uuid
from collections.abc import Callable
from functools import cached_property
from typing import Any

from celery import Task
from celery.exceptions import Ignore, Reject, Retry, TimeLimitExceeded

from pipeline import jobs
from pipeline.app import app
from pipeline.canvas import job_id_of
from pipeline.context import DEPENDENCY_WAITS, FAILED_ATTEMPTS, JobContext
from pipeline.failures import FailureClass, FailureClassifier, TechnicalError, default_classifier
from pipeline.idempotency import BUSY, DONE, Guard
from pipeline.outcomes import FailedStep, hand_off
from pipeline.retry import retry_delay
from settings import get_settings

log = logging.getLogger("vetro.stage")

LEASE_MARGIN = 5  # seconds a lease outlives the hard time limit, so a live attempt never loses it
HAND_OFF_RETRY = 30  # seconds to wait when neither the database nor Redis could take a dead letter


class PoisonJobError(TechnicalError):
    """The step's process died too often while running it (a poison message): handed off, not retried."""


class Stage(Task):
    """A pipeline stage: a Celery task run at most once to success per job (and destination)."""

    abstract = True
    stage: str = ""
    destination_arg: str | None = None  # the argument naming the destination, for fan-out stages
    transient_retries: int = 8
    technical_retries: int = 2
    lease_seconds: float = 35
    classifier: FailureClassifier = default_classifier

    @property
    def job(self) -> JobContext | None:
        return JobContext.from_headers(self.request)

    @cached_property
    def _signature(self) -> inspect.Signature:
        return inspect.signature(self.run)

    def scope(self, args: tuple, kwargs: dict) -> str:
        """The guarded step: the stage, plus the destination for a fan-out stage."""
        if not self.destination_arg:
            return self.stage
        bound = self._signature.bind_partial(*args, **kwargs).arguments
        return f"{self.stage}.{bound[self.destination_arg]}"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        job = self.job
        if job is None:  # called directly, outside any job: nothing to guard
            return super().__call__(*args, **kwargs)
        settings = get_settings()
        guard = Guard(job.idempotency_key, self.scope(args, kwargs))
        owner = uuid.uuid4().hex
        claim = guard.claim(owner, self.lease_seconds, settings.idempotency_ttl)
        if claim.status == DONE:
            return claim.result
        if claim.status == BUSY:
            # Another attempt holds the lease: come back when it ends, without spending a retry.
            raise self.retry(countdown=max(1, round(claim.retry_in)), max_retries=None, headers=self._headers(job))
        if claim.crashed_runs >= settings.max_deliveries:
            guard.release(owner)
            poison = PoisonJobError(f"{guard.scope} started {claim.crashed_runs} times and never finished")
            self._hand_off(job, poison, FailureClass.TECHNICAL, args, kwargs, attempts=claim.crashed_runs)
            raise poison
        try:
            result = super().__call__(*args, **kwargs)
        except (Retry, Ignore, Reject):
            guard.release(owner)
            raise
        except Exception as exc:
            guard.release(owner)
            self._retry_or_hand_off(job, exc, args, kwargs)
            raise
        guard.record(owner, result, settings.idempotency_ttl)
        return result

    def _count(self, header: str) -> int:
        return int(self.request.get(header) or 0)

    def _headers(self, job: JobContext, **counts: int) -> dict[str, Any]:
        """The job's headers plus this stage's counters, carried into the retry's message."""
        current = {FAILED_ATTEMPTS: self._count(FAILED_ATTEMPTS), DEPENDENCY_WAITS: self._count(DEPENDENCY_WAITS)}
        return {**job.headers(), **current, **counts}

    def _retry_or_hand_off(self, job: JobContext, exc: Exception, args: tuple, kwargs: dict) -> None:
        failure = self.classifier.classify(exc)
        failed, waits = self._count(FAILED_ATTEMPTS), self._count(DEPENDENCY_WAITS)
        if failure.waiting and waits < get_settings().max_dependency_waits:
            # An open breaker or a spent rate limit: come back when it clears, without spending a retry.
            jobs.record_wait(job, self.stage)
            countdown = (failure.retry_after or 1) + random.uniform(0, 1)  # spread the fleet's return
            raise self.retry(
                exc=exc,
                countdown=countdown,
                max_retries=None,
                headers=self._headers(job, **{DEPENDENCY_WAITS: waits + 1}),
            )
        delay = retry_delay(self, failure, failed) if failure.retryable and not failure.waiting else None
        if delay is not None:
            jobs.record_retry(job, self.stage)
            raise self.retry(
                exc=exc, countdown=delay, max_retries=None, headers=self._headers(job, **{FAILED_ATTEMPTS: failed + 1})
            )
        self._hand_off(job, exc, failure.failure_class, args, kwargs, attempts=failed + 1)

    def _hand_off(
        self, job: JobContext, exc: Exception, failure_class: FailureClass, args: tuple, kwargs: dict, attempts: int
    ) -> None:
        step = FailedStep(job, self.stage, self.scope(args, kwargs), list(args), dict(kwargs), self.request.hostname)
        try:
            hand_off(step, failure_class, exc, attempts)
        except Exception:
            log.exception("could not store the dead letter of job %s; keeping the job and trying later", job.job_id)
            raise self.retry(countdown=HAND_OFF_RETRY, max_retries=None, headers=self._headers(job)) from None

    def on_failure(self, exc: Exception, task_id: str, args: tuple, kwargs: dict, einfo: Any) -> None:
        # A hard time limit kills the process before our handler runs; the worker's main
        # process reports it here, without the request, so the job is found by its task id.
        if isinstance(exc, TimeLimitExceeded):
            step = FailedStep(
                jobs.context_of(job_id_of(task_id)), self.stage, self.scope(args, kwargs), list(args), dict(kwargs)
            )
            hand_off(step, FailureClass.TECHNICAL, exc, attempts=1)


def stage(name: str, pipeline: str, **options: Any) -> Callable[[Callable], Stage]:
    """Declare a stage task named '<pipeline>.<name>' with the policy settings give that stage."""
    policy = get_settings().stages.for_stage(name)
    return app.task(
        base=Stage,
        bind=True,
        name=f"{pipeline}.{name}",
        stage=name,
        time_limit=policy.time_limit,
        soft_time_limit=policy.soft_time_limit,
        lease_seconds=policy.time_limit + LEASE_MARGIN,
        max_retries=None,  # vetro's per-class budgets decide, not Celery's single counter
        transient_retries=policy.max_retries,
        technical_retries=policy.technical_retries,
        retry_backoff=policy.backoff_base,
        retry_backoff_max=policy.backoff_max,
        retry_jitter=policy.jitter,
        **options,
    )
