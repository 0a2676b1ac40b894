"""No job is lost: each way a job was lost under faults, reproduced on real workers, ends completed or dead-lettered.

The fleet: two workers (2 processes each, with the test faults of tests.worker_plugins) and
celery beat running the reconciler every second. Settings are short so that a stalled job is
due after 23 s (visibility timeout 8 + longest time limit 5 + margin 10).
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from dlq import store
from pipeline import submit
from pipeline.jobs.ledger import dedup_key, get_jobs
from pipeline.jobs.timeline import describe_job
from pipeline.store import redis_client
from settings import reset_settings
from tasks.orders.samples import sample_order
from tests import pipelines as test_pipelines
from tests.helpers import (
    call_times,
    effects_by_key,
    effects_summary,
    fast_env,
    run_module,
    set_faults,
    settings_set,
    vetro,
    wait_for_jobs,
)
from tests.worker_plugins import inject
from vetro.testing.processes import BeatProcess, RedisServer, WorkerProcess, wait_until

pytestmark = pytest.mark.integration

ALL_DESTINATIONS = ["billing", "notifications", "warehouse"]
BOUND = 23  # seconds without a sign of life before the reconciler looks at a job (see the module docstring)
SETTLE = BOUND * 3 + 60  # generous: a re-drive, a retry or two, and a loaded machine


def fleet_env(**extra: str) -> dict[str, str]:
    return fast_env(
        visibility=8,
        time_limit=5,
        VETRO_RECONCILE_INTERVAL="1",
        VETRO_RECONCILE_MAX_REDRIVES="1",
        VETRO_SPOOL_FLUSH_INTERVAL="5",
        VETRO_PIPELINES="tasks.orders,tests.pipelines",
        **extra,
    )


class Fleet:
    def __init__(self, env: dict[str, str], count: int = 2) -> None:
        include = ["--include", "tests.worker_plugins"]
        self.workers = [
            WorkerProcess(env, concurrency=2, name=f"fleet{n}-{uuid.uuid4().hex[:4]}", extra_args=include)
            for n in range(count)
        ]
        self.beat = BeatProcess(env)

    def start(self) -> Fleet:
        for worker in self.workers:
            worker.start()
        self.beat.start()
        return self

    def revive(self) -> None:
        """Start again any worker that died, as a supervisor would."""
        for worker in self.workers:
            if not worker.alive():
                worker.stop()
                worker.start()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """No worker consumes inside the block (beat keeps running)."""
        for worker in self.workers:
            worker.stop()
        try:
            yield
        finally:
            for worker in self.workers:
                worker.start()

    def stop(self) -> None:
        for process in [*self.workers, self.beat]:
            process.stop()


@pytest.fixture(scope="module")
def fleet(redis_server, partner_server) -> Iterator[Fleet]:
    env = fleet_env()
    with settings_set(env):  # a job's first deadline is set by its producer: this process, with the same bound
        running = Fleet(env).start()
        yield running
        running.stop()


def order(prefix: str) -> tuple[dict, str]:
    """An order routed to all three destinations, and a fresh idempotency key for it."""
    key = f"{prefix}-{uuid.uuid4().hex[:8]}"
    return sample_order(1, prefix=key) | {"order_type": "purchase", "region": "eu"}, key


def assert_delivered_once(partner_url: str, record: dict) -> None:
    effects = effects_by_key(partner_url)
    for destination in json.loads(record["branches"]):
        assert effects[(record["idempotency_key"], destination)]["order_id"]
    assert effects_summary(partner_url)["duplicate_effects"] == 0


@pytest.mark.long
def test_a_join_lost_with_the_pool_process_that_completed_the_parts_is_published(fleet, partner):
    payload, key = order("join-child")
    inject(key, "die-before-join")
    record = wait_for_jobs([submit(payload, key)], timeout=SETTLE)[0]
    assert record["status"] == "completed"
    assert sorted(json.loads(record["branches"])) == ALL_DESTINATIONS
    assert_delivered_once(partner.url, record)


@pytest.mark.long
def test_a_join_lost_with_a_whole_worker_is_published(fleet, partner):
    payload, key = order("join-worker")
    inject(key, "kill-worker-before-join")
    job_id = submit(payload, key)
    wait_until(lambda: not all(worker.alive() for worker in fleet.workers), 60, "a worker to die before the join")
    fleet.revive()
    record = wait_for_jobs([job_id], timeout=SETTLE)[0]
    assert record["status"] == "completed"
    assert_delivered_once(partner.url, record)


@pytest.mark.long
def test_a_message_lost_mid_pipeline_is_found_and_driven_on(fleet, partner):
    payload, key = order("lost")
    inject(key, "lose-once:transform")  # consumed and gone, as when a consumer dies between pop and unacked
    job_id = submit(payload, key)
    record = wait_for_jobs([job_id], timeout=SETTLE)[0]
    assert record["status"] == "completed"
    assert int(record["redrives"]) == 1
    [redrive] = describe_job(job_id)["redrives"]
    assert redrive["steps"] == ["transform"] and "neither running nor in the queue" in redrive["reason"]
    assert_delivered_once(partner.url, record)


@pytest.mark.long
def test_celery_purge_then_resubmit_loses_nothing(fleet, partner):
    payload, key = order("purged")
    with fleet.paused():
        # Earlier tests' jobs have all ended; a copy of one of their steps that a stopping worker gave back (a
        # harmless duplicate its guard would answer) is not this test's message.
        run_module("celery", "-A", "pipeline", "purge", "-f", "-Q", "vetro", env=fleet_env())
        job_id = submit(payload, key)
        purge = run_module("celery", "-A", "pipeline", "purge", "-f", "-Q", "vetro", env=fleet_env())
        assert purge.returncode == 0 and "Purged 1 message" in purge.stdout, purge.stdout + purge.stderr
        again = vetro("submit", "--json", json.dumps(payload), "--key", key, env=fleet_env())
    assert again.stdout.split() == [job_id]
    assert "submitted 0 new job(s)" in again.stderr and "1 submitted before under the same key" in again.stderr
    record = wait_for_jobs([job_id], timeout=SETTLE)[0]
    assert record["status"] == "completed"
    assert int(record["redrives"]) == 1
    assert_delivered_once(partner.url, record)


@pytest.mark.long
def test_a_job_whose_messages_keep_vanishing_is_dead_lettered_as_stalled(fleet, partner):
    payload, key = order("vanishing")
    inject(key, "swallow")
    job_id = submit(payload, key)
    record = wait_for_jobs([job_id], timeout=SETTLE)[0]
    assert (record["status"], record["failure_class"], record["failed_stage"]) == ("failed", "technical", "validate")
    assert "stalled: no progress after 1 re-drive(s)" in record["error"]
    [row] = wait_until(lambda: store.rows(store.RowFilter(job=job_id)), 30, "the dead letter")
    assert row.exception_type.endswith("StalledJobError") and row.failure_class == "technical"
    assert row.input == {"args": [payload], "kwargs": {}}


def test_a_stage_returning_a_datetime_and_a_decimal_completes_its_job(fleet):
    job_id = submit({"amount": "12.50"}, pipeline=test_pipelines.CLOCK.name)
    record = wait_for_jobs([job_id], timeout=60)[0]
    assert record["status"] == "completed", record
    result = describe_job(job_id)["steps"]["finish"]["result"]
    assert str(result["doubled"]) == "25.00" and result["stamped_at"].tzinfo is not None


def test_a_malformed_retry_after_is_retried_like_any_transient_error(fleet, partner):
    set_faults(partner.url, error_rate=1.0, error_status=503, retry_after="soon", scope="/webhooks/billing")
    payload, key = order("soon")
    job_id = submit(payload, key)
    wait_until(lambda: call_times(partner.url, "/webhooks/billing"), 60, "the first billing call")
    set_faults(partner.url, error_rate=0)
    record = wait_for_jobs([job_id], timeout=SETTLE)[0]
    assert record["status"] == "completed"
    assert int(record["retries_operate"]) >= 1
    assert_delivered_once(partner.url, record)


def test_a_retry_whose_publish_fails_keeps_its_message(fleet, partner):
    set_faults(partner.url, error_rate=1.0, error_status=503, scope="/webhooks/billing")
    payload, key = order("refused-retry")
    inject(key, "fail-retry-publish")
    job_id = submit(payload, key)
    wait_until(lambda: call_times(partner.url, "/webhooks/billing"), 60, "the first billing call")
    set_faults(partner.url, error_rate=0)
    record = wait_for_jobs([job_id], timeout=SETTLE)[0]
    assert record["status"] == "completed"
    assert redis_client().exists(f"vetro-test:done:fail-retry-publish:{job_id}")  # the fault did happen
    assert_delivered_once(partner.url, record)


def test_a_resubmission_after_the_dedup_lifetime_runs_to_the_end(fleet, partner):
    payload, key = order("resubmitted")
    first = wait_for_jobs([submit(payload, key)], timeout=60)[0]
    redis_client().delete(dedup_key("orders", key))  # what its lifetime ending does
    second_id = submit(payload, key)
    assert second_id != first["job_id"]
    second = wait_for_jobs([second_id], timeout=60)[0]
    assert second["status"] == "completed"
    effects = effects_by_key(partner.url)
    # The same key reached each destination twice and the partner kept one effect.
    assert all(effects[(key, destination)]["deliveries"] == 2 for destination in json.loads(second["branches"]))
    assert effects_summary(partner.url)["duplicate_effects"] == 0


def test_the_reconciler_says_what_it_would_do_and_runs_one_sweep_at_a_time(fleet, partner):
    lock = redis_client().lock("vetro:reconciler:lock", timeout=30)
    assert lock.acquire(blocking_timeout=30)  # beat's sweeps run every second and hold it briefly
    try:
        busy = vetro("reconcile")
        dry = vetro("reconcile", "--dry-run", "--json")
    finally:
        lock.release()
    assert busy.returncode == 1 and "another reconciler is sweeping" in busy.stderr
    assert dry.returncode == 0 and isinstance(json.loads(dry.stdout), list)


def test_a_worker_refuses_or_warns_about_a_redis_that_can_lose_jobs(fleet, redis_server):
    from tests.helpers import celery_worker

    warning = f"the Redis at 127.0.0.1:{redis_server.port} can lose jobs: appendonly is off"
    assert any(warning in worker.log() for worker in fleet.workers)
    refused = celery_worker(fleet_env(VETRO_REQUIRE_DURABLE_REDIS="true"))
    assert refused.returncode != 0
    assert warning in refused.stderr and "VETRO_REQUIRE_DURABLE_REDIS" in refused.stderr


@pytest.mark.long
def test_a_whole_worker_killed_mid_step_is_redelivered_within_the_visibility_timeout(fleet, partner):
    # The billing webhook holds its answer: the worker dies after the partner recorded the effect.
    set_faults(partner.url, ack_delay_ms=20_000, scope="/webhooks/billing")
    payload, key = order("killed")
    job_id = submit(payload, key)
    wait_until(lambda: (key, "billing") in effects_by_key(partner.url), 60, "the billing effect")
    holder = next(w for w in fleet.workers if f"{job_id}.operate.billing] received" in w.log())
    holder.kill(signal.SIGKILL)
    killed_at = time.time()
    set_faults(partner.url, ack_delay_ms=0)
    try:
        redelivered = wait_until(lambda: call_times(partner.url, "/webhooks/billing")[1:], 60, "the redelivery")
    finally:
        fleet.revive()
    record = wait_for_jobs([job_id], timeout=SETTLE)[0]
    assert record["status"] == "completed"
    assert effects_by_key(partner.url)[(key, "billing")]["deliveries"] == 2
    assert redelivered[0] - killed_at <= 8 + 5, f"redelivered {redelivered[0] - killed_at:.1f}s after the kill"
    print(f"\nFIGURES whole-worker SIGKILL: redelivered {redelivered[0] - killed_at:.1f}s after the kill (VT 8 s)")


@contextmanager
def reading(redis_url: str) -> Iterator[None]:
    """This process reads job records from another Redis inside the block."""
    previous = os.environ["VETRO_RESULT_STORE_URL"]
    os.environ["VETRO_RESULT_STORE_URL"] = redis_url
    reset_settings()
    try:
        yield
    finally:
        os.environ["VETRO_RESULT_STORE_URL"] = previous
        reset_settings()


@pytest.mark.long
def test_workers_survive_restarts_of_their_redis_under_load(partner, tmp_path):
    set_faults(partner.url, latency_ms=30)
    orders = tmp_path / "orders.jsonl"
    run = uuid.uuid4().hex[:8]
    orders.write_text("".join(json.dumps(sample_order(n, prefix=f"restart-{run}")) + "\n" for n in range(60)))
    with RedisServer(appendonly=True) as redis:
        env = fleet_env(VETRO_BROKER_URL=redis.url, VETRO_RESULT_STORE_URL=redis.url)
        started = [WorkerProcess(env, concurrency=2, name=f"restart{n}") for n in range(2)]
        beat = BeatProcess(env)
        try:
            for process in [*started, beat]:
                process.start()
            submitted = vetro("submit", str(orders), env=env)
            assert submitted.returncode == 0, submitted.stderr
            job_ids = submitted.stdout.split()
            with reading(redis.url):
                for done in (10, 25, 40):
                    wait_until(lambda done=done: _completed(job_ids) >= done, 120, f"{done} jobs to complete")
                    redis.restart()
                records = wait_for_jobs(job_ids, timeout=SETTLE)
            alive = [worker.alive() for worker in started]
            logs = "".join(worker.log() for worker in started)
        finally:
            for process in [*started, beat]:
                process.stop()
    assert [record["status"] for record in records] == ["completed"] * 60
    assert alive == [True, True] and "Unrecoverable error" not in logs
    assert effects_summary(partner.url)["duplicate_effects"] == 0


@pytest.mark.long
def test_a_result_store_outage_gives_messages_back_and_fails_no_job(partner, tmp_path):
    # The broker stays up; the Redis holding the ledger and guards goes away while stages run.
    set_faults(partner.url, latency_ms=400)
    orders = tmp_path / "orders.jsonl"
    run = uuid.uuid4().hex[:8]
    orders.write_text("".join(json.dumps(sample_order(n, prefix=f"store-{run}")) + "\n" for n in range(30)))
    with RedisServer() as broker, RedisServer(appendonly=True) as store_redis, reading(store_redis.url):
        env = fleet_env(VETRO_BROKER_URL=broker.url, VETRO_RESULT_STORE_URL=store_redis.url)
        started = [WorkerProcess(env, concurrency=2, name=f"store{n}") for n in range(2)]
        try:
            for worker in started:
                worker.start()
            submitted = vetro("submit", str(orders), env=env)
            assert submitted.returncode == 0, submitted.stderr
            job_ids = submitted.stdout.split()
            wait_until(lambda: _completed(job_ids) >= 5, 120, "some jobs to complete")
            store_redis.shutdown()
            wait_until(
                lambda: any("could not record its progress" in worker.log() for worker in started),
                60,
                "a stage to find the ledger unreachable",
            )
            store_redis.start()
            records = wait_for_jobs(job_ids, timeout=SETTLE)
            alive = [worker.alive() for worker in started]
        finally:
            for worker in started:
                worker.stop()
    assert [record["status"] for record in records] == ["completed"] * 30
    assert alive == [True, True]
    assert effects_summary(partner.url)["duplicate_effects"] == 0


def test_a_key_whose_job_was_never_recorded_is_recorded_when_submitted_again(fleet, partner):
    payload, key = order("half-submitted")
    orphan = str(uuid.uuid4())
    redis_client().set(dedup_key("orders", key), orphan, ex=3600)  # its producer died before the ledger write
    assert submit(payload, key) == orphan
    record = wait_for_jobs([orphan], timeout=60)[0]
    assert record["status"] == "completed"
    assert_delivered_once(partner.url, record)


def _completed(job_ids: list[str]) -> int:
    return sum(1 for record in get_jobs(job_ids) if record and record["status"] == "completed")


def test_every_key_vetro_writes_has_a_lifetime(fleet, partner):
    # After the module's jobs, retries, re-drives, dead letters and breaker calls.
    client = redis_client()
    forever = [key.decode() for key in client.scan_iter("vetro:*", count=1000) if client.ttl(key) == -1]
    assert forever == []
