"""The base every stage shares: classify a failure, retry it with backoff, or hand the job off.

Stage code raises; this base decides. Task options (time limits, retry budget and backoff)
come from the stage's policy in settings, as Celery's own task attributes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import Task
from celery.exceptions import Ignore, Reject, Retry

from pipeline import jobs
from pipeline.app import app
from pipeline.context import JobContext
from pipeline.failures import FailureClassifier, default_classifier
from pipeline.handoff import hand_off
from pipeline.retry import retry_delay
from settings import get_settings


class Stage(Task):
    """A pipeline stage: a Celery task with vetro's failure handling around its body."""

    abstract = True
    stage: str = ""
    technical_retries: int = 2
    classifier: FailureClassifier = default_classifier

    @property
    def job(self) -> JobContext | None:
        return JobContext.from_headers(self.request)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except (Retry, Ignore, Reject):
            raise
        except Exception as exc:
            self._handle_failure(exc)
            raise

    def _handle_failure(self, exc: Exception) -> None:
        failure = self.classifier.classify(exc)
        retries = self.request.retries or 0
        delay = retry_delay(self, failure, retries) if failure.retryable else None
        job = self.job
        if delay is not None:
            if job is not None:
                jobs.record_retry(job, self.stage)
            # Our budget is per failure class, so Celery's own max_retries check is off here.
            raise self.retry(exc=exc, countdown=delay, max_retries=None)
        hand_off(job, self.stage, failure.failure_class, exc, attempts=retries + 1)


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
        max_retries=policy.max_retries,
        technical_retries=policy.technical_retries,
        retry_backoff=policy.backoff_base,
        retry_backoff_max=policy.backoff_max,
        retry_jitter=policy.jitter,
        **options,
    )
