"""The idempotency guard: a step's body runs to success at most once per job (and branch).

Before the body runs, the attempt claims a lease (atomically, for longer than the stage's hard
time limit). On success it records the result in the job's ledger and drops the lease; on
failure it drops the lease and counts the attempt against the step's budget, which lives
here with the step rather than in the message, so two copies of one message never get two
budgets. A later delivery of a recorded step gets the recorded result without running the
body; one that arrives while a live lease is held is told when the lease ends.

Each script touches only one job's keys (one hash slot), and returns the job's identity
from its ledger record: the ledger, not a message's headers, says whose job it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis
from kombu.utils.json import dumps, loads

from pipeline.context import JobContext
from pipeline.privacy import seal, unseal
from pipeline.store import JobKeys, redis_client

CLAIMED, DONE, BUSY, UNKNOWN, UNDOING = "claimed", "done", "busy", "unknown", "undoing"
# What recording a step did: the job is now complete, a fan-out's last part completed the count,
# or another attempt had already recorded the step (the caller then resumes, as for DONE).
RECORDED, COMPLETED, JOINED, DUPLICATE = "recorded", "completed", "joined", "duplicate"

_IDENTITY = "local job = redis.call('HMGET', KEYS[1], 'idempotency_key', 'correlation_id', 'pipeline', 'replay')\n"

# KEYS: record, results, attempts, lease. ARGV: scope, owner, lease ms, now, '1' for a compensation.
_CLAIM = (
    _IDENTITY
    + """
if not job[1] then return {'unknown'} end
if ARGV[5] ~= '1' and redis.call('HEXISTS', KEYS[1], 'compensations') == 1 then
    return {'undoing', '', job[1], job[2], job[3], job[4] or '0'}
end
local stored = redis.call('HGET', KEYS[2], ARGV[1])
if stored then
    redis.call('HINCRBY', KEYS[1], 'hits:' .. ARGV[1], 1)
    return {'done', stored, job[1], job[2], job[3], job[4] or '0'}
end
if redis.call('SET', KEYS[4], ARGV[2], 'NX', 'PX', ARGV[3]) then
    local starts = redis.call('HINCRBY', KEYS[3], 'starts:' .. ARGV[1], 1)
    redis.call('HSET', KEYS[1], 'touched_at', ARGV[4])
    return {'claimed', tostring(starts - 1), job[1], job[2], job[3], job[4] or '0'}
end
redis.call('HINCRBY', KEYS[1], 'conflicts:' .. ARGV[1], 1)
return {'busy', tostring(redis.call('PTTL', KEYS[4])), job[1], job[2], job[3], job[4] or '0'}
"""
)

# KEYS: record, results, attempts, lease. ARGV: scope, owner, result, now, ttl, role, branch count, branch names (JSON).
_RECORD = """
local new = redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[3])
if redis.call('GET', KEYS[4]) == ARGV[2] then redis.call('DEL', KEYS[4]) end
redis.call('HDEL', KEYS[3], 'starts:' .. ARGV[1])
redis.call('HSET', KEYS[1], 'touched_at', ARGV[4], 'progress_at', ARGV[4], 'last_step', ARGV[1])
redis.call('HDEL', KEYS[1], 'stalls')
local outcome = 'duplicate'
if new == 1 then
    outcome = 'recorded'
    if ARGV[6] == 'planner' then
        redis.call('HSET', KEYS[1], 'parts_expected', ARGV[7], 'branches', ARGV[8])
    elseif ARGV[6] == 'part' then
        local done = redis.call('HINCRBY', KEYS[1], 'parts_done', 1)
        if done == tonumber(redis.call('HGET', KEYS[1], 'parts_expected')) then outcome = 'joined' end
    elseif ARGV[6] == 'last' then
        redis.call('HSET', KEYS[1], 'status', 'completed', 'finished_at', ARGV[4])
        outcome = 'completed'
    end
end
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[5]) end
return {outcome, redis.call('HGET', KEYS[1], 'dead_lettered') or '0'}
"""

# KEYS: record, attempts, lease. ARGV: scope, owner, now, counter ('failed', 'waits' or ''), budget, stage.
# Returns the step's count for that counter, and 1 if it is still within the budget (a retry follows).
_RELEASE = """
if redis.call('GET', KEYS[3]) == ARGV[2] then redis.call('DEL', KEYS[3]) end
redis.call('HDEL', KEYS[2], 'starts:' .. ARGV[1])
redis.call('HSET', KEYS[1], 'touched_at', ARGV[3])
if ARGV[4] == '' then return {0, 0} end
local count = redis.call('HINCRBY', KEYS[2], ARGV[4] .. ':' .. ARGV[1], 1)
if count > tonumber(ARGV[5]) then return {count, 0} end
local kind = ARGV[4] == 'failed' and 'retries' or 'waits'
redis.call('HINCRBY', KEYS[1], kind, 1)
redis.call('HINCRBY', KEYS[1], kind .. '_' .. ARGV[6], 1)
return {count, 1}
"""

_scripts: dict[int, dict[str, Any]] = {}
_loaded_scripts: dict[int, set[str]] = {}


def _script(name: str, source: str) -> Any:
    """The script registered on this process's client (EVALSHA, loading it once if Redis lost it)."""
    client = redis_client()
    registered = _scripts.setdefault(id(client), {})
    if name not in registered:
        registered[name] = client.register_script(source)
    return registered[name]


