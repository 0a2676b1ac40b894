"""The dead-letter store and replay on real workers, real Redis, SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import uuid

import pytest

from dlq import spool, store
from dlq.db import upgrade
from dlq.models import Status
from pipeline import submit, submit_many
from pipeline.jobs.ledger import get_job
from settings import reset_settings
from tasks.orders.samples import invalid_order, sample_order
from tests.helpers import (
    PostgresServer,
    call_times,
    dead_letter_event,
    effects_by_key,
    effects_summary,
    fast_env,
    set_faults,
    vetro,
    wait_for_completion,
    wait_for_jobs,
    workers,
)
from vetro.testing.processes import wait_until

pytestmark = pytest.mark.integration


def dlq_env(**extra: str) -> dict[str, str]:
    return fast_env(
        visibility=20, time_limit=8, **({"VETRO_STAGES__ORDERS__TRANSFORM__TECHNICAL_RETRIES": "1"} | extra)
    )


def run_id() -> str:
    return uuid.uuid4().hex[:8]


def one_row(job_id: str):
    rows = store.rows(store.RowFilter(job=job_id))
    assert len(rows) == 1, rows
    return rows[0]


def assert_one_effect_per_destination(partner_url: str, records: list[dict]) -> None:
    effects = effects_by_key(partner_url)
    for record in records:
        for destination in json.loads(record["branches"]):
            assert effects[(record["idempotency_key"], destination)]["deliveries"] == 1
    assert effects_summary(partner_url)["duplicate_effects"] == 0


def test_a_permanent_failure_and_an_exhausted_retry_each_make_one_row(database, partner):
    set_faults(partner.url, down=True, scope="/webhooks/billing")
    env = dlq_env(VETRO_BREAKERS_ENABLED="false", VETRO_STAGES__ORDERS__OPERATE__MAX_RETRIES="2")
    invalid = invalid_order(1, prefix=f"perm-{run_id()}")
    with workers(env):
        bad = submit(invalid)
        exhausted = submit(sample_order(1, prefix=f"down-{run_id()}") | {"order_type": "refund", "region": "eu"})
        wait_for_jobs([bad, exhausted], timeout=90)

    row = one_row(bad)
    job = get_job(bad)
    assert (row.stage, row.scope, row.failure_class, row.status) == ("validate", "validate", "permanent", "failed")
    assert row.input == {"args": [invalid], "kwargs": {}}
    assert row.headers["vetro_job_id"] == bad
    assert (row.idempotency_key, row.correlation_id) == (job["idempotency_key"], job["correlation_id"])
    assert "lines.0.quantity" in row.message and row.traceback.startswith("Traceback")
    assert row.worker_host and row.attempts == 1

    row = one_row(exhausted)
    assert (row.stage, row.scope, row.destination, row.failure_class) == (
        "operate",
        "operate.billing",
        "billing",
        "transient",
    )
    assert row.attempts == 3 and row.input["args"][1] == "billing"
    assert "RemoteProtocolError" in row.exception_type


def test_a_stage_bug_fails_fifty_jobs_and_one_replay_by_fingerprint_finishes_them(database, partner):
    with workers(dlq_env(ORDERS_TRANSFORM_BUG="true"), concurrency=3):
        run = run_id()
        job_ids = submit_many(sample_order(n, prefix=f"bug-{run}") for n in range(50))
        wait_for_jobs(job_ids, timeout=120)
    # This run's rows: a job another test left queued in the session's Redis may have failed here too.
    found = json.loads(vetro("dlq", "patterns", "--error", f"bug-{run}-", "--json").stdout)
    assert [(p["count"], p["stage"]) for p in found] == [(50, "transform")]
    customer_calls = len(call_times(partner.url, "/customers/"))

    with workers(dlq_env(), concurrency=3):  # the bug is fixed
        result = vetro("dlq", "replay", "--fingerprint", found[0]["fingerprint"], "--yes")
        assert result.returncode == 0, result.stderr
        assert "replayed 50 dead letter(s)" in result.stderr
        records = wait_for_completion(job_ids, timeout=120)

    assert [record["status"] for record in records] == ["completed"] * 50
    assert_one_effect_per_destination(partner.url, records)
    assert len(call_times(partner.url, "/customers/")) == customer_calls  # enrich was not run again
    assert {row.status for row in store.rows(store.RowFilter(fingerprint=found[0]["fingerprint"]))} == {"resolved"}


def test_replaying_a_row_twice_does_not_double_any_effect(database, partner):
    set_faults(partner.url, error_rate=1.0, error_status=422, scope="/webhooks/billing")
    with workers(dlq_env()):
        job_id = submit(sample_order(1, prefix=f"twice-{run_id()}") | {"order_type": "purchase", "region": "eu"})
        wait_for_jobs([job_id])
        row = one_row(job_id)
        set_faults(partner.url, error_rate=0)
        first = vetro("dlq", "replay", str(row.id), "--yes")
        second = vetro("dlq", "replay", str(row.id), "--yes", "--force")  # while the first runs, or after
        assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
        record = wait_for_completion([job_id])[0]
        wait_until(lambda: store.get_row(row.id).status == Status.RESOLVED, 30, "the row to be resolved")
    assert record["status"] == "completed"
    assert_one_effect_per_destination(partner.url, [record])
    assert store.get_row(row.id).replay_count == 2


def test_no_dead_letter_is_lost_while_the_database_is_down(redis_server, partner):
    default = os.environ["VETRO_DATABASE_URL"]
    with PostgresServer() as postgres:
        upgrade(postgres.url)
        os.environ["VETRO_DATABASE_URL"] = postgres.url
        reset_settings()
        try:
            with workers(dlq_env()):
                postgres.stop()
                run = run_id()
                job_ids = submit_many(invalid_order(n, prefix=f"outage-{run}") for n in range(10))
                wait_for_jobs(job_ids, timeout=60)
                assert spool.size() == 10
                postgres.start()
            with workers(dlq_env()):  # a worker's start-up writes what was spooled
                wait_until(lambda: store.count(store.RowFilter()) == 10, 30, "the spooled rows in the database")
            assert {row.job_id for row in store.rows(store.RowFilter())} == set(job_ids)
            assert spool.size() == 0
        finally:
            os.environ["VETRO_DATABASE_URL"] = default
            reset_settings()


def test_a_row_is_quarantined_after_failed_replays_and_force_overrides(database, partner):
    os.environ["VETRO_QUARANTINE_AFTER"] = "2"
    try:
        with workers(dlq_env()):
            job_id = submit(invalid_order(1, prefix=f"poison-{run_id()}"))
            wait_for_jobs([job_id])
            row = one_row(job_id)
            for replays, status in ((1, Status.FAILED), (2, Status.QUARANTINED)):
                assert vetro("dlq", "replay", str(row.id), "--yes").returncode == 0
                wait_until(
                    lambda r=replays, s=status: (
                        (store.get_row(row.id).replay_count, store.get_row(row.id).status) == (r, s)
                    ),
                    30,
                    f"replay {replays} to fail",
                )
            refused = vetro("dlq", "replay", str(row.id), "--yes")
            assert refused.returncode == 1 and "quarantined after 2 failed replays" in refused.stderr
            forced = vetro("dlq", "replay", str(row.id), "--yes", "--force")
            assert forced.returncode == 0
            wait_until(lambda: store.get_row(row.id).replay_count == 3, 30, "the forced replay")
    finally:
        del os.environ["VETRO_QUARANTINE_AFTER"]


@pytest.mark.long
@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_a_bulk_replay_of_a_thousand_rows_repeats_no_effect(database, partner):
    env = dlq_env(ORDERS_TRANSFORM_BUG="true", VETRO_STAGES__ORDERS__TRANSFORM__TECHNICAL_RETRIES="0")
    with workers(env, count=2):
        run = run_id()
        job_ids = submit_many(sample_order(n, prefix=f"bulk-{run}") for n in range(1000))
        wait_for_jobs(job_ids, timeout=300)
    assert store.count(store.RowFilter(stage="transform", status="failed")) == 1000
    with workers(dlq_env(), count=2):
        result = vetro("dlq", "replay", "--stage", "transform", "--yes", timeout=300)
        assert "replayed 1000 dead letter(s)" in result.stderr
        records = wait_for_completion(job_ids, timeout=300)
    assert [record["status"] for record in records] == ["completed"] * 1000
    assert_one_effect_per_destination(partner.url, records)
    assert store.count(store.RowFilter(status="resolved")) == 1000


@pytest.mark.long
@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_a_step_whose_process_keeps_dying_is_dead_lettered_as_poison(database, partner):
    # Each billing call hangs after the partner records it, and the test kills the process
    # running it, as a poison message would kill it again and again.
    set_faults(partner.url, ack_delay_ms=30_000, scope="/webhooks/billing")
    with workers(dlq_env(VETRO_MAX_DELIVERIES="2")) as (worker,):
        job_id = submit(sample_order(1, prefix=f"poison-{run_id()}") | {"order_type": "refund", "region": "apac"})
        killed = 0

        def crash_each_billing_call() -> bool:
            nonlocal killed
            if len(call_times(partner.url, "/webhooks/billing")) > killed:
                killed += 1
                for pid in worker.child_pids():
                    os.kill(pid, signal.SIGKILL)
            return store.count(store.RowFilter(job=job_id)) == 1

        wait_until(crash_each_billing_call, 90, "the poison step to be dead-lettered", interval=0.3)
    row = one_row(job_id)
    assert (row.scope, row.failure_class) == ("operate.billing", "technical")
    assert row.exception_type.endswith("PoisonJobError") and "never finished" in row.message
    assert killed == 2


def test_a_replay_after_the_jobs_ledger_expired_is_refused(database):
    job_id = str(uuid.uuid4())  # a row whose job's ledger is gone (older than VETRO_REPLAY_WINDOW)
    with store.session() as active:
        store.write(active, dead_letter_event(job_id))
    row = one_row(job_id)
    result = vetro("dlq", "replay", str(row.id), "--yes")
    assert result.returncode == 1
    assert f"not replayed: {row.id}: its job's record expired" in result.stderr
    assert one_row(job_id).status == Status.FAILED and one_row(job_id).replay_count == 0


@pytest.mark.long
@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_a_step_killed_by_its_hard_time_limit_is_run_again_then_dead_lettered_as_poison(database):
    from tests import pipelines

    env = dlq_env(
        VETRO_MAX_DELIVERIES="2",
        VETRO_STAGES__STUBBORN__VALIDATE__TIME_LIMIT="3",
        VETRO_STAGES__STUBBORN__VALIDATE__SOFT_TIME_LIMIT="2",
    )
    with workers(env | {"VETRO_PIPELINES": "tasks.orders,tests.pipelines"}) as (worker,):
        job_id = submit({"n": 1}, pipeline=pipelines.STUBBORN.name)
        record = wait_for_jobs([job_id], timeout=120)[0]
        kills = worker.log().count("Hard time limit (3s) exceeded")
    assert (record["status"], record["failure_class"]) == ("failed", "technical")
    assert "PoisonJobError" in record["error"] and kills == 2
    assert one_row(job_id).exception_type.endswith("PoisonJobError")


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_a_replay_batch_that_cannot_be_published_leaves_every_row_as_it_was(database, monkeypatch):
    from dlq import replay
    from pipeline.jobs import driver

    # Jobs whose ledgers exist (no worker runs them), each with a failed row.
    job_ids = submit_many(sample_order(n, prefix=f"unpublished-{uuid.uuid4()}") for n in range(3))
    with store.session() as active:
        for job_id in job_ids:
            store.write(active, dead_letter_event(job_id))
    rows = [one_row(job_id) for job_id in job_ids]

    def broker_gone(*_: object, **__: object) -> None:
        raise ConnectionError("the broker went away mid-replay")

    monkeypatch.setattr(driver, "publish_after", broker_gone)
    with pytest.raises(ConnectionError):
        replay.replay(rows)
    after = [one_row(job_id) for job_id in job_ids]
    assert [(row.status, row.replay_count, row.replay_task_ids) for row in after] == [(Status.FAILED, 0, [])] * 3
    assert all(get_job(job_id)["status"] == "queued" for job_id in job_ids)  # no ledger was reopened
