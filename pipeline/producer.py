"""Producers' entry points: `submit` one job or `submit_many` in bulk, deduplicated by idempotency key.

Everything is checked before anything is published: a batch with one bad payload publishes nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

from pipeline import driver, ledger, metrics
from pipeline.app import records_carry_publishes
from pipeline.context import JobContext
from pipeline.pipelines import Pipeline, get_pipeline
from pipeline.store import JobKeys, redis_client, sent_with_scripts
from settings import get_settings

log = logging.getLogger("vetro.producer")

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
    """Refuse what is not a JSON object, too large, too deep or not plain JSON, and a bad key;
    derive the key from the payload if none is given."""
    if not isinstance(payload, dict):
        raise InvalidJobError(f"{position}: expected a JSON object, got {type(payload).__name__}")
    settings = get_settings()
    _check_shape(payload, position, settings.max_payload_depth, settings.max_payload_elements)
    try:
        encoded = canonical_json(payload)
    except (TypeError, ValueError) as error:
        raise InvalidJobError(f"{position}: not JSON-serialisable: {error}") from None
    limit = settings.max_payload_bytes
    if len(encoded) > limit:
        raise InvalidJobError(f"{position}: {len(encoded)} bytes, over the limit of {limit} (VETRO_MAX_PAYLOAD_BYTES)")
    if idempotency_key is not None:
        check_key(idempotency_key, position, settings.max_key_length)
    return JobRequest(payload, idempotency_key or hashlib.sha256(encoded).hexdigest())


def check_key(key: Any, position: str, max_length: int) -> None:
    """A key travels in HTTP headers and database columns: printable text of a bounded length."""
    if not isinstance(key, str) or not key.strip():
        raise InvalidJobError(f"{position}: idempotency key must be a non-empty string")
    if len(key) > max_length:
        limit = f"over {max_length} (VETRO_MAX_KEY_LENGTH)"
        raise InvalidJobError(f"{position}: idempotency key of {len(key)} characters, {limit}")
    if not key.isprintable() or not key.isascii():
        raise InvalidJobError(f"{position}: idempotency key must be printable ASCII, got {key[:40]!r}")


def _check_shape(payload: dict, position: str, max_depth: int, max_elements: int) -> None:
    """Walk the payload without recursion: only JSON's types, valid Unicode, bounded depth and size."""
    pending: list[tuple[Any, int]] = [(payload, 1)]
    elements = 0
    while pending:
        value, depth = pending.pop()
        elements += 1
        if elements > max_elements:
            raise InvalidJobError(f"{position}: over {max_elements} values (VETRO_MAX_PAYLOAD_ELEMENTS)")
        if isinstance(value, dict | list):
            if depth > max_depth:
                raise InvalidJobError(f"{position}: nested deeper than {max_depth} levels (VETRO_MAX_PAYLOAD_DEPTH)")
            if isinstance(value, dict):
                for name in value:
                    if not isinstance(name, str):
                        raise InvalidJobError(f"{position}: object keys must be strings, got {name!r:.40}")
                    _check_text(name, position)
            pending.extend((item, depth + 1) for item in (value.values() if isinstance(value, dict) else value))
        elif isinstance(value, str):
            _check_text(value, position)
        elif not (value is None or isinstance(value, bool | int | float)):
            raise InvalidJobError(f"{position}: {type(value).__name__} is not a JSON value")


