"""How fast `vetro dlq replay` moves a large batch of dead letters back through the pipeline.

Runs everything locally (private redis-server, partner stub, SQLite, real prefork workers):
N jobs fail at transform (the switchable demo bug), then the bug is turned off and all N rows
are replayed by fingerprint. Prints the publish rate of the replay command, the end-to-end
rate until every job completed, and the effect counts (no duplicates expected).

    .venv/bin/python bench/bulk_replay.py --jobs 1000
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from contextlib import ExitStack

from vetro.testing.processes import RedisServer, WorkerProcess, wait_until


def _worker_env(extra: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key.startswith("VETRO_")} | extra


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=2)
    options = parser.parse_args()

    with ExitStack() as stack:
        redis_server = stack.enter_context(RedisServer())
        database = f"sqlite:///{tempfile.mkdtemp(prefix='vetro-bench-')}/dlq.db"
        os.environ.update(
            {
                "VETRO_BROKER_URL": redis_server.url,
                "VETRO_RESULT_STORE_URL": redis_server.url,
                "VETRO_DATABASE_URL": database,
            }
        )
        from tasks.partner_stub import PartnerServer

        partner = PartnerServer()
        partner.start_in_thread()
        stack.callback(partner.server_close)
        stack.callback(partner.shutdown)
        os.environ["ORDERS_PARTNER_URL"] = partner.url

        from dlq import store
        from dlq.db import upgrade
        from dlq.replay import replay
        from pipeline import submit_many
        from pipeline.jobs.ledger import COMPLETED, settled
        from tasks.orders.samples import sample_order

        upgrade()

        def start_workers(extra: dict[str, str]) -> list[WorkerProcess]:
            started = [
                WorkerProcess(_worker_env(extra), concurrency=options.concurrency, name=f"bench{n}")
                for n in range(options.workers)
            ]
            for worker in started:
                stack.callback(worker.stop)
                worker.start()
            return started

        failing = start_workers(
            {"ORDERS_TRANSFORM_BUG": "true", "VETRO_STAGES__ORDERS__TRANSFORM__TECHNICAL_RETRIES": "0"}
        )
        job_ids = submit_many(sample_order(n, prefix=f"bench-{time.time_ns()}") for n in range(options.jobs))
        wait_until(lambda: settled(job_ids), 600, "the failing run", interval=0.5)
        for worker in failing:
            worker.stop()
        start_workers({})

        rows = store.rows(store.RowFilter(stage="transform", status="failed"))
        started = time.monotonic()
        report = replay(rows)
        published = time.monotonic() - started
        wait_until(lambda: settled(job_ids, COMPLETED), 900, "every replayed job to complete", interval=0.5)
        finished = time.monotonic() - started

        effects = partner.state.summary()
        print(f"rows replayed: {len(report.replayed)} of {len(rows)}")
        print(f"replay command: {published:.2f}s, {len(report.replayed) / published:.0f} rows/s published")
        print(
            f"end to end: {finished:.1f}s, {len(report.replayed) / finished:.0f} jobs/s completed "
            f"({options.workers} workers x {options.concurrency} processes)"
        )
        print(
            f"effects: {effects['total_effects']}, duplicate effects: {effects['duplicate_effects']}, "
            f"repeated deliveries: {effects['repeated_deliveries']}"
        )


if __name__ == "__main__":
    main()
