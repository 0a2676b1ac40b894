"""The reference order pipeline at full speed: jobs/s on one worker of 2 processes, the partner stub at zero latency.

A private Redis, SQLite and the partner stub (`vetro partner-stub`, its own process, no injected
latency or faults). N sample orders are submitted first, then the worker (and celery beat)
start; the figures run from the worker being ready until every job has ended. Each order is
validate, enrich (a customer lookup), transform, route, 1 to 3 webhook deliveries and finish.
Prints one JSON line.

    .venv/bin/python -m bench.orders --jobs 1000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from contextlib import ExitStack

import redis

from bench.measure import RedisReading, cpu_seconds, memory_kib, tree
from bench.throughput import Worker, private_setup
from vetro.testing.processes import free_port, http_answers, reaped, spawn, wait_until


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=2)
    options = parser.parse_args()
    with ExitStack() as stack:
        env, servers = private_setup(stack)
        port = free_port()
        stub = spawn(
            [sys.executable, "-m", "vetro.cli", "partner-stub", "--host", "127.0.0.1", "--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        stack.callback(reaped, stub)
        stack.callback(stub.wait, 10)
        stack.callback(stub.terminate)
        env = env | {"VETRO_PIPELINES": "tasks.orders", "ORDERS_PARTNER_URL": f"http://127.0.0.1:{port}"}
        os.environ.update(env)
        wait_until(lambda: http_answers(f"http://127.0.0.1:{port}/", range(200, 600)), 30, "the partner stub")
        from pipeline import submit_many
        from pipeline.jobs.ledger import settled
        from tasks.orders.samples import sample_order

        jobs, broker = options.jobs, redis.Redis.from_url(servers[0].url)
        job_ids = submit_many(sample_order(n, prefix=f"bench-{time.time_ns()}") for n in range(jobs))
        load = os.getloadavg()[0]
        with Worker("vetro", env, options.concurrency) as worker:
            pids, commands, started = tree(worker.pid), RedisReading.of(broker).commands, time.perf_counter()
            cpu = cpu_seconds(pids)
            wait_until(lambda: settled(job_ids[-50:]), 900, "the last jobs", 0.2)
            records = wait_until(lambda: settled(job_ids), 300, "every job", 0.2)
            seconds = time.perf_counter() - started
            cpu, commands = cpu_seconds(tree(worker.pid)) - cpu, RedisReading.of(broker).commands - commands
            _, pss = memory_kib(tree(worker.pid))
    statuses = {status: sum(r["status"] == status for r in records) for status in {r["status"] for r in records}}
    print(
        json.dumps(
            {
                "benchmark": "orders",
                "jobs": jobs,
                "processes": options.concurrency,
                "cores": os.cpu_count(),
                "date": time.strftime("%Y-%m-%d"),
                "load_1m": round(load, 2),
                "jobs_per_s": round(jobs / seconds, 1),
                "worker_cpu_ms_per_job": round(cpu * 1000 / jobs, 1),
                "redis_commands_per_job": round(commands / jobs, 1),
                "worker_pss_mib": round(pss / 1024, 1),
                "statuses": statuses,
            }
        )
    )


if __name__ == "__main__":
    main()
