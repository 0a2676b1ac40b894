"""The benchmarks' count of finished jobs: one INCR per job, the same for vetro and raw Celery."""

from __future__ import annotations

import os

import redis

COUNTER_KEY = "bench:done"
_client: list[redis.Redis] = []


def count_done() -> None:
    if not _client:
        _client.append(redis.Redis.from_url(os.environ["BENCH_COUNTER_URL"]))
    _client[0].incr(COUNTER_KEY)
