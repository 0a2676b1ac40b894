"""Task messages copied from one that Celery built, instead of built by Celery each time.

Issue 11's profile: Celery's `apply_async` costs 0.3 to 0.5 ms a message (routing, options, the
message, kombu's envelope), most of a producer's time and a tenth of a stage's. A job's steps
are published with the same task, route and options every time; only the task id, the
arguments, the job's headers and the parent task differ. So the first message for a task and
route in a process goes through `apply_async`, and the next ones copy its envelope and set
what differs, as Celery's `send_task` would. Celery's publish signals are sent for each copy,
and what their receivers add to the headers is kept (vetro's own stamps the send time).

Only for the LPUSHes a caller sends itself (pipeline.adapter.transport.captured: a Redis broker that is
also the result store). Every message goes through Celery when Celery sends task-sent events,
inherits the parent's priority, compresses messages, when the task has an expiry, or when something
wraps `apply_async` (Sentry's Celery integration adds its trace headers there, and a copy would
carry another job's trace).
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, partial
from typing import Any

from celery import Task

from pipeline.adapter.app import app
from pipeline.adapter.internals import (
    after_publish,
    before_publish,
    envelope_route,
    lineage,
    protocol_header_names,
    read_envelope,
    repr_limit,
    route_of,
    routes_by_name_only,
    write_envelope,
)
from pipeline.adapter.shown import shown
from pipeline.adapter.transport import captured

Push = tuple[str, str]  # (queue key, message), as pipeline.adapter.transport.captured collects them


@dataclass(frozen=True)
class _Template:
    queue_key: str
    envelope: dict[str, Any]  # kombu's message, with only Celery's own headers
    kwargs: dict[str, Any]
    embed: dict[str, Any]  # the body's third part: callbacks, errbacks, chain, chord


_templates: dict[tuple, _Template] = {}


@dataclass(frozen=True)
class Message:
    """A task message to build: what `publish` (an `apply_async` of `task`) would send."""

    task: Task
    task_id: str
    args: Any
    headers: dict[str, Any]  # the job's
    publish: Callable[[], None]
    plain: bool = True  # no keyword arguments and no options of its own: a copy of the task's template fits


def pushes(messages: list[Message]) -> list[list[Push]]:
    """The LPUSHes that would send each of `messages`, built but not sent."""
    conf = app.conf  # read once: each setting read is a lookup through Celery's layered settings
    copies_differ = conf.task_send_sent_event or conf.task_inherit_parent_priority or conf.task_compression
    if copies_differ or hasattr(Task.apply_async, "__wrapped__"):
        return [_captured(message.publish) for message in messages]
    shown_as = partial(shown, maxsize=repr_limit(app), levels=conf.task_repr_maxlevels)
    # Routes that are maps (task_routes as a dict, as vetro's) route by the task's name alone; a
    # router function may look at the arguments, so its answer is asked for every message.
    where = (conf.task_default_queue,) if routes_by_name_only(app) else None
    policy = conf.task_publish_retry_policy
    return [_built(message, shown_as, policy, where) for message in messages]


def _built(message: Message, shown_as: Callable[[Any], str], policy: dict[str, Any], where: tuple | None) -> list[Push]:
    task = message.task
    if not message.plain or task.expires is not None:  # an expiry is a time Celery works out at each send
        return _captured(message.publish)
    if where is None:
        where = route_of(app, task, message.args)
    key = (os.getpid(), threading.get_ident(), task.name, where)  # origin and reply_to are per process and thread
    template = _templates.get(key)
    if template is None:
        sent = _captured(message.publish)
        if len(sent) == 1 and (learned := _learn(*sent[0])) is not None:
            _templates[key] = learned
        return sent
    return [_render(template, message, shown_as(message.args), policy)]


def _captured(publish: Callable[[], None]) -> list[Push]:
    with captured() as sent:
        publish()
    return sent


@cache
def _protocol_headers() -> frozenset[str]:
    return protocol_header_names(app)


def _learn(queue_key: str, message: str) -> _Template | None:
    read = read_envelope(message)
    if read is None:
        return None
    envelope, (_, kwargs, embed) = read
    own = _protocol_headers()
    envelope["headers"] = {name: value for name, value in envelope["headers"].items() if name in own}
    return _Template(queue_key, envelope, kwargs, embed)


def _render(template: _Template, message: Message, argsrepr: str, policy: dict[str, Any]) -> Push:
    task_id, name, args = message.task_id, message.task.name, message.args
    root_id, parent_id = lineage(app, task_id)
    headers = {
        **template.envelope["headers"],
        "id": task_id,
        "root_id": root_id,
        "parent_id": parent_id,
        "argsrepr": argsrepr,
        **message.headers,
    }
    properties = {**template.envelope["properties"], "correlation_id": task_id, "delivery_tag": str(uuid.uuid4())}
    body = (args, template.kwargs, template.embed)
    exchange, routing_key = envelope_route(template.envelope)
    before_publish(name, body, exchange, routing_key, headers, properties, policy)
    written = write_envelope(template.envelope, headers, properties, body)
    after_publish(name, body, exchange, routing_key, headers)
    return template.queue_key, written
