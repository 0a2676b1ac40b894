"""The idempotency guard on real workers: duplicates, retries and the fan-out."""

from __future__ import annotations

import json
import uuid

import pytest

from pipeline import submit
from pipeline.context import JobContext
from pipeline.jobs.ledger import get_job
from pipeline.jobs.timeline import describe_job
from pipeline.plan import task_id
from tasks.orders import operate
from tasks.orders.samples import sample_order
from tests.helpers import effects_by_key, effects_summary, set_faults, wait_for_jobs
from vetro.testing.processes import wait_until

pytestmark = pytest.mark.integration


def test_the_same_stage_message_published_twice_has_one_effect(worker, partner):
    order = sample_order(1, prefix=f"twice-{uuid.uuid4().hex[:8]}")
    job_id = submit(order)
    record = wait_for_jobs([job_id])[0]
    canonical = describe_job(job_id)["steps"]["transform"]["result"]

    job = JobContext(job_id, record["idempotency_key"], record["correlation_id"], "orders")
    for _ in range(2):
        operate.si(canonical, "billing").apply_async(task_id=task_id(job_id, "operate.billing"), headers=job.headers())
    wait_until(lambda: int(get_job(job_id).get("hits:operate.billing", 0)) >= 2, 30, "two guard hits")

    effect = effects_by_key(partner.url)[(record["idempotency_key"], "billing")]
    assert effect["deliveries"] == 1
    steps = describe_job(job_id)["steps"]
    assert steps["operate.billing"]["status"] == "done"
    assert steps["operate.billing"]["result"]["receipt"]["duplicate"] is False


def test_transient_errors_are_retried_until_every_job_finishes_with_its_headers(worker, partner):
    set_faults(partner.url, error_rate=0.3, error_status=503)
    run = uuid.uuid4().hex[:8]
    correlation = {}
    job_ids = []
    for number in range(40):
        correlation_id = f"corr-{run}-{number}"
        job_id = submit(sample_order(number, prefix=f"flaky-{run}"), correlation_id=correlation_id)
        correlation[job_id] = correlation_id
        job_ids.append(job_id)
    records = wait_for_jobs(job_ids, timeout=180)
    set_faults(partner.url, error_rate=0)

    assert [record["status"] for record in records] == ["completed"] * len(job_ids)
    retried = [record for record in records if int(record.get("retries", 0))]
    assert any(int(record.get("retries_operate", 0)) for record in retried), "operate should have retried"
    summary = effects_summary(partner.url)
    assert summary["duplicate_effects"] == 0
    assert summary["repeated_deliveries"] == 0
    # Retries kept the job's headers: the key and correlation id reached the partner intact.
    effects = effects_by_key(partner.url)
    for record in records:
        for destination in json.loads(record["branches"]):
            effect = effects[(record["idempotency_key"], destination)]
            assert effect["correlation_id"] == correlation[record["job_id"]]


def test_a_permanent_4xx_is_handed_off_at_once_without_retrying(worker, partner):
    set_faults(partner.url, error_rate=1.0, error_status=422, scope="/webhooks/billing")
    job_id = submit(sample_order(1, prefix=f"reject-{uuid.uuid4().hex[:8]}") | {"order_type": "refund"})
    record = wait_for_jobs([job_id])[0]
    assert (record["status"], record["failed_stage"], record["failure_class"]) == (
        "failed",
        "operate.billing",
        "permanent",
    )
    assert "422" in record["error"]
    assert "retries_operate" not in record
