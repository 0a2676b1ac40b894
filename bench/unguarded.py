"""bench.trivial's five stages with the idempotency guard taken out: what the guard costs.

Each stage runs its body and publishes the next step from its plan, as vetro's driver does, without
the claim and the record (so without the ledger's view of the job, exactly-once or retry budgets).
Only for measuring: workers load it with VETRO_PIPELINES=bench.unguarded.
"""

from __future__ import annotations

from typing import Any

from bench.trivial import BENCH  # noqa: F401 (declares the stages this replaces the phases of)
from pipeline import driver, stages
from pipeline.context import SCOPE, JobContext
from pipeline.phases import StepRun
from pipeline.pipelines import declared_plan


def _run_unguarded(run: StepRun) -> Any:
    result = run.task.run(*run.args, **run.kwargs)
    job = JobContext.from_headers(run.request)
    driver.publish(job, declared_plan(job.pipeline).route(run.request.get(SCOPE), run.args, result).next)
    return result


stages.run_step = _run_unguarded
