"""Faults a test can ask a worker for, loaded with `celery worker --include tests.worker_plugins`.

VETRO_TEST_DUPLICATE_STEP=operate.billing: after that step succeeds, publish its message
again, as a broker redelivery would (same task id, same headers).

Per job: a test sets `vetro-test:fault:<idempotency key>` in Redis (see `inject`) to one of
- die-before-join: the pool process that completed a fan-out's parts dies before publishing the join;
- kill-worker-before-join: the whole worker (main process and pool) dies at that moment;
- fail-retry-publish: the broker refuses the first retry's message;
- swallow: every message of the job is acknowledged without running (a message lost by the worker);
- lose-once:<stage>: the first message of that stage is acknowledged without running.
The one-shot faults happen once per job (a second Redis key remembers that they did).
"""

from __future__ import annotations

import os
import signal

from celery.app.task import Task
from celery.signals import task_success
from kombu.exceptions import OperationalError

from pipeline.adapter.internals import attached
from pipeline.adapter.job_headers import job_of
from pipeline.jobs import driver
from pipeline.jobs.guard import JOINED
from pipeline.jobs.phases import JOB_ATTACHED
from pipeline.jobs.stages import Stage
from pipeline.store import redis_client

DUPLICATED_HEADER = "vetro_test_duplicate"
FAULT_TTL = 3600


def inject(idempotency_key: str, fault: str) -> None:
    redis_client().set(f"vetro-test:fault:{idempotency_key}", fault, ex=FAULT_TTL)


def _fault(job: object) -> str | None:
    key = getattr(job, "idempotency_key", None)
    value = redis_client().get(f"vetro-test:fault:{key}") if key else None
    return value.decode() if value else None


def _first_time(job: object, fault: str) -> bool:
    return bool(redis_client().set(f"vetro-test:done:{fault}:{job.job_id}", 1, nx=True, ex=FAULT_TTL))


_advance = driver.advance


def _advance_or_die(job, plan, route, record, sent) -> None:
    fault = _fault(job)
    joined = record.outcome == JOINED
    if joined and fault in ("die-before-join", "kill-worker-before-join") and _first_time(job, fault):
        if fault == "kill-worker-before-join":
            os.kill(os.getppid(), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)
    _advance(job, plan, route, record, sent)


driver.advance = _advance_or_die

_apply_async = Task.apply_async


def _apply_async_or_refuse(self, args=None, kwargs=None, **options):
    job = attached(self.request, JOB_ATTACHED) if self.request else None
    # A retry always names its countdown, which full jitter can make 0.
    retry = options.get("countdown") is not None
    if retry and _fault(job) == "fail-retry-publish" and _first_time(job, "fail-retry-publish"):
        raise OperationalError("injected: the broker refused the retry's message")
    return _apply_async(self, args, kwargs, **options)


Task.apply_async = _apply_async_or_refuse

_call = Stage.__call__


def _call_or_swallow(self, *args, **kwargs):
    job = job_of(self.request)
    fault = _fault(job) if job is not None else None
    if fault == "swallow" or (fault == f"lose-once:{self.stage}" and _first_time(job, fault)):
        return None  # acknowledged, never run: as if the consumer that popped it had died
    return _call(self, *args, **kwargs)


Stage.__call__ = _call_or_swallow


@task_success.connect
def _duplicate_step(sender=None, **_: object) -> None:
    wanted = os.environ.get("VETRO_TEST_DUPLICATE_STEP")
    request = sender.request
    if not wanted or request.get(DUPLICATED_HEADER) or not hasattr(sender, "pipeline_name"):
        return
    if request.get("vetro_scope") != wanted:
        return
    job_headers = {
        name: request.get(name)
        for name in ("vetro_job_id", "vetro_idempotency_key", "vetro_correlation_id", "vetro_pipeline", "vetro_scope")
    }
    sender.signature_from_request(headers={**job_headers, DUPLICATED_HEADER: True}).apply_async()
