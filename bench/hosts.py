"""Scaling out: 1, 2 and 3 "hosts" of one worker process each, vetro's five trivial stages beside raw Celery's
chain of five, in the same run.

Each host is a worker (prefork, concurrency 1, its own name) reaching the broker through a TCP proxy of its
own on 127.0.0.1 (vetro.testing.proxy), as a host on another machine reaches Redis over the network. Each
trial starts from an empty Redis and idle hosts (every one ready), then publishes N jobs and times from the
first publish until the last job finished (so no host starts ahead of the others). A host's share is the
tasks its worker's log says it ran. Prints one JSON line: every trial, jobs/s per host count and kind,
vetro/raw, and the speed-up over one host.

    .venv/bin/python -m bench.hosts --jobs 600 --pairs 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from contextlib import ExitStack
from typing import Any

import redis

from bench.counter import COUNTER_KEY
from bench.throughput import WORKER_ARGS, _publish, private_setup
from vetro.testing.processes import BeatProcess, WorkerProcess, wait_until
from vetro.testing.proxy import FaultProxy

HOST_COUNTS = (1, 2, 3)


def trial(kind: str, hosts: int, jobs: int, env: dict[str, str], servers: tuple) -> dict[str, Any]:
    broker_server, counter_server = servers
    broker, counter = redis.Redis.from_url(broker_server.url), redis.Redis.from_url(counter_server.url)
    broker.flushall()
    counter.delete(COUNTER_KEY)
    load = os.getloadavg()[0]
    app = "bench.raw_chain" if kind == "raw" else "pipeline"
    with ExitStack() as stack:
        if kind != "raw":
            beat = BeatProcess(env, name="hosts-beat")
            stack.callback(beat.stop)
            beat.start()
        workers = []
        for number in range(hosts):
            proxy = stack.enter_context(FaultProxy(broker_server.port))
            through = {"VETRO_BROKER_URL": proxy.url(), "VETRO_RESULT_STORE_URL": proxy.url()}
            through["BENCH_BROKER_URL"] = proxy.url()
            worker = WorkerProcess(env | through, 1, f"host{number}-{kind}", WORKER_ARGS, app=app)
            stack.callback(worker.stop)
            workers.append(worker)
        for worker in workers:
            worker.start()
        began = time.perf_counter()
        _publish(kind, jobs)
        wait_until(lambda: int(counter.get(COUNTER_KEY) or 0) >= jobs, 900, f"{kind} x{hosts}: every job", 0.05)
        seconds = time.perf_counter() - began
        shares = [worker.log().count(" succeeded in ") for worker in workers]
    total = sum(shares) or 1
    return {
        "kind": kind,
        "hosts": hosts,
        "jobs_per_s": round(jobs / seconds, 1),
        "host_shares": [round(share / total, 2) for share in shares],
        "load_1m": round(load, 2),
        "measured_s": round(seconds, 2),
    }


def summary(trials: list[dict[str, Any]]) -> dict[str, Any]:
    median = {
        f"{kind} x{hosts}": statistics.median(
            t["jobs_per_s"] for t in trials if (t["kind"], t["hosts"]) == (kind, hosts)
        )
        for kind in ("vetro", "raw")
        for hosts in HOST_COUNTS
    }
    return {
        "median_jobs_per_s": median,
        "vetro_over_raw": {f"x{h}": round(median[f"vetro x{h}"] / median[f"raw x{h}"], 2) for h in HOST_COUNTS},
        "speed_up_over_one_host": {
            kind: {f"x{h}": round(median[f"{kind} x{h}"] / median[f"{kind} x1"], 2) for h in HOST_COUNTS}
            for kind in ("vetro", "raw")
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=600)
    parser.add_argument("--pairs", type=int, default=2)
    options = parser.parse_args()
    with ExitStack() as stack:
        env, servers = private_setup(stack)
        trials = []
        for number in range(options.pairs):
            for hosts in HOST_COUNTS:
                for kind in ("vetro", "raw"):
                    trials.append(trial(kind, hosts, options.jobs, env, servers))
                    print(f"pair {number + 1}: {json.dumps(trials[-1])}", file=sys.stderr)
    print(
        json.dumps(
            {
                "benchmark": "hosts",
                "jobs": options.jobs,
                "cores": os.cpu_count(),
                "date": time.strftime("%Y-%m-%d"),
                "trials": trials,
                **summary(trials),
            }
        )
    )


if __name__ == "__main__":
    main()
