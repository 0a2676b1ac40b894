"""The job ledger: where every job stands, kept in Redis so that whatever the broker drops can be found.

Per job (all under the job's hash tag, see pipeline.store.JobKeys):
- the record: identity, pipeline, payload, status (queued, completed, failed; for a saga also
  compensating and compensated, with the compensation plan), when it was submitted, last
  touched (claimed, recorded, retried, published) and last made progress (a step recorded),
  retries, waits, re-drives;
- each step's recorded result and lease, on the record (format 3; in a hash and keys of their own before),
  and its counters (pipeline.jobs.guard).

Per pipeline:
- the due set: each unfinished job scored by the time by which it must show a sign of life,
  pushed forward every time it is touched. The reconciler reads only what is due, so finding
  stalled jobs never scans the keyspace;
- the job index: every job scored by when it was submitted, kept a replay window, so `vetro job
  list` reads recent jobs without scanning either;
Shared by all pipelines:
- the queue frontier: the send time of the newest message a worker started, per queue, so a
  job waiting behind a long queue is not mistaken for a lost one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from traceback import format_exception
from typing import Any

import redis

from pipeline.context import JobContext
from pipeline.jobs.guard import FANIN, decode, encode
from pipeline.jobs.pipelines import namespaces, plan_of, push_due_within, stall_after
from pipeline.plan import Plan
from pipeline.store import JobKeys, key, queue_script, redis_client, run_script, transaction
from settings import get_settings

QUEUED, COMPLETED, FAILED = "queued", "completed", "failed"
# The record's format (VETRO_LEDGER_FORMAT): 2 adds the plan (a canvas's), the task-id index and the fan-in counters.
# A record without one was written by the release before, and is read as a declared pipeline's job (its plan). 3
# keeps each step's result ('result:<scope>') and lease ('lease:<scope>') on the record, and when it expires at the
# earliest (EXPIRES_AT); a record of 2 keeps them in the results hash and lease keys (pipeline.store.JobKeys).
RESULT, LEASE = "result:", "lease:"
EXPIRES_AT = "expires_at"
COUNTED = "counted"  # format 3: the job's attempts hash exists (its lifetime is set with the record's)
# Seconds a job's record lives past job_ttl from its submission: a job ending within them need not set its
# lifetime again (one command a job); a record of a completed job lives at most this much longer.
LIFETIME_MARGIN = 3600
COMPENSATING, COMPENSATED = "compensating", "compensated"
REVOKED = "revoked"  # cancelled by Celery's revoke of any of its steps: nothing more runs or is published
UNFINISHED = frozenset({QUEUED, COMPENSATING})  # statuses of a job that still has steps to run
FRONTIER_KEY = key("ledger", "frontier")
STARTS = "starts:"  # the record's fields counting each step's runs that started and did not end
# The record's fields of each step, by scope: runs started and not ended, when it last began and on which
# worker, when it was recorded. The timeline (pipeline.jobs.timeline) shows them with the step, not with the job.
STEP_FIELDS = {STARTS: "unfinished_runs", "began:": "began_at", "worker:": "worker", "ended:": "ended_at"}
LISTED_FIELDS = ("job_id", "pipeline", "status", "correlation_id", "submitted_at", "finished_at", "failed_stage")
REDRIVE_LOG_SIZE = 10  # re-drives kept on the record for `vetro job show`
EDITED = "edited:"  # + a step's scope: the arguments an operator corrected for its replay
ERRBACKS_FOR = "errbacks_for"  # a failed job's step whose errbacks (link_error) run
# The due time the job was given when it opened (or was replayed). The due set may hold a later one (a push, a
# countdown, a postponing sweep), never an earlier one: a step's claim pushes the due time only once this is near.
DUE_AT = "due_at"
FAILURE_FIELDS = ("failed_stage", "failure_class", "error", "error_type", "traceback", ERRBACKS_FOR)  # a replay clears
TRACEBACK_KEPT = 4000  # characters of a dead-lettered failure's traceback kept on the record (the row has it all)


def _now() -> float:
    return time.time()


def due_key(pipeline: str) -> str:
    return key(pipeline, "due")


def index_key(pipeline: str) -> str:
    """The pipeline's jobs by submission time (`vetro job list` reads it; the reconciler trims it)."""
    return key(pipeline, "jobs")


