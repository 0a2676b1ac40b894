"""Five trivial stages declared with vetro's own API: the vetro side of the throughput benchmark.

Workers load it with VETRO_PIPELINES=bench.trivial. The last stage counts finished jobs in
BENCH_COUNTER_URL's Redis, as the raw Celery chain's last task does (bench/raw_chain.py).
"""

from __future__ import annotations

from typing import Any

from bench.counter import count_done, failing
from pipeline import PermanentError, Pipeline, Stage, register, stage

STAGE_COUNT = 5


def _passes_on(name: str, first: bool, last: bool) -> Stage:
    """A stage that returns its input (the last one also counts the job as finished). A payload with
    "fail" fails for good at the first stage while bench.dead_letters wants failures."""

    def body(self: Stage, payload: dict[str, Any]) -> dict[str, Any]:
        if first and failing(payload):
            raise PermanentError("bench: this job is meant to fail")
        if last:
            count_done(payload)
        return payload

    return stage(name, "bench")(body)


BENCH = register(
    Pipeline("bench", [_passes_on(f"s{n}", first=n == 1, last=n == STAGE_COUNT) for n in range(1, STAGE_COUNT + 1)])
)
