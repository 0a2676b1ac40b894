"""The whole order pipeline on a real Redis with a real prefork worker."""

from __future__ import annotations

import json
import uuid

import pytest

from pipeline import NotReplicatedError, submit, submit_many
from pipeline.jobs.ledger import get_job
from settings import reset_settings
from tasks.orders.samples import invalid_order, sample_order, unknown_customer_order
from tests.helpers import effects_by_key, on_cluster, wait_for_jobs

pytestmark = pytest.mark.integration


def test_a_hundred_jobs_finish_with_one_effect_per_destination(worker, partner):
    run = uuid.uuid4().hex[:8]
    job_ids = submit_many(sample_order(n, prefix=f"hundred-{run}") for n in range(100))
    records = wait_for_jobs(job_ids)

    assert [record["status"] for record in records] == ["completed"] * 100
    keys = {record["idempotency_key"] for record in records}
    effects = {pair: row for pair, row in effects_by_key(partner.url).items() if pair[0] in keys}
    expected = {(record["idempotency_key"], dest) for record in records for dest in json.loads(record["branches"])}
    assert set(effects) == expected
    assert all(row["deliveries"] == 1 for row in effects.values())
    # The correlation id that reached the partner from `operate` is the one `submit` created.
    by_key = {record["idempotency_key"]: record["correlation_id"] for record in records}
    assert all(row["correlation_id"] == by_key[key] for (key, _), row in effects.items())


def test_a_callers_correlation_id_reaches_every_destination(worker, partner):
    correlation_id = f"req-{uuid.uuid4()}"
    job_id = submit(sample_order(1, prefix=f"corr-{uuid.uuid4().hex[:8]}"), correlation_id=correlation_id)
    record = wait_for_jobs([job_id])[0]
    deliveries = [row for (key, _), row in effects_by_key(partner.url).items() if key == record["idempotency_key"]]
    assert deliveries and all(row["correlation_id"] == correlation_id for row in deliveries)


def test_an_invalid_order_fails_permanently_at_validate_naming_the_field(worker, partner):
    job_id = submit(invalid_order(1, prefix=f"bad-{uuid.uuid4().hex[:8]}"))
    record = wait_for_jobs([job_id])[0]
    assert record["status"] == "failed"
    assert record["failed_stage"] == "validate"
    assert record["failure_class"] == "permanent"
    assert "lines.0.quantity" in record["error"]
    assert "retries" not in record
    assert effects_by_key(partner.url) == {}


def test_an_unknown_customer_is_a_permanent_failure_at_enrich(worker, partner):
    job_id = submit(unknown_customer_order(1, prefix=f"who-{uuid.uuid4().hex[:8]}"))
    record = wait_for_jobs([job_id])[0]
    assert (record["status"], record["failed_stage"], record["failure_class"]) == ("failed", "enrich", "permanent")
    assert "404" in record["error"]


def test_submitting_the_same_key_twice_returns_the_same_job(worker, partner):
    order = sample_order(1, prefix=f"dup-{uuid.uuid4().hex[:8]}")
    first = submit(order, idempotency_key=order["order_id"])
    second = submit(order, idempotency_key=order["order_id"])
    assert first == second
    wait_for_jobs([first])
    assert get_job(first)["status"] == "completed"
    assert all(row["deliveries"] == 1 for row in effects_by_key(partner.url).values())


def test_jobs_go_on_after_redis_forgets_the_guards_scripts(worker, partner, redis_server):
    """A restarted Redis has no scripts loaded: the guard and the producer load them again (they send EVALSHA only)."""
    import redis

    before = [submit(sample_order(0, prefix=f"loaded-{uuid.uuid4().hex[:6]}"))]
    before += submit_many(sample_order(n, prefix=f"loaded-{uuid.uuid4().hex[:6]}") for n in range(4))
    wait_for_jobs(before)  # both pool processes and this producer have loaded the scripts
    redis.Redis.from_url(redis_server.url).script_flush()
    job_ids = [submit(sample_order(0, prefix=f"flushed-{uuid.uuid4().hex[:6]}"))]
    job_ids += submit_many(sample_order(n, prefix=f"flushed-{uuid.uuid4().hex[:6]}") for n in range(4))
    assert {record["status"] for record in wait_for_jobs(job_ids)} == {"completed"}


@on_cluster  # VETRO_SUBMIT_REPLICAS is refused there: a job's writes span masters, and WAIT covers one
def test_a_producer_asking_for_a_replica_is_told_when_none_confirms_and_submits_again_safely(
    worker, partner, monkeypatch
):
    """VETRO_SUBMIT_REPLICAS on a Redis without replicas: submit raises once the job is recorded on the master
    (it runs); submitting again under the same key is the same job, whatever the way in."""
    run = uuid.uuid4().hex[:8]
    monkeypatch.setenv("VETRO_SUBMIT_REPLICAS", "1")
    monkeypatch.setenv("VETRO_SUBMIT_REPLICA_TIMEOUT", "0.1")
    reset_settings()
    try:
        with pytest.raises(NotReplicatedError, match=r"^0 of 1 replica\(s\) acknowledged the new job\(s\) within 0.1s"):
            submit(sample_order(1, prefix=f"wait-{run}"), f"wait-{run}")
        with pytest.raises(NotReplicatedError, match="submit again under the same idempotency key"):
            submit_many(sample_order(n, prefix=f"wait-many-{run}") for n in range(3))
    finally:
        monkeypatch.delenv("VETRO_SUBMIT_REPLICAS")
        reset_settings()
    job_id = submit(sample_order(1, prefix=f"wait-{run}"), f"wait-{run}")
    again = submit_many(sample_order(n, prefix=f"wait-many-{run}") for n in range(3))
    records = wait_for_jobs([job_id, *again])
    assert [record["status"] for record in records] == ["completed"] * 4
    keys = {record["idempotency_key"] for record in records}
    assert all(row["deliveries"] == 1 for (key, _), row in effects_by_key(partner.url).items() if key in keys)
