"""The ledger's and the broker's Redis fails over (Sentinel): a master, a replica and three Sentinels on loopback
(vetro.testing.sentinel), workers and beat given only the `sentinel://` URL and the master's name.

A master killed under load: the workers carry on with the promoted replica; every job ends and every
effect happens once. A replica cut off first, so the failover loses writes the master had acknowledged
(steps' records, messages, finished jobs): what survived is driven on (redelivery, the reconciler),
the partner sees each effect once (calls carry the job's key), and a producer that asked for a
replica's acknowledgement (VETRO_SUBMIT_REPLICAS) was told its job was not safe, and submits it again
once the old master is back as a replica.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import redis

from pipeline import NotReplicatedError, submit
from settings import reset_settings
from tests.helpers import (
    assert_every_effect_once,
    count_settled,
    eu_purchases,
    fast_env,
    producing_to,
    set_faults,
    submit_eu_purchases,
    wait_for_all_completed,
)
from vetro.testing.processes import BeatProcess, FlowerProcess, WorkerProcess, free_port, wait_until
from vetro.testing.sentinel import MASTER_NAME, SentinelGroup

# The whole test's deadline covers its waits (a loaded machine may need a second failover attempt).
pytestmark = [pytest.mark.integration, pytest.mark.long, pytest.mark.timeout(900)]

JOBS = 40


@dataclass
class Fleet:
    group: SentinelGroup
    workers: list[WorkerProcess]
    env: dict[str, str]  # what its processes were started with

    def assert_no_worker_ended(self) -> None:
        """A failover is a lost connection to a worker: it reconnects, never exits (kombu#582 behind Sentinels)."""
        ended = [worker.name for worker in self.workers if not worker.alive()]
        assert not ended, f"{ended} exited: {self.workers[0].log()[-2000:]}"


@pytest.fixture
def fleet(partner) -> Iterator[Fleet]:
    """The group, two workers (2 processes each) and beat on it; this process submits through it too."""
    with SentinelGroup() as started:
        servers = {"VETRO_BROKER_URL": started.url, "VETRO_RESULT_STORE_URL": started.url}
        env = fast_env(visibility=16, time_limit=10, VETRO_RECONCILE_INTERVAL="2", VETRO_SENTINEL_MASTER=MASTER_NAME)
        workers = [WorkerProcess(env | servers, concurrency=2, name=f"sentinel{n}") for n in range(2)]
        processes = [*workers, BeatProcess(env | servers)]
        try:
            for process in processes:
                process.start()
            with producing_to(started.url, VETRO_SENTINEL_MASTER=MASTER_NAME):
                yield Fleet(started, workers, env | servers)
        finally:
            for process in processes:
                process.stop()


def test_the_master_killed_under_load_loses_no_job(fleet, partner):
    set_faults(partner.url, latency_ms=300, scope="/webhooks/")  # jobs are still running when the master dies
    job_ids, keys = submit_eu_purchases("failover", JOBS)
    wait_until(lambda: count_settled(job_ids) >= JOBS // 4, 180, "a quarter of the jobs to end")
    print(f"jobs ended when the master was killed: {count_settled(job_ids)} of {JOBS}")  # often fewer; not asserted
    fleet.group.kill_master()
    started = time.monotonic()
    fleet.group.wait_for_failover()
    print(f"promoted after {time.monotonic() - started:.1f}s")
    wait_for_all_completed(job_ids)
    print(f"every job completed {time.monotonic() - started:.1f}s after the kill")
    fleet.assert_no_worker_ended()
    assert_every_effect_once(partner.url, keys)
    more, more_keys = submit_eu_purchases("after-failover", 10)  # the promoted master takes new work
    wait_for_all_completed(more)
    assert_every_effect_once(partner.url, more_keys)


def test_a_failover_that_loses_acknowledged_writes_is_driven_on_from_what_survived(fleet, partner, monkeypatch):
    group = fleet.group
    monkeypatch.setenv("VETRO_SUBMIT_REPLICAS", "1")  # the jobs' records are on the replica before the cut
    reset_settings()
    job_ids, keys = submit_eu_purchases("lagging", JOBS)
    group.cut_replica()
    # From here the master alone holds what it acknowledges: steps recorded, messages taken, jobs ended.
    wait_until(lambda: count_settled(job_ids) == JOBS, 180, "every job to end on the master alone")
    [(late_order, late_key)] = eu_purchases("late", 1)
    with pytest.raises(NotReplicatedError, match="0 of 1 replica"):
        submit(late_order, late_key)
    group.kill_master()
    group.wait_for_failover()
    survived = count_settled(job_ids)
    print(f"jobs recorded as ended after the failover: {survived} of the {JOBS} the old master had ended")
    assert survived < JOBS, "the failover lost none of the master's acknowledged writes"
    wait_for_all_completed(job_ids)
    assert_every_effect_once(partner.url, keys)
    fleet.assert_no_worker_ended()
    # The producer was told: once the old master is back as a replica, it submits again under the same key.
    group.rejoin_old_master()
    late = wait_until(lambda: _submitted(late_order, late_key), 120, "the promoted master to take the job again")
    wait_for_all_completed([late])
    assert_every_effect_once(partner.url, [late_key])


def _submitted(order: dict, key: str) -> str | None:
    try:
        return submit(order, key)
    except (NotReplicatedError, redis.ConnectionError, redis.TimeoutError):
        return None


def test_flower_sees_the_fleet_and_its_queue_through_the_sentinels(fleet):
    """Flower reaches the master the Sentinels name, with the master's name from vetro's transport options."""
    flower = FlowerProcess(fleet.env, free_port()).start()
    try:
        shown = wait_until(lambda: flower.api("workers"), 90, "Flower to list the workers")
        assert {name.split("@")[0] for name in shown} >= {"sentinel0", "sentinel1"}
        fleet.group.kill_master()
        fleet.group.wait_for_failover()
        queues = wait_until(lambda: _queue_lengths(flower), 90, "Flower to read the queues on the promoted master")
        assert "vetro" in queues
    finally:
        flower.stop()


def _queue_lengths(flower: FlowerProcess) -> dict[str, int] | None:
    try:
        return {queue["name"]: queue["messages"] for queue in flower.api("queues/length")["active_queues"]}
    except httpx.HTTPError:
        return None
