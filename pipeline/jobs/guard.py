"""The idempotency guard: a step's body runs to success at most once per job (and branch).

Before the body runs, the attempt claims a lease (atomically, for longer than the stage's hard
time limit). On success it records the result in the job's ledger and drops the lease; on
failure it drops the lease and counts the attempt against the step's budget, which lives
here with the step rather than in the message, so two copies of one message never get two
budgets. A later delivery of a recorded step gets the recorded result without running the
body; one that arrives while a live lease is held is told when the lease ends.

A job's record holds its steps' results and leases as its own fields (format 3), so a step costs
Redis one read and one write to claim and as many to record. A lease's end is written by the
claiming worker's clock and read by the next one's: the lease's margin past the hard time limit
(pipeline.jobs.stages.LEASE_MARGIN) is also what hosts' clocks may differ by. Records of the
release before (results in their own hash, leases as keys with a TTL) are still read and written
as they were.

Each script touches only one job's keys (one hash slot), and returns the job's identity
from its ledger record: the ledger, not a message's headers, says whose job it is. The one
exception is a record's outbox: lists the caller asks to have appended to in the same script.
The driver puts the next steps' messages there, built by the adapter for kombu's queue lists,
when the broker is the result store's Redis (pipeline.adapter.app.records_carry_publishes):
then a step is never recorded without what follows it being queued. The guard knows nothing
of what the entries are.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis
from kombu.utils.json import dumps, loads

from pipeline.context import JobContext
from pipeline.sealing import seal, unseal
from pipeline.store import JobKeys, queue_script, run_script
from settings import get_settings

CLAIMED, DONE, BUSY, UNKNOWN, UNDOING, REVOKED = "claimed", "done", "busy", "unknown", "undoing", "revoked"
# What recording a step did: the job is now complete, the fan-ins it belongs to are all complete (what
# follows them may start), or another attempt had already recorded the step (the caller then resumes).
RECORDED, COMPLETED, JOINED, DUPLICATE = "recorded", "completed", "joined", "duplicate"
FANIN = "fanin:"  # the record's counters of recorded terminals, one per fan-in (pipeline.plan.Level)

# KEYS: record, results, lease. ARGV: scope, owner, '1' for a compensation, '1' when the caller has the job's plan
# already, now (ms, this worker's clock), the lease's end (ms), the lease ms. The job's identity and plan
# come from its ledger record (a canvas's plan can be large: it is sent only to a process that does not have it),
# with the due time it opened with; the count of earlier unfinished runs is kept on it. A record of the current
# format holds the step's result and lease as its fields ('<ends ms> <owner>'; one read and one write a claim);
# one of the release before holds them in the results hash and the lease key.
_CLAIM = """
local step = ARGV[1]
local job = redis.call('HMGET', KEYS[1], 'idempotency_key', 'correlation_id', 'pipeline', 'replay', 'compensations',
    'canvas', 'status', 'due_at', 'format', 'result:' .. step, 'lease:' .. step, 'starts:' .. step)
if not job[1] then return {'unknown'} end
local plan = ''
if job[6] and ARGV[4] ~= '1' then plan = redis.call('HGET', KEYS[1], 'plan') or '' end
local identity = {job[1], job[2], job[3], job[4] or '0', plan, job[8] or '0'}
if job[7] == 'revoked' then return {'revoked', '', unpack(identity)} end
if ARGV[3] ~= '1' and job[5] then return {'undoing', '', unpack(identity)} end
local current, stored, lease_left = tonumber(job[9] or '0') >= 3, nil, nil
if current then
    stored = job[10]
    local lease = job[11] or ''
    if lease ~= '' then lease_left = tonumber(string.sub(lease, 1, string.find(lease, ' ') - 1)) - tonumber(ARGV[5]) end
    if lease_left and lease_left <= 0 then lease_left = nil end
else
    stored = redis.call('HGET', KEYS[2], step)
end
if stored then
    redis.call('HINCRBY', KEYS[1], 'hits:' .. step, 1)
    return {'done', stored, unpack(identity)}
end
if current then
    if not lease_left then
        local starts = tonumber(job[12] or '0') + 1
        redis.call('HSET', KEYS[1], 'lease:' .. step, ARGV[6] .. ' ' .. ARGV[2], 'starts:' .. step, starts)
        return {'claimed', tostring(starts - 1), unpack(identity)}
    end
elseif redis.call('SET', KEYS[3], ARGV[2], 'NX', 'PX', ARGV[7]) then
    local starts = redis.call('HINCRBY', KEYS[1], 'starts:' .. step, 1)
    return {'claimed', tostring(starts - 1), unpack(identity)}
else
    lease_left = redis.call('PTTL', KEYS[3])
