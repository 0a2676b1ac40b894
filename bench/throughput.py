"""vetro's five trivial stages against a raw Celery chain of five trivial tasks, side by side.

`--canvas` adds a third kind to each pair: the same five stages sent as a Celery chain
(`chain(s1.s(payload), s2.s(), ...)`), a vetro job whose plan is the canvas, against the same
stages submitted as the declared pipeline (the ratio `canvas/vetro`).

Each trial starts from an empty private Redis: it publishes N jobs, then starts one worker
(prefork, concurrency 2, -O fair) and reads the figures from the moment the worker is ready
until the last job finished (its start-up is not counted). vetro runs as shipped: the guards, the
ledger, dead-lettering, breakers and celery beat with the reconciler. Trials alternate,
vetro first, `--pairs` times. Prints one JSON line: every trial, the medians, the
vetro/raw ratio of each pair, and the machine's load.

    .venv/bin/python -m bench.throughput --jobs 1000 --pairs 3
    .venv/bin/python -m bench.throughput --against unguarded   # what the guard costs
    .venv/bin/python -m bench.throughput --canvas              # a Celery chain of the stages too
    .venv/bin/python -m bench.throughput --cluster             # vetro's store on a 3-master Redis Cluster

With `--cluster`, vetro's result store is a private three-master Redis Cluster (the broker stays one
Redis): the commands and Redis CPU are summed over the broker and the masters.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import redis

from bench.counter import COUNTER_KEY
from bench.measure import RedisReading, cpu_seconds, machine_busy_seconds, memory_kib, tree
from vetro.testing.cluster import RedisClusterGroup
from vetro.testing.processes import BeatProcess, RedisServer, WorkerProcess, wait_until

ROOT = Path(__file__).resolve().parent.parent
STAGES = 5  # bench.trivial.STAGE_COUNT, not imported here: declaring its stages reads settings too early
WORKER_ARGS = ["-O", "fair"]


def payload(number: int) -> dict[str, Any]:
    return {"n": number, "text": "x" * 64}


def _environment(broker: str, counter: str, database: str, store: str | None = None) -> dict[str, str]:
    """Settings for this process and the workers it starts: vetro's, the raw app's, the counter's."""
    return {
        "VETRO_BROKER_URL": broker,
        "VETRO_RESULT_STORE_URL": store or broker,
        "VETRO_DATABASE_URL": database,
        "VETRO_PIPELINES": "bench.trivial",
        "BENCH_BROKER_URL": broker,
        "BENCH_COUNTER_URL": counter,
        "PYTHONPATH": str(ROOT),
    }


def _publish(kind: str, jobs: int) -> float:
    """Publish `jobs` jobs; the producer's jobs/s."""
    started = time.perf_counter()
    if kind == "raw":
        from bench.raw_chain import submit

        for n in range(jobs):
            submit(payload(n))
    elif kind == "canvas":
        from celery import chain

        from bench.trivial import BENCH

        first, *rest = BENCH.stages
        for n in range(jobs):
            chain(first.s(payload(n)), *(stage.s() for stage in rest)).apply_async()
    else:
        from pipeline import submit_many

        submit_many((payload(n) for n in range(jobs)), pipeline="bench")
    return jobs / (time.perf_counter() - started)


class Worker(ExitStack):
    """One worker of `kind` (vetro, with celery beat and the reconciler; unguarded; or raw), started and
    stopped with the block."""

    def __init__(self, kind: str, env: dict[str, str], concurrency: int = 2) -> None:
        super().__init__()
        self.kind, self.env, self.concurrency = kind, dict(env), concurrency
        if kind == "unguarded":
            self.env["VETRO_PIPELINES"] = "bench.unguarded"

    def __enter__(self) -> WorkerProcess:
        super().__enter__()
        if self.kind != "raw":
            beat = BeatProcess(self.env, name="bench-beat")
            self.callback(beat.stop)
            beat.start()
        app = "bench.raw_chain" if self.kind == "raw" else "pipeline"
        worker = WorkerProcess(self.env, self.concurrency, f"bench-{self.kind}", WORKER_ARGS, app=app)
        self.callback(worker.stop)
        worker.start()
        return worker


def _store_nodes(env: dict[str, str]) -> list[redis.Redis]:
    """The masters of a Redis Cluster result store ([] when the store is the broker)."""
    from pipeline.redis_servers import cluster_address, is_cluster

    url = env["VETRO_RESULT_STORE_URL"]
    return [redis.Redis(host, port) for host, port in cluster_address(url).nodes] if is_cluster(url) else []


def _snapshot(pids: list[int], servers: list[redis.Redis], done: int) -> dict[str, float]:
    reading = RedisReading.total(servers)
    own = os.times()
    return {
        "at": time.perf_counter(),
        "done": done,
        "worker_cpu": cpu_seconds(pids),
        "redis_commands": reading.commands,
        "redis_cpu": reading.cpu,
        "by_command": reading.by_command,
        "machine_busy": machine_busy_seconds(),
        "own_cpu": own.user + own.system,
    }


