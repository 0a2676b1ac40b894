"""Celery's revoke on a vetro job, from `AsyncResult.revoke()` or `celery control revoke`: the job is cancelled
in the ledger; nothing further runs, whether it was waiting, running or in its fan-out, and the reconciler
does not revive it."""

from __future__ import annotations

import uuid

import pytest
from celery import chain, chord
from celery.exceptions import TaskRevokedError

from dlq import store
from pipeline import submit
from pipeline.jobs import ledger
from pipeline.jobs.ledger import get_job, job_for
from pipeline.store import JobKeys, redis_client
from tasks.orders.samples import sample_order
from tests.helpers import run_module, set_faults, vetro
from tests.pipelines import after, asks_to_retry, not_autoretried, slow
from vetro.testing import job_timeline
from vetro.testing.processes import wait_until

pytestmark = pytest.mark.integration


def attempts(key: str) -> int:
    return redis_client().llen(f"vetro-test:attempts:{key}")


def key() -> str:
    return f"revoke-{uuid.uuid4().hex[:8]}"


def record_of(task_id: str) -> dict:
    _, job_id = job_for(task_id)
    return get_job(job_id)


def stays(check, seconds: float) -> bool:
    """`check()` still holds after `seconds` (polled, so a change is seen as soon as it happens)."""
    try:
        wait_until(lambda: not check(), seconds, "a change that must not come")
    except TimeoutError:
        return True
    return False


def reconcile_once() -> None:
    swept = run_module("vetro.cli", "reconcile")
    assert swept.returncode == 0, swept.stderr


def test_a_waiting_job_revoked_runs_no_further_step_and_the_reconciler_leaves_it(worker):
    name = key()
    result = asks_to_retry.delay({"key": name, "fail": 5, "countdown": 3})
    wait_until(lambda: attempts(name) == 1, 60, "the first attempt")
    result.revoke()
    record = record_of(result.id)
    assert record["status"] == ledger.REVOKED and record["revoked_by"] == "AsyncResult.revoke"
    with pytest.raises(TaskRevokedError):
        result.get(timeout=30)
    reconcile_once()
    assert stays(lambda: attempts(name) == 1, 8)  # its 3 s retry never runs


def test_a_running_job_revoked_from_the_command_line_finishes_its_step_and_starts_nothing(worker):
    name = key()
    result = chain(slow.s({"key": name, "sleep": 4}), after.s()).apply_async()
    wait_until(lambda: attempts(name) == 1, 60, "the slow step to start")
    revoked = run_module("celery", "-A", "pipeline", "control", "revoke", result.id)
    assert revoked.returncode == 0, revoked.stderr
    wait_until(lambda: record_of(result.id)["status"] == ledger.REVOKED, 30, "the job to be revoked")
    assert record_of(result.id)["revoked_by"] == "celery control revoke"
    reconcile_once()
    assert stays(lambda: attempts(f"{name}:after") == 0, 10)
    pipeline, job_id = job_for(result.id)
    wait_until(lambda: len(ledger.load(pipeline, job_id).results) == 1, 30, "the running step's result to be kept")
    assert redis_client().ttl(JobKeys(pipeline, job_id).record) > 0  # and it expires with its record
    shown = vetro("job", "show", result.id)
    assert "revoked" in shown.stdout and "celery control revoke" in shown.stdout, shown.stdout


def test_a_step_that_fails_after_its_job_was_revoked_records_its_failure_and_starts_nothing(worker):
    """Revoked while it ran, the step then fails for good: the failure is kept (a dead letter beside the revoked
    job) but the job stays revoked, and its errback (link_error) never runs."""
    name = key()
    result = slow.s({"key": name, "sleep": 4, "fail": True}).apply_async(link_error=after.si({"key": name}))
    wait_until(lambda: attempts(name) == 1, 60, "the slow step to start")
    result.revoke()
    job_id = job_for(result.id)[1]
    wait_until(lambda: store.rows(store.RowFilter(job=job_id)), 60, "the failure's dead letter")
    record = record_of(result.id)
    assert record["status"] == ledger.REVOKED and "failed after its sleep" in record["error"]
    reconcile_once()
    assert stays(lambda: attempts(f"{name}:after") == 0 and record_of(result.id)["status"] == ledger.REVOKED, 8)


def test_a_running_step_revoked_with_terminate_is_ended(worker):
    name = key()
    result = chain(slow.s({"key": name, "sleep": 20}), after.s()).apply_async()
    wait_until(lambda: attempts(name) == 1, 60, "the slow step to start")
    result.revoke(terminate=True, signal="KILL")
    with pytest.raises(TaskRevokedError):
        result.get(timeout=12)  # long before the 20 s step could have ended
    assert stays(lambda: attempts(name) == 1 and attempts(f"{name}:after") == 0, 8)


def test_a_job_revoked_in_its_fan_out_never_joins(worker):
    name = key()
    parts = [slow.s({"key": name, "sleep": 3}), slow.s({"key": name, "sleep": 3})]
    result = chord(parts, after.s()).apply_async()
    wait_until(lambda: attempts(name) >= 1, 60, "a part to start")
    result.revoke()
    reconcile_once()
    assert stays(lambda: attempts(f"{name}:after") == 0, 10)
    assert record_of(result.id)["status"] == ledger.REVOKED


def test_a_revoked_jobs_dead_letters_are_not_replayed_even_forced(worker):
    """A replay would send the failed step under its own task id, which the workers that were told drop."""
    name = key()
    result = not_autoretried.delay({"key": name, "fail": 1})
    wait_until(lambda: record_of(result.id)["status"] == ledger.FAILED, 60, "the job to be dead-lettered")
    result.revoke()
    job_id = job_for(result.id)[1]
    for forced in ([], ["--force"]):
        refused = vetro("dlq", "replay", "--job", job_id, "--yes", *forced)
        assert refused.returncode == 1 and "its job was revoked: the workers drop its steps" in refused.stderr


def test_a_declared_fan_out_revoked_with_terminate_ends_its_running_parts(worker, partner):
    set_faults(partner.url, latency_ms=3500, scope="/webhooks/")  # each part waits at its partner
    job_id = submit(sample_order(1, prefix=key()))
    wait_until(lambda: get_job(job_id).get("branches"), 60, "the fan-out to start")
    wait_until(lambda: "running" in statuses(job_id).values(), 30, "a part to run")
    job_id.revoke(terminate=True, signal="KILL")
    set_faults(partner.url)  # a part that ran again would now finish at once
    with pytest.raises(TaskRevokedError):
        job_id.get(timeout=5)
    # Past the 3.5 s a part waits (under the 5 s read timeout): one not ended would have recorded by now.
    assert stays(lambda: "finish" not in statuses(job_id), 12)
    assert not [name for name, status in statuses(job_id).items() if name.startswith("operate.") and status == "done"]


def statuses(job_id: str) -> dict[str, str]:
    return {name: step.get("status") for name, step in job_timeline(job_id)["steps"].items()}
