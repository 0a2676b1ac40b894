"""Every private Celery and kombu internal vetro relies on, behind a name (written against Celery and kombu 5.7.0).

Each one here is checked by tests/unit/test_internals_contract.py, which fails with a line naming
the internal and the installed version when a release changes it. The kombu transport's own
overrides (`Channel._put`, `_connparams`, `_create_client`, `QoS.pipe_or_acquire`) live beside
it in pipeline.adapter.transport, checked by tests/unit/test_transport.py. Before upgrading Celery
or kombu, run those two files (README, "Upgrading Celery or kombu").
"""

from __future__ import annotations

import base64
import logging
import sys
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from functools import cached_property, partial
from typing import Any

from billiard.common import TERM_SIGNAME
from celery import Celery, Task
from celery.app.amqp import AMQP
from celery.app.control import Control
from celery.app.routes import MapRoute
from celery.backends.base import BaseBackend
from celery.signals import after_task_publish, before_task_publish
from celery.utils import uuid
from celery.utils.functional import maybe_list
from celery.utils.saferepr import saferepr
from celery.utils.time import get_exponential_backoff_interval
from celery.worker import state as worker_state
from celery.worker.consumer import Consumer
from celery.worker.control import Panel
from kombu import Queue
from kombu.transport import redis as kombu_redis
from kombu.utils.json import dumps, loads

from pipeline.adapter.transport import SchemedConnection

log = logging.getLogger("vetro.adapter")

# --- Publishing: Celery's message builder and sender, and its producer bracket -------------------------------


class HookedAMQP(AMQP):
    """Celery's message builder and sender with two hooks: how arguments are shown, and what a send does;
    its connections keep their URL's scheme (`SchemedConnection`: Flower's broker view reads it).

    `AMQP.as_task_v2` writes the `argsrepr`/`kwargsrepr` that Flower and the logs show; `send_task_message`
    is a property Celery builds once per app (kombu's cached_property), which every publish calls as
    `(producer, name, message, **options)` with `message` a (headers, properties, body, sent_event) tuple.
    """

    Connection = SchemedConnection

    def shown(self, value: Any, maxsize: int, levels: int) -> str:
        return safe_repr(value, maxsize, levels)

    def on_send(self, send: Callable[..., Any], producer: Any, name: str, message: Any, options: dict) -> Any:
        return send(producer, name, message, **options)

    def as_task_v2(self, task_id, name, args=None, kwargs=None, *rest, argsrepr=None, kwargsrepr=None, **options):
        levels = self.app.conf.task_repr_maxlevels
        if argsrepr is None:
            argsrepr = self.shown(args or (), self.argsrepr_maxsize, levels)
        if kwargsrepr is None:
            kwargsrepr = self.shown(kwargs or {}, self.kwargsrepr_maxsize, levels)
        return super().as_task_v2(
            task_id, name, args, kwargs, *rest, argsrepr=argsrepr, kwargsrepr=kwargsrepr, **options
        )

    @cached_property
    def send_task_message(self) -> Callable[..., Any]:
        celery_send = super().send_task_message

        def send(producer: Any, name: str, message: Any, **options: Any) -> Any:
            return self.on_send(celery_send, producer, name, message, options)

        return send


def safe_repr(value: Any, maxsize: int, levels: int) -> str:
    """Celery's own cut-down repr (`celery.utils.saferepr`), as it writes `argsrepr` itself."""
    return saferepr(value, maxsize, maxlevels=levels)


def repr_limit(app: Celery) -> int:
    """How long a message's `argsrepr` may be (`AMQP.argsrepr_maxsize`)."""
    return app.amqp.argsrepr_maxsize


def message_headers(message: Any) -> dict[str, Any]:
    """The headers of a task message Celery built (`AMQP.as_task_v2(...).headers`), to read or add to."""
    return message.headers


def message_embed(message: Any) -> Mapping[str, Any] | None:
    """The body's third part of a task message Celery built: its callbacks, errbacks, chain and chord."""
    body = message.body
    return body[2] if isinstance(body, list | tuple) and len(body) == 3 else None


