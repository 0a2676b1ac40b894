"""The benchmarks' count of finished jobs: one INCR per job, the same for vetro and raw Celery.

A payload stamped with `sent_at` (bench.latency) also leaves its end-to-end time, in seconds.
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis

COUNTER_KEY = "bench:done"
LATENCY_KEY = "bench:latency"
FAILING_KEY = "bench:failing"  # while it exists, stages given a payload with "fail" fail for good
_client: list[redis.Redis] = []


def _counter() -> redis.Redis:
    if not _client:
        _client.append(redis.Redis.from_url(os.environ["BENCH_COUNTER_URL"]))
    return _client[0]


def count_done(payload: dict[str, Any]) -> None:
    sent_at = payload.get("sent_at")
    if sent_at is None:
        _counter().incr(COUNTER_KEY)
        return
    pipe = _counter().pipeline(transaction=False)
    pipe.incr(COUNTER_KEY)
    pipe.rpush(LATENCY_KEY, time.time() - sent_at)
    pipe.execute()


def failing(payload: dict[str, Any]) -> bool:
    """Whether this job is one the dead-letter benchmark wants to fail, while it wants failures."""
    return bool(payload.get("fail")) and bool(_counter().exists(FAILING_KEY))
