"""A Celery user's canvas of stages runs as a vetro job, and AsyncResult reads its steps' results.

Each shape the canvas API offers, published with Celery's own API on a real worker, asserting what
`.get()` returns: a task, partial and immutable signatures, a chain, a group, a chord, a group chained
to a task, nesting, links, per-signature options, a declared pipeline inside a canvas, a failure that
reaches the dead-letter store and fails its AsyncResult, and a replay that finishes the canvas.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
import redis
from celery import chain, chord, group
from celery.result import AsyncResult

from pipeline import InvalidJobError, PermanentError, submit
from pipeline.adapter.app import app
from pipeline.jobs.ledger import get_job
from pipeline.jobs.reconciler import queue_length
from pipeline.jobs.timeline import describe_job
from pipeline.store import redis_client
from tests.conftest import worker_env
from tests.helpers import job_records, quiet_redis, vetro
from tests.pipelines import (
    CLOCK,
    SHOP_FLAG,
    add,
    alert,
    bill,
    email,
    mend,
    parse,
    price,
    refuse,
    ship,
    summarize,
)
from vetro.testing.processes import WorkerProcess, wait_until

pytestmark = pytest.mark.integration

WAIT = 60  # seconds a .get() may wait for a worker on a loaded machine


def order(n: int = 1) -> dict:
    return {"id": f"o-{n}", "items": [{"price": 30}, {"price": 12}]}


def test_a_delay_returns_an_async_result_that_gets_the_steps_result(worker):
    result = add.delay(2, 3)
    assert result.get(timeout=WAIT) == 5
    assert result.state == "SUCCESS" and result.successful() and result.ready()
    assert AsyncResult(result.id, app=app).get(timeout=WAIT) == 5


def test_a_chain_passes_results_along_and_si_ignores_them(worker):
    result = chain(add.s(1, 2), add.s(10), add.si(100, 1), add.s(y=5)).apply_async()
    assert result.get(timeout=WAIT) == 106
    assert result.parent.get(timeout=WAIT) == 101 and result.parent.parent.get(timeout=WAIT) == 13


def test_the_issues_chain_with_a_chord_returns_the_summary(worker):
    canvas = chain(parse.s(order(7)), price.s(2), chord([ship.s(), bill.s(), email.s()], summarize.s()))
    assert canvas.apply_async().get(timeout=WAIT) == {"parts": ["shipped o-7", 40, "mailed o-7"]}


def test_job_show_draws_the_canvas_from_any_of_its_task_ids(worker):
    result = chain(parse.s(order(8)), price.s(), chord([ship.s(), bill.s()], summarize.s())).apply_async()
    result.get(timeout=WAIT)
    shown = vetro("job", "show", result.id)
    assert shown.returncode == 0, shown.stderr
    for text in ("chain", "chord", "parse", "ship", "bill", "summarize", "completed"):
        assert text in shown.stdout
    as_json = json.loads(vetro("job", "show", result.parent.id, "--json").stdout)
    assert as_json["status"] == "completed" and "chain" in as_json["plan"]
    assert as_json["steps"]["summarize"]["result"] == {"parts": ["shipped o-8", 42]}


def test_a_group_returns_its_parts_results_in_order(worker):
    result = group(add.s(1, 1), add.s(2, 2), add.s(3, 3)).apply_async()
    assert result.get(timeout=WAIT) == [2, 4, 6]


def test_a_chord_and_a_group_chained_to_a_task_join_once(worker):
    assert chord([add.s(1, 1), add.s(2, 2)], summarize.s()).apply_async().get(timeout=WAIT) == {"parts": [2, 4]}
    implicit = chain(group(add.s(5, 5), add.s(6, 6)), summarize.s()).apply_async()
    assert implicit.get(timeout=WAIT) == {"parts": [10, 12]}


def test_nested_canvases_a_chain_in_a_group_and_a_chord_in_a_chain(worker):
    canvas = group(
        chain(add.s(1, 1), add.s(1)),
        chain(add.s(2, 2), chord([add.s(1), add.s(2)], summarize.s())),
    )
    assert canvas.apply_async().get(timeout=WAIT) == [3, {"parts": [5, 6]}]


def test_a_link_runs_with_the_result_and_the_job_waits_for_it(worker):
    result = add.apply_async((1, 2), link=add.s(100))
    assert result.get(timeout=WAIT) == 3
    job_id = redis_client().get(f"vetro:task:{result.id}").decode().split()[1]
    record = wait_until(lambda: (get_job(job_id) or {}).get("status") == "completed" and get_job(job_id), WAIT, "job")
    assert record["status"] == "completed"


def test_a_countdown_on_a_signature_delays_its_step(worker):
    began = time.monotonic()
    assert chain(add.s(1, 1), add.s(1).set(countdown=3)).apply_async().get(timeout=WAIT) == 3
    assert time.monotonic() - began >= 3


def test_a_step_sent_to_its_own_queue_waits_there_for_a_worker_that_consumes_it(worker):
    queue = f"canvas-{uuid.uuid4().hex[:6]}"
    result = chain(add.s(1, 1), add.s(1).set(queue=queue, priority=5)).apply_async()
    assert wait_until(lambda: queue_length(queue), WAIT, f"the second step to reach {queue}")
    assert result.state == "PENDING" and result.parent.get(timeout=WAIT) == 2
    own = WorkerProcess(worker_env(), concurrency=1, name=f"{queue}-worker", extra_args=["-Q", queue]).start()
    try:
        assert result.get(timeout=WAIT) == 3
    finally:
        own.stop()


def test_a_declared_pipeline_is_a_signature_in_a_bigger_canvas(worker):
    result = chain(CLOCK.s({"amount": "1.25"}), summarize.s()).apply_async()
    summary = result.get(timeout=WAIT)
    assert str(summary["parts"]["doubled"]) == "2.50"


def test_submit_returns_the_job_id_that_gets_the_jobs_result(worker):
    job_id = submit({"amount": "2"}, pipeline="clock")
    assert isinstance(job_id, str) and get_job(job_id) is not None
    assert str(job_id.get(timeout=WAIT)["doubled"]) == "4"


def test_a_failed_step_is_dead_lettered_and_fails_its_async_result(worker):
    result = chain(add.s(1, 1), refuse.s(), add.s(1)).apply_async()
    with pytest.raises(PermanentError, match="no 2"):
        result.get(timeout=WAIT)
    assert result.parent.state == "FAILURE" and result.parent.parent.get(timeout=WAIT) == 2
    assert "no 2" in str(result.parent.traceback)
    listed = vetro("dlq", "list", "--json")
    assert result.parent.id in listed.stdout or "refuse" in listed.stdout


def test_a_link_error_runs_with_the_failed_steps_task_id_once_it_is_dead_lettered(worker):
    result = chain(add.s(1, 1), refuse.s()).apply_async(link_error=alert.s())
    with pytest.raises(PermanentError):
        result.get(timeout=WAIT)
    job_id = redis_client().get(f"vetro:task:{result.id}").decode().split()[1]

    def errback_ran() -> dict | None:
        steps = (describe_job(job_id) or {}).get("steps", {})
        done = [step for scope, step in steps.items() if scope.startswith("alert") and step["status"] == "done"]
        return done[0] if done else None

    assert wait_until(errback_ran, WAIT, "the errback")["result"] == {"alerted": result.id}
    assert get_job(job_id)["status"] == "failed"


def test_replay_finishes_the_canvas_at_its_failed_step(worker):
    redis_client().delete(SHOP_FLAG)
    key = f"mend-{uuid.uuid4().hex}"
    result = chain(add.s(20, 1), mend.s(), add.s(1)).apply_async(idempotency_key=key)
    with pytest.raises(PermanentError):
        result.get(timeout=WAIT)
    redis_client().set(SHOP_FLAG, 1, ex=600)
    job_id = redis_client().get(f"vetro:task:{result.id}").decode().split()[1]
    replayed = vetro("dlq", "replay", "--job", job_id, "--yes")
    assert replayed.returncode == 0, replayed.stderr
    assert wait_until(lambda: AsyncResult(result.id, app=app).state == "SUCCESS", WAIT, "the replayed canvas")
    assert AsyncResult(result.id, app=app).get(timeout=WAIT) == 22


def test_the_same_idempotency_key_is_one_job(worker):
    key = f"once-{uuid.uuid4().hex}"
    first = chain(add.s(1, 1), add.s(1)).apply_async(idempotency_key=key)
    second = chain(add.s(1, 1), add.s(1)).apply_async(idempotency_key=key)
    assert first.get(timeout=WAIT) == 3 and second.get(timeout=WAIT) == 3
    jobs = {redis_client().get(f"vetro:task:{r.id}").decode() for r in (first, second)}
    assert len(jobs) == 1


def test_a_canvas_sent_again_under_a_known_key_sends_no_message(redis_server):
    """The second send maps to the first job and publishes nothing: no message for a job never recorded
    (a worker would dead-letter it as unknown), even on a producer whose first publish of the task it is."""
    queue, key = f"again-{uuid.uuid4().hex[:6]}", f"again-{uuid.uuid4().hex}"
    client, broker = redis_client(), redis.Redis.from_url(redis_server.url)
    try:
        first = add.s(1, 1).set(queue=queue).apply_async(idempotency_key=key)
        second = add.s(1, 1).set(queue=queue).apply_async(idempotency_key=key)
        waiting = [json.loads(message)["headers"] for message in broker.lrange(queue, 0, -1)]
        job_id = client.get(f"vetro:task:{first.id}").decode().split(" ", 1)[1]
        assert [headers["vetro_job_id"] for headers in waiting] == [job_id]
        assert client.get(f"vetro:task:{second.id}").decode().endswith(job_id)
    finally:
        broker.delete(queue)


def nested(levels: int) -> dict:
    value: dict = {"leaf": 1}
    for _ in range(levels):
        value = {"n": value}
    return value


def sent() -> int:
    """Messages waiting in vetro's queue, and job records: what a publish would have left behind."""
    return redis_client().llen("vetro") + job_records()


@app.task(name="tests.plain_notify")
def plain_notify(value):
    return value


@pytest.mark.parametrize(
    "publish",
    [
        lambda: chain(add.s(1, 1), plain_notify.s()).apply_async(),
        lambda: group(plain_notify.s(1), add.s(1, 1)).apply_async(),
        lambda: chain(plain_notify.s(1), add.s(1)).apply_async(),
        lambda: chord([add.s(1, 1), plain_notify.s(2)], summarize.s()).apply_async(),
        lambda: add.delay(nested(40)),
    ],
    ids=["plain-after", "plain-in-group", "plain-first", "plain-in-chord", "too-deep"],
)
def test_a_canvas_vetro_cannot_run_is_refused_before_anything_is_sent(redis_server, publish):
    with quiet_redis():  # the session's Redis carries other tests' jobs meanwhile
        with pytest.raises(InvalidJobError) as refused:  # UnsupportedCanvasError, or the payload limits' own
            publish()
        assert sent() == 0
    assert "\n" not in str(refused.value) and len(str(refused.value)) < 300
