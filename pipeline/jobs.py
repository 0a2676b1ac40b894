"""Job records in the result store: what a producer or operator asks about one job."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

import redis

from pipeline.context import JobContext
from pipeline.idempotency import guard_state
from pipeline.store import key, redis_client
from settings import get_settings

QUEUED, COMPLETED, FAILED = "queued", "completed", "failed"
STATS_KEY = key("stats")


def _job_key(job_id: str) -> str:
    return key("job", job_id)


def record_queued(pipe: redis.client.Pipeline, job: JobContext) -> None:
    """Add the 'queued' record of a job to a pipeline the producer is about to execute."""
    record = {**job.as_dict(), "status": QUEUED, "submitted_at": time.time()}
    pipe.hset(_job_key(job.job_id), mapping=record)
    pipe.expire(_job_key(job.job_id), get_settings().job_record_ttl)


def _update(job: JobContext, counter: str, **fields: object) -> None:
    pipe = redis_client().pipeline()
    pipe.hset(_job_key(job.job_id), mapping={**job.as_dict(), **fields})
    pipe.expire(_job_key(job.job_id), get_settings().job_record_ttl)
    pipe.hincrby(STATS_KEY, counter, 1)
    pipe.execute()


def record_completed(job: JobContext, destinations: Iterable[str]) -> None:
    _update(
        job, "jobs_completed", status=COMPLETED, finished_at=time.time(), destinations=json.dumps(sorted(destinations))
    )


def record_failed(job: JobContext, stage: str, failure_class: str, error: str) -> None:
    _update(
        job,
        f"failures_{failure_class}",
        status=FAILED,
        finished_at=time.time(),
        failed_stage=stage,
        failure_class=failure_class,
        error=error[:2000],
    )


def record_replayed(job: JobContext) -> None:
    """The job runs again from the dead-letter store; its status changes when the replay ends."""
    _update(job, "jobs_replayed", replay=job.replay, replayed_at=time.time())


def _count(job: JobContext, stage: str, kind: str) -> None:
    """Count one retry or wait on the job (in all and per stage) and in the global stats."""
    pipe = redis_client().pipeline()
    pipe.hincrby(_job_key(job.job_id), kind, 1)
    pipe.hincrby(_job_key(job.job_id), f"{kind}_{stage}", 1)
    pipe.hincrby(STATS_KEY, f"{kind}_{stage}", 1)
    pipe.execute()


def record_retry(job: JobContext, stage: str) -> None:
    _count(job, stage, "retries")


def record_wait(job: JobContext, stage: str) -> None:
    """A retry spent waiting for a dependency (open breaker, rate limit), not a failed attempt."""
    _count(job, stage, "waits")


def _decode(raw: dict[bytes, bytes]) -> dict[str, str] | None:
    return {k.decode(): v.decode() for k, v in raw.items()} or None


def get_job(job_id: str) -> dict[str, str] | None:
    """The job's record (status, stage and error if it failed, retries), or None if unknown."""
    return _decode(redis_client().hgetall(_job_key(job_id)))


def describe_job(job_id: str) -> dict[str, Any] | None:
    """The job's record plus the state of each guarded step (done with its result, or running)."""
    record = get_job(job_id)
    if record is None:
        return None
    return {**record, "steps": guard_state(record["idempotency_key"])}


def context_of(job_id: str) -> JobContext | None:
    """The job's identity from its record, for code that has only a task id."""
    record = get_job(job_id)
    if record is None:
        return None
    return JobContext(job_id, record["idempotency_key"], record["correlation_id"], record["pipeline"])


def get_jobs(job_ids: list[str]) -> list[dict[str, str] | None]:
    pipe = redis_client().pipeline(transaction=False)
    for job_id in job_ids:
        pipe.hgetall(_job_key(job_id))
    return [_decode(raw) for raw in pipe.execute()]


def settled(job_ids: list[str], status: str | None = None) -> list[dict[str, str]] | None:
    """The jobs' records once none is still queued (or, given a status, once all have it); else None."""
    records = get_jobs(job_ids)
    done = all(record and (record["status"] == status if status else record["status"] != QUEUED) for record in records)
    return records if done else None


def stats() -> dict[str, int]:
    return {k.decode(): int(v) for k, v in redis_client().hgetall(STATS_KEY).items()}