end
redis.call('HINCRBY', KEYS[1], 'conflicts:' .. step, 1)
return {'busy', tostring(lease_left), unpack(identity)}
"""

# KEYS: record, results, attempts, lease, then the outbox's lists. ARGV: scope, result, now, ttl,
# '1' to start the lifetime of the results (a first step), when the run began and on which worker (the job's
# timeline), a field to note on the record and its value ('' for none: a planner's branches), the fan-ins the
# step belongs to (JSON [[counter, size], ...], inner first), '1' when the last of them is the whole job's, then
# the outbox's entries. The lease is dropped whoever holds it: once the result is in, every later claim gets it.
# A new record counts itself in each fan-in; the fan-ins complete in order, and when all of them do, what
# follows them may start (or, for the job's own, the job is complete). The keys live job_ttl from submission
# (the record) or from the first step (results), and again from each retry (release) and from the job's end.
# A record of the current format holds the result and the lease, and says until when it lives at least
# ('expires_at') and whether its attempts were counted ('counted'): a job ending within its first lifetime's
# margin (pipeline.jobs.ledger.LIFETIME_MARGIN) sets none again. One read and one write a step.
_RECORD = """
local step, now, ttl = ARGV[1], ARGV[3], ARGV[4]
local job = redis.call('HMGET', KEYS[1], 'format', 'status', 'result:' .. step, 'dead_lettered', 'submitted_at',
    'expires_at', 'counted')
local current = tonumber(job[1] or '0') >= 3
local new
if current then
    new = not job[3]
else
    new = redis.call('HSETNX', KEYS[2], step, ARGV[2]) == 1
    redis.call('DEL', KEYS[4])
