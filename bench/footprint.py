"""What one worker holds: its connections to Redis, and the messages it takes ahead of its processes.

**Connections.** A worker of 1, 2 and 4 prefork processes on a private Redis, started three ways:
Celery's defaults (gossip, mingle and heartbeat on), without gossip and mingle (as vetro's manifests and
tests start workers), and without heartbeat too. Counted with CLIENT LIST once the worker is ready, and
again after it ran jobs (each pool process then holds its own connection to the result store); this
process's own connections are counted apart and taken off.

**Hoarding.** What an autoscaler reading a queue's length misses is what workers took and have not
finished. 40 jobs of one stage sleeping 0.5 s, a worker of 2 processes; every 20 ms the queue's length
and kombu's unacknowledged set are read: the most messages the worker held at once, and how many of
those no process was running. Three ways: vetro's settings (prefetch multiplier 1), Celery's default
multiplier (4), and vetro's with Celery 5.6's `--disable-prefetch`.

    .venv/bin/python -m bench.footprint
"""

from __future__ import annotations

import argparse
import json
import os
import time
from contextlib import ExitStack
from typing import Any

import redis

from bench.throughput import private_setup
from vetro.testing.processes import WorkerProcess, wait_until

GOSSIP_AND_MINGLE = ("--without-gossip", "--without-mingle")
STARTS = {
    "celery defaults": [],
    "without gossip and mingle": list(GOSSIP_AND_MINGLE),
    "without gossip, mingle and heartbeat": [*GOSSIP_AND_MINGLE, "--without-heartbeat"],
}
PREFETCH = {
    "vetro (multiplier 1)": [],
    "celery's default multiplier (4)": ["--prefetch-multiplier", "4"],
    "vetro with --disable-prefetch": ["--disable-prefetch"],
}
SLOW_JOBS, SLOW_SECONDS, SLOW_CONCURRENCY = 40, 0.5, 2


def _worker(env: dict[str, str], concurrency: int, name: str, flags: list[str]) -> WorkerProcess:
    """A worker started with exactly `flags` of gossip, mingle and heartbeat (WorkerProcess turns the first two
    off by default)."""
    worker = WorkerProcess(env, concurrency, name, ["-O", "fair"])
    worker.command = [arg for arg in worker.command if arg not in GOSSIP_AND_MINGLE] + flags
    return worker


def _wait_for_tasks(worker: WorkerProcess, count: int) -> None:
    wait_until(lambda: worker.log().count(" succeeded in ") >= count, 120, f"{count} tasks to run")


def _clients(client: redis.Redis) -> int:
    """Connections to the Redis, less this one."""
    return len(client.client_list()) - 1


def connections(env: dict[str, str], url: str) -> list[dict[str, Any]]:
    from pipeline import submit_many

    client, rows = redis.Redis.from_url(url), []
    for concurrency in (1, 2, 4):
        for start, flags in STARTS.items():
            client.flushall()
            own = _clients(client)  # this process's own (its producer's, from earlier trials)
            worker = _worker(env, concurrency, f"conn{concurrency}", flags).start()
            try:
                idle = _clients(client) - own
                jobs = submit_many(({"n": n, "at": time.time_ns()} for n in range(20 * concurrency)), pipeline="bench")
                _wait_for_tasks(worker, 5 * len(jobs))  # five stages a job
                busy = _clients(client)
            finally:
                worker.stop()
            wait_until(lambda busy=busy: _clients(client) < busy, 30, "the worker's connections to close")
            rows.append({"processes": concurrency, "start": start, "idle": idle, "after_jobs": busy - _clients(client)})
    return rows


def hoarding(env: dict[str, str], url: str) -> list[dict[str, Any]]:
    from pipeline import submit_many

    client, rows = redis.Redis.from_url(url), []
    for way, flags in PREFETCH.items():
        client.flushall()
        worker = WorkerProcess(env, SLOW_CONCURRENCY, "hoard", ["-O", "fair", *flags]).start()
        try:
            submit_many(({"n": n, "sleep": SLOW_SECONDS} for n in range(SLOW_JOBS)), pipeline="slow")
            held, waiting = [], []
            deadline = time.monotonic() + 120
            while worker.log().count(" succeeded in ") < SLOW_JOBS and time.monotonic() < deadline:
                reading = client.pipeline(transaction=False).hlen("unacked").llen("vetro").execute()
                held.append(reading[0])
                waiting.append(reading[1])
                time.sleep(0.02)
        finally:
            worker.stop()
        most = max(held, default=0)
        rows.append(
            {
                "way": way,
                "most_held": most,
                "most_held_beyond_processes": max(0, most - SLOW_CONCURRENCY),
                "queue_length_at_start": waiting[0] if waiting else None,
            }
        )
    return rows


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    with ExitStack() as stack:
        env, (broker, _) = private_setup(stack)
        env["VETRO_PIPELINES"] = os.environ["VETRO_PIPELINES"] = "bench.trivial,bench.slow"
        load = os.getloadavg()[0]
        result = {
            "benchmark": "footprint",
            "cores": os.cpu_count(),
            "date": time.strftime("%Y-%m-%d"),
            "load_1m": round(load, 2),
            "connections": connections(env, broker.url),
            "hoarding": hoarding(env, broker.url),
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
