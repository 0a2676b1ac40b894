"""The base every stage shares: a Celery task whose every delivery goes through the step's phases.

Stage code raises; the phases (pipeline.jobs.phases) decide: retry a transient or technical failure with
backoff (each class has its own budget, kept with the step in the guard, so waiting on a busy lease,
an open breaker or a rate limit costs nothing), or hand the job off to the dead-letter store.
After the body they record the result and start what follows it, from the job's plan.

Everything around the body is vetro's own bookkeeping (the guard, the ledger, publishing, the
hand-off). When that fails (Redis or the broker unreachable, say), the message goes back to
the queue: it is never acknowledged as a failure, so an outage loses no job.

A stage published with Celery's own API (`.delay()`, `apply_async`, any canvas) opens a job there
and then (pipeline.jobs.canvas): `apply_async` is where every way in meets.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from celery import Task
from celery.exceptions import Ignore, Reject, Retry, SoftTimeLimitExceeded
from pydantic import BaseModel

from pipeline import privacy
from pipeline.adapter.app import app
from pipeline.adapter.internals import attached, header
from pipeline.adapter.job_headers import job_of
from pipeline.context import JOB_ID, SCOPE, JobContext
from pipeline.failures import AutoretryClassifier, FailureClassifier, RetryRequestedError, default_classifier
from pipeline.jobs import canvas
from pipeline.jobs.phases import JOB_ATTACHED, HandedOff, StepRun, run_step
from pipeline.jobs.pipelines import check_name, register_stage
from pipeline.jobs.retry import CELERY_RETRY_OPTIONS, exception_classes, knobs_of_celery_options
from settings import StagePolicy, get_settings

log = logging.getLogger("vetro.stage")

LEASE_MARGIN = 5  # seconds a lease outlives the hard time limit, so a live attempt never loses it
KEEP_PAUSE = 2  # seconds to wait before giving a message back when vetro's own bookkeeping failed
MESSAGE_SHOWN = 1000  # characters of a failure's message that Celery (its log, Flower) is given


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
    classifier: FailureClassifier | AutoretryClassifier = default_classifier
    # What the stage takes as its first argument: an operator's corrected input is checked against it.
    input_model: type[BaseModel] | None = None

    @property
    def job(self) -> JobContext | None:
        """The running job, as its ledger knows it (falling back on the message's headers)."""
        return attached(self.request, JOB_ATTACHED) or job_of(self.request)

    def apply_async(self, args: Any = None, kwargs: Any = None, task_id: str | None = None, **options: Any) -> Any:
        """Publish this stage: vetro's own messages go out as they are; anything else (Celery's API) opens a job."""
        eager = self.app.conf.task_always_eager  # Celery then runs it in process, with `apply`: no job, no guard
        if eager or (options.get("headers") or {}).get(JOB_ID) or self._own_retry(task_id):
            return super().apply_async(args, kwargs, task_id=task_id, **options)
        return canvas.capture(self, args, kwargs, task_id, options)

    def _own_retry(self, task_id: str | None) -> bool:
        """A running step publishing its own message again (Celery's retry keeps the task id)."""
        request = self.request
        return bool(task_id) and not request.called_directly and request.id == task_id and bool(header(request, JOB_ID))

    def retry(
        self,
        args: Any = None,
        kwargs: Any = None,
        exc: BaseException | None = None,
        throw: bool = True,
        eta: Any = None,
        countdown: float | None = None,
        max_retries: int | None = None,
        **options: Any,
    ) -> Any:
        """`self.retry(...)` in a stage's body is a guarded retry: the step runs again after `countdown` (or until
        `eta`, else `default_retry_delay`), counted against `max_retries` (else the stage's transient budget),
        in hops when the wait is longer than a worker may hold a message. It always raises."""
        if attached(self.request, JOB_ATTACHED) is None:  # not in a guarded body: Celery's own
            return super().retry(args, kwargs, exc, throw, eta, countdown, max_retries, **options)
        if countdown is None:
            countdown = max(0.0, eta.timestamp() - time.time()) if eta is not None else self.default_retry_delay
        raise RetryRequestedError(exc, float(countdown), max_retries)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        job_id = header(self.request, JOB_ID)
        if not job_id:
            if self.request.called_directly or self.request.is_eager:  # a call, `.apply()`: no job, nothing to guard
                return super().__call__(*args, **kwargs)
            # A message with no job (the shield quarantines these before they get here): never run it.
            raise Reject(f"{self.name}: a message without a job ({JOB_ID})", requeue=False)
        try:
            result = run_step(StepRun(self, job_id, args, kwargs))
        except (Retry, Ignore, Reject):
            raise
        except Exception as exc:
            log.warning(
                "job %s at %s: vetro could not record its progress (%s: %s); the message goes back to the queue",
                job_id,
                header(self.request, SCOPE) or self.stage,
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


POLICY_KNOBS = frozenset(StagePolicy.model_fields)


def stage(
    name: str,
    pipeline: str,
    *,
    dependencies: Iterable[str] = (),
    input_model: type[BaseModel] | None = None,
    **policy: Any,
) -> Callable[[Callable], Stage]:
    """Declare the stage `name` of `pipeline` (a Celery task named '<pipeline>.<name>').

    The function receives the previous step's result (the payload for the first stage) and
    returns its own. `policy` sets this stage's values of the StagePolicy knobs (max_retries,
    technical_retries, backoff_base, backoff_max, jitter, soft_time_limit, time_limit), over
    the named defaults; settings override both (VETRO_STAGES__<PIPELINE>__<STAGE>__<KNOB>).
    `dependencies` names the external services it calls (their breakers and rate limits). `input_model`
    (a pydantic model) is what its first argument must be: a replay with an input an operator edited is
    checked against it before it runs.
    """
    check_name("pipeline", pipeline)
    check_name("stage", name)
    where = f"{pipeline}.{name}"
    celery = {option: policy.pop(option) for option in CELERY_RETRY_OPTIONS if option in policy}
    unknown = set(policy) - POLICY_KNOBS
    if unknown:
        known = sorted(POLICY_KNOBS | set(CELERY_RETRY_OPTIONS))
        raise TypeError(f"stage {where}: unknown policy {sorted(unknown)}; known: {known}")
    autoretry_for = exception_classes(where, "autoretry_for", celery.get("autoretry_for", ()))
    dont_autoretry_for = exception_classes(where, "dont_autoretry_for", celery.get("dont_autoretry_for", ()))
    resolved = get_settings().stage_policy(pipeline, name, knobs_of_celery_options(where, celery, policy))
    listed = autoretry_for or dont_autoretry_for
    classifier = AutoretryClassifier(default_classifier, autoretry_for, dont_autoretry_for) if listed else None
    declare = app.task(
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
        default_retry_delay=celery.get("default_retry_delay", Stage.default_retry_delay),
        input_model=input_model,
        **({"classifier": classifier} if classifier else {}),
    )

    def declared(function: Callable) -> Stage:
        return register_stage(declare(function))

    return declared
