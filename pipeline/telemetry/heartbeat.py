"""Which workers are alive, and when each queue last had a message taken: what health and metrics read.

A worker can stay connected and alive while it takes nothing (Celery users have met this for
years after a Redis reconnect: celery#4453, #7705, #8030, #8990, #10205, #10302). Process and
TCP checks pass; only the queue tells. So the worker's consumer notes, for each queue, when it
last took a message, and a timer in the worker's own event loop (pipeline.worker.heartbeat)
writes that, with the worker's running task count, to Redis every HEARTBEAT_EVERY seconds.
Health (pipeline.watching.health) compares it with the age of the oldest waiting message. A
worker stopped or hung writes nothing, and its entry ages out.

Each worker also says the newest format of job record it reads (pipeline.jobs.ledger): while a
worker of a release before runs, jobs opened in a format it does not read are a hazard that
health and a starting worker name.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from pipeline.store import key, redis_client

HEARTBEAT_EVERY = 2.0  # seconds
WORKERS_KEY = key("workers")  # hash: worker name -> JSON {at, active, concurrency, queues, ledger}
CONSUMED_KEY = key("queues", "consumed")  # sorted set: queue -> when a worker last took a message from it
LEDGER_FORMAT_READ = 3  # the newest job record format this release reads (a heartbeat without one: 2)
KEEP_SECONDS = 24 * 3600  # both keys live this long past the last heartbeat; gone workers are pruned after it

_taken: dict[str, float] = {}  # queue -> when this worker last took a message (written by the next beat)


def taken(queue: str | None) -> None:
    """The consumer took a message from `queue`: note it for the next heartbeat (no I/O on the consumer's path)."""
    if queue:
        _taken[queue] = time.time()


@dataclass(frozen=True)
class Worker:
    name: str
    seen_at: float
    active: int
    concurrency: int
    queues: list[str]
    ledger: int = 2  # the newest job record format it reads

    def up(self, now: float) -> bool:
        return now - self.seen_at <= 3 * HEARTBEAT_EVERY + 1


def beat(name: str, active: int, concurrency: int, queues: list[str]) -> None:
    now = time.time()
    entry = {"at": now, "active": active, "concurrency": concurrency, "queues": queues, "ledger": LEDGER_FORMAT_READ}
    pipe = redis_client().pipeline(transaction=False)
    pipe.hset(WORKERS_KEY, name, json.dumps(entry))
    pipe.expire(WORKERS_KEY, KEEP_SECONDS)
    if _taken:
        pipe.zadd(CONSUMED_KEY, dict(_taken), gt=True)
        pipe.expire(CONSUMED_KEY, KEEP_SECONDS)
    pipe.execute()


def workers() -> list[Worker]:
    """Every worker seen within KEEP_SECONDS (older entries are dropped here)."""
    client = redis_client()
    now, found, gone = time.time(), [], []
    for name, raw in client.hgetall(WORKERS_KEY).items():
        entry = json.loads(raw)
        if now - entry["at"] > KEEP_SECONDS:
            gone.append(name)
            continue
        worker = Worker(
            name.decode(), entry["at"], entry["active"], entry["concurrency"], entry["queues"], entry.get("ledger", 2)
        )
        found.append(worker)
    if gone:
        client.hdel(WORKERS_KEY, *gone)
    return sorted(found, key=lambda worker: worker.name)


def older_readers(ledger_format: int, found: list[Worker], now: float) -> str | None:
    """Why live workers among `found` are a hazard, if they do not read job records of `ledger_format` (workers of
    a release before: CHANGELOG.md, "Upgrading one worker at a time"); None if none is."""
    names = [worker.name for worker in found if worker.up(now) and worker.ledger < ledger_format]
    if not names:
        return None
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return (
        f"worker(s) of a release before run ({shown}) while jobs open in ledger format {ledger_format}, which they "
        "do not read: a step could run twice; set VETRO_LEDGER_FORMAT=2 until they are gone"
    )


def up_on_host(host: str, now: float | None = None) -> list[Worker]:
    """The workers of one host (their name's part after '@', as Celery's `%h`) whose heartbeat is recent."""
    now = now or time.time()
    return [worker for worker in workers() if worker.name.rpartition("@")[2] == host and worker.up(now)]


def consumed_at() -> dict[str, float]:
    """When a worker last took a message, per queue."""
    return {queue.decode(): score for queue, score in redis_client().zrange(CONSUMED_KEY, 0, -1, withscores=True)}