class BracketingCelery(Celery):
    """Celery's app, with a hook around the outermost `producer_or_acquire()`, and revokes told (`on_revoke`).

    Every publish (`send_task`, a group's parts, a chord's header) is made inside one, so the hook
    sees all that one call of Celery's API sends.
    """

    control_cls = f"{__name__}:ListeningControl"

    def bracket(self, acquire: Callable[[], AbstractContextManager]) -> AbstractContextManager:
        return acquire()

    def producer_or_acquire(self, producer: Any = None) -> Any:
        if producer is not None:
            return super().producer_or_acquire(producer)
        return self.bracket(partial(Celery.producer_or_acquire, self, None))

    def forget_connections(self) -> None:
        """Drop the broker connection pool, and the message builder with what it built from the configuration
        so far: its producer pool, queues, exchanges and router.

        `Celery.close()` drops only `_pool`. The app's `amqp` (a cached property) caches the producer pool,
        bound to the broker of its first use, and the queues and router of the configuration of that moment:
        without this a reconfigured app keeps publishing there, declaring the old queues.
        """
        self.close()
        self.__dict__.pop("amqp", None)


def new_task_id() -> str:
    """A task id as Celery makes one (`celery.utils.uuid`)."""
    return uuid()


def backoff_interval(factor: float, retries: int, maximum: float, full_jitter: bool) -> float:
    """Celery's exponential backoff (`celery.utils.time.get_exponential_backoff_interval`), as `autoretry_for` uses."""
    return get_exponential_backoff_interval(factor=factor, retries=retries, maximum=maximum, full_jitter=full_jitter)


# --- Routing and message templates -------------------------------------------------------------------------


def routes_by_name_only(app: Celery) -> bool:
    """Every route is a map (`task_routes` as a dict, `MapRoute`): a task's name alone says where it goes."""
    return all(isinstance(route, MapRoute) for route in app.amqp.router.routes)


def route_of(app: Celery, task: Task, args: Any) -> tuple[tuple[str, str], ...]:
    """Where the router sends `task` with `args` (`Router.route`), as a hashable summary."""
    route = app.amqp.router.route({}, task.name, args, None, task)
    return tuple(
        sorted((name, value.name if isinstance(value, Queue) else repr(value)) for name, value in route.items())
    )


def unbind(channel: Any, queue: str, exchange: str, routing_key: str) -> None:
    """Remove one binding of `queue` to `exchange`. AMQP unbinds it; kombu's Redis transport keeps an exchange's
    bindings in a set (`_kombu.binding.<exchange>`, members 'key<sep>pattern<sep>queue') that its
    `queue_unbind` never changes (it edits a copy), so the member is removed from the set here."""
    if isinstance(channel, kombu_redis.Channel):
        with channel.conn_or_acquire() as client:
            client.srem(channel.keyprefix_queue % (exchange,), channel.sep.join([routing_key, "", queue]))
    else:
        channel.queue_unbind(queue=queue, exchange=exchange, routing_key=routing_key)


def protocol_header_names(app: Celery) -> frozenset[str]:
    """The headers Celery's task protocol writes itself (not those signal receivers add)."""
    return frozenset(app.amqp.as_task_v2("id", "name").headers)


def lineage(app: Celery, task_id: str) -> tuple[str, str | None]:
    """The root and parent ids `send_task` gives a message sent now: a running task's child, or a root."""
    parent = app.current_worker_task
    if parent is None:
        return task_id, None
    return parent.request.root_id or parent.request.id, parent.request.id


def before_publish(
    name: str, body: Any, exchange: str, routing_key: str, headers: dict, properties: dict, retry_policy: dict
) -> None:
    """`before_task_publish`, sent with the arguments Celery sends it; what a receiver changes in `headers`
    or `properties` is published, as it is on Celery's own path (both dicts are the message's)."""
    shown = {name: properties.get(name) for name in ("correlation_id", "reply_to")}
    before_task_publish.send(
        sender=name,
        body=body,
        exchange=exchange,
        routing_key=routing_key,
        declare=[],
        headers=headers,
        properties=shown,
        retry_policy=retry_policy,
    )
    properties.update(shown)