def trial(
    kind: str, jobs: int, env: dict[str, str], servers: tuple[RedisServer, RedisServer], concurrency: int = 2
) -> dict[str, Any]:
    broker_server, counter_server = servers
    broker, counter = redis.Redis.from_url(broker_server.url), redis.Redis.from_url(counter_server.url)
    servers = [broker, *_store_nodes(env)]
    for server in servers:
        server.flushall()
    counter.delete(COUNTER_KEY)
    load = os.getloadavg()[0]
    producer_rate = _publish(kind, jobs)
    with Worker(kind, env, concurrency) as worker:
        start = _snapshot(tree(worker.pid), servers, 0)  # ready: it starts taking the waiting jobs now
        finished = lambda: int(counter.get(COUNTER_KEY) or 0)  # noqa: E731
        wait_until(lambda: finished() >= jobs * 9 // 10, 900, f"{kind}: 90% of the jobs", 0.05)
        peak_rss, pss = memory_kib(tree(worker.pid))  # while it runs, before the tail
        wait_until(lambda: finished() >= jobs, 600, f"{kind}: every job", 0.02)
        end = _snapshot(tree(worker.pid), servers, jobs)
    counted = end["done"] - start["done"]
    seconds = end["at"] - start["at"]
    delta = {name: end[name] - start[name] for name in start if name != "by_command"}
    by_command = {name: calls - start["by_command"].get(name, 0) for name, calls in end["by_command"].items()}
    ours = delta["worker_cpu"] + delta["redis_cpu"] + delta["own_cpu"]
    return {
        "kind": kind,
        "processes": concurrency,
        "jobs_per_s": round(counted / seconds, 1),
        "tasks_per_s": round(counted * STAGES / seconds, 1),
        "worker_cpu_ms_per_job": round(delta["worker_cpu"] * 1000 / counted, 2),
        "redis_commands_per_job": round(delta["redis_commands"] / counted, 1),
        "redis_cpu_ms_per_job": round(delta["redis_cpu"] * 1000 / counted, 2),
        "worker_peak_rss_mib": round(peak_rss / 1024, 1),
        "worker_pss_mib": round(pss / 1024, 1),
        "producer_jobs_per_s": round(producer_rate, 1),
        "load_1m": round(load, 2),
        "other_cpu_s": round(max(delta["machine_busy"] - ours, 0.0), 2),
        "measured_s": round(seconds, 2),
        "redis_commands_per_job_by_name": {
            name: round(calls / counted, 1)
            for name, calls in sorted(by_command.items(), key=lambda kv: -kv[1])
            if calls
        },
    }


NUMBERS = (
    "jobs_per_s",
    "tasks_per_s",
    "worker_cpu_ms_per_job",
    "redis_commands_per_job",
    "redis_cpu_ms_per_job",
    "worker_peak_rss_mib",
    "worker_pss_mib",
    "producer_jobs_per_s",
    "load_1m",
    "other_cpu_s",
)
RATIOS = ("jobs_per_s", "worker_cpu_ms_per_job", "redis_commands_per_job", "redis_cpu_ms_per_job", "worker_pss_mib")


def summary(trials: list[dict[str, Any]], against: str = "raw") -> dict[str, Any]:
    """Medians per kind, and the ratio vetro/`against` per pair and of the medians (with a canvas kind,
    also canvas/vetro and canvas/`against`)."""
    kinds = ["vetro", against] + (["canvas"] if any(t["kind"] == "canvas" for t in trials) else [])
    by_kind = {kind: [t for t in trials if t["kind"] == kind] for kind in kinds}
    medians = {
        kind: {name: round(statistics.median(t[name] for t in found), 2) for name in NUMBERS}
        for kind, found in by_kind.items()
    }

    def ratios(subject: str, anchor: str) -> tuple[list[dict[str, float]], dict[str, float]]:
        pairs = [
            {name: round(s[name] / a[name], 2) for name in RATIOS}
            for s, a in zip(by_kind[subject], by_kind[anchor], strict=True)
        ]
        return pairs, {name: round(medians[subject][name] / medians[anchor][name], 2) for name in RATIOS}

    pairs, of_medians = ratios("vetro", against)
    result = {"medians": medians, "ratio_per_pair": pairs, "ratio_of_medians": of_medians}
    if "canvas" in kinds:
        for anchor in ("vetro", against):
            pairs, of_medians = ratios("canvas", anchor)
            result[f"canvas_{anchor}_ratio_per_pair"] = pairs
            result[f"canvas_{anchor}_ratio_of_medians"] = of_medians
    return result


def private_setup(stack: ExitStack, cluster: bool = False) -> tuple[dict[str, str], tuple[RedisServer, RedisServer]]:
    """A private broker Redis and counter Redis (and, with `cluster`, a Redis Cluster result store), a migrated
    SQLite dead-letter store, and the settings naming them (also put in this process's environment)."""
    servers = (stack.enter_context(RedisServer()), stack.enter_context(RedisServer()))
    store = stack.enter_context(RedisClusterGroup()).url if cluster else None
    database = f"sqlite:///{tempfile.mkdtemp(prefix='vetro-bench-')}/dlq.db"
    env = _environment(servers[0].url, servers[1].url, database, store)
    os.environ.update(env)
    from dlq.db import upgrade

    upgrade(database)
    return env, servers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument(
        "--against", choices=("raw", "unguarded"), default="raw", help="raw Celery, or vetro without its guard"
    )
    parser.add_argument("--concurrency", type=int, default=2, help="prefork processes of the worker")
    parser.add_argument("--canvas", action="store_true", help="also the stages sent as a Celery chain")
    parser.add_argument("--cluster", action="store_true", help="vetro's result store on a 3-master Redis Cluster")
    options = parser.parse_args()
    kinds = ("vetro", "canvas", options.against) if options.canvas else ("vetro", options.against)
    with ExitStack() as stack:
        env, servers = private_setup(stack, options.cluster)
        trials = []
        for number in range(options.pairs):
            for kind in kinds:
                trials.append(trial(kind, options.jobs, env, servers, options.concurrency))
                print(f"pair {number + 1} {kind}: {json.dumps(trials[-1])}", file=sys.stderr)
    result = {
        "benchmark": "throughput",
        "jobs": options.jobs,
        "cores": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d"),
        "against": options.against,
        "result_store": "redis cluster (3 masters)" if options.cluster else "the broker's redis",
        "trials": trials,
        **summary(trials, options.against),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