def _check_text(text: str, position: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidJobError(f"{position}: a string is not valid Unicode: {text[:40]!r}") from None


def parse_payload(text: str, position: str) -> Any:
    """One JSON document, or InvalidJobError naming what is wrong (never a RecursionError or a traceback)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidJobError(f"{position}: not valid JSON: {error.msg} (column {error.colno})") from None
    except RecursionError:
        raise InvalidJobError(f"{position}: not valid JSON: nested too deeply") from None
    except ValueError as error:  # e.g. an integer of more digits than Python converts
        raise InvalidJobError(f"{position}: not valid JSON: {error}") from None


def parse_json_lines(data: bytes, source: str) -> list[dict[str, Any]]:
    """Payloads from UTF-8 JSON Lines, each checked; lines end at '\\n' only (a U+2028 inside a string is
    text), and a blank line is skipped."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidJobError(f"{source}: not UTF-8 (at byte {error.start})") from None
    payloads = []
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if line.strip():
            position = f"{source}:{number}"
            payloads.append(check_payload(parse_payload(line, position), position=position).payload)
    return payloads


def submit(
    payload: dict[str, Any],
    idempotency_key: str | None = None,
    *,
    correlation_id: str | None = None,
    pipeline: str = DEFAULT_PIPELINE,
) -> str:
    """Enqueue one job and return its id; the same idempotency key returns the same job id."""
    request = check_payload(payload, idempotency_key)
    return _publish([request], get_pipeline(pipeline), correlation_id)[0].job_id


def submit_many(
    items: Iterable[dict[str, Any] | tuple[dict[str, Any], str | None]],
    *,
    pipeline: str = DEFAULT_PIPELINE,
    on_progress: Callable[[int, int], None] | None = None,
) -> list[str]:
    """Enqueue many jobs over one connection, in batches; every payload is checked first.

    `on_progress(handled, new)` is called after each batch: jobs handled, and how many of them
    were new (the others had been submitted before under the same key, and are not run again).
    """
    requests = [check_payload(*_split(item), position=f"item {index}") for index, item in enumerate(items)]
    chosen = get_pipeline(pipeline)
    job_ids: list[str] = []
    for batch in _batches(requests, PUBLISH_BATCH):
        submissions = _publish(batch, chosen, None)
        job_ids += [submission.job_id for submission in submissions]
        if on_progress:
            on_progress(len(batch), sum(submission.new for submission in submissions))
    return job_ids


def _split(item: Any) -> tuple[Any, str | None]:
    return item if isinstance(item, tuple) else (item, None)


def _batches(items: list[JobRequest], size: int) -> Iterator[list[JobRequest]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


@dataclass(frozen=True)
class Submission:
    job_id: str
    new: bool


def _publish(requests: list[JobRequest], pipeline: Pipeline, correlation_id: str | None) -> list[Submission]:
    """Map each key to its job (new or known), record new jobs in the ledger, then publish their first steps.

    The ledger record is what makes a job exist: once it is written the job will run, even if the
    publish below fails (the reconciler publishes what the broker never got). A known key whose
    ledger record is missing (a producer that died between the two writes) is recorded again.
    """
    client = redis_client()
    # One job: a script claims, records and publishes it in one round trip. A batch: two round trips
    # of plain commands cost Redis less than a script per job (bench.producer).
    if len(requests) == 1 and records_carry_publishes():
        job_ids, opened = _open_in_one_trip(client, requests, pipeline, correlation_id)
        claimed: set[str] = set()
    else:
        (job_ids, claimed), opened = _claim_keys(client, requests, pipeline), set()
    known = [job_id for job_id in job_ids if job_id not in claimed and job_id not in opened]
    recorded = set(_recorded(client, pipeline.name, known)) | opened
    fresh = {
        job_id: (request, _job(job_id, request, pipeline, correlation_id))
        for request, job_id in reversed(list(zip(requests, job_ids, strict=True)))  # the first of a repeated key wins
        if job_id not in recorded
    }.values()
    if fresh:
        records = client.pipeline(transaction=False)
        ledger.open_jobs(records, pipeline.name, [(job, request.payload) for request, job in fresh])
        recorded_only = lambda error: log.warning(  # noqa: E731
            "%d job(s) recorded but not yet published (%s); the reconciler will", len(fresh), error
        )
        driver.publish_after(
            records, [(job, [pipeline.first(request.payload)]) for request, job in fresh], recorded_only
        )
    new = opened | {job.job_id for _, job in fresh}
    submissions = [Submission(job_id, job_id in new) for job_id in job_ids]
    fresh_count = sum(submission.new for submission in submissions)
    metrics.count(metrics.JOBS_SUBMITTED, pipeline.name, amount=fresh_count)
    if len(submissions) > fresh_count:
        metrics.count(metrics.IDEMPOTENCY_HITS, pipeline.name, "submit", amount=len(submissions) - fresh_count)
    return submissions


def _job(job_id: str, request: JobRequest, pipeline: Pipeline, correlation_id: str | None) -> JobContext:
    return JobContext(job_id, request.idempotency_key, correlation_id or str(uuid.uuid4()), pipeline.name)


def _open_in_one_trip(
    client: Any, requests: list[JobRequest], pipeline: Pipeline, correlation_id: str | None
) -> tuple[list[str], set[str]]:
    """Claim each key, record the job and push its first step, in one script per job and one round trip
    (the broker is the result store). Returns each key's job id, and those opened here."""
    jobs = [_job(str(uuid.uuid4()), request, pipeline, correlation_id) for request in requests]
    ttl = get_settings().submit_dedup_ttl
    firsts = driver.messages(
        [(job, [pipeline.first(request.payload)]) for request, job in zip(requests, jobs, strict=True)]
    )

    def send() -> list:
        pipe = client.pipeline(transaction=False)
        for request, job, pushes in zip(requests, jobs, firsts, strict=True):
            ledger.open_unless_known(pipe, job, request.payload, ttl, pushes)
        return pipe.execute()

    job_ids = [answer.decode() for answer in sent_with_scripts(send)]
    return job_ids, {job.job_id for job, job_id in zip(jobs, job_ids, strict=True) if job.job_id == job_id}


def _claim_keys(client: Any, requests: list[JobRequest], pipeline: Pipeline) -> tuple[list[str], set[str]]:
    """Each key's job id (claimed for a new one if free), and the ids claimed here."""
    ttl = get_settings().submit_dedup_ttl
    candidates = [str(uuid.uuid4()) for _ in requests]
    claims = client.pipeline(transaction=False)
    for request, job_id in zip(requests, candidates, strict=True):
        claim_key = ledger.dedup_key(pipeline.name, request.idempotency_key)
        claims.set(claim_key, job_id, nx=True, ex=ttl)
        claims.get(claim_key)
    answers = claims.execute()
    job_ids = [answer.decode() for answer in answers[1::2]]
    return job_ids, {job_id for job_id, claimed in zip(job_ids, answers[0::2], strict=True) if claimed}


def _recorded(client: Any, pipeline: str, job_ids: list[str]) -> list[str]:
    """Those of `job_ids` whose ledger record exists."""
    if not job_ids:
        return []
    pipe = client.pipeline(transaction=False)
    for job_id in job_ids:
        pipe.exists(JobKeys(pipeline, job_id).record)
    return [job_id for job_id, exists in zip(job_ids, pipe.execute(), strict=True) if exists]