def after_publish(name: str, body: Any, exchange: str, routing_key: str, headers: dict) -> None:
    """`after_task_publish`, sent with the arguments Celery sends it."""
    after_task_publish.send(sender=name, body=body, headers=headers, exchange=exchange, routing_key=routing_key)


# --- kombu's Redis transport: its message envelope and queue keys -----------------------------------------


def read_envelope(raw: str) -> tuple[dict[str, Any], tuple] | None:
    """A kombu Redis message: its envelope (body, headers, properties...) and its decoded body
    (args, kwargs, embed); None when the body is not base64 JSON (a compressed body is base64 too:
    its `compression` header tells)."""
    envelope = loads(raw)
    if envelope["properties"].get("body_encoding") != "base64" or envelope["headers"].get("compression"):
        return None
    return envelope, tuple(loads(base64.b64decode(envelope["body"])))


def envelope_route(envelope: Mapping[str, Any]) -> tuple[str, str]:
    """The exchange and routing key a message was published with (`properties.delivery_info`)."""
    delivery = envelope["properties"]["delivery_info"]
    return delivery["exchange"], delivery["routing_key"]


def write_envelope(envelope: Mapping[str, Any], headers: dict, properties: dict, body: tuple) -> str:
    """A copy of `envelope` carrying `headers`, `properties` and `body`, as kombu's Redis transport stores it."""
    encoded = base64.b64encode(dumps(body).encode()).decode()
    return dumps({**envelope, "body": encoded, "headers": headers, "properties": properties})


def envelope_header(raw: bytes | str, name: str) -> Any:
    """One header of a stored kombu Redis message; None when it has none or is not one."""
    try:
        return loads(raw)["headers"].get(name)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


_KEYS = kombu_redis.Channel.__new__(kombu_redis.Channel)  # only its key naming is used: no connection


def queue_key(queue: str, priority: int = 0) -> str:
    """The Redis list kombu keeps a queue's messages of `priority` in (`Channel._q_for_pri`)."""
    return _KEYS._q_for_pri(queue, priority)


def queue_keys(queue: str) -> list[str]:
    """Every Redis list of a queue, highest priority first (kombu's `priority_steps`)."""
    return [queue_key(queue, step) for step in _KEYS.priority_steps]


OLDEST = -1  # kombu pushes on the left and takes from the right: the oldest message's index


# --- The worker ---------------------------------------------------------------------------------------------


class ScreeningConsumer(Consumer):
    """Celery's worker consumer, whose task handler asks `screen(message, handle)` about every message first.

    `Consumer.create_task_handler` is called at every (re)connection; the handler it returns takes
    the kombu message before anything decodes it.
    """

    def screen(self, message: Any, handle: Callable[[Any], Any]) -> Any:
        return handle(message)

    def create_task_handler(self, *args: Any, **kwargs: Any) -> Any:
        return partial(self.screen, handle=super().create_task_handler(*args, **kwargs))


TASKS_STEP = "celery.worker.consumer.tasks:Tasks"  # the consumer step that sets up `task_consumer`


def running_task_count() -> int:
    """Tasks this worker is running now (`celery.worker.state.active_requests`)."""
    return len(worker_state.active_requests)


def consumer_queues(consumer: Any) -> list[str]:
    """The queues a worker's consumer takes messages from."""
    return sorted(queue.name for queue in consumer.task_consumer.queues) if consumer.task_consumer else []


def pool_size(consumer: Any) -> int:
    """The worker's pool processes (the prefork pool's `num_processes`), else its configured concurrency."""
    return int(getattr(consumer.pool, "num_processes", None) or consumer.app.conf.worker_concurrency or 0)


