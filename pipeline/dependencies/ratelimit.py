"""Rate limits per dependency shared by every worker: a token bucket in Redis, taken atomically.

Celery's own `rate_limit` counts per worker (celery#5732); this one counts across all of them.
Redis's clock is used, so workers on different machines agree on time. Written here rather than
taken from `limits` (the maintained Redis rate-limit library): it has fixed and moving windows,
not a bucket that says how long to wait for the next token, which is what lets a stage wait
(DependencyWaitError) without spending a retry; and this is one script, one round trip.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from pipeline.failures import DependencyWaitError
from pipeline.store import key, redis_client, run_script
from pipeline.telemetry import metrics
from settings import RateLimit, get_settings

# KEYS: bucket. ARGV: rate per second, burst. Returns seconds to wait ("0" when a token was taken).
_TAKE = """
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1000000
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return tostring(wait)
"""


def take(dependency: str, limit: RateLimit) -> float:
    """Take one call's token; 0.0 if taken, else the seconds until one will be free."""
    return float(run_script("take", _TAKE, [key("ratelimit", dependency)], [limit.rate, limit.burst]))


@dataclass(frozen=True)
class RateLimitStatus:
    name: str
    rate: float
    burst: int
    tokens: float  # calls that may go at once now


def statuses() -> list[RateLimitStatus]:
    """Each configured rate limit and the tokens its bucket holds now (read, nothing taken)."""
    limits = get_settings().rate_limits
    client = redis_client()
    seconds, micros = client.time()
    now = seconds + micros / 1_000_000
    found = []
    for dependency, limit in sorted(limits.items()):
        tokens, at = client.hmget(key("ratelimit", dependency), "tokens", "at")
        held = limit.burst if tokens is None else float(tokens) + max(0.0, now - float(at)) * limit.rate
        found.append(RateLimitStatus(dependency, limit.rate, limit.burst, round(min(limit.burst, held), 2)))
    return found


def acquire(dependency: str) -> None:
    """Wait for a token when the wait is short; raise DependencyWaitError to retry later when it is not."""
    settings = get_settings()
    limit = settings.rate_limits.get(dependency)
    if limit is None:
        return
    deadline = time.monotonic() + settings.rate_limit_max_inline_wait
    while (wait := take(dependency, limit)) > 0:
        metrics.count(metrics.RATE_LIMIT_WAITS, dependency)
        if time.monotonic() + wait > deadline:
            raise DependencyWaitError(f"rate limit of {dependency} ({limit.rate}/s) reached", retry_after=wait)
        time.sleep(wait)  # a token frees up in `wait` seconds; then take it
