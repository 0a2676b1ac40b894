"""The same five trivial steps as a raw Celery chain, configured as a careful team would write it:
acks late, prefetch 1, JSON, a Redis result backend (BENCH_RAW_BACKEND=0 runs it without one).

    celery -A bench.raw_chain worker
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery, chain

from bench.counter import count_done
from bench.raw_celery import CAREFUL

BROKER = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/0")
app = Celery("raw", broker=BROKER, backend=BROKER if os.environ.get("BENCH_RAW_BACKEND", "1") == "1" else None)
app.conf.update(CAREFUL, task_default_queue="raw")


@app.task(name="raw.step")
def step(payload: dict[str, Any]) -> dict[str, Any]:
    return payload


@app.task(name="raw.last")
def last(payload: dict[str, Any]) -> dict[str, Any]:
    count_done(payload)
    return payload


def submit(payload: dict[str, Any]) -> None:
    chain(step.s(payload), step.s(), step.s(), step.s(), last.s()).apply_async()
