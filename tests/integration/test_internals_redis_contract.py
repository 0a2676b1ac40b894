"""The contract of pipeline.adapter.internals with kombu's Redis transport: the message envelope kombu
stores in Redis and the lists it keeps a queue's messages in, checked on a real (private) redis-server
with kombu's own transport and a real Celery publish (written against Celery and kombu 5.7.0). The rest
of internals is checked without Redis in tests/unit/test_internals_contract.py.

Each test states one assumption and checks it on what kombu itself writes and delivers, not only on
what vetro's function returns. A failure names the internal and the installed version, e.g.
"kombu 5.8.0: Channel._q_for_pri ...".

When one fails (typically after upgrading Celery or kombu): read what that release changed in the
internal the message names (its changelog, its source in .venv), then change pipeline/adapter/internals.py
(and only it) so the named thing does again what its docstring says. Never patch an installed package.

A test marked xfail(strict=True) shows a known bug of internals.py; fixing the bug makes it XPASS, which
fails the run: then remove the mark.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import celery
import kombu
import pytest
import redis
from celery import Celery
from celery.signals import before_task_publish
from celery.worker.request import Request
from kombu import Connection
from kombu.transport import redis as kombu_redis

from pipeline.adapter.internals import (
    OLDEST,
    envelope_header,
    envelope_route,
    queue_key,
    queue_keys,
    read_envelope,
    unbind,
    write_envelope,
)

pytestmark = pytest.mark.integration

VERSIONS = {"celery": celery.__version__, "kombu": kombu.__version__}


def broken(library: str, internal: str, what: str) -> str:
    """The failure message: which library, at which installed version, broke which internal, and how."""
    return f"{library} {VERSIONS[library]}: {internal} {what}"


@pytest.fixture
def broker(redis_server) -> Iterator[SimpleNamespace]:
    """A Celery app on the private Redis (kombu's own Redis transport), a plain client, and a fresh queue."""
    app = Celery("contract", broker=redis_server.url, set_as_current=False)
    app.conf.task_default_queue = queue = f"contract-{uuid.uuid4().hex}"

    @app.task(name="contract.task", shared=False)
    def task(*args: Any, **kwargs: Any) -> None:
        return None

    client = redis.Redis.from_url(redis_server.url)
    yield SimpleNamespace(app=app, client=client, queue=queue, url=redis_server.url, task=task)
    app.close()
    stale = list(client.scan_iter(match=f"*{queue}*"))
    if stale:
        client.delete(*stale)
    client.close()


def publish(broker: SimpleNamespace, *args: Any, **options: Any) -> Any:
    """A real Celery publish of `contract.task` to the broker's queue."""
    return broker.app.send_task("contract.task", args, queue=broker.queue, **options)


@contextmanager
def delivered(broker: SimpleNamespace, count: int = 1) -> Iterator[list[Any]]:
    """The next `count` messages kombu's Redis transport delivers from the queue, acked."""
    with Connection(broker.url) as connection, connection.SimpleQueue(broker.queue) as simple:
        messages = [simple.get(timeout=5) for _ in range(count)]
        for message in messages:
            message.ack()
        yield messages


def oldest(broker: SimpleNamespace, priority: int = 0) -> bytes:
    raw = broker.client.lindex(queue_key(broker.queue, priority), OLDEST)
    assert raw is not None, broken("kombu", "Channel._put", f"left nothing in {queue_key(broker.queue, priority)!r}")
    return raw


# --- Bindings ---------------------------------------------------------------------------------------------


def test_unbind_removes_a_binding_kombus_redis_transport_routes_by(broker):
    """A queue bound to an exchange by a key receives what is published there by that key; after `unbind`, kombu's
    own routing no longer sends it there (kombu's `queue_unbind` on Redis leaves the binding in place)."""
    exchange = kombu.Exchange(f"{broker.queue}-exchange", "direct")
    bound = kombu.Queue(broker.queue, exchange, routing_key="stale")
    with Connection(broker.url) as connection:
        channel = connection.default_channel
        bound(channel).declare()
        with connection.Producer() as producer:
            producer.publish({"n": 1}, exchange=exchange, routing_key="stale")
        assert broker.client.llen(queue_key(broker.queue)) == 1, broken(
            "kombu", "Channel._queue_bind", "no longer routes by the binding it stores"
        )
        unbind(channel, broker.queue, exchange.name, "stale")
        with connection.Producer() as producer:
            producer.publish({"n": 2}, exchange=exchange, routing_key="stale")
        assert broker.client.llen(queue_key(broker.queue)) == 1, broken(
            "kombu", "Channel.keyprefix_queue/sep", "bindings are no longer kept where unbind removes them"
        )
    broker.client.delete(kombu_redis.Channel.keyprefix_queue % (exchange.name,))


# --- The lists of a queue ----------------------------------------------------------------------------------


def test_queue_key_is_the_redis_list_kombu_keeps_a_priority_of_a_queue_in(broker):
    """`Channel._q_for_pri(queue, priority)` names the list a message of that priority is LPUSHed to and
    taken from: a message pushed there by hand is delivered, and each priority kombu publishes lands there."""
    publish(broker, 1)
    raw = broker.client.rpop(queue_key(broker.queue))
    assert raw is not None, broken("kombu", "Channel._q_for_pri", "no longer keeps priority 0 in the queue's own key")
    broker.client.lpush(queue_key(broker.queue, 5), raw)
    with delivered(broker) as (message,):
        assert message.headers["id"] == json.loads(raw)["headers"]["id"], broken(
            "kombu", "Channel._q_for_pri", f"no longer takes priority 5 from {queue_key(broker.queue, 5)!r}"
        )
    for priority in range(10):
        publish(broker, priority, priority=priority)
    landed = {key: broker.client.llen(key) for key in queue_keys(broker.queue)}
    expected = {key: 0 for key in queue_keys(broker.queue)}
    for priority in range(10):
        expected[queue_key(broker.queue, priority)] += 1
    assert landed == expected, broken("kombu", "Channel._put/_q_for_pri", f"put priorities 0-9 in {landed}")
    leftover = [key.decode() for key in broker.client.scan_iter(match=f"{broker.queue}*")]
    assert sorted(leftover) == sorted(key for key, count in landed.items() if count), broken(
        "kombu", "Channel._put", f"wrote lists vetro does not know: {leftover}"
    )


def test_queue_keys_are_every_list_of_a_queue_highest_priority_first(broker):
    """kombu takes a queue's messages from its `priority_steps` lists in that order: the first list that
    holds a message gives the next one delivered."""
    assert [queue_key(broker.queue, step) for step in kombu_redis.Channel.priority_steps] == queue_keys(broker.queue)
    for priority in (9, 0, 6, 3):
        publish(broker, priority, priority=priority)
    order = [queue_key(broker.queue, priority) for priority in (0, 3, 6, 9)]
    assert order == queue_keys(broker.queue), broken("kombu", "Channel.priority_steps", "are no longer 0, 3, 6, 9")
    with delivered(broker, 4) as messages:
        taken = [queue_key(broker.queue, message.properties["priority"]) for message in messages]
    assert taken == queue_keys(broker.queue), broken(
        "kombu", "Channel._brpop_start/priority_steps", f"delivered from {taken}, not in queue_keys' order"
    )


def test_oldest_is_the_index_of_the_message_kombu_delivers_first(broker):
    """kombu LPUSHes a message and takes from the right (BRPOP): the oldest is at index -1."""
    first, second = publish(broker, 1), publish(broker, 2)
    assert envelope_header(oldest(broker), "id") == first.id, broken(
        "kombu", "Channel._put", "no longer pushes on the left (LPUSH)"
    )
    pushed = json.loads(broker.client.rpop(broker.queue))
    broker.client.lpush(broker.queue, json.dumps({**pushed, "headers": {**pushed["headers"], "id": "pushed-last"}}))
    assert envelope_header(oldest(broker), "id") == second.id
    with delivered(broker, 2) as messages:
        assert [message.headers["id"] for message in messages] == [second.id, "pushed-last"], broken(
            "kombu", "Channel._brpop_start", "no longer takes a queue's oldest message (the right end) first"
        )


# --- The envelope ------------------------------------------------------------------------------------------


def test_read_envelope_reads_a_celery_message_as_kombu_stores_it(broker):
    """kombu stores a message as JSON: body (base64, `properties.body_encoding`), content type and
    encoding, headers and properties; the body of a Celery message is the JSON (args, kwargs, embed)."""
    sent = publish(broker, 1, "two", kwargs={"k": [3]}, headers={"vetro_probe": "read"})
    raw = oldest(broker).decode()
    read = read_envelope(raw)
    assert read is not None, broken("kombu", "Channel._put", "no longer stores a base64 body (body_encoding)")
    envelope, body = read
    assert {"body", "content-type", "content-encoding", "headers", "properties"} <= set(envelope), broken(
        "kombu", "Channel._put", f"now stores {sorted(envelope)}"
    )
    assert envelope["headers"]["id"] == sent.id and envelope["headers"]["vetro_probe"] == "read"
    with delivered(broker) as (message,):
        assert message.decode() == list(body) and message.headers == envelope["headers"], broken(
            "kombu", "Message (Redis transport)", "no longer decodes the envelope read_envelope reads"
        )
    assert body[:2] == ([1, "two"], {"k": [3]}) and set(body[2]) == {"callbacks", "errbacks", "chain", "chord"}


def test_read_envelope_is_none_for_a_compressed_message(broker):
    """A message Celery compressed is not one read_envelope can read."""
    publish(broker, 1, compression="zlib")
    assert read_envelope(oldest(broker).decode()) is None


def test_envelope_route_is_the_exchange_and_routing_key_celery_published_with(broker):
    """kombu keeps a message's exchange and routing key in `properties.delivery_info`: they are what Celery
    gave `before_task_publish`, and what kombu delivers the message with."""
    seen: list[tuple[str, str]] = []

    def receiver(exchange: Any = None, routing_key: Any = None, **_: Any) -> None:
        seen.append((exchange, routing_key))

    before_task_publish.connect(receiver, weak=False)
    try:
        publish(broker, 1)
    finally:
        before_task_publish.disconnect(receiver)
    envelope, _ = read_envelope(oldest(broker).decode())
    route = envelope_route(envelope)
    assert seen == [route] == [("", broker.queue)], broken(
        "kombu", "properties.delivery_info", f"holds {route}, but Celery published with {seen}"
    )
    with delivered(broker) as (message,):
        assert (message.delivery_info["exchange"], message.delivery_info["routing_key"]) == route, broken(
            "kombu", "Message.delivery_info", "no longer comes from the stored properties.delivery_info"
        )


def test_write_envelope_writes_what_kombu_and_a_celery_worker_read_back(broker):
    """A copy of a stored envelope with other headers, properties and body, LPUSHed as kombu would, is
    delivered by kombu with those, and a Celery worker takes it as the task it names."""
    publish(broker, 1)
    envelope, (_, kwargs, embed) = read_envelope(broker.client.rpop(broker.queue).decode())
    headers = {**envelope["headers"], "id": "copy-1", "root_id": "copy-1", "vetro_probe": "written"}
    properties = {**envelope["properties"], "correlation_id": "copy-1", "delivery_tag": str(uuid.uuid4())}
    body = ([7, "seven"], kwargs, embed)
    written = write_envelope(envelope, headers, properties, body)
    again, read_body = read_envelope(written)
    assert read_body == ([7, "seven"], kwargs, embed) and again["headers"] == headers
    broker.client.lpush(queue_key(broker.queue), written)
    with delivered(broker) as (message,):
        assert message.headers == headers and message.decode() == list(body), broken(
            "kombu", "Message (Redis transport)", "no longer decodes an envelope as write_envelope writes it"
        )
        assert message.properties["correlation_id"] == "copy-1"
        request = Request(message, app=broker.app, task=broker.task)
        assert (request.id, request.name, list(request.args)) == ("copy-1", "contract.task", [7, "seven"]), broken(
            "celery", "worker.request.Request", "no longer reads a task from the envelope write_envelope writes"
        )


def test_envelope_header_reads_one_header_of_a_stored_message(broker):
    """A stored message's headers are the `headers` object of its JSON envelope, Celery's own among them."""
    sent = publish(broker, 1, headers={"vetro_probe": "header"})
    raw = oldest(broker)  # bytes, as redis-py returns it
    assert envelope_header(raw, "id") == envelope_header(raw.decode(), "id") == sent.id, broken(
        "kombu", "Channel._put", "no longer stores the message's headers at the envelope's top level"
    )
    assert envelope_header(raw, "vetro_probe") == "header"
    assert envelope_header(raw, "vetro_absent") is None
    for not_one in (b"not json", b"[]", b'{"body": ""}', b'{"headers": null}', b"\xff"):
        assert envelope_header(not_one, "id") is None
