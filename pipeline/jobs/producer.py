"""Producers' entry points: `submit` one job or `submit_many` in bulk, deduplicated by idempotency key.

Everything is checked before anything is published: a batch with one bad payload publishes nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from itertools import islice
from typing import Any

from kombu.utils.json import dumps, loads

from pipeline.adapter.app import records_carry_publishes
from pipeline.context import JobContext
from pipeline.jobs import driver, ledger
from pipeline.jobs.pipelines import Pipeline, declared_plan, get_pipeline
from pipeline.jobs.results import JobResult
from pipeline.plan import Step
from pipeline.store import JobKeys, redis_client, sent_with_scripts
from pipeline.telemetry import metrics
from settings import get_settings

log = logging.getLogger("vetro.producer")

DEFAULT_PIPELINE = "orders"
PUBLISH_BATCH = 500


class InvalidJobError(ValueError):
    """A payload that cannot become a job; nothing was published."""


class NotReplicatedError(RuntimeError):
    """New jobs were recorded on the Redis master, but fewer replicas than VETRO_SUBMIT_REPLICAS confirmed
    them in time: a failover now could lose them. Submitting again under the same key is safe."""


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


def check_arguments(arguments: Any, position: str) -> None:
    """A canvas step's arguments: anything kombu's JSON carries, within the payload's depth and size limits."""
    settings = get_settings()
    try:
        encoded = dumps(arguments)
    except (TypeError, ValueError) as error:
        raise InvalidJobError(f"{position}: arguments are not JSON-serialisable: {error}") from None
    if len(encoded) > settings.max_payload_bytes:
        limit = f"the limit of {settings.max_payload_bytes} (VETRO_MAX_PAYLOAD_BYTES)"
        raise InvalidJobError(f"{position}: arguments of {len(encoded)} bytes, over {limit}")
    _check_shape(loads(encoded), position, settings.max_payload_depth, settings.max_payload_elements)


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
) -> JobResult:
    """Enqueue one job and return its id; the same idempotency key returns the same job id.

    The id is a `JobResult`: a string that also `.get()`s the job's final result, like an `AsyncResult`.
    """
    request = check_payload(payload, idempotency_key)
    return JobResult(_publish([request], get_pipeline(pipeline), correlation_id)[0].job_id)


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


@dataclass(frozen=True)
class Opening:
    """A job to open (its ledger's view, pipeline.jobs.ledger.Opening) and the steps it starts with."""

    ledger: ledger.Opening
    first: list[Step]

    @property
    def job(self) -> JobContext:
        return self.ledger.job


def _declared(request: JobRequest, pipeline: Pipeline, correlation_id: str | None) -> Opening:
    job = JobContext(str(uuid.uuid4()), request.idempotency_key, correlation_id or str(uuid.uuid4()), pipeline.name)
    plan = declared_plan(pipeline.name).given(request.payload)
    return Opening(ledger.Opening(job, request.payload), plan.pending({}))


def _publish(requests: list[JobRequest], pipeline: Pipeline, correlation_id: str | None) -> list[Submission]:
    submissions = open_jobs([_declared(request, pipeline, correlation_id) for request in requests])
    fresh_count = sum(submission.new for submission in submissions)
    metrics.count(metrics.JOBS_SUBMITTED, pipeline.name, amount=fresh_count)
    if len(submissions) > fresh_count:
        metrics.count(metrics.IDEMPOTENCY_HITS, pipeline.name, "submit", amount=len(submissions) - fresh_count)
    return submissions


def open_jobs(openings: list[Opening]) -> list[Submission]:
    """Map each key to its job (new or known), record new jobs in the ledger, then publish their first steps.

    The ledger record is what makes a job exist: once it is written the job will run, even if the
    publish below fails (the reconciler publishes what the broker never got). A known key whose
    ledger record is missing (a producer that died between the two writes) is recorded again.
    """
    client, replicas = redis_client(), _Replicas.asked()
    # One job: a script claims, records and publishes it in one round trip. A batch: two round trips
    # of plain commands cost Redis less than a script per job (bench.producer).
    if len(openings) == 1 and records_carry_publishes():
        job_ids, opened = _open_in_one_trip(client, openings, replicas)
        claimed: set[str] = set()
    else:
        (job_ids, claimed), opened = _claim_keys(client, openings), set()
    known = [(opening, job_id) for opening, job_id in zip(openings, job_ids, strict=True) if job_id not in claimed]
    known = [(opening, job_id) for opening, job_id in known if job_id not in opened]
    recorded = set(_recorded(client, [(opening.job.pipeline, job_id) for opening, job_id in known])) | opened
    fresh = {
        job_id: _as(opening, job_id)
        for opening, job_id in reversed(list(zip(openings, job_ids, strict=True)))  # the first of a key wins
        if job_id not in recorded
    }.values()
    if fresh:
        records = client.pipeline(transaction=False)
        for namespace in sorted({opening.job.pipeline for opening in fresh}):
            ledger.open_jobs(records, namespace, [each.ledger for each in fresh if each.job.pipeline == namespace])
        replicas.wait_on(records)  # after the claims and records: what makes the jobs exist
        recorded_only = lambda error: log.warning(  # noqa: E731
            "%d job(s) recorded but not yet published (%s); the reconciler will", len(fresh), error
        )
        answers = driver.publish_after(records, [(opening.job, opening.first) for opening in fresh], recorded_only)
        replicas.confirmed(answers)
    new = opened | {opening.job.job_id for opening in fresh}
    for opening, job_id in zip(openings, job_ids, strict=True):
        if job_id not in new and opening.ledger.task_ids:  # a canvas sent again under a known key
            ledger.alias(opening.ledger.task_ids, replace(opening.job, job_id=job_id))
    return [Submission(job_id, job_id in new) for job_id in job_ids]


