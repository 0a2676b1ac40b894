"""The provider sync, end to end on real workers against the stub: a provider that rate-limits
with 429s and Retry-After and goes down for a while, and a destination that counts every write.
"""

from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest

from pipeline.jobs.timeline import describe_job
from tests.helpers import call_times, fast_env, set_faults, vetro, wait_for_jobs, workers
from vetro.testing.processes import wait_until

pytestmark = pytest.mark.integration

RECORDS = 95  # with pages of 20: five pages; records 13, 33, 53, 73 and 93 have no email
REJECTED = [f"acme-{n:05d}" for n in (13, 33, 53, 73, 93)]


def sync_env(**extra: str) -> dict[str, str]:
    return fast_env(
        visibility=20,
        time_limit=15,
        PROVIDER_SYNC_PAGE_SIZE="20",
        PROVIDER_SYNC_MAX_INLINE_WAIT="2",
        VETRO_BREAKER__FAIL_MAX="3",
        VETRO_BREAKER__RESET_TIMEOUT="2",
        VETRO_RATE_LIMITS=json.dumps({"provider-acme": {"rate": 20, "burst": 5}}),
        **extra,
    )


def submit_sync(env: dict[str, str], provider: str = "acme") -> str:
    key = f"sync-{provider}-{uuid.uuid4().hex[:8]}"
    submitted = vetro("submit", "--pipeline", "provider_sync", "--json", json.dumps({"provider": provider}),
                      "--key", key, env=env)  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    return submitted.stdout.strip()


def report(job_id: str) -> dict:
    return describe_job(job_id)["steps"]["report"]["result"]


def destination(partner_url: str) -> dict:
    return httpx.get(f"{partner_url}/destination", timeout=10).json()


def test_a_sync_through_429s_and_a_down_provider_upserts_every_record_once(partner):
    httpx.post(f"{partner.url}/providers/acme", json={"count": RECORDS}).raise_for_status()
    env = sync_env()
    with workers(env, count=2) as running:
        # The provider answers 40% of reads with 429 and Retry-After: 1; after two reads it drops every connection.
        set_faults(partner.url, scope="/providers/", error_rate=0.4, error_status=429, retry_after=1, down_after=2)
        job_id = submit_sync(env)
        opened = "breaker provider-acme: closed -> open"
        wait_until(lambda: any(opened in worker.log() for worker in running), 60, "the provider's breaker to open")
        time.sleep(3)  # the outage lasts a while longer: its length, not a wait for a result
        set_faults(partner.url, down=False, error_rate=0.4)
        record = wait_for_jobs([job_id], timeout=180)[0]
    assert record["status"] == "completed", record
    counts = report(job_id)
    assert (counts["provider"], counts["pages"], counts["fetched"]) == ("acme", 5, RECORDS)
    assert (counts["created"], counts["updated"], counts["unchanged"]) == (RECORDS - 5, 0, 0)
    assert [rejected["record"] for rejected in counts["rejected"]] == REJECTED
    assert all(rejected["reason"].startswith("email") for rejected in counts["rejected"])
    written = destination(partner.url)
    assert written["by_provider"] == {"acme": RECORDS - 5} and written["keys"] == RECORDS - 5  # no record twice
    assert len(call_times(partner.url, "/providers/acme")) > 5  # the 429s and the outage were met, not avoided


def test_a_second_sync_reports_what_changed_at_the_provider(partner):
    httpx.post(f"{partner.url}/providers/globex", json={"count": 30}).raise_for_status()
    env = sync_env()
    with workers(env):
        first = submit_sync(env, "globex")
        wait_for_jobs([first], timeout=90)
        httpx.post(f"{partner.url}/providers/globex", json={"count": 30, "version": 2}).raise_for_status()
        second = submit_sync(env, "globex")
        wait_for_jobs([second], timeout=90)
        third = submit_sync(env, "globex")
        wait_for_jobs([third], timeout=90)
    created, updated, unchanged = (report(job) for job in (first, second, third))
    assert (created["pages"], created["created"], len(created["rejected"])) == (2, 29, 1)  # record 13 has no email
    assert (updated["created"], updated["updated"], updated["unchanged"]) == (0, 29, 0)
    assert (unchanged["created"], unchanged["updated"], unchanged["unchanged"]) == (0, 0, 29)


def test_a_sync_of_an_unknown_provider_fails_at_validate_naming_the_known_ones(partner):
    env = sync_env()
    with workers(env):
        job_id = submit_sync(env, "initech")
        record = wait_for_jobs([job_id], timeout=60)[0]
    assert (record["status"], record["failed_stage"], record["failure_class"]) == ("failed", "validate", "permanent")
    assert "unknown provider 'initech'; known: acme, globex" in record["error"]
