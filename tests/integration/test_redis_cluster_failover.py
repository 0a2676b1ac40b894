"""The ledger's Redis Cluster loses a master: three masters with a replica each on loopback (vetro.testing.cluster),
the broker a Redis of its own, two workers and beat given only the `redis+cluster://` URL.

A master killed under load: the cluster promotes its replica (after its node timeout, 2 s here), the workers and
this producer follow the slots to it, every job ends and every effect happens once. What the master had
acknowledged and not yet sent to its replica is lost with it (a step's record, a job's end): redelivery and the
reconciler drive on from what survived, and the partner's idempotency answers what runs again, as after a
Sentinel failover (tests/integration/test_sentinel.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from redis.crc import key_slot

from pipeline.jobs.ledger import due_key
from tests.helpers import (
    assert_every_effect_once,
    count_settled,
    fast_env,
    producing_to,
    set_faults,
    submit_eu_purchases,
    wait_for_all_completed,
)
from vetro.testing.cluster import RedisClusterGroup
from vetro.testing.processes import BeatProcess, RedisServer, WorkerProcess, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.long, pytest.mark.timeout(900)]

JOBS = 40
LAGGING_OPTIONS = ("--cluster-replica-validity-factor", "0")


@contextmanager
def running_on(cluster: RedisClusterGroup) -> Iterator[tuple[RedisClusterGroup, list[WorkerProcess]]]:
    """Two workers (2 processes each) and beat with their result store on `cluster`; this process submits to it."""
    with RedisServer() as broker, cluster:
        servers = {"VETRO_BROKER_URL": broker.url, "VETRO_RESULT_STORE_URL": cluster.url}
        env = fast_env(visibility=16, time_limit=10, VETRO_RECONCILE_INTERVAL="2") | servers
        workers = [WorkerProcess(env, concurrency=2, name=f"cluster{n}") for n in range(2)]
        processes = [*workers, BeatProcess(env)]
        try:
            for process in processes:
                process.start()
            with producing_to(broker.url, cluster.url):
                yield cluster, workers
        finally:
            for process in processes:
                process.stop()


@pytest.fixture
def fleet(partner) -> Iterator[tuple[RedisClusterGroup, list[WorkerProcess]]]:
    with running_on(RedisClusterGroup(replicas=1, node_timeout_ms=2000)) as started:
        yield started


@pytest.fixture
def lagging(partner) -> Iterator[tuple[RedisClusterGroup, list[WorkerProcess]]]:
    """A replica paused for longer than its data may be old is still promoted (validity factor 0), as one
    lagging a few seconds would be."""
    with running_on(RedisClusterGroup(replicas=1, node_timeout_ms=2000, options=LAGGING_OPTIONS)) as started:
        yield started


def test_a_master_killed_under_load_is_replaced_by_its_replica_and_no_job_is_lost(fleet, partner):
    cluster, workers = fleet
    set_faults(partner.url, latency_ms=300, scope="/webhooks/")  # jobs are still running when the master dies
    job_ids, keys = submit_eu_purchases("cluster-failover", JOBS)
    wait_until(lambda: count_settled(job_ids) >= JOBS // 4, 180, "a quarter of the jobs to end")
    print(f"jobs ended when the master was killed: {count_settled(job_ids)} of {JOBS}")  # not asserted
    cluster.kill_master(0)
    started = time.monotonic()
    cluster.wait_for_failover(0)
    print(f"replica promoted after {time.monotonic() - started:.1f}s")
    wait_for_all_completed(job_ids)
    print(f"every job completed {time.monotonic() - started:.1f}s after the kill")
    ended = [worker.name for worker in workers if not worker.alive()]
    assert not ended, f"{ended} exited: {workers[0].log()[-2000:]}"
    assert_every_effect_once(partner.url, keys)
    more, more_keys = submit_eu_purchases("after-cluster-failover", 10)  # the promoted master takes new work
    wait_for_all_completed(more)
    assert_every_effect_once(partner.url, more_keys)


def test_a_failover_that_loses_a_masters_acknowledged_writes_is_driven_on_from_what_survived(lagging, partner):
    """Master 0 holds jobs' records, another master the pipeline's due set: with master 0's replica paused, the jobs
    end on master 0 alone, and their due entries must outlive the failover that takes their ends back."""
    cluster, workers = lagging
    assert key_slot(due_key("orders").encode()) not in cluster.slots(0)  # the record and the due set on two masters
    set_faults(partner.url, latency_ms=300, scope="/webhooks/")
    job_ids, keys = submit_eu_purchases("cluster-lagging", JOBS)
    cluster.wait_caught_up(0)  # the jobs' records are on the replica
    cluster.pause_replicas(0)
    wait_until(lambda: count_settled(job_ids) == JOBS, 180, "every job to end with master 0's replica behind")
    cluster.kill_master(0)
    cluster.resume_replicas(0)  # promoted with what it had when it was paused
    cluster.wait_for_failover(0)
    survived = count_settled(job_ids)
    print(f"jobs recorded as ended after the failover: {survived} of the {JOBS} that had ended")
    assert survived < JOBS, "the failover lost none of master 0's acknowledged writes"
    wait_for_all_completed(job_ids)
    assert_every_effect_once(partner.url, keys)
    ended = [worker.name for worker in workers if not worker.alive()]
    assert not ended, f"{ended} exited: {workers[0].log()[-2000:]}"