def every(consumer: Any, seconds: float, function: Callable[..., Any], *args: Any) -> Any:
    """Call `function(*args)` every `seconds` on the worker's own timer; the entry `.cancel()`s it."""
    return consumer.timer.call_repeatedly(seconds, function, args, priority=10)


def queue_of(request_or_message: Any) -> str | None:
    """The queue a message was taken from: its `delivery_info` routing key (Celery sends to the default
    exchange, routed by the queue's name)."""
    return (getattr(request_or_message, "delivery_info", None) or {}).get("routing_key")


# --- A running task's request -------------------------------------------------------------------------------


def header(request: Any, name: str, default: Any = None) -> Any:
    """A message header of the running task: Celery makes each custom header a field of its request."""
    return request.get(name, default)


def attach(request: Any, name: str, value: Any) -> None:
    """Keep `value` on the running request; the stage's body, run by `run_body`, reads it with `attached`."""
    setattr(request, name, value)


def attached(request: Any, name: str) -> Any:
    return getattr(request, name, None)


def run_body(task: Task, args: Any, kwargs: Any) -> Any:
    """The task's body, through `Task.__call__`, whose request inherits what was attached to the running one."""
    return Task.__call__(task, *args, **kwargs)


# --- Revoke ------------------------------------------------------------------------------------------------

REVOKED_BY = "vetro_revoked_by"  # an argument vetro adds to a revoke's broadcast: which command sent it
RevokeListener = Callable[[list[str], str], list[str]]
_revoke_listeners: list[RevokeListener] = []


def on_revoke(listener: RevokeListener) -> None:
    """Call `listener(task_ids, by)` for every revoke, whoever sends it: in the process that calls
    `app.control.revoke` (`AsyncResult.revoke`, Flower), and in each worker the broadcast reaches (Celery's
    built-in `revoke` control command, which `celery control revoke` sends, wrapped). The listener returns
    more task ids for the worker to revoke with them (so `terminate=True` reaches whatever step is running)."""
    if not _revoke_listeners:
        celery_revoke = Panel.data["revoke"]

        def revoke(state: Any, task_id: Any, terminate: bool = False, signal: Any = None, **kwargs: Any) -> Any:
            ids = list(maybe_list(task_id) or [])
            extra = _tell_revoked(ids, kwargs.pop(REVOKED_BY, "celery control revoke"), raising=False)
            return celery_revoke(state, ids + extra, terminate=terminate, signal=signal, **kwargs)

        Panel.data["revoke"] = revoke
    _revoke_listeners.append(listener)


def _tell_revoked(task_ids: list[str], by: str, raising: bool) -> list[str]:
    extra: list[str] = []
    for listener in _revoke_listeners:
        try:
            extra += listener(task_ids, by)
        except Exception:
            if raising:
                raise
            log.exception("a revoke of %s could not be noted; the worker still revokes them", task_ids)
    return extra


class ListeningControl(Control):
    """Celery's remote control, whose `revoke` tells the revoke listeners first, then broadcasts as Celery does."""

    def revoke(self, task_id: Any, destination: Any = None, terminate: bool = False, signal: str = TERM_SIGNAME,
               **kwargs: Any) -> Any:  # fmt: skip
        ids = list(maybe_list(task_id) or [])
        by = kwargs.pop(REVOKED_BY, "AsyncResult.revoke")
        try:
            extra = _tell_revoked(ids, by, raising=True)
        except Exception:  # not noted here (its store is down): the workers it reaches still note and revoke
            super().revoke(ids, destination, terminate, signal, **{REVOKED_BY: by, **kwargs})
            raise
        return super().revoke(ids + extra, destination, terminate, signal, **{REVOKED_BY: by, **kwargs})


# --- Results ------------------------------------------------------------------------------------------------


