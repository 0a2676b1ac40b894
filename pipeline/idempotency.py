"""The idempotency guard: a stage's body runs to success at most once per (job key, stage[, destination]).

Before the body runs, the attempt claims a lease (atomically, with a lifetime longer than the
stage's hard time limit). On success it stores the result (kept for days) and drops the lease;
on failure it drops the lease so a retry can run. A later delivery of the same step finds the
stored result and returns it without running the body; one that arrives while a live lease is
held is told to come back when the lease ends, so two attempts never run side by side.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pipeline.store import key, redis_client

CLAIMED, DONE, BUSY = "claimed", "done", "busy"
STATS_KEY = key("guard-stats")

# KEYS: result, lease, stats, starts. ARGV: owner, lease ms, stage scope, ttl seconds.
# `starts` counts runs that began and never ended (released or recorded): crashed runs.
_CLAIM = """
local stored = redis.call('GET', KEYS[1])
if stored then
    redis.call('HINCRBY', KEYS[3], 'hits', 1)
    redis.call('HINCRBY', KEYS[3], 'hits:' .. ARGV[3], 1)
    return {'done', stored}
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
    redis.call('HINCRBY', KEYS[3], 'claims', 1)
    local starts = redis.call('INCR', KEYS[4])
    redis.call('EXPIRE', KEYS[4], ARGV[4])
    return {'claimed', tostring(starts - 1)}
end
redis.call('HINCRBY', KEYS[3], 'conflicts', 1)
redis.call('HINCRBY', KEYS[3], 'conflicts:' .. ARGV[3], 1)
return {'busy', tostring(redis.call('PTTL', KEYS[2]))}
"""
# KEYS: result, lease, starts. ARGV: owner, encoded result, ttl seconds.
_RECORD = """
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
redis.call('DEL', KEYS[3])
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
return 1
"""
# KEYS: lease, starts. ARGV: owner.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('DEL', KEYS[2])
    return redis.call('DEL', KEYS[1])
end
return 0
"""


@dataclass(frozen=True)
class Claim:
    status: str
    result: Any = None
    retry_in: float = 0.0  # seconds until a held lease ends (BUSY only)
    crashed_runs: int = 0  # earlier runs of this step that started and never ended (CLAIMED only)


class Guard:
    """The guard of one step of one job; `scope` is the stage, or 'stage.destination'."""

    def __init__(self, idempotency_key: str, scope: str) -> None:
        self.scope = scope
        self.result_key = key("guard", idempotency_key, scope, "result")
        self.lease_key = key("guard", idempotency_key, scope, "lease")
        self.starts_key = key("guard", idempotency_key, scope, "starts")

    def claim(self, owner: str, lease_seconds: float, ttl_seconds: int) -> Claim:
        status, value = redis_client().eval(
            _CLAIM,
            4,
            self.result_key,
            self.lease_key,
            STATS_KEY,
            self.starts_key,
            owner,
            int(lease_seconds * 1000),
            self.scope,
            ttl_seconds,
        )
        status = status.decode()
        if status == DONE:
            return Claim(DONE, result=json.loads(value))
        if status == BUSY:
            return Claim(BUSY, retry_in=max(int(value), 0) / 1000)
        return Claim(CLAIMED, crashed_runs=int(value))

    def record(self, owner: str, result: Any, ttl_seconds: int) -> None:
        redis_client().eval(
            _RECORD, 3, self.result_key, self.lease_key, self.starts_key, owner, json.dumps(result), ttl_seconds
        )

    def result(self) -> Any:
        """The step's recorded result, or None if it has not succeeded."""
        stored = redis_client().get(self.result_key)
        return json.loads(stored) if stored is not None else None

    def release(self, owner: str) -> None:
        redis_client().eval(_RELEASE, 2, self.lease_key, self.starts_key, owner)


def guard_state(idempotency_key: str) -> dict[str, dict[str, Any]]:
    """Every guarded step of a job: 'done' with its stored result, or 'running' with the lease's seconds left."""
    client = redis_client()
    prefix = key("guard", idempotency_key, "")
    steps: dict[str, dict[str, Any]] = {}
    for raw in client.scan_iter(f"{prefix}*", count=500):
        name = raw.decode().removeprefix(prefix)
        scope, kind = name.rsplit(":", 1)
        if kind == "starts":
            continue
        if kind == "result":
            steps.setdefault(scope, {}).update(status="done", result=json.loads(client.get(raw) or "null"))
        else:
            steps.setdefault(scope, {"status": "running"})["lease_seconds_left"] = client.pttl(raw) / 1000
    return dict(sorted(steps.items()))


def guard_stats() -> dict[str, int]:
    """Counters since the result store was created: claims, hits (duplicates answered), conflicts."""
    return {k.decode(): int(v) for k, v in redis_client().hgetall(STATS_KEY).items()}
