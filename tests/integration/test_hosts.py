"""Workers on many "hosts": each host a worker of its own name, reaching Redis through a fault proxy of its own
on 127.0.0.1 (vetro.testing.proxy). A whole host killed at once, or cut off from Redis for 30 s and healed,
loses no job and repeats no effect; beat and this process reach Redis directly, as the rest of a fleet would.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from pipeline import submit
from pipeline.jobs.ledger import COMPLETED
from pipeline.telemetry import heartbeat
from tests.helpers import (
    assert_every_effect_once,
    count_ended,
    eu_purchases,
    fast_env,
    producing_to,
    wait_for_completion,
)
from vetro.testing.processes import BeatProcess, RedisServer, WorkerProcess, wait_until
from vetro.testing.proxy import FaultProxy

pytestmark = [pytest.mark.integration, pytest.mark.long]

JOBS = 45


@dataclass
class Host:
    name: str
    proxy: FaultProxy
    worker: WorkerProcess


@pytest.fixture
def fleet(partner) -> Iterator[tuple[dict[str, Host], RedisServer]]:
    """Three hosts of one worker (2 processes) each, and beat; this process submits to the same Redis."""
    with RedisServer(appendonly=True) as redis:
        base = fast_env(visibility=16, time_limit=10, VETRO_RECONCILE_INTERVAL="2")
        hosts: dict[str, Host] = {}
        beat = BeatProcess(base | {"VETRO_BROKER_URL": redis.url, "VETRO_RESULT_STORE_URL": redis.url})
        try:
            for name in ("host-a", "host-b", "host-c"):
                proxy = FaultProxy(redis.port).start()
                env = base | {"VETRO_BROKER_URL": proxy.url(), "VETRO_RESULT_STORE_URL": proxy.url()}
                hosts[name] = Host(name, proxy, WorkerProcess(env, concurrency=2, name=name).start())
            beat.start()
            servers = ("VETRO_BROKER_URL", "VETRO_RESULT_STORE_URL")
            with producing_to(redis.url, **{name: value for name, value in base.items() if name not in servers}):
                yield hosts, redis
        finally:
            beat.stop()
            for host in hosts.values():
                host.worker.stop()
                host.proxy.stop()


def submit_orders(prefix: str) -> tuple[list[str], list[str]]:
    orders = eu_purchases(prefix, JOBS)
    return [submit(order, key) for order, key in orders], [key for _, key in orders]


def test_a_whole_host_killed_at_once_loses_nothing(fleet, partner):
    hosts, _ = fleet
    job_ids, keys = submit_orders("host-kill")
    wait_until(lambda: count_ended(job_ids) >= JOBS // 4, 180, "a quarter of the jobs to end")
    victim = hosts["host-b"].worker
    victim.kill(signal.SIGKILL)  # the worker and its pool at once: the host's power cut
    records = wait_for_completion(job_ids, timeout=300)
    assert [record["status"] for record in records] == [COMPLETED] * JOBS
    assert_every_effect_once(partner.url, keys)


def test_a_host_cut_off_from_redis_for_30_s_resumes_and_nothing_runs_twice_to_effect(fleet, partner):
    hosts, _ = fleet
    job_ids, keys = submit_orders("host-cut")
    wait_until(lambda: count_ended(job_ids) >= JOBS // 4, 180, "a quarter of the jobs to end")
    cut = hosts["host-b"]
    cut.proxy.partition()
    time.sleep(30)  # the fault itself lasts 30 s: not a wait for a condition
    cut.proxy.heal()
    records = wait_for_completion(job_ids, timeout=300)
    assert [record["status"] for record in records] == [COMPLETED] * JOBS
    assert_every_effect_once(partner.url, keys)
    assert cut.worker.alive(), "the cut-off host's worker exited"
    wait_until(
        lambda: any(
            worker.name.startswith(f"{cut.name}@") and worker.up(time.time()) for worker in heartbeat.workers()
        ),
        120,
        "the healed host's worker to beat again",
    )
    more, more_keys = submit_orders("host-healed")
    wait_for_completion(more, timeout=300)
    assert_every_effect_once(partner.url, more_keys)