@dataclass
class _Replicas:
    """VETRO_SUBMIT_REPLICAS: WAIT for that many replicas at the end of the round trip that records new jobs.

    WAIT covers the writes of the connection it is sent on, so it rides in the same pipeline as the writes
    (a separate call could take another pooled connection, and be answered at once)."""

    wanted: int
    timeout: float
    position: int | None = None

    @classmethod
    def asked(cls) -> _Replicas:
        settings = get_settings()
        return cls(settings.submit_replicas, settings.submit_replica_timeout)

    def wait_on(self, pipe: Any) -> None:
        if self.wanted:
            pipe.wait(self.wanted, int(self.timeout * 1000))
            self.position = len(pipe.command_stack) - 1

    def confirmed(self, answers: list[Any]) -> None:
        """Raise NotReplicatedError when fewer replicas than wanted confirmed the writes."""
        if self.position is None:
            return
        acknowledged = int(answers[self.position])
        if acknowledged < self.wanted:
            raise NotReplicatedError(
                f"{acknowledged} of {self.wanted} replica(s) acknowledged the new job(s) within {self.timeout:g}s: "
                "a failover now could lose them; submit again under the same idempotency key (safe)"
            )


def _as(opening: Opening, job_id: str) -> Opening:
    """The opening under the job id its key maps to (a known key whose record went missing)."""
    if job_id == opening.job.job_id:
        return opening
    return Opening(replace(opening.ledger, job=replace(opening.job, job_id=job_id)), opening.first)


def _open_in_one_trip(client: Any, openings: list[Opening], replicas: _Replicas) -> tuple[list[str], set[str]]:
    """Claim each key, record the job and push its first steps, in one script per job and one round trip
    (the broker is the result store). Returns each key's job id, and those opened here."""
    ttl = get_settings().submit_dedup_ttl
    firsts = driver.messages([(opening.job, opening.first) for opening in openings])

    def send() -> list:
        pipe = client.pipeline(transaction=False)
        for opening, pushes in zip(openings, firsts, strict=True):
            ledger.open_unless_known(pipe, opening.ledger, ttl, pushes)
        replicas.wait_on(pipe)
        return pipe.execute()

    answers = sent_with_scripts(send)
    job_ids = [answer.decode() for answer in answers[: len(openings)]]
    given = [opening.job.job_id for opening in openings]
    opened = {job_id for job_id, answer in zip(given, job_ids, strict=True) if job_id == answer}
    for opening in openings:
        if opening.job.job_id in opened and opening.ledger.delay:
            ledger.expect(opening.job.pipeline, opening.job.job_id, opening.ledger.delay)
    if opened:
        replicas.confirmed(answers)
    return job_ids, opened


def _claim_keys(client: Any, openings: list[Opening]) -> tuple[list[str], set[str]]:
    """Each key's job id (claimed for a new one if free), and the ids claimed here."""
    ttl = get_settings().submit_dedup_ttl
    claims = client.pipeline(transaction=False)
    for opening in openings:
        claim_key = ledger.dedup_key(opening.job.pipeline, opening.job.idempotency_key)
        claims.set(claim_key, opening.job.job_id, nx=True, ex=ttl)
        claims.get(claim_key)
    answers = claims.execute()
    job_ids = [answer.decode() for answer in answers[1::2]]
    return job_ids, {job_id for job_id, claimed in zip(job_ids, answers[0::2], strict=True) if claimed}


def _recorded(client: Any, jobs: list[tuple[str, str]]) -> list[str]:
    """Those of (pipeline, job id) whose ledger record exists."""
    if not jobs:
        return []
    pipe = client.pipeline(transaction=False)
    for pipeline, job_id in jobs:
        pipe.exists(JobKeys(pipeline, job_id).record)
    return [job_id for (_, job_id), exists in zip(jobs, pipe.execute(), strict=True) if exists]
