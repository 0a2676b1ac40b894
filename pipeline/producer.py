"""Producers' entry points: `submit` one job or `submit_many` in bulk, deduplicated by idempotency key.

Everything is checked before anything is published: a batch with one bad payload publishes nothing.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

from pipeline import jobs
from pipeline.app import app
from pipeline.canvas import get_pipeline
from pipeline.context import JobContext
from pipeline.store import key, redis_client
from settings import get_settings

DEFAULT_PIPELINE = "orders"
PUBLISH_BATCH = 500


class InvalidJobError(ValueError):
    """A payload that cannot become a job; nothing was published."""


@dataclass(frozen=True)
class JobRequest:
    payload: dict[str, Any]
    idempotency_key: str


def canonical_json(payload: Any) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def check_payload(payload: Any, idempotency_key: str | None = None, position: str = "payload") -> JobRequest:
    """Refuse what is not a JSON object or is too large; derive the key from the payload if none given."""
    if not isinstance(payload, dict):
        raise InvalidJobError(f"{position}: expected a JSON object, got {type(payload).__name__}")
    try:
        encoded = canonical_json(payload)
    except (TypeError, ValueError) as error:
        raise InvalidJobError(f"{position}: not JSON-serialisable: {error}") from None
    limit = get_settings().max_payload_bytes
    if len(encoded) > limit:
        raise InvalidJobError(f"{position}: {len(encoded)} bytes, over the limit of {limit} (VETRO_MAX_PAYLOAD_BYTES)")
    if idempotency_key is not None and (not isinstance(idempotency_key, str) or not idempotency_key.strip()):
        raise InvalidJobError(f"{position}: idempotency key must be a non-empty string")
    return JobRequest(payload, idempotency_key or hashlib.sha256(encoded).hexdigest())


def submit(
    payload: dict[str, Any],
    idempotency_key: str | None = None,
    *,
    correlation_id: str | None = None,
    pipeline: str = DEFAULT_PIPELINE,
) -> str:
    """Enqueue one job and return its id; the same idempotency key returns the same job id."""
    request = check_payload(payload, idempotency_key)
    return _publish([request], pipeline, correlation_id)[0]


def submit_many(
    items: Iterable[dict[str, Any] | tuple[dict[str, Any], str | None]],
    *,
    pipeline: str = DEFAULT_PIPELINE,
    on_progress: Callable[[int], None] | None = None,
) -> list[str]:
    """Enqueue many jobs over one connection, in batches; every payload is checked first.

    `on_progress(n)` is called after each batch with the number of jobs it handled.
    """
    requests = [check_payload(*_split(item), position=f"item {index}") for index, item in enumerate(items)]
    get_pipeline(pipeline)
    job_ids: list[str] = []
    for batch in _batches(requests, PUBLISH_BATCH):
        job_ids += _publish(batch, pipeline, None)
        if on_progress:
            on_progress(len(batch))
    return job_ids


def _split(item: Any) -> tuple[Any, str | None]:
    return item if isinstance(item, tuple) else (item, None)


def _batches(items: list[JobRequest], size: int) -> Iterator[list[JobRequest]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def _publish(requests: list[JobRequest], pipeline_name: str, correlation_id: str | None) -> list[str]:
    pipeline = get_pipeline(pipeline_name)
    settings = get_settings()
    client = redis_client()
    candidates = [str(uuid.uuid4()) for _ in requests]
    claim_keys = [key("submitted", pipeline_name, request.idempotency_key) for request in requests]

    claims = client.pipeline(transaction=False)
    for claim_key, job_id in zip(claim_keys, candidates, strict=True):
        claims.set(claim_key, job_id, nx=True, ex=settings.submit_dedup_ttl)
        claims.get(claim_key)
    answers = claims.execute()
    job_ids = [answer.decode() for answer in answers[1::2]]
    fresh = [
        (
            request,
            JobContext(job_id, request.idempotency_key, correlation_id or str(uuid.uuid4()), pipeline_name),
            claim_key,
        )
        for request, job_id, claimed, claim_key in zip(requests, job_ids, answers[0::2], claim_keys, strict=True)
        if claimed
    ]
    if not fresh:
        return job_ids

    records = client.pipeline(transaction=False)
    for _, job, _ in fresh:
        jobs.record_queued(records, job)
    records.execute()
    published = 0
    try:
        with app.producer_or_acquire() as producer:
            for request, job, _ in fresh:
                pipeline.signature(request.payload, job).apply_async(producer=producer)
                published += 1
    except Exception:
        # Release the keys of the jobs not published, so resubmitting them is not a silent no-op.
        client.delete(*[claim_key for _, _, claim_key in fresh[published:]])
        raise
    return job_ids
