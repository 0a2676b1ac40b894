"""Circuit breakers and rate limits shared by every worker, on real Redis and two worker processes."""

from __future__ import annotations

import json
import signal
import time
import uuid
from itertools import pairwise

import pytest

from pipeline import submit, submit_many
from pipeline.dependencies.breakers import force, status
from pipeline.jobs.ledger import get_job
from pipeline.jobs.pipelines import dependencies
from pipeline.store import redis_client
from tasks.orders.config import CUSTOMER_SERVICE
from tasks.orders.samples import sample_order, unknown_customer_order
from tests.helpers import call_times, effects_by_key, fast_env, set_faults, vetro, wait_for_jobs, workers
from vetro.testing.processes import RedisServer, free_port, wait_until

pytestmark = pytest.mark.integration

FAIL_MAX = 5
RESET_TIMEOUT = 3


@pytest.fixture(autouse=True)
def closed_breakers(redis_server):
    """Every test starts with closed breakers and full rate-limit buckets."""
    for dependency in dependencies():
        force(dependency, "closed")
    for stale in redis_client().scan_iter("vetro:ratelimit:*"):
        redis_client().delete(stale)
    yield


def breaker_env(**extra: str) -> dict[str, str]:
    limits = {"VETRO_BREAKER__FAIL_MAX": str(FAIL_MAX), "VETRO_BREAKER__RESET_TIMEOUT": str(RESET_TIMEOUT)}
    return fast_env(visibility=20, time_limit=8, **(limits | extra))


def test_a_down_partner_opens_one_shared_breaker_and_nothing_is_dead_lettered(partner):
    set_faults(partner.url, down=True, scope="/customers/")
    with workers(breaker_env(), count=2, concurrency=2):
        job_ids = submit_many(sample_order(n, prefix=f"down-{uuid.uuid4().hex[:8]}") for n in range(30))
        wait_until(lambda: status(CUSTOMER_SERVICE).state == "open", 60, "the customer-service breaker to open")
        opened = time.time()
        calls_to_open = len(call_times(partner.url, "/customers/"))
        wait_until(lambda: time.time() - opened > 10, 15, "ten seconds of outage")  # let trials happen
        restored = time.time()
        set_faults(partner.url, down=False)
        records = wait_for_jobs(job_ids, timeout=120)

    # Failures on both workers (four processes) counted together: one fleet-wide count reached
    # fail_max, long before each process could have counted fail_max of its own.
    assert FAIL_MAX <= calls_to_open < 2 * FAIL_MAX
    # While open, only half-open trials reached the partner: one at a time, a reset_timeout apart.
    trials = [t for t in call_times(partner.url, "/customers/") if opened + 1 < t < restored]
    assert 1 <= len(trials) <= (restored - opened) / RESET_TIMEOUT + 1
    assert all(later - earlier > RESET_TIMEOUT - 1.1 for earlier, later in pairwise(trials))
    # After the partner came back, every job finished; none was handed off.
    assert [record["status"] for record in records] == ["completed"] * len(job_ids)
    assert sum(int(record.get("waits", 0)) for record in records) > 0
    assert status(CUSTOMER_SERVICE).state == "closed"


def test_a_4xx_does_not_move_the_breaker(partner):
    with workers(breaker_env(), count=1, concurrency=2):
        job_ids = submit_many(
            unknown_customer_order(n, prefix=f"4xx-{uuid.uuid4().hex[:8]}") for n in range(FAIL_MAX + 3)
        )
        records = wait_for_jobs(job_ids, timeout=60)
    assert {(r["status"], r["failed_stage"], r["failure_class"]) for r in records} == {
        ("failed", "enrich", "permanent")
    }
    breaker = status(CUSTOMER_SERVICE)
    assert (breaker.state, breaker.failures) == ("closed", 0)


def test_jobs_still_run_when_the_breaker_store_is_unreachable(partner):
    closed = f"redis://127.0.0.1:{free_port()}/0"
    with workers(breaker_env(VETRO_BREAKER_STORE_URL=closed), count=1) as (worker,):
        job_ids = submit_many(sample_order(n, prefix=f"nostore-{uuid.uuid4().hex[:8]}") for n in range(20))
        records = wait_for_jobs(job_ids, timeout=60)
        log = worker.log()
    assert [record["status"] for record in records] == ["completed"] * 20
    assert "breaker store unreachable" in log
    assert "RecursionError" not in log