class ReadOnlyBackend(BaseBackend):
    """A Celery result backend that stores nothing and reads every result through `read(task_id)`.

    `AsyncResult` reads through `_get_task_meta_for`; the other hooks are what Celery would store with.
    """

    supports_autoexpire = True  # what it reads expires by itself: no `backend_cleanup`
    persistent = True

    def read(self, task_id: str) -> dict[str, Any]:
        raise NotImplementedError

    def _get_task_meta_for(self, task_id: str) -> dict[str, Any]:
        return self.meta_from_decoded({"task_id": task_id, **self.read(task_id)})

    def _store_result(self, task_id: str, result: Any, state: str, traceback: Any = None, **kwargs: Any) -> Any:
        return result

    def _forget(self, task_id: str) -> None:
        return None

    def apply_chord(self, header_result_args: Any, body: Any, **kwargs: Any) -> None:
        return None

    def on_chord_part_return(self, request: Any, state: Any, result: Any, **kwargs: Any) -> None:
        return None

    def _save_group(self, group_id: str, result: Any) -> Any:
        return result

    def _restore_group(self, group_id: str) -> None:
        return None

    def _delete_group(self, group_id: str) -> None:
        return None


def failure_meta(error_type: str, message: str) -> dict[str, str | list[str]]:
    """A failure as Celery's backends serialize an exception (`exc_module`, and `exc_type` its qualified name),
    which `AsyncResult` rebuilds with its class; `error_type` is '<module>.<qualified name>'."""
    parts = error_type.split(".")
    # The longest prefix that is a loaded module (Celery rebuilds a class only from `sys.modules`, importing nothing).
    split = next((i for i in range(len(parts) - 1, 0, -1) if ".".join(parts[:i]) in sys.modules), len(parts) - 1)
    return {"exc_type": ".".join(parts[split:]), "exc_module": ".".join(parts[:split]), "exc_message": [message]}


# --- Celery's task trace log lines --------------------------------------------------------------------------

TRACE_LOGGER = "celery.app.trace"


def success_line(args: Any) -> str | None:
    """Celery's 'Task ... succeeded' line without the task's result, from its log record's arguments;
    None for any other record of the trace logger."""
    if not isinstance(args, dict) or "return_value" not in args:
        return None
    return "Task {name}[{id}] succeeded in {runtime:.3f}s".format(**args)


def failure_shown(args: Any) -> str:
    """How Celery's failure line shows the exception (its `exc` argument); '' for any other record."""
    return str(args.get("exc", "")) if isinstance(args, dict) else ""


# --- Canvas: how Celery serializes and sends signatures -----------------------------------------------------


CHAIN = "chain"  # the option in which a chain's first task carries the rest of it


def chain_rest(options: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The signatures a chain still has to run after this task, in order (Celery keeps them last first)."""
    return list(reversed(options.get(CHAIN) or []))


def chain_last_options(options: Mapping[str, Any]) -> Mapping[str, Any]:
    """The options of the last task of the chain this task starts (itself when it starts none):
    a chain that is a group's member carries its membership there."""
    rest = options.get(CHAIN)
    return rest[0].get("options", {}) if rest else options


MEMBERSHIP = ("group_id", "group_index", "chord")  # what freezing a group or chord puts on its members' options


def membership(options: Mapping[str, Any]) -> dict[str, Any]:
    """The group a signature's options say it belongs to, at which index, and the chord's body if any."""
    return {name: options.get(name) for name in MEMBERSHIP}


def task_signature(task: str, args: list, kwargs: dict, options: dict) -> dict[str, Any]:
    """A task's signature as Celery serializes it (`Signature` is a dict)."""
    return {"task": task, "args": args, "kwargs": kwargs, "options": options, "subtask_type": None, "immutable": False}


def group_signature(tasks: list[dict[str, Any]], group_id: str) -> dict[str, Any]:
    """A group's signature as Celery serializes it."""
    return {"task": "celery.group", "args": [], "kwargs": {"tasks": tasks}, "subtask_type": "group",
            "options": {"task_id": group_id}, "immutable": False}  # fmt: skip


def chord_signature(header: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """A chord's signature as Celery serializes it: its header a group, its body a signature."""
    return {"task": "celery.chord", "args": [], "kwargs": {"header": header, "body": body}, "subtask_type": "chord",
            "options": {}, "immutable": False}  # fmt: skip
