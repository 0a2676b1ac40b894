"""bench.trivial's five stages with the idempotency guard taken out: what the guard costs.

Each stage runs its body and publishes the next step, as vetro's driver does, without the claim
and the record (so without the ledger's view of the job, exactly-once or retry budgets). Only for
measuring: workers load it with VETRO_PIPELINES=bench.unguarded.
"""

from __future__ import annotations

from types import MethodType
from typing import Any

from bench.trivial import BENCH
from pipeline import driver
from pipeline.context import JobContext
from pipeline.stages import Stage


def _run_unguarded(self: Stage, job_id: str, args: tuple, kwargs: dict) -> Any:
    result = self.run(*args, **kwargs)
    driver.publish(JobContext.from_headers(self.request), self.pipeline.after(self.stage, args, result))
    return result


for _task in BENCH.stages:
    _task._run_guarded = MethodType(_run_unguarded, _task)