end
local fields = {}
local function add(...) for _, value in ipairs({...}) do fields[#fields + 1] = value end end
if current then
    add('lease:' .. step, '')
    if new then add('result:' .. step, ARGV[2]) end
end
if job[2] == 'revoked' then
    if current then redis.call('HSET', KEYS[1], unpack(fields))
    elseif ARGV[5] == '1' then redis.call('EXPIRE', KEYS[2], ttl) end  -- a first step's result still expires
    return {'revoked', '0', '0'}
end
add('touched_at', now, 'progress_at', now, 'last_step', step, 'stalls', 0)
local outcome = 'duplicate'
if new then
    outcome = 'recorded'
    add('began:' .. step, ARGV[6], 'worker:' .. step, ARGV[7], 'ended:' .. step, now)
    if ARGV[8] ~= '' then add(ARGV[8], ARGV[9]) end
    local levels = cjson.decode(ARGV[10])
    local joined, leading = 0, true
    for _, level in ipairs(levels) do
        -- A fan-in of one step (a chain's end) is complete with its record: nothing to count.
        local count = level[2] == 1 and 1 or redis.call('HINCRBY', KEYS[1], level[1], 1)
        if leading and count >= level[2] then joined = joined + 1 else leading = false end
    end
    if #levels > 0 and joined == #levels then
        if ARGV[11] == '1' then
            add('status', 'completed', 'finished_at', now)
            outcome = 'completed'
        else
            outcome = 'joined'
        end
    end
end
if outcome == 'completed' then
    if not current then
        for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ttl) end
    elseif tonumber(job[6] or '0') - tonumber(now) < tonumber(ttl) then
        redis.call('EXPIRE', KEYS[1], ttl)
        add('expires_at', tonumber(now) + tonumber(ttl))
        if job[7] then redis.call('EXPIRE', KEYS[3], ttl) end
    end
end
redis.call('HSET', KEYS[1], unpack(fields))
for i = 5, #KEYS do redis.call('LPUSH', KEYS[i], ARGV[i + 7]) end
if outcome == 'completed' then return {outcome, job[4] or '0', job[5] or '0'} end
if ARGV[5] == '1' and not current then redis.call('EXPIRE', KEYS[2], ttl) end
return {outcome, '0', '0'}
"""

# KEYS: record, attempts, lease, results. ARGV: scope, owner, now, counter ('failed', 'waits' or ''), budget, stage,
# ttl, when the run began and on which worker ('' if untold). The lease is dropped if this owner holds it. A counted
# attempt (a retry or a wait follows) starts the job's lifetimes again (the record says so: see _RECORD).
# Returns the step's count for that counter, and 1 if it is still within the budget (a retry follows).
_RELEASE = """
local step, now, ttl = ARGV[1], ARGV[3], ARGV[7]
local job = redis.call('HMGET', KEYS[1], 'format', 'lease:' .. step)
local current = tonumber(job[1] or '0') >= 3
local fields = {'touched_at', now}
local function add(...) for _, value in ipairs({...}) do fields[#fields + 1] = value end end
if current then
    local lease = job[2] or ''
    if lease ~= '' and string.sub(lease, string.find(lease, ' ') + 1) == ARGV[2] then add('lease:' .. step, '') end
elseif redis.call('GET', KEYS[3]) == ARGV[2] then
    redis.call('DEL', KEYS[3])
end
redis.call('HDEL', KEYS[1], 'starts:' .. step)
if ARGV[8] ~= '' then add('began:' .. step, ARGV[8], 'worker:' .. step, ARGV[9]) end
if ARGV[4] ~= '' and current then add('counted', '1', 'expires_at', tonumber(now) + tonumber(ttl)) end
redis.call('HSET', KEYS[1], unpack(fields))
if ARGV[4] == '' then return {0, 0} end
local count = redis.call('HINCRBY', KEYS[2], ARGV[4] .. ':' .. step, 1)
for _, name in ipairs({KEYS[1], KEYS[2], KEYS[4]}) do redis.call('EXPIRE', name, ttl) end
if count > tonumber(ARGV[5]) then return {count, 0} end
local kind = ARGV[4] == 'failed' and 'retries' or 'waits'
redis.call('HINCRBY', KEYS[1], kind, 1)
redis.call('HINCRBY', KEYS[1], kind .. '_' .. ARGV[6], 1)
return {count, 1}
"""


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
    plan: str | None = None  # the job's plan as stored (a canvas); None for a declared pipeline's job
    result: Any = None  # DONE: the recorded result
    retry_in: float = 0.0  # BUSY: seconds until the held lease ends
    crashed_runs: int = 0  # CLAIMED: earlier runs of this step that started and never ended
    due_at: float = 0.0  # the due time the job opened with (ledger.DUE_AT; 0: not kept)


@dataclass(frozen=True)
class Record:
    outcome: str  # RECORDED, COMPLETED, JOINED, DUPLICATE, or REVOKED (kept, and nothing follows it)
    dead_lettered: bool  # the job has had a step dead-lettered (its rows are resolved when it completes)
    submitted_at: float = 0.0  # the job's last step: when the job was submitted


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

    def claim(
        self,
        owner: str,
        lease_seconds: float,
        pipe: redis.client.Pipeline,
        compensation: bool = False,
        have_plan: bool = False,
    ) -> Any:
        """Queue the claim of the step on `pipe`; `parse_claim` reads its answer (`have_plan`: leave the plan out).

        Once a job is being compensated, only compensations may claim: its other steps get UNDOING.
        """
        keys = [self.keys.record, self.keys.results, self.keys.lease(self.scope)]
        now, lease = int(time.time() * 1000), int(lease_seconds * 1000)
        args = [self.scope, owner, "1" if compensation else "0", "1" if have_plan else "0", now, now + lease, lease]
        return queue_script(pipe, "claim", _CLAIM, keys, args)

    def parse_claim(self, answer: list) -> Claim:
        status = answer[0].decode()
        if status == UNKNOWN:
            return Claim(UNKNOWN)
        value, key, correlation_id, pipeline, replay, plan, due_at = answer[1:]
        job = JobContext(self.job_id, key.decode(), correlation_id.decode(), pipeline.decode(), int(replay))
        plan, due = plan.decode() if plan else None, float(due_at)
        if status == DONE:
            return Claim(DONE, job, plan, result=decode(value), due_at=due)
        if status == BUSY:
            return Claim(BUSY, job, plan, retry_in=max(int(value), 0) / 1000, due_at=due)
        if status in (UNDOING, REVOKED):
            return Claim(status, job, plan, due_at=due)
        return Claim(CLAIMED, job, plan, crashed_runs=int(value), due_at=due)

    def record(
        self,
        encoded_result: str,
        now: float,
        fan_ins: list[tuple[str, int]],
        completes_job: bool,
        first: bool = False,
        outbox: list[tuple[str, str]] | None = None,
        ran: tuple[float, str] = (0.0, ""),
        note: tuple[str, str] = ("", ""),
    ) -> Record:
        """Record the step's result, count it in `fan_ins` (counter, size), and append each (list key, entry)
        of `outbox` (the messages of the steps it starts).

        `completes_job`: the last fan-in is the job's own. `first`: a first step of the job, which starts the
        lifetime of its results (the record's started at submission). `ran`: when this run began and on which
        worker, for the job's timeline. `note`: a field and value to set on the record (a planner's branches).
        """
        outbox = outbox or []
        keys = [self.keys.record, self.keys.results, self.keys.attempts, self.keys.lease(self.scope)]
        keys += [name for name, _ in outbox]
        args = [self.scope, encoded_result, now, get_settings().job_ttl, "1" if first else "0", *ran, *note]
        args += [dumps([[FANIN + name, size] for name, size in fan_ins]), "1" if completes_job else "0"]
        args += [entry for _, entry in outbox]
        # With an outbox the script pushes onto the broker's queues: only when the broker is the store, never a cluster.
        outcome, dead_lettered, submitted_at = run_script("record", _RECORD, keys, args, spans=bool(outbox))
        return Record(outcome.decode(), dead_lettered == b"1", float(submitted_at))

    def release(
        self,
        owner: str,
        now: float,
        counter: str = "",
        budget: int = 0,
        stage: str = "",
        ran: tuple[float, str] = (0.0, ""),
    ) -> Release:
        """Drop the lease; with a counter ('failed' or 'waits'), count this attempt against `budget`.

        `ran`: when this run began and on which worker, kept with the step for the job's timeline."""
        keys = [self.keys.record, self.keys.attempts, self.keys.lease(self.scope), self.keys.results]
        began, worker = ran
        args = [self.scope, owner, now, counter, budget, stage, get_settings().job_ttl, began or "", worker]
        count, within = run_script("release", _RELEASE, keys, args)
        return Release(int(count), bool(within))
