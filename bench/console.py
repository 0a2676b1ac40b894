"""The console under load: what an operator waits for with 100,000 dead letters in PostgreSQL, whether a
paced bulk replay of 10,000 of them holds the console up, and whether 20 viewers slow the workers.

1. `--rows` dead letters (20 causes, 4 steps, most failed) in a throwaway database on the PostgreSQL at
   127.0.0.1:5432, served by a real `vetro serve` on loopback. Each page and API call an operator
   makes is timed `--samples` times from a client on the same machine (an upper bound on the server's
   own time): the list, a filter by error text, by pattern, the patterns, a row, the overview.
2. A replay of the 10,000 rows of two causes, paced at 500 a second, started from the API; the list is
   timed again while it runs. (Their jobs' ledgers do not exist here, so each replay is refused as
   expired after the same reads a real one makes: the console's work, not the workers'.)
3. bench.throughput's trivial five-stage jobs through one worker, in pairs: alone, then with 20 viewers
   each with the overview and the dead letters open, refreshing as console.js does; jobs/s compared as
   a ratio within the run. `--eager-viewers` has each viewer load both pages afresh every second instead
   (no shared reads: the worst an open console could do).

    .venv/bin/python -m bench.console --rows 100000 --samples 30 --jobs 1000 --pairs 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
import uuid
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from typing import Any

import httpx
import psycopg

from bench.throughput import private_setup, trial
from vetro.testing.processes import free_port, http_answers, reaped, spawn, wait_until
from vetro.web.shared import REFRESH_HEADER

POSTGRES = os.environ.get("VETRO_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
CAUSES = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliett", "kilo",
          "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango")  # fmt: skip
STEPS = ("validate", "enrich", "transform", "operate.billing")
REPLAYED = "batch-a"  # the causes alpha and bravo: 10,000 failed rows of 100,000


@contextmanager
def throwaway_database() -> Any:
    name = f"vetro_bench_console_{os.getpid()}"
    with psycopg.connect(POSTGRES, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield POSTGRES.rsplit("/", 1)[0] + f"/{name}"
    finally:
        from dlq.db import engine

        engine(POSTGRES.rsplit("/", 1)[0] + f"/{name}").dispose()
        with psycopg.connect(POSTGRES, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def fill(url: str, rows: int) -> None:
    """`rows` dead letters, as workers write them (dlq.store's upsert), a batch at a time."""
    from sqlalchemy import insert

    from dlq.db import session
    from dlq.fingerprint import fingerprint
    from dlq.models import DeadLetter
    from dlq.store import utcnow

    now = utcnow()
    batch = []
    for n in range(rows):
        cause, step = n % len(CAUSES), STEPS[n % len(STEPS)]
        batch_name = REPLAYED if cause < 2 else "batch-b"
        message = f"{CAUSES[cause]} failure ({batch_name}): partner answered 503 for order {n}"
        at = now - timedelta(seconds=n)
        batch.append(
            dict(job_id=str(uuid.uuid4()), scope=step, pipeline="orders", stage=step.split(".")[0],
                 destination=None, input={"args": [{"order_id": f"o-{n}", "sku": f"SKU-{n % 997}"}], "kwargs": {}},
                 headers={}, idempotency_key=f"key-{n}", correlation_id=f"corr-{n}",
                 exception_type="pipeline.failures.TechnicalError", message=message, traceback="Traceback ...",
                 failure_class="technical", attempts=3, first_failed_at=at, last_failed_at=at, worker_host="w@h",
                 fingerprint=fingerprint(step, "pipeline.failures.TechnicalError", message),
                 status="resolved" if n % 10 == 5 else "failed", replay_count=0, replay_task_ids=[], updated_at=at)
        )  # fmt: skip
        if len(batch) == 5000 or n == rows - 1:
            with session(url) as active:
                active.execute(insert(DeadLetter), batch)
            batch = []
    with session(url) as active:
        active.execute(__import__("sqlalchemy").text("ANALYZE dead_letters"))


@contextmanager
def serving(env: dict[str, str]) -> Any:
    port = free_port()
    process = spawn(
        [sys.executable, "-m", "vetro.cli", "serve", "--port", str(port)],
        env={**os.environ, **env},
        stdout=open(os.devnull, "w"),  # noqa: SIM115 - the child's
        stderr=open(os.devnull, "w"),  # noqa: SIM115
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: http_answers(f"{url}/health/live"), 60, "vetro serve")
        yield url
    finally:
        process.terminate()
        process.wait(10)
        reaped(process)


def timed(client: httpx.Client, path: str, samples: int, **params: Any) -> dict[str, float]:
    client.get(path, params=params)  # warm: the first request of a kind pays for imports and plans
    seconds = []
    for _ in range(samples):
        started = time.perf_counter()
        answer = client.get(path, params=params)
        seconds.append(time.perf_counter() - started)
        answer.raise_for_status()
    seconds.sort()
    return {
        "median_ms": round(statistics.median(seconds) * 1000, 1),
        "p95_ms": round(seconds[int(len(seconds) * 0.95) - 1] * 1000, 1),
    }


def pages(client: httpx.Client, samples: int, fingerprint: str, row_id: int) -> dict[str, dict[str, float]]:
    return {
        "list (api)": timed(client, "/api/dead-letters", samples),
        "list (page)": timed(client, "/dead-letters", samples),
        "filter by error text": timed(client, "/api/dead-letters", samples, error="hotel failure"),
        "filter by pattern": timed(client, "/api/dead-letters", samples, fingerprint=fingerprint),
        "patterns (api)": timed(client, "/api/patterns", samples),
        "patterns (page)": timed(client, "/patterns", samples),
        "a row (page)": timed(client, f"/dead-letters/{row_id}", samples),
        "overview (page)": timed(client, "/", samples),
    }


def paced_replay(client: httpx.Client, samples: int) -> dict[str, Any]:
    csrf = client.get("/api/me").json()["csrf"]
    headers = {"x-csrf-token": csrf}
    shown = client.post("/api/dead-letters/preview", headers=headers,
                        json={"action": "replay", "filter": {"error": REPLAYED}}).json()  # fmt: skip
    body = {"filter": {"error": REPLAYED}, "digest": shown["digest"], "rate": 500,
            "confirm_count": shown["count"], "incident": "bench"}  # fmt: skip
    started = time.perf_counter()
    operation = client.post("/api/dead-letters/replay", headers=headers, json=body).json()
    answered_in = time.perf_counter() - started
    during = timed(client, "/api/dead-letters", samples)
    path = f"/api/operations/{operation['id']}"
    done = wait_until(lambda: (o := client.get(path).json())["state"] != "running" and o, 900, "the replay")
    return {
        "rows": shown["count"],
        "started_in_ms": round(answered_in * 1000, 1),
        "list_while_it_runs": during,
        "state": done["state"],
        "rows_per_s": round(done["done"] / max(time.perf_counter() - started, 1e-9), 1),
    }


def viewers(url: str, count: int, stop: threading.Event, eager: bool = False) -> list[threading.Thread]:
    """Each viewer has two tabs open, the overview and the dead letters, refreshing themselves as
    console.js does (every 5 s and 10 s, with its refresh header), after loading them once."""

    def view(number: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            client.get("/")
            client.get("/dead-letters")
            stop.wait(number % 5)  # viewers opened their consoles at different moments
            tick = 0
            while eager and not stop.is_set():
                client.get("/")
                client.get("/dead-letters")
                stop.wait(1)
            while not stop.is_set():
                client.get("/", headers={REFRESH_HEADER: "1"})
                if tick % 2 == 0:
                    client.get("/dead-letters", headers={REFRESH_HEADER: "1"})
                tick += 1
                stop.wait(5)

    threads = [threading.Thread(target=view, args=(number,), daemon=True) for number in range(count)]
    for thread in threads:
        thread.start()
    return threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--viewers", type=int, default=20)
    parser.add_argument("--eager-viewers", action="store_true", help="each loads both pages afresh every second")
    options = parser.parse_args()
    with ExitStack() as stack:
        env, servers = private_setup(stack)
        url = stack.enter_context(throwaway_database())
        from dlq.db import upgrade

        upgrade(url)
        filled = time.perf_counter()
        fill(url, options.rows)
        filled = time.perf_counter() - filled
        env = {**env, "VETRO_DATABASE_URL": url}
        os.environ.update(env)
        from settings import reset_settings

        reset_settings()
        base = stack.enter_context(serving(env))
        client = stack.enter_context(httpx.Client(base_url=base, timeout=60))
        first = client.get("/api/patterns").json()[0]["fingerprint"]
        row_id = client.get("/api/dead-letters", params={"limit": 1}).json()["rows"][0]["id"]
        load = os.getloadavg()[0]
        timings = pages(client, options.samples, first, row_id)
        replayed = paced_replay(client, options.samples)
        trials = []
        for number in range(options.pairs):
            alone = trial("vetro", options.jobs, env, servers)
            stop = threading.Event()
            threads = viewers(base, options.viewers, stop, options.eager_viewers)
            watched = trial("vetro", options.jobs, env, servers)
            stop.set()
            for thread in threads:
                thread.join(30)
            trials.append({"alone": alone["jobs_per_s"], "watched": watched["jobs_per_s"]})
            print(f"pair {number + 1}: {json.dumps(trials[-1])}", file=sys.stderr)
    ratios = [pair["watched"] / pair["alone"] for pair in trials]
    print(json.dumps({
        "benchmark": "console",
        "rows": options.rows,
        "date": time.strftime("%Y-%m-%d"),
        "cores": os.cpu_count(),
        "load_1m_before": round(load, 2),
        "fill_s": round(filled, 1),
        "pages": timings,
        "paced_replay": replayed,
        "viewers": options.viewers,
        "eager_viewers": options.eager_viewers,
        "worker_jobs_per_s": trials,
        "watched_over_alone": round(statistics.median(ratios), 3),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