def dedup_key(pipeline: str, idempotency_key: str) -> str:
    return key(pipeline, "submitted", idempotency_key)


# Open a job unless its idempotency key is taken, and push its first messages: the producer's one round
# trip. Only used when the broker is this Redis (a kombu broker is never a Redis Cluster), so the
# keys may span slots. KEYS: dedup key, record, due set, job index, then the task-id index keys of the
# canvas's steps, then one queue key per message. ARGV: job id, dedup TTL, record TTL, due at, due set and
# index TTL, now, n, k (index keys), what an index key holds, n field/value pairs, the messages.
# Returns the job id that holds the key: this one when it was opened here.
_OPEN = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return redis.call('GET', KEYS[1]) end
local n, k = tonumber(ARGV[7]), tonumber(ARGV[8])
redis.call('HSET', KEYS[2], unpack(ARGV, 10, 9 + 2 * n))
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
redis.call('EXPIRE', KEYS[3], ARGV[5])
redis.call('ZADD', KEYS[4], ARGV[6], ARGV[1])
redis.call('EXPIRE', KEYS[4], ARGV[5])
for i = 5, 4 + k do redis.call('SET', KEYS[i], ARGV[9], 'EX', ARGV[3]) end
for i = 5 + k, #KEYS do redis.call('LPUSH', KEYS[i], ARGV[10 + 2 * n + i - 5 - k]) end
return ARGV[1]
"""


@dataclass(frozen=True)
class Opening:
    """A job to open: its identity, its input, and its plan (a canvas as Celery serializes it; None for a
    declared pipeline's job, whose plan is its pipeline), with the Celery task ids its steps answer to."""

    job: JobContext
    payload: Any = None
    plan: str | None = None
    task_ids: tuple[str, ...] = ()
    delay: float = 0.0  # seconds before its first steps may run (a countdown or eta on them)


def task_key(task_id: str) -> str:
    """A canvas step's Celery task id -> its job, for the result backend (`AsyncResult(id)`)."""
    return key("task", task_id)


def _indexed(job: JobContext) -> str:
    return f"{job.pipeline} {job.job_id}"


def open_unless_known(
    pipe: redis.client.Pipeline, opening: Opening, dedup_ttl: int, pushes: list[tuple[str, str]]
) -> None:
    """Queue on `pipe` the opening of a new job with its first messages, unless its key is taken (see _OPEN)."""
    now, settings, job = _now(), get_settings(), opening.job
    record = _opened(opening, now)
    keys = [
        dedup_key(job.pipeline, job.idempotency_key),
        JobKeys(job.pipeline, job.job_id).record,
        due_key(job.pipeline),
        index_key(job.pipeline),
    ]
    args = [job.job_id, dedup_ttl, first_lifetime(), record[DUE_AT], settings.replay_window, now, len(record)]
    args += [len(opening.task_ids), _indexed(job)]
    args += [item for field in record.items() for item in field]
    keys += [task_key(task_id) for task_id in opening.task_ids]
    keys += [queue for queue, _ in pushes]
    args += [message for _, message in pushes]
    queue_script(pipe, "open", _OPEN, keys, args, spans=True)


def first_lifetime() -> int:
    """Seconds a new job's record (and its task-id index) lives: job_ttl and the margin a job ends within."""
    return get_settings().job_ttl + LIFETIME_MARGIN


def _due_at(opening: Opening, now: float) -> float:
    return now + stall_after() + opening.delay


def _opened(opening: Opening, now: float) -> dict[str, Any]:
    fields = {"status": QUEUED, "submitted_at": now, "touched_at": now, "format": get_settings().ledger_format}
    record = opening.job.as_dict() | fields
    record[DUE_AT] = _due_at(opening, now)
    record[EXPIRES_AT] = now + first_lifetime()
    if opening.plan is None:
        return record | {"payload": encode(opening.payload)}
    return record | {"plan": opening.plan, "canvas": 1}


def open_jobs(pipe: redis.client.Pipeline, pipeline: str, openings: list[Opening]) -> None:
    """Add new jobs' due entries, index and records to a pipeline the producer is about to execute.

    The due entries go first. The pipeline is not a transaction: a connection lost part-way may leave a
    prefix applied, and the producer raises. Submitted again under the same key, a job whose record
    exists counts as known and is not published again, so its due entry must already be there for the
    reconciler to find it. A due entry whose record never came is closed by the reconciler."""
    if not openings:
        return
    now, ttl = _now(), first_lifetime()
    _watch(pipe, pipeline, {opening.job.job_id: _due_at(opening, now) for opening in openings})
    _scored(pipe, index_key(pipeline), {opening.job.job_id: now for opening in openings})
    for opening in openings:
        record = JobKeys(pipeline, opening.job.job_id).record
        pipe.hset(record, mapping=_opened(opening, now))
        pipe.expire(record, ttl)
        for task_id in opening.task_ids:
            pipe.set(task_key(task_id), _indexed(opening.job), ex=ttl)


def alias(task_ids: Iterable[str], job: JobContext) -> None:
    """Point a resubmitted canvas's task ids at the job its idempotency key already names."""
    pipe = redis_client().pipeline(transaction=False)
    for task_id in task_ids:
        pipe.set(task_key(task_id), _indexed(job), ex=get_settings().job_ttl)
    pipe.execute()


def job_of_task(task_id: str) -> tuple[str, str] | None:
    """(pipeline, job id) of a canvas step's Celery task id, or None if it is not indexed."""
    found = redis_client().get(task_key(task_id))
    return tuple(found.decode().split(" ", 1)) if found else None


def _watch(pipe: redis.client.Pipeline, pipeline: str, due: dict[str, float]) -> None:
    """Put jobs in the due set (job id -> due time)."""
    _scored(pipe, due_key(pipeline), due)


def _scored(pipe: redis.client.Pipeline, name: str, scores: dict[str, float]) -> None:
    """Add jobs to one of a pipeline's sorted sets, which lives a replay window past the last job put in it:
    any job in it by then has long ended or been dead-lettered, and its record is gone."""
    pipe.zadd(name, scores)
    pipe.expire(name, get_settings().replay_window)


def expect(pipeline: str, job_id: str, within: float = 0.0, pipe: redis.client.Pipeline | None = None) -> None:
    """The job is alive: push its due time to now + the stall bound (+ `within`, e.g. a retry's countdown).

    XX: a finished job (removed from the set) is never put back by a late message.
    """
    (pipe or redis_client()).zadd(due_key(pipeline), {job_id: _now() + stall_after() + within}, xx=True)


def due_soon(due_at: float) -> bool:
    """A step starting now should push its job's due time: the one it opened with (`DUE_AT`, 0 on a record of the
    release before) is nearer than `push_due_within`. So a job whose steps all start within the visibility
    timeout less the longest time limit of its opening pushes it at no step (5 commands of a 5-step job)."""
    return due_at - _now() < push_due_within()


def advance_frontier(pipe: redis.client.Pipeline, queue: str, sent_at: float) -> None:
    pipe.zadd(FRONTIER_KEY, {queue: sent_at}, gt=True)
    pipe.expire(FRONTIER_KEY, get_settings().job_ttl)


def frontier(queue: str) -> float:
    return float(redis_client().zscore(FRONTIER_KEY, queue) or 0.0)


# KEYS: record. ARGV: now, by. A job that has not ended (or ended failed, its dead letters waiting) becomes
# revoked; one that completed, was compensated or was revoked stays as it is. One key: the due set, which all
# of a pipeline's jobs share, is left by a separate command (pipeline.store: a script touches one slot).
_REVOKE = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'unknown' end
if status == 'completed' or status == 'compensated' or status == 'revoked' then return status end
redis.call('HSET', KEYS[1], 'status', 'revoked', 'revoked_at', ARGV[1], 'revoked_by', ARGV[2], 'revoked_from', status)
return 'revoked'
"""


def revoke(pipeline: str, job_id: str, by: str) -> str:
    """Cancel the job: its status then (REVOKED when this call revoked it; what it was when it had ended)."""
    status = run_script("revoke", _REVOKE, [JobKeys(pipeline, job_id).record], [_now(), by]).decode()
    if status == REVOKED:
        redis_client().zrem(due_key(pipeline), job_id)  # the reconciler leaves it alone
    return status


def job_with_key(idempotency_key: str, pipelines: list[str]) -> tuple[str, str] | None:
    """(pipeline, job id) of the job submitted with this idempotency key in one of `pipelines`, or None."""
    pipe = redis_client().pipeline(transaction=False)
    for pipeline in pipelines:
        pipe.get(dedup_key(pipeline, idempotency_key))
    for pipeline, job_id in zip(pipelines, pipe.execute(), strict=True):
        if job_id:
            return pipeline, job_id.decode()
    return None


def job_for(task_id: str) -> tuple[str, str] | None:
    """(pipeline, job id) of any of a job's task ids (a canvas's, a declared step's '<job>.<scope>'), or its id."""
    indexed = job_of_task(task_id)
    if indexed is not None:
        return indexed
    record = get_job(task_id.partition(".")[0])
    return (record["pipeline"], record["job_id"]) if record else None


def close(pipeline: str, job_id: str) -> None:
    """The job has ended (completed or dead-lettered): nothing more to watch."""
    redis_client().zrem(due_key(pipeline), job_id)


def due(pipeline: str, now: float, limit: int) -> list[str]:
    """The pipeline's unfinished jobs whose due time has passed, most overdue first."""
    return [raw.decode() for raw in redis_client().zrangebyscore(due_key(pipeline), "-inf", now, start=0, num=limit)]


def postpone(pipeline: str, job_id: str, until: float) -> None:
    redis_client().zadd(due_key(pipeline), {job_id: until}, xx=True)


def mark_completed(pipeline: str, job_id: str) -> None:
    redis_client().hset(JobKeys(pipeline, job_id).record, mapping={"status": COMPLETED, "finished_at": _now()})


def mark_compensated(pipeline: str, job_id: str) -> None:
    """Every compensation the job's failure called for has run: it has ended.

    The record first, then the due set (another slot): lost in between, the due entry is closed by the
    reconciler, which finds the job ended."""
    pipe = redis_client().pipeline(transaction=False)
    pipe.hset(JobKeys(pipeline, job_id).record, mapping={"status": COMPENSATED, "finished_at": _now()})
    pipe.zrem(due_key(pipeline), job_id)
    pipe.execute()


# KEYS: record. ARGV: the status the failure gives, then the failure's field, value pairs. A job revoked
# meanwhile keeps its status (its failure is recorded beside it) and answers 0: nothing more is started.
_FAIL = """
if redis.call('HGET', KEYS[1], 'status') == 'revoked' then
  for i = 2, #ARGV, 2 do
    if ARGV[i] ~= 'compensations' and ARGV[i] ~= 'compensating_for' and ARGV[i] ~= 'errbacks_for' then
      redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    end
  end
  return 0
end
redis.call('HSET', KEYS[1], 'status', ARGV[1], unpack(ARGV, 2))
return 1
"""


def mark_failed(
    job: JobContext,
    scope: str,
    failure_class: str,
    error: BaseException,
    compensations: list[str],
    errbacks: bool = False,
) -> bool:
    """The job was dead-lettered: keep its ledger (and submit's dedup key) for the replay window.

    With `compensations` to run, it is compensating (and still watched) rather than failed. With `errbacks`
    (Celery's link_error) to run, it is failed, and watched until they have run. The failure's
    class and the end of its traceback are kept for `AsyncResult` (pipeline.jobs.results).

    False when the job was revoked while the step ran: it stays revoked, with the failure beside it,
    and nothing more (compensations, errbacks) may start.
    """
    keys = JobKeys(job.pipeline, job.job_id)
    window = get_settings().replay_window
    text = f"{type(error).__name__}: {error}"
    failure = {
        "failed_stage": scope,
        "failure_class": failure_class,
        "error": text[:2000],
        "error_type": f"{type(error).__module__}.{type(error).__qualname__}",
        "traceback": "".join(format_exception(error))[-TRACEBACK_KEPT:],
        "dead_lettered": 1,
    }
    if compensations:
        status = COMPENSATING
        failure |= {"compensations": json.dumps(compensations), "compensating_for": f"{scope}: {text}"[:2000]}
    else:
        status = FAILED
        failure |= {"finished_at": _now(), **({ERRBACKS_FOR: scope} if errbacks else {})}
    fields = [item for pair in {"touched_at": _now(), **failure}.items() for item in pair]
    taken = run_script("fail", _FAIL, [keys.record], [status, *fields])
    # Not a MULTI: the due set and the dedup key are in other slots. The record's lifetime is set first; lost
    # before the due set is told, the job stays watched and the reconciler finds it ended.
    pipe = redis_client().pipeline(transaction=False)
    for name in (keys.record, keys.results, keys.attempts, dedup_key(job.pipeline, job.idempotency_key)):
        pipe.expire(name, window)
    if taken and (compensations or errbacks):
        _watch(pipe, job.pipeline, {job.job_id: _now() + stall_after()})
    else:
        pipe.zrem(due_key(job.pipeline), job.job_id)
    pipe.execute()
    return bool(taken)


def planned_branches(pipeline: str, job_id: str, field: str) -> list[str]:
    """The branches a job's planner recorded in `field` of its record ([] before it has)."""
    found = redis_client().hget(JobKeys(pipeline, job_id).record, field)
    return json.loads(found) if found else []


def reopen(jobs: list[tuple[JobContext, bool]], pipe: redis.client.Pipeline) -> None:
    """Dead-lettered jobs run again (a replay): fresh budgets, watched again, kept for the replay window.

    Each job comes with whether it is compensating: once undoing has begun, it never goes forward.
    Queued on `pipe`, which the caller runs (with the publishes that follow, see pipeline.jobs.driver).
    """
    window = get_settings().replay_window
    for job, compensating in jobs:
        keys = JobKeys(job.pipeline, job.job_id)
        status = COMPENSATING if compensating else QUEUED
        now = _now()
        due_at = now + stall_after()
        _watch(pipe, job.pipeline, {job.job_id: due_at})  # first: see open_jobs
        reopened = {"status": status, "replay": job.replay, "touched_at": now, "replayed_at": now, DUE_AT: due_at}
        pipe.hset(keys.record, mapping=reopened)
        pipe.hdel(keys.record, *FAILURE_FIELDS, "finished_at", "stalls", COUNTED)
        pipe.hincrby(keys.record, "replays", 1)
        pipe.delete(keys.attempts)
        for name in (keys.record, keys.results, dedup_key(job.pipeline, job.idempotency_key)):
            pipe.expire(name, window)


def note_redrive(pipeline: str, job_id: str, scopes: list[str], reason: str) -> None:
    """Remember a re-drive on the job's record (shown by `vetro job show`)."""
    keys = JobKeys(pipeline, job_id)
    client = redis_client()
    entries = json.loads(client.hget(keys.record, "redrive_log") or "[]")
    entries = [*entries, {"at": _now(), "steps": scopes, "reason": reason}][-REDRIVE_LOG_SIZE:]
    pipe = transaction(keys.record)
    pipe.hincrby(keys.record, "redrives", 1)
    pipe.hincrby(keys.record, "stalls", 1)
    pipe.hset(keys.record, mapping={"redrive_log": json.dumps(entries), "touched_at": _now()})
    pipe.execute()


@dataclass
class JobState:
    """Everything the reconciler and replay need to know about one job."""

    record: dict[str, str]
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def context(self) -> JobContext:
        r = self.record
        return JobContext(r["job_id"], r["idempotency_key"], r["correlation_id"], r["pipeline"], int(r["replay"]))

    @property
    def status(self) -> str:
        return self.record.get("status", QUEUED)

    @property
    def payload(self) -> Any:
        """A declared pipeline's input (a canvas's steps carry their own arguments in its plan)."""
        stored = self.record.get("payload")
        return decode(stored) if stored is not None else None

    @cached_property
    def plan(self) -> Plan:
        return plan_of(self.record, self.payload)

    @property
    def errbacks_for(self) -> str | None:
        """The failed step whose errbacks (Celery's link_error) this failed job runs, if any."""
        return self.record.get(ERRBACKS_FOR) if self.status == FAILED else None

    @property
    def compensations(self) -> list[str] | None:
        """The compensation plan, once a failure started one (then the job only ever undoes)."""
        plan = self.record.get("compensations")
        return json.loads(plan) if plan is not None else None

    def number(self, name: str) -> float:
        return float(self.record.get(name) or 0)

    def edited_input(self, scope: str) -> tuple[tuple, dict] | None:
        """The arguments an operator gave the step for its replay (`edit_input`), or None."""
        stored = self.record.get(EDITED + scope)
        if stored is None:
            return None
        edited = decode(stored)
        return tuple(edited["args"]), dict(edited["kwargs"])


def edit_input(pipeline: str, job_id: str, scope: str, args: list, kwargs: dict) -> None:
    """Run the step with these arguments from now on (a replay, and any re-drive after it), in place of
    the ones its plan gives: an operator corrected the input it failed on. Kept, sealed like a result,
    as long as the job's record."""
    redis_client().hset(JobKeys(pipeline, job_id).record, EDITED + scope, encode({"args": args, "kwargs": kwargs}))


def as_text(raw: dict[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in raw.items()}


def load(pipeline: str, job_id: str) -> JobState | None:
    return load_many([(pipeline, job_id)])[0]


def load_many(jobs: list[tuple[str, str]]) -> list[JobState | None]:
    """The states of (pipeline, job id) pairs, in one round trip; None for a job with no record."""
    pipe = redis_client().pipeline(transaction=False)
    for pipeline, job_id in jobs:
        keys = JobKeys(pipeline, job_id)
        pipe.hgetall(keys.record)
        pipe.hgetall(keys.results)
    answers = pipe.execute()
    return [
        _state(as_text(record), results) if record else None
        for record, results in zip(answers[0::2], answers[1::2], strict=True)
    ]


def _state(record: dict[str, str], results: dict[bytes, bytes]) -> JobState:
    """A job's state from its record and its results hash (which only a record of format 2 has)."""
    recorded = {scope.decode(): decode(value) for scope, value in results.items()}
    for name in [name for name in record if name.startswith(RESULT)]:
        recorded[name.removeprefix(RESULT)] = decode(record.pop(name))
    return JobState(record, recorded)


def leases_held(state: JobState, scopes: Iterable[str]) -> dict[str, float]:
    """Seconds left on each held lease among `scopes` (steps running now), by the job's record or, for a
    record of format 2, its lease keys."""
    scopes = list(scopes)
    if int(state.record.get("format") or 0) >= 3:
        now, found = _now(), {}
        for scope in scopes:
            lease = state.record.get(LEASE + scope)
            if lease and (left := int(lease.split(" ", 1)[0]) / 1000 - now) > 0:
                found[scope] = left
        return found
    keys = JobKeys(state.context.pipeline, state.context.job_id)
    pipe = redis_client().pipeline(transaction=False)
    for scope in scopes:
        pipe.pttl(keys.lease(scope))
    return {scope: ttl / 1000 for scope, ttl in zip(scopes, pipe.execute(), strict=True) if ttl > 0}


def results_of(pipeline: str, job_id: str, scopes: list[str]) -> list[Any]:
    """The recorded results of `scopes` (None where a step has none): on the record, or in the results hash
    of a record of format 2."""
    if not scopes:
        return []
    keys = JobKeys(pipeline, job_id)
    pipe = redis_client().pipeline(transaction=False)
    pipe.hmget(keys.record, [RESULT + scope for scope in scopes])
    pipe.hmget(keys.results, scopes)
    on_record, in_hash = pipe.execute()
    return [
        decode(value) if (value := mine if mine is not None else theirs) is not None else None
        for mine, theirs in zip(on_record, in_hash, strict=True)
    ]


def get_job(job_id: str) -> dict[str, str] | None:
    """The job's record (status, where it failed and why, retries, re-drives), or None if unknown.

    A canvas's step can be named by its Celery task id (what `AsyncResult.id` says) instead of the job's."""
    found = get_jobs([job_id])[0]
    if found is None and (indexed := job_of_task(job_id)) is not None:
        found = get_jobs([indexed[1]])[0]
    return found


def get_jobs(job_ids: list[str]) -> list[dict[str, str] | None]:
    """The jobs' records, whatever their pipelines (each namespace is asked)."""
    pipelines = namespaces()
    pipe = redis_client().pipeline(transaction=False)
    for job_id in job_ids:
        for pipeline in pipelines:
            pipe.hgetall(JobKeys(pipeline, job_id).record)
    answers = iter(pipe.execute())
    found = [next(filter(None, [next(answers) for _ in pipelines]), None) for _ in job_ids]
    return [_public(as_text(raw)) if raw else None for raw in found]


def is_step_field(name: str) -> bool:
    return name.startswith(tuple(STEP_FIELDS))


def _public(record: dict[str, str]) -> dict[str, str]:
    """The record without the payload and the plan, which can be large and are shown only by the timeline,
    and without its steps' fields (the timeline shows them with each step) and fan-in counters."""
    return {name: value for name, value in record.items() if name not in ("payload", "plan") and not is_hidden(name)}


def is_hidden(name: str) -> bool:
    """Bookkeeping, not the job's story: its steps' fields, results and leases (the timeline shows them with
    each step), fan-in counters, the due time it opened with (a lower bound of when a sweep looks at it, which
    the due set holds), its earliest expiry and whether its attempts hash exists."""
    return is_step_field(name) or name.startswith((FANIN, RESULT, LEASE)) or name in (DUE_AT, EXPIRES_AT, COUNTED)


def settled(job_ids: list[str], status: str | None = None) -> list[dict[str, str]] | None:
    """The jobs' records once none is unfinished (or, given a status, once all have it); else None."""
    records = get_jobs(job_ids)
    wanted = (lambda found: found == status) if status else (lambda found: found not in UNFINISHED)
    return records if all(record and wanted(record["status"]) for record in records) else None


def trim_index(pipeline: str, now: float) -> None:
    """Drop from the job index the jobs submitted more than a replay window ago (their records are gone)."""
    redis_client().zremrangebyscore(index_key(pipeline), "-inf", now - get_settings().replay_window)


def recent_jobs(
    pipelines: list[str],
    since: float,
    status: str | None = None,
    correlation_id: str | None = None,
    limit: int = 50,
    page: int = 500,
) -> list[dict[str, str]]:
    """The newest jobs submitted since `since` (epoch seconds), newest first, read from the job index.

    Records are read a page at a time and filtered; at most `limit` are returned.
    """
    client, found = redis_client(), []
    for pipeline in pipelines:
        matched: list[dict[str, str]] = []
        offset = 0
        while len(matched) < limit:
            job_ids = client.zrevrangebyscore(index_key(pipeline), "+inf", since, start=offset, num=page)
            if not job_ids:
                break
            offset += len(job_ids)
            pipe = client.pipeline(transaction=False)
            for job_id in job_ids:
                pipe.hmget(JobKeys(pipeline, job_id.decode()).record, LISTED_FIELDS)
            for values in pipe.execute():
                job = {name: value.decode() for name, value in zip(LISTED_FIELDS, values, strict=True) if value}
                wanted = (status is None or job.get("status") == status) and (
                    correlation_id is None or job.get("correlation_id") == correlation_id
                )
                if job.get("job_id") and wanted:  # no job id: its record expired
                    matched.append(job)
        found += matched[:limit]
    return sorted(found, key=lambda job: float(job.get("submitted_at", 0)), reverse=True)[:limit]
