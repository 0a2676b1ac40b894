"""Messages copied from one Celery built (pipeline.adapter.templates) are what Celery itself would have sent.

Built on the tests' private Redis (the broker is the result store, so publishes are captured),
with no worker: a message's bytes are compared with Celery's own for the same step.
"""

from __future__ import annotations

import base64
import functools
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Task
from celery._state import _task_stack
from celery.signals import after_task_publish, before_task_publish

from pipeline import app
from pipeline.adapter import templates
from pipeline.adapter.transport import captured
from pipeline.context import SENT_AT, JobContext
from pipeline.jobs import driver
from pipeline.jobs.pipelines import declared_plan
from pipeline.plan import task_id
from tasks.orders.samples import sample_order

VARIES = ("delivery_tag",)  # a fresh one per message, as kombu gives


def job() -> JobContext:
    return JobContext(str(uuid.uuid4()), f"key-{uuid.uuid4().hex}", str(uuid.uuid4()), "orders")


def first_step(payload: dict) -> Any:
    (step,) = declared_plan("orders").given(payload).pending({})
    return step


def celerys_own(context: JobContext, payload: dict) -> tuple[str, dict]:
    """The message Celery's apply_async builds for the job's first step."""
    with captured() as pushes:
        driver.publish(context, [first_step(payload)])
    ((queue, message),) = pushes
    return queue, json.loads(message)


def copied(context: JobContext, payload: dict) -> tuple[str, dict]:
    ((push,),) = driver.messages([(context, [first_step(payload)])])
    return push[0], json.loads(push[1])


def comparable(message: dict) -> dict:
    properties = {name: value for name, value in message["properties"].items() if name not in VARIES}
    headers = {name: value for name, value in message["headers"].items() if name != SENT_AT}
    body = json.loads(base64.b64decode(message["body"]))
    return message | {"properties": properties, "headers": headers, "body": body}


@pytest.fixture
def fresh_templates() -> Iterator[None]:
    templates._templates.clear()
    yield
    templates._templates.clear()


def test_a_copied_message_is_the_one_celery_would_have_sent(fresh_templates):
    copied(job(), sample_order(1))  # the first goes through Celery and becomes the template
    context, payload = job(), sample_order(2, prefix="copy")
    queue, message = copied(context, payload)
    assert templates._templates, "the second message was not copied"
    own_queue, own = celerys_own(context, payload)
    assert queue == own_queue
    assert comparable(message) == comparable(own)
    assert message["headers"]["argsrepr"] == own["headers"]["argsrepr"]
    assert message["properties"]["delivery_tag"] != own["properties"]["delivery_tag"]


def test_a_message_sent_by_a_running_task_names_it_as_parent_and_root(fresh_templates):
    running = app.tasks[first_step(sample_order(3)).task]
    _task_stack.push(running)
    running.push_request(id="parent-task", root_id="root-task", called_directly=False)
    try:
        copied(job(), sample_order(4))
        context, payload = job(), sample_order(5)
        _, message = copied(context, payload)
        _, own = celerys_own(context, payload)
    finally:
        running.pop_request()
        _task_stack.pop()
    assert (message["headers"]["parent_id"], message["headers"]["root_id"]) == ("parent-task", "root-task")
    assert comparable(message) == comparable(own)


def test_publish_signals_see_and_change_every_copied_message(fresh_templates):
    seen: list[str] = []

    def stamp(headers: dict | None = None, **_: Any) -> None:
        headers["x-stamp"] = uuid.uuid4().hex

    def count(body: Any = None, **_: Any) -> None:
        seen.append(body[0][0]["order_id"])

    before_task_publish.connect(stamp, weak=False)
    after_task_publish.connect(count, weak=False)
    try:
        orders = [sample_order(n, prefix="signal") for n in range(4)]
        messages = [copied(job(), order)[1] for order in orders]
    finally:
        before_task_publish.disconnect(stamp)
        after_task_publish.disconnect(count)
    assert seen == [order["order_id"] for order in orders]
    stamps = [message["headers"]["x-stamp"] for message in messages]
    assert len(set(stamps)) == 4
    assert len({message["headers"][SENT_AT] for message in messages}) == 4


def test_a_wrapped_apply_async_sends_every_message_through_celery(fresh_templates, monkeypatch):
    """Sentry's Celery integration wraps apply_async to add its trace: a copy would carry another job's."""
    original = Task.apply_async

    @functools.wraps(original)
    def traced(self: Task, *args: Any, **kwargs: Any) -> Any:
        kwargs["headers"] = {**(kwargs.get("headers") or {}), "x-trace": kwargs["task_id"]}
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Task, "apply_async", traced)
    contexts = [job() for _ in range(3)]
    messages = [copied(context, sample_order(n, prefix="traced"))[1] for n, context in enumerate(contexts)]
    assert [message["headers"]["x-trace"] for message in messages] == [
        task_id(context.job_id, "validate") for context in contexts
    ]
    assert templates._templates == {}
