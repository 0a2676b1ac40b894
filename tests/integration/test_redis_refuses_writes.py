"""A Redis that refuses writes for a while (`min-replicas-to-write` with no replica: NOREPLICAS) ends no
worker: one started then, and one already running, keep trying, and take the jobs once Redis takes writes.

Celery ends a worker on a broker's channel error (a refused command) unless `broker_channel_error_retry`
is on; vetro turns it on. The producer is told, in the error it gets, and submits again.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from kombu.exceptions import OperationalError

from pipeline import submit
from tests.helpers import assert_every_effect_once, eu_purchases, fast_env, producing_to, wait_for_completion
from vetro.testing.processes import RedisServer, WorkerProcess, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def refusing() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def refuse_writes(server: RedisServer, refused: bool) -> None:
    redis.Redis(port=server.port).config_set("min-replicas-to-write", 1 if refused else 0)


def test_no_worker_ends_while_redis_refuses_writes_and_jobs_run_once_it_takes_them(refusing, partner):
    env = fast_env(visibility=16, time_limit=10) | {
        "VETRO_BROKER_URL": refusing.url,
        "VETRO_RESULT_STORE_URL": refusing.url,
    }
    running = WorkerProcess(env, concurrency=1, name="running").start()
    starting = WorkerProcess(env, concurrency=1, name="starting")
    try:
        refuse_writes(refusing, True)
        starting.start(wait=False)
        wait_until(lambda: "NOREPLICAS" in starting.log(), 60, "the starting worker to meet the refusal")
        wait_until(lambda: "NOREPLICAS" in running.log(), 60, "the running worker to meet the refusal")
        with producing_to(refusing.url):
            orders = eu_purchases("refused", 4)
            with pytest.raises((redis.ResponseError, OperationalError), match="NOREPLICAS"):
                submit(*orders[0])
            assert running.alive() and starting.alive(), "a worker ended on a refused write"
            refuse_writes(refusing, False)
            starting.wait_ready()
            records = wait_for_completion([submit(order, key) for order, key in orders], timeout=180)
        assert [record["status"] for record in records] == ["completed"] * 4
        assert_every_effect_once(partner.url, [key for _, key in orders])
        assert running.alive() and starting.alive()
    finally:
        starting.stop()
        running.stop()
