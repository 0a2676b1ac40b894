"""Waiting for a job and reading it, as a test of a pipeline does."""

from __future__ import annotations

from typing import Any

from vetro.testing.processes import wait_until


def wait_for_job(job_id: str, timeout: float = 60, status: str | None = None) -> dict[str, str]:
    """The job's ledger record once it has ended (or, given a `status`, once it has that one)."""
    from pipeline.jobs.ledger import settled

    return wait_until(lambda: (settled([job_id], status) or [None])[0], timeout, f"job {job_id} to end")


def job_timeline(job_id: str) -> dict[str, Any]:
    """What `vetro job show --json` prints: each step (its result, attempts, times), the plan, re-drives."""
    from pipeline.jobs.timeline import describe_job

    described = describe_job(job_id)
    if described is None:
        raise LookupError(f"no job {job_id} in the ledger")
    return described
