"""A durable queue in Redis for dead-letter writes made while the database is down.

Rows are pushed here instead of lost, and written to the database by `flush`, which runs
at worker start and periodically (celery beat); writes are idempotent, so a flush that is
interrupted and run again does no harm.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from pipeline.store import key, redis_client

SPOOL_KEY = key("dlq", "spool")
LOCK_KEY = key("dlq", "spool-lock")
BATCH = 100
LOCK_SECONDS = 60

log = logging.getLogger("vetro.dlq.spool")


def push(entry: dict[str, Any]) -> None:
    redis_client().rpush(SPOOL_KEY, json.dumps(entry))


def size() -> int:
    return int(redis_client().llen(SPOOL_KEY))


def flush(write: Callable[[list[dict[str, Any]]], None]) -> int:
    """Hand spooled entries to `write` in batches, removing each batch once written; returns how many."""
    client = redis_client()
    if not client.set(LOCK_KEY, "1", nx=True, ex=LOCK_SECONDS):
        return 0  # another process is flushing
    flushed = 0
    try:
        while raw := client.lrange(SPOOL_KEY, 0, BATCH - 1):
            write([json.loads(item) for item in raw])
            client.ltrim(SPOOL_KEY, len(raw), -1)
            flushed += len(raw)
    finally:
        client.delete(LOCK_KEY)
    if flushed:
        log.warning("wrote %d spooled dead-letter change(s) to the database", flushed)
    return flushed
