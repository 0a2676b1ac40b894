"""A Celery canvas of stages under faults: a chord's join survives the death of any process, and a Redis
restart in the middle of chains loses nothing."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from celery import chain, chord

from pipeline.store import redis_client
from tests.helpers import producing_to, settings_set
from tests.integration.test_no_job_lost import SETTLE, fleet_env
from tests.pipelines import add, summarize, tally
from tests.worker_plugins import inject
from vetro.testing.processes import BeatProcess, RedisServer, WorkerProcess, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.long]


@pytest.fixture(scope="module")
def fleet(redis_server) -> Iterator[list[WorkerProcess]]:
    env = fleet_env()
    workers = [
        WorkerProcess(
            env,
            concurrency=2,
            name=f"canvas{n}-{uuid.uuid4().hex[:4]}",
            extra_args=["--include", "tests.worker_plugins"],
        )
        for n in range(2)
    ]
    beat = BeatProcess(env)
    with settings_set(env):  # a job's first deadline is set by its producer: this process, with the same bound
        for process in [*workers, beat]:
            process.start()
        yield workers
        for process in [*workers, beat]:
            process.stop()


def revive(workers: list[WorkerProcess]) -> None:
    for worker in workers:
        if not worker.alive():
            worker.stop()
            worker.start()


@pytest.mark.parametrize("fault", ["die-before-join", "kill-worker-before-join"])
def test_a_chords_join_survives_the_death_of_the_process_that_completed_its_parts(fleet, fault):
    key = f"{fault}-{uuid.uuid4().hex[:8]}"
    inject(key, fault)
    result = chain(add.s(1, 1), chord([add.s(1), add.s(2), add.s(3)], tally.s())).apply_async(idempotency_key=key)
    if fault == "kill-worker-before-join":
        wait_until(lambda: not all(worker.alive() for worker in fleet), 60, "a worker to die before the join")
        revive(fleet)
    assert result.get(timeout=SETTLE) == {"parts": [3, 4, 5], "run": 1}
    assert int(redis_client().get(f"vetro-test:tally:{key}")) == 1  # the join ran once


def test_chains_and_chords_finish_across_a_restart_of_their_redis(partner_server):
    with RedisServer(appendonly=True) as redis:
        env = fleet_env(VETRO_BROKER_URL=redis.url, VETRO_RESULT_STORE_URL=redis.url)
        processes = [WorkerProcess(env, concurrency=2, name=f"canvas-restart{n}") for n in range(2)]
        processes.append(BeatProcess(env))
        try:
            for process in processes:
                process.start()
            with producing_to(redis.url):
                results = [
                    chain(
                        add.s(n, 1), add.s(1), chord([add.s(1), add.s(2)], summarize.s()), summarize.s()
                    ).apply_async()
                    for n in range(16)
                ]
                wait_until(lambda: sum(r.ready() for r in results) >= 5, 120, "the first canvases to finish")
                redis.restart()
                values = [result.get(timeout=SETTLE) for result in results]
            alive = [process.alive() for process in processes]
        finally:
            for process in processes:
                process.stop()
    assert values == [{"parts": {"parts": [n + 3, n + 4]}} for n in range(16)]
    assert all(alive)


def test_a_countdown_longer_than_a_worker_may_hold_a_message_hops_and_runs_once(fleet):
    """Visibility timeout 8 s, time limit 5 s: a worker may hold a message 1 s, so a 6 s countdown hops."""
    began = time.monotonic()
    result = chain(add.s(1, 1), add.s(1).set(countdown=6)).apply_async()
    assert result.get(timeout=SETTLE) == 3
    assert time.monotonic() - began >= 6
    job_id = redis_client().get(f"vetro:task:{result.id}").decode().split()[1]
    record = {name.decode(): value for name, value in redis_client().hgetall(f"vetro:shop:job:{{{job_id}}}").items()}
    assert record["starts:add-2"] == b"1" and "hits:add-2" not in record  # it ran once; no copy came again
