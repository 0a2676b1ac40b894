"""Five trivial stages declared with vetro's own API: the vetro side of the throughput benchmark.

Workers load it with VETRO_PIPELINES=bench.trivial. The last stage counts finished jobs in
BENCH_COUNTER_URL's Redis, as the raw Celery chain's last task does (bench/raw_chain.py).
"""

from __future__ import annotations

from typing import Any

from bench.counter import count_done
from pipeline import Pipeline, Stage, register, stage


@stage("s1", "bench")
def s1(self: Stage, payload: dict[str, Any]) -> dict[str, Any]:
    return payload


@stage("s2", "bench")
def s2(self: Stage, payload: dict[str, Any]) -> dict[str, Any]:
    return payload


@stage("s3", "bench")
def s3(self: Stage, payload: dict[str, Any]) -> dict[str, Any]:
    return payload


@stage("s4", "bench")
def s4(self: Stage, payload: dict[str, Any]) -> dict[str, Any]:
    return payload


@stage("s5", "bench")
def s5(self: Stage, payload: dict[str, Any]) -> dict[str, Any]:
    count_done()
    return payload


BENCH = register(Pipeline("bench", [s1, s2, s3, s4, s5]))
