"""A durable queue in Redis for dead-letter writes made while the database is down.

Rows are pushed here instead of lost, and written to the database by `flush`, which runs at
worker start and periodically (celery beat). A flusher moves each entry (LMOVE, atomic) from
the spool to a processing list of its own before writing it, so two flushers never take the
same entry, and entries taken by a flusher that died go back to the spool. An entry that
cannot be written (bad data, not an outage) is parked with its error instead of blocking
the rest; writes are idempotent, so an entry written twice after a crash does no harm.
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

from redis.exceptions import LockError

from pipeline.store import key, redis_client, transaction
from settings import get_settings

SPOOL_KEY = key("dlq", "spool")
PARKED_KEY = key("dlq", "spool", "parked")
FLUSHERS_KEY = key("dlq", "spool", "flushers")  # set of processing lists, to find a dead flusher's
LOCK_KEY = key("dlq", "spool", "lock")
# A flusher's processing list is named with the spool's whole name as its hash tag, so it shares the spool's
# Redis Cluster slot and LMOVE between them stays one command. (The release before named them
# `vetro:dlq:spool:processing:<id>`; such a list left by a flusher that died is given back all the same.)
PROCESSING_PREFIX = key("dlq", "processing", f"{{{SPOOL_KEY}}}")
BATCH = 100
LOCK_SECONDS = 60  # the lock lapses if one batch takes longer; a second flusher may then run beside this one
ALIVE_SECONDS = 600  # a flusher silent this long has died: what it had taken goes back to the spool

log = logging.getLogger("vetro.dlq.spool")


def push(entry: dict[str, Any]) -> None:
    pipe = transaction(SPOOL_KEY)
    pipe.rpush(SPOOL_KEY, json.dumps(entry))
    pipe.expire(SPOOL_KEY, get_settings().replay_window)
    pipe.execute()


def size() -> int:
    return int(redis_client().llen(SPOOL_KEY))


def pending() -> bool:
    """Whether a flush has anything to do: entries spooled, or flushers registered (one that died holds
    entries that `flush` gives back)."""
    pipe = redis_client().pipeline(transaction=False)
    pipe.llen(SPOOL_KEY)
    pipe.scard(FLUSHERS_KEY)
    return any(pipe.execute())


def parked() -> list[dict[str, Any]]:
    """Entries that could not be written, each with the error it got."""
    return [json.loads(raw) for raw in redis_client().lrange(PARKED_KEY, 0, -1)]


def _alive_key(processing: str) -> str:
    return processing + ":alive"


def _recover_orphans() -> None:
    """Give back to the spool's head what flushers that died had taken."""
    client = redis_client()
    for raw in client.smembers(FLUSHERS_KEY):
        processing = raw.decode()
        if not client.exists(_alive_key(processing)):
            _give_back(processing)
            client.srem(FLUSHERS_KEY, processing)


def _take(processing: str) -> list[bytes]:
    pipe = redis_client().pipeline(transaction=False)
    pipe.set(_alive_key(processing), 1, ex=ALIVE_SECONDS)
    for _ in range(BATCH):
        pipe.lmove(SPOOL_KEY, processing, "LEFT", "RIGHT")
    pipe.expire(processing, get_settings().replay_window)
    return [raw for raw in pipe.execute()[1:-1] if raw is not None]


def _give_back(processing: str) -> None:
    """Return what this flusher still holds to the spool's head, in order."""
    client = redis_client()
    while client.lmove(processing, SPOOL_KEY, "RIGHT", "LEFT") is not None:
        pass


def _park(raw: bytes, error: Exception) -> None:
    log.error("parking a spooled dead-letter change that cannot be written: %s: %s", type(error).__name__, error)
    pipe = transaction(PARKED_KEY)
    pipe.rpush(PARKED_KEY, json.dumps({"entry": raw.decode(), "error": f"{type(error).__name__}: {error}"}))
    pipe.expire(PARKED_KEY, get_settings().replay_window)
    pipe.execute()


def _write_batch(raw: list[bytes], write: Callable[[list[dict[str, Any]]], None], outage: type) -> None:
    """Write a batch in one go; if it fails for its content, write entries one by one and park the bad ones."""
    try:
        write([json.loads(item) for item in raw])
        return
    except outage:
        raise
    except Exception:
        pass
    for item in raw:
        try:
            write([json.loads(item)])
        except outage:
            raise
        except Exception as error:
            _park(item, error)


def flush(write: Callable[[list[dict[str, Any]]], None], outage: type[Exception] | tuple = ()) -> int:
    """Hand spooled entries to `write` in batches; returns how many were taken off the spool.

    `outage` names the errors meaning the database is unreachable: the batch then goes back to
    the spool and the error is raised; any other error is the entry's own, and it is parked.
    """
    client = redis_client()
    lock = client.lock(LOCK_KEY, timeout=LOCK_SECONDS, blocking=False)
    if not lock.acquire():
        return 0  # another process is flushing
    processing = f"{PROCESSING_PREFIX}:{uuid.uuid4().hex}"
    pipe = transaction(FLUSHERS_KEY)
    pipe.sadd(FLUSHERS_KEY, processing)
    pipe.expire(FLUSHERS_KEY, get_settings().replay_window)
    pipe.execute()
    flushed = 0
    try:
        _recover_orphans()
        while raw := _take(processing):
            _write_batch(raw, write, outage)
            client.delete(processing)
            flushed += len(raw)
            try:
                lock.reacquire()
            except LockError:  # a batch outlasted the lock: another flusher may now run beside this one (safely)
                log.warning("the spool's lock lapsed during a flush")
    finally:
        # Whatever was not written goes back; if Redis is gone, the list stays registered and is recovered.
        _give_back(processing)
        client.srem(FLUSHERS_KEY, processing)
        client.delete(_alive_key(processing))
        with contextlib.suppress(LockError):  # it lapsed (see above)
            lock.release()
    if flushed:
        log.warning("wrote %d spooled dead-letter change(s) to the database", flushed)
    return flushed
