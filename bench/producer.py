"""How fast producers enqueue: vetro's `submit` one job at a time and `submit_many` in bulk, against raw
Celery's `apply_async` of a five-task chain, one at a time. No worker runs: only the producer is measured.

Each trial starts from an empty private Redis (the broker and the result store). Prints one JSON
line: jobs/s, the producer's CPU per job and the Redis commands per job of each trial, and the
machine's load.

    .venv/bin/python -m bench.producer --jobs 5000

With `--replica`, the Redis has a replica, and vetro's two trials run again with VETRO_SUBMIT_REPLICAS=1
(a WAIT for the replica at the end of each round trip that records new jobs): what that costs.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import redis

from bench.measure import RedisReading
from bench.throughput import ROOT, payload
from settings import reset_settings
from vetro.testing.processes import RedisServer, wait_until


def _timed(client: redis.Redis, jobs: int, enqueue: Callable[[], Any]) -> dict[str, float]:
    client.flushall()
    before, cpu = RedisReading.of(client), os.times()
    started = time.perf_counter()
    enqueue()
    seconds = time.perf_counter() - started
    after, used = RedisReading.of(client), os.times()
    return {
        "jobs_per_s": round(jobs / seconds, 1),
        "cpu_ms_per_job": round((used.user + used.system - cpu.user - cpu.system) * 1000 / jobs, 3),
        "redis_commands_per_job": round((after.commands - before.commands - 2) / jobs, 2),  # less the 2 readings
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--one-at-a-time", type=int, default=2000, help="jobs for the one-at-a-time trials")
    parser.add_argument("--replica", action="store_true", help="also with a replica, and a WAIT for it")
    options = parser.parse_args()
    with ExitStack() as stack:
        server = stack.enter_context(RedisServer())
        if options.replica:
            replica = stack.enter_context(RedisServer(extra_args=["--replicaof", "127.0.0.1", str(server.port)]))
            replica_link = lambda: redis.Redis(port=replica.port).info("replication")["master_link_status"]  # noqa: E731
            wait_until(lambda: replica_link() == "up", 30, "the replica to sync")
        os.environ.update(
            {
                "VETRO_BROKER_URL": server.url,
                "VETRO_RESULT_STORE_URL": server.url,
                "VETRO_PIPELINES": "bench.trivial",
                "BENCH_BROKER_URL": server.url,
                "PYTHONPATH": str(ROOT),
            }
        )
        from bench.raw_chain import submit as raw_submit
        from pipeline import submit, submit_many

        client = redis.Redis.from_url(server.url)
        single, bulk = options.one_at_a_time, options.jobs
        tag = time.time_ns()  # distinct payloads, so no job is deduplicated away
        trials = {
            "vetro_submit": _timed(
                client, single, lambda: [submit(payload(n) | {"t": tag}, pipeline="bench") for n in range(single)]
            ),
            "vetro_submit_many": _timed(
                client, bulk, lambda: submit_many((payload(n) | {"t": tag} for n in range(bulk)), pipeline="bench")
            ),
            "raw_apply_async": _timed(client, single, lambda: [raw_submit(payload(n)) for n in range(single)]),
        }
        if options.replica:
            os.environ["VETRO_SUBMIT_REPLICAS"] = "1"
            reset_settings()
            trials["vetro_submit_wait_1_replica"] = _timed(
                client, single, lambda: [submit(payload(n) | {"t": -tag}, pipeline="bench") for n in range(single)]
            )
            trials["vetro_submit_many_wait_1_replica"] = _timed(
                client, bulk, lambda: submit_many((payload(n) | {"t": -tag} for n in range(bulk)), pipeline="bench")
            )
    result = {
        "benchmark": "producer",
        "jobs": {"one_at_a_time": single, "submit_many": bulk},
        "cores": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d"),
        "load_1m": round(os.getloadavg()[0], 2),
        **trials,
        "submit_vs_raw": round(trials["vetro_submit"]["jobs_per_s"] / trials["raw_apply_async"]["jobs_per_s"], 2),
    }
    if options.replica:
        for name in ("vetro_submit", "vetro_submit_many"):
            waited = trials[f"{name}_wait_1_replica"]["jobs_per_s"]
            result[f"{name}_wait_vs_none"] = round(waited / trials[name]["jobs_per_s"], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