def test_a_hung_breaker_store_delays_each_call_by_a_bounded_time(partner):
    # A store that accepts connections but never answers (SIGSTOP): each call waits at most
    # STORE_TIMEOUT (0.5 s) for the store, then goes ahead without the breaker.
    with RedisServer() as store, workers(breaker_env(VETRO_BREAKER_STORE_URL=store.url), count=1) as (worker,):
        store.process.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            job_ids = submit_many(sample_order(n, prefix=f"hung-{uuid.uuid4().hex[:8]}") for n in range(4))
            records = wait_for_jobs(job_ids, timeout=60)
            elapsed = time.monotonic() - started
        finally:
            store.process.send_signal(signal.SIGCONT)
        log = worker.log()
    assert [record["status"] for record in records] == ["completed"] * 4
    # 4 jobs x (1 customer call + up to 3 deliveries) on 2 processes, each call at most ~0.5 s late.
    assert elapsed < 4 * 4 * 0.5 / 2 + 10
    assert "RecursionError" not in log


@pytest.mark.long
def test_a_shared_rate_limit_holds_across_two_workers(partner):
    limit = {"customer-service": {"rate": 20, "burst": 5}}
    with workers(breaker_env(VETRO_RATE_LIMITS=json.dumps(limit)), count=2, concurrency=2):
        job_ids = submit_many(sample_order(n, prefix=f"rate-{uuid.uuid4().hex[:8]}") for n in range(300))
        records = wait_for_jobs(job_ids, timeout=240)
    times = call_times(partner.url, "/customers/")
    # Tokens are taken just before each call and the partner clocks arrivals, which lag their tokens: by up
    # to ~0.2 s for a worker process's first call (it opens its connection), and by scheduling delays on a
    # loaded machine. Calls arriving within any WINDOW took their tokens within WINDOW + LAG, so at most
    # rate * (WINDOW + LAG) + burst of them; the first second (connections opening) is left out.
    window, lag = 2.0, 0.25
    warm = [t for t in times if t >= times[0] + 1]
    busiest = max(sum(1 for t in warm if start <= t < start + window) for start in warm)
    assert [record["status"] for record in records] == ["completed"] * 300
    assert len(times) >= 300
    assert busiest <= 20 * (window + lag) + 5
    duration = times[-1] - times[0]
    assert len(times) <= 20 * (duration + lag) + 5 + 5  # the whole run, its first second included
    print(
        f"\nFIGURES rate limit 20/s burst 5, 2 workers x 2 processes: busiest {window:.0f}-s window {busiest} calls; "
        f"{len(times)} calls over {duration:.1f}s"
    )


def test_operators_can_open_and_reset_a_breaker_from_the_cli(partner):
    with workers(breaker_env(VETRO_BREAKER__RESET_TIMEOUT="15"), count=1):
        assert vetro("breakers", "open", "webhook-billing").returncode == 0
        shown = json.loads(vetro("breakers", "--json").stdout)
        billing = next(row for row in shown if row["name"] == "webhook-billing")
        assert billing["state"] == "open" and billing["seconds_to_half_open"] > 10

        job_id = submit(sample_order(1, prefix=f"cli-{uuid.uuid4().hex[:8]}") | {"order_type": "refund"})
        wait_until(
            lambda: int(get_job(job_id).get("waits", 0)) >= 1,
            30,
            "billing to wait on the open breaker",
        )
        assert not any(dest == "billing" for (_, dest) in effects_by_key(partner.url))

        result = vetro("breakers", "reset", "webhook-billing")
        assert result.returncode == 0 and "closed" in result.stderr
        record = wait_for_jobs([job_id], timeout=30)[0]
    assert record["status"] == "completed"
    assert any(dest == "billing" for (_, dest) in effects_by_key(partner.url))


def test_the_cli_names_an_unknown_breaker(redis_server):
    result = vetro("breakers", "reset", "nope")
    assert result.returncode == 2
    assert result.stderr.startswith("error: no breaker 'nope'; known: ")
    assert "customer-service" in result.stderr and len(result.stderr.splitlines()) == 1
