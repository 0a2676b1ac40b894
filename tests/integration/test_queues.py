"""A stage on a queue of its own (VETRO_QUEUES), with workers of its own: a stalled partner behind it holds only
those, and what waits in the old queue after a routing change is moved by `vetro queues move`.

Each test runs its own Redis and workers: the routing is a fleet's setting, read by every worker.
"""

from __future__ import annotations

import json
import uuid

import pytest

from pipeline import submit
from pipeline.context import JOB_ID
from pipeline.jobs.ledger import COMPLETED
from pipeline.store import redis_client
from tasks.orders import operate, validate
from tasks.orders.samples import sample_order
from tests.helpers import effects_by_key, producing_to, set_faults, vetro, wait_for_completion, worker_env
from vetro.testing.jobs import job_timeline
from vetro.testing.processes import RedisServer, WorkerProcess, wait_until

pytestmark = pytest.mark.integration

OPERATE_QUEUE = "orders-operate"
JOBS = 6
DESTINATIONS = 3  # a purchase in the EU goes to the warehouse, billing and notifications
SLOW_MS = 8000  # each delivery takes this long: a slow partner, not a failing one


def fleet(url: str) -> dict[str, str]:
    return worker_env(
        VETRO_BROKER_URL=url,
        VETRO_RESULT_STORE_URL=url,
        VETRO_QUEUES__ORDERS__OPERATE=OPERATE_QUEUE,
        VETRO_HTTP_READ_TIMEOUT=str(SLOW_MS / 1000 + 5),
    )


def routed(job_id: str) -> bool:
    return job_timeline(job_id)["steps"].get("route", {}).get("status") == "done"


@pytest.mark.long
def test_a_slow_partner_behind_operate_on_its_own_queue_holds_up_only_operates_workers(partner):
    """With one queue, the slow deliveries would hold the processes the next jobs' first stages wait for; here
    every job passes its first four stages while most deliveries are still to be made."""
    set_faults(partner.url, latency_ms=SLOW_MS, scope="/webhooks")
    with RedisServer() as redis:
        env = fleet(redis.url)
        stages = WorkerProcess(env, concurrency=1, name="first-stages", extra_args=["-Q", "vetro,vetro.control"])
        operating = WorkerProcess(env, concurrency=2, name="operate", extra_args=["-Q", OPERATE_QUEUE])
        try:
            stages.start()
            operating.start()
            keys = [f"q-{uuid.uuid4().hex[:8]}" for _ in range(JOBS)]
            with producing_to(redis.url):
                orders = [
                    sample_order(n, prefix=key) | {"order_type": "purchase", "region": "eu"}
                    for n, key in enumerate(keys)
                ]
                job_ids = [submit(order, key) for order, key in zip(orders, keys, strict=True)]
                wait_until(lambda: all(routed(job_id) for job_id in job_ids), 240, "every job to pass route")
                delivered = sum(key in keys for key, _ in effects_by_key(partner.url))
                assert delivered <= JOBS * DESTINATIONS // 2, f"{delivered} deliveries made before the last job routed"
                records = wait_for_completion(job_ids, timeout=300)
            assert [record["status"] for record in records] == [COMPLETED] * JOBS
            assert sum(key in keys for key, _ in effects_by_key(partner.url)) == JOBS * DESTINATIONS
        finally:
            set_faults(partner.url, latency_ms=0)
            operating.stop()
            stages.stop()


def test_queues_move_takes_what_waits_in_the_old_queue_to_the_stages_new_queue():
    """Messages sent before operate had its own queue wait in the default one; `move` sends them on, untouched,
    and leaves the messages of stages still routed there."""
    with RedisServer() as redis, producing_to(redis.url):
        client = redis_client()
        waiting_operate = [_send(operate, [{"id": n}, "billing"]) for n in range(3)]
        waiting_validate = [_send(validate, [{"id": n}]) for n in range(2)]
        env = {"VETRO_BROKER_URL": redis.url, "VETRO_RESULT_STORE_URL": redis.url}
        env["VETRO_QUEUES__ORDERS__OPERATE"] = OPERATE_QUEUE
        moved = vetro("queues", "move", "--from", "vetro", "--idle", "1", env=env)
        assert moved.returncode == 0, moved.stderr
        assert f"moved 3 message(s) from vetro to {OPERATE_QUEUE}" in moved.stderr
        assert _ids(client, OPERATE_QUEUE) == sorted(waiting_operate)
        assert _ids(client, "vetro") == sorted(waiting_validate)
        listed = json.loads(vetro("queues", "list", "--json", env=env).stdout)
        assert {"queue": OPERATE_QUEUE, "waiting": 3, "stages": ["orders.operate"]} in listed
        again = vetro("queues", "move", "--from", "vetro", "--idle", "1", env=env)
        assert "nothing in vetro is routed elsewhere" in again.stderr
        assert _ids(client, "vetro") == sorted(waiting_validate)


def _send(task, args: list) -> str:
    """A stage's message for a job that does not exist (nothing consumes it here), sent as vetro sends one."""
    task_id = str(uuid.uuid4())
    task.apply_async(args=args, task_id=task_id, headers={JOB_ID: f"queued-{task_id}"})
    return task_id


def _ids(client, queue: str) -> list[str]:
    return sorted(json.loads(raw)["headers"]["id"] for raw in client.lrange(queue, 0, -1))