def _loaded(name: str, source: str) -> str:
    """The script's SHA, loaded into Redis once by this process (again after `reload_scripts`)."""
    client = redis_client()
    loaded = _loaded_scripts.setdefault(id(client), set())
    if name not in loaded:
        client.script_load(source)
        loaded.add(name)
    return _script(name, source).sha


def reload_scripts() -> None:
    """Redis lost its scripts (a restart, SCRIPT FLUSH): load them again on next use."""
    _loaded_scripts.clear()


def encode(value: Any) -> str:
    """A value as vetro stores it: kombu's JSON, as Celery's messages use (datetimes, decimals and
    UUIDs survive the round trip), sealed when encryption keys are set."""
    return seal(dumps(value))


def decode(stored: bytes | str) -> Any:
    return loads(unseal(stored))


@dataclass(frozen=True)
class Claim:
    status: str
    job: JobContext | None = None
    result: Any = None  # DONE: the recorded result
    retry_in: float = 0.0  # BUSY: seconds until the held lease ends
    crashed_runs: int = 0  # CLAIMED: earlier runs of this step that started and never ended


@dataclass(frozen=True)
class Record:
    outcome: str  # RECORDED, COMPLETED, JOINED or DUPLICATE
    dead_lettered: bool  # the job has had a step dead-lettered (its rows are resolved when it completes)


@dataclass(frozen=True)
class Release:
    count: int  # the step's failed attempts (or dependency waits) so far, this one included
    retry: bool  # still within the budget


class Guard:
    """The guard of one step of one job; `scope` is the stage, or '<stage>.<branch>'."""

    def __init__(self, pipeline: str, job_id: str, scope: str) -> None:
        self.pipeline = pipeline
        self.job_id = job_id
        self.scope = scope
        self.keys = JobKeys(pipeline, job_id)

    def _keys(self) -> list[str]:
        return [self.keys.record, self.keys.results, self.keys.attempts, self.keys.lease(self.scope)]

    def claim(
        self,
        owner: str,
        lease_seconds: float,
        now: float,
        pipe: redis.client.Pipeline | None = None,
        compensation: bool = False,
    ) -> Any:
        """Claim the step; with `pipe`, queue the call there and parse its answer with `parse_claim`.

        Once a job is being compensated, only compensations may claim: its other steps get UNDOING.
        """
        args = [self.scope, owner, int(lease_seconds * 1000), now, "1" if compensation else "0"]
        if pipe is None:
            return _script("claim", _CLAIM)(keys=self._keys(), args=args)
        # EVALSHA queued directly: redis-py sends SCRIPT EXISTS before every pipeline holding a Script
        # object. A Redis that lost the script answers NoScriptError; the caller loads it and retries.
        return pipe.evalsha(_loaded("claim", _CLAIM), 4, *self._keys(), *args)

    def parse_claim(self, answer: list) -> Claim:
        status = answer[0].decode()
        if status == UNKNOWN:
            return Claim(UNKNOWN)
        value, key, correlation_id, pipeline, replay = answer[1:]
        job = JobContext(self.job_id, key.decode(), correlation_id.decode(), pipeline.decode(), int(replay))
        if status == DONE:
            return Claim(DONE, job, result=decode(value))
        if status == BUSY:
            return Claim(BUSY, job, retry_in=max(int(value), 0) / 1000)
        if status == UNDOING:
            return Claim(UNDOING, job)
        return Claim(CLAIMED, job, crashed_runs=int(value))

    def record(
        self, owner: str, encoded_result: str, now: float, ttl: int, role: str, branches: list[str] | None = None
    ) -> Record:
        """Record the step's result; a planner's `branches` are noted on the job for the fan-in and for operators."""
        args = [self.scope, owner, encoded_result, now, ttl, role, len(branches or []), dumps(branches or [])]
        outcome, dead_lettered = _script("record", _RECORD)(keys=self._keys(), args=args)
        return Record(outcome.decode(), dead_lettered == b"1")

    def release(self, owner: str, now: float, counter: str = "", budget: int = 0, stage: str = "") -> Release:
        """Drop the lease; with a counter ('failed' or 'waits'), count this attempt against `budget`."""
        keys = [self.keys.record, self.keys.attempts, self.keys.lease(self.scope)]
        count, within = _script("release", _RELEASE)(keys=keys, args=[self.scope, owner, now, counter, budget, stage])
        return Release(int(count), bool(within))
