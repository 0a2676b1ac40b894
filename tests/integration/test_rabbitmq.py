"""vetro on RabbitMQ, classic and quorum queues: jobs, canvases and countdowns finish, and a killed pool process
or a killed worker loses nothing and repeats no delivery.

Each queue type gets a throwaway virtual host on the machine's RabbitMQ, its own Redis for the ledger, and
two real workers; quorum queues are RabbitMQ's replicated ones, with countdowns through its native delayed
delivery (Celery 5.5+).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from celery import chain, chord

from pipeline import submit
from pipeline.jobs.ledger import COMPLETED
from pipeline.jobs.reconciler import queue_length
from tasks.orders.samples import sample_order
from tests.helpers import (
    effects_by_key,
    effects_summary,
    producing_to,
    rabbitmq_vhost,
    vetro,
    wait_for_completion,
    worker_env,
)
from tests.pipelines import add, summarize
from tests.worker_plugins import inject
from vetro.testing.processes import RedisServer, WorkerProcess

pytestmark = pytest.mark.integration

WAIT = 120
DESTINATIONS = ("warehouse", "billing", "notifications")  # where a purchase in the EU goes


@pytest.fixture(scope="module", params=["classic", "quorum"])
def rabbit_fleet(request, partner_server) -> Iterator[SimpleNamespace]:
    """Two workers on a fresh RabbitMQ virtual host, the ledger on a private Redis; this process produces there."""
    queue_type = request.param
    with rabbitmq_vhost() as broker, RedisServer() as redis:
        env = worker_env(VETRO_BROKER_URL=broker, VETRO_RESULT_STORE_URL=redis.url, VETRO_AMQP_QUEUE_TYPE=queue_type)
        workers = [
            WorkerProcess(
                env, concurrency=2, name=f"rabbit-{queue_type}-{n}", extra_args=["--include", "tests.worker_plugins"]
            )
            for n in range(2)
        ]
        try:
            for worker in workers:
                worker.start()
            with producing_to(broker, redis.url, VETRO_AMQP_QUEUE_TYPE=queue_type):
                yield SimpleNamespace(queue_type=queue_type, workers=workers, broker=broker)
        finally:
            for worker in workers:
                worker.stop()


def order(prefix: str) -> tuple[dict, str]:
    key = f"{prefix}-{uuid.uuid4().hex[:8]}"
    return sample_order(1, prefix=key) | {"order_type": "purchase", "region": "eu"}, key


def delivered_once(partner_url: str, keys: list[str]) -> None:
    effects = effects_by_key(partner_url)
    for key in keys:
        assert all((key, destination) in effects for destination in DESTINATIONS), f"a delivery of {key} is missing"
    assert effects_summary(partner_url)["duplicate_effects"] == 0


def test_jobs_canvases_and_countdowns_finish(rabbit_fleet, partner):
    orders = [order(f"rabbit-{rabbit_fleet.queue_type}") for _ in range(3)]
    records = wait_for_completion([submit(payload, key) for payload, key in orders], timeout=WAIT)
    assert [record["status"] for record in records] == [COMPLETED] * 3
    delivered_once(partner.url, [key for _, key in orders])
    canvas = chain(add.s(1, 1), add.s(1), chord([add.s(1), add.s(2)], summarize.s())).apply_async()
    assert canvas.get(timeout=WAIT) == {"parts": [4, 5]}
    began = time.monotonic()
    assert add.s(2, 2).set(countdown=3).apply_async().get(timeout=WAIT) == 4
    assert time.monotonic() - began >= 3


def test_a_killed_pool_process_and_a_killed_worker_lose_nothing(rabbit_fleet, partner):
    """The pool process that completed a fan-out's parts dies before the join; in another job the whole worker
    does. RabbitMQ gives back what they held; every job completes, every delivery made once."""
    orders = [order(f"rabbit-kill-{n}") for n in range(2)]
    inject(orders[0][1], "die-before-join")
    inject(orders[1][1], "kill-worker-before-join")
    job_ids = [submit(payload, key) for payload, key in orders]
    records = wait_for_completion(job_ids, timeout=WAIT * 2)
    assert [record["status"] for record in records] == [COMPLETED] * 2
    delivered_once(partner.url, [key for _, key in orders])
    assert queue_length("vetro") == 0


def test_a_fleet_moves_from_classic_to_quorum_queues_without_losing_what_waits(partner):
    """RabbitMQ refuses to declare a classic queue again as a quorum one: the fleet takes new queue names, and
    `vetro queues move` sends what waits in the old queue to the new one, where a quorum worker runs it."""
    quorum = {"VETRO_AMQP_QUEUE_TYPE": "quorum", "VETRO_QUEUE": "vetro-quorum"}
    with rabbitmq_vhost() as broker, RedisServer() as redis:
        servers = {"VETRO_BROKER_URL": broker, "VETRO_RESULT_STORE_URL": redis.url}
        with producing_to(broker, redis.url):  # jobs submitted while the fleet was on classic queues
            orders = [order("rabbit-migrate") for _ in range(2)]
            job_ids = [submit(payload, key) for payload, key in orders]
        moved = vetro("queues", "move", "--from", "vetro", "--idle", "1", env=servers | quorum)
        assert "moved 2 message(s) from vetro to vetro-quorum" in moved.stderr, moved.stderr
        worker = WorkerProcess(worker_env(**servers, **quorum), concurrency=2, name="rabbit-migrated").start()
        try:
            with producing_to(broker, redis.url, **quorum):
                records = wait_for_completion(job_ids, timeout=WAIT)
                assert queue_length("vetro") == 0
        finally:
            worker.stop()
    assert [record["status"] for record in records] == [COMPLETED] * 2
    delivered_once(partner.url, [key for _, key in orders])
