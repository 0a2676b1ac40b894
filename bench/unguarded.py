"""bench.trivial's five stages with the idempotency guard taken out: what the guard costs.

Each stage runs its body and publishes the next step from its plan, as vetro's driver does, without
the claim and the record (so without the ledger's view of the job, exactly-once or retry budgets).
Only for measuring: workers load it with VETRO_PIPELINES=bench.unguarded.
"""

from __future__ import annotations

from typing import Any

from bench.trivial import BENCH  # noqa: F401 (declares the stages this replaces the phases of)
from pipeline.adapter.internals import header
from pipeline.adapter.job_headers import job_of
from pipeline.context import SCOPE
from pipeline.jobs import driver, stages
from pipeline.jobs.phases import StepRun
from pipeline.jobs.pipelines import declared_plan


def _run_unguarded(run: StepRun) -> Any:
    result = run.task.run(*run.args, **run.kwargs)
    job = job_of(run.request)
    driver.publish(job, declared_plan(job.pipeline).route(header(run.request, SCOPE), run.args, result).next)
    return result


stages.run_step = _run_unguarded
