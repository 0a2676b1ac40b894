"""How fast failed jobs land in the dead-letter store, and how fast `vetro dlq replay` sends them back.

N jobs of bench.trivial's pipeline fail for good at their first stage (a permanent error, no
retries) into a SQLite store, with one worker of 2 prefork processes. Capture is timed from
the worker being ready until N rows are in SQL. Then failures are switched off and every row
is replayed (`dlq.replay.replay`, what `vetro dlq replay --yes` runs), timed for the command
and until every job completed. Last, the store alone: N failures written by this process
through the worker's own sink (`dlq.store.record_failure`, one transaction each), with no
Celery task around them. Prints one JSON line.

    .venv/bin/python -m bench.dead_letters --jobs 1000
"""

from __future__ import annotations

import argparse
import json
import os
import time
from contextlib import ExitStack

import redis

from bench.counter import COUNTER_KEY, FAILING_KEY
from bench.throughput import Worker, payload, private_setup
from vetro.testing.processes import wait_until


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    options = parser.parse_args()
    jobs = options.jobs
    with ExitStack() as stack:
        env, servers = private_setup(stack)
        from dlq import store
        from dlq.replay import replay
        from pipeline import submit_many

        counter = redis.Redis.from_url(servers[1].url)
        counter.set(FAILING_KEY, 1, ex=3600)
        submit_many((payload(n) | {"fail": True} for n in range(jobs)), pipeline="bench")
        failed = store.RowFilter(status="failed")
        load = os.getloadavg()[0]
        with Worker("vetro", env):
            started = time.perf_counter()
            wait_until(lambda: store.count(failed) >= jobs, 900, "every failure in the store", 0.1)
            captured = time.perf_counter() - started
            counter.delete(FAILING_KEY)
            rows = store.rows(failed)
            started = time.perf_counter()
            report = replay(rows)
            command = time.perf_counter() - started
            wait_until(lambda: int(counter.get(COUNTER_KEY) or 0) >= jobs, 900, "every replayed job", 0.1)
            end_to_end = time.perf_counter() - started
        store_rate = _store_rate(jobs)
    print(
        json.dumps(
            {
                "benchmark": "dead_letters",
                "jobs": jobs,
                "cores": os.cpu_count(),
                "date": time.strftime("%Y-%m-%d"),
                "load_1m": round(load, 2),
                "captured_rows_per_s": round(jobs / captured, 1),
                "replayed_rows": len(report.replayed),
                "replay_command_rows_per_s": round(len(report.replayed) / command, 1),
                "replayed_jobs_completed_per_s": round(jobs / end_to_end, 1),
                "store_rows_per_s": store_rate,
            }
        )
    )


def _store_rate(rows: int) -> float:
    """Rows/s the store's sink writes, each in its own transaction, as a failing step calls it."""
    from dlq import store
    from pipeline.context import JobContext
    from pipeline.failures import FailureClass
    from pipeline.jobs.sink import FailedStep

    try:
        raise ValueError("a permanent failure")
    except ValueError as raised:
        error = raised
    started = time.perf_counter()
    for number in range(rows):
        job = JobContext(f"store-{number}", f"key-{number}", "corr", "bench")
        store.record_failure(
            FailedStep(job, "s1", "s1", [payload(number)], {}, "bench"), FailureClass.PERMANENT, error, 1
        )
    return round(rows / (time.perf_counter() - started), 1)


if __name__ == "__main__":
    main()
