"""End-to-end latency at a steady rate: vetro's five trivial stages against the raw Celery chain.

A worker (and, for vetro, celery beat) is started first; then jobs are submitted one at a time,
paced at `--rate` per second for `--seconds`, each stamped with its send time. The last stage
notes how long the job took (bench/counter.py). Trials alternate, vetro first. Prints one
JSON line with p50, p95 and p99 in milliseconds per trial, their medians and the machine's load.

    .venv/bin/python -m bench.latency --rate 20 --seconds 30 --pairs 3
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

from bench.counter import COUNTER_KEY, LATENCY_KEY
from bench.throughput import Worker, payload, private_setup
from vetro.testing.processes import RedisServer, wait_until


def _submitter(kind: str) -> Any:
    if kind == "raw":
        from bench.raw_chain import submit

        return submit
    from pipeline import submit

    return lambda job: submit(job, pipeline="bench")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def trial(kind: str, rate: float, seconds: float, env: dict[str, str], servers: tuple[RedisServer, ...]) -> dict:
    broker, counter = (redis.Redis.from_url(server.url) for server in servers)
    broker.flushall()
    counter.delete(COUNTER_KEY, LATENCY_KEY)
    submit, jobs, load = _submitter(kind), int(rate * seconds), os.getloadavg()[0]
    with Worker(kind, env):
        started = time.perf_counter()
        for number in range(jobs):
            time.sleep(max(0.0, started + number / rate - time.perf_counter()))  # paced, not a wait
            submit(payload(number) | {"sent_at": time.time()})
        wait_until(lambda: int(counter.get(COUNTER_KEY) or 0) >= jobs, 300, f"{kind}: every job", 0.05)
    latencies = [float(value) * 1000 for value in counter.lrange(LATENCY_KEY, 0, -1)]
    return {
        "kind": kind,
        "jobs": jobs,
        "p50_ms": round(percentile(latencies, 0.50), 1),
        "p95_ms": round(percentile(latencies, 0.95), 1),
        "p99_ms": round(percentile(latencies, 0.99), 1),
        "max_ms": round(max(latencies), 1),
        "load_1m": round(load, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=20.0, help="jobs per second")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--pairs", type=int, default=3)
    options = parser.parse_args()
    with ExitStack() as stack:
        env, servers = private_setup(stack)
        trials = []
        for number in range(options.pairs):
            for kind in ("vetro", "raw"):
                trials.append(trial(kind, options.rate, options.seconds, env, servers))
                print(f"pair {number + 1} {kind}: {json.dumps(trials[-1])}", file=sys.stderr)
    medians = {
        kind: {
            name: statistics.median(t[name] for t in trials if t["kind"] == kind)
            for name in ("p50_ms", "p95_ms", "p99_ms")
        }
        for kind in ("vetro", "raw")
    }
    result = {
        "benchmark": "latency",
        "rate": options.rate,
        "seconds": options.seconds,
        "cores": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d"),
        "trials": trials,
        "medians": medians,
        "p99_vetro_minus_raw_ms": round(medians["vetro"]["p99_ms"] - medians["raw"]["p99_ms"], 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
