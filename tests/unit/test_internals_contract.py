"""The contract of pipeline.adapter.internals: every private Celery and kombu internal vetro relies on,
checked against the installed Celery and kombu (written against 5.7.0). No Redis, no network: the apps
here use kombu's in-process memory:// broker. The Redis envelope and queue keys are checked in
tests/integration/test_internals_redis_contract.py.

Each test states one assumption and checks it on Celery's or kombu's own behaviour, not only on what
vetro's function returns. A failure names the internal and the installed version, e.g.
"celery 5.8.0: AMQP.as_task_v2 no longer takes argsrepr".

When one fails (typically after upgrading Celery or kombu): read what that release changed in the
internal the message names (its changelog, its source in .venv), then change pipeline/adapter/internals.py
(and only it) so the named thing does again what its docstring says, and keep this test passing. Never
patch an installed package, and never loosen a test to fit a new behaviour without changing internals.py.

A test marked xfail(strict=True) would show a known bug of internals.py; fixing the bug makes it XPASS,
which fails the run: then remove the mark.
"""

from __future__ import annotations

import inspect
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cached_property
from types import SimpleNamespace
from typing import Any, ClassVar

import celery
import kombu
import kombu.pidbox
import pytest
from celery import Celery, Task, bootsteps, chain, chord, group, signature
from celery.app.amqp import AMQP
from celery.app.routes import MapRoute
from celery.beat import Scheduler
from celery.concurrency.base import BasePool
from celery.concurrency.prefork import TaskPool
from celery.exceptions import Ignore
from celery.result import GroupResult
from celery.signals import after_task_publish, before_task_publish
from celery.utils import timer2
from celery.utils.imports import symbol_by_name
from celery.utils.saferepr import saferepr
from celery.worker import loops
from celery.worker import state as worker_state
from celery.worker.consumer import Consumer
from celery.worker.request import Request
from kombu import Exchange, Queue
from kombu.asynchronous.timer import Timer as EventLoopTimer

from pipeline.adapter.internals import (
    MEMBERSHIP,
    REVOKED_BY,
    TASKS_STEP,
    TRACE_LOGGER,
    BracketingCelery,
    HookedAMQP,
    ListeningControl,
    ReadOnlyBackend,
    ScreeningConsumer,
    after_publish,
    attach,
    attached,
    backoff_interval,
    before_publish,
    chain_last_options,
    chain_rest,
    chord_signature,
    consumer_queues,
    every,
    failure_meta,
    failure_shown,
    group_signature,
    header,
    lineage,
    message_embed,
    message_headers,
    new_task_id,
    on_revoke,
    pool_size,
    protocol_header_names,
    queue_of,
    repr_limit,
    route_of,
    routes_by_name_only,
    run_body,
    running_task_count,
    safe_repr,
    success_line,
    task_signature,
)
from pipeline.adapter.transport import SchemedConnection
from vetro.testing.processes import wait_until

VERSIONS = {"celery": celery.__version__, "kombu": kombu.__version__}


def broken(library: str, internal: str, what: str) -> str:
    """The failure message: which library, at which installed version, broke which internal, and how."""
    return f"{library} {VERSIONS[library]}: {internal} {what}"


# --- Probes: an app whose sends are recorded, and whose publishing bracket is counted -----------------------


class RecordingAMQP(HookedAMQP):
    """Records every send; publishes it (on the memory:// broker) only when its app says so."""

    def on_send(self, send: Callable[..., Any], producer: Any, name: str, message: Any, options: dict) -> Any:
        app = self.app
        app.sends.append(SimpleNamespace(name=name, message=message, options=options, send=send, producer=producer))
        app.sends[-1].open_brackets = app.open_brackets
        return send(producer, name, message, **options) if app.publishes else None


class ProbeApp(BracketingCelery):
    """Counts its brackets, and how many are open at any moment."""

    def bracket(self, acquire: Callable[[], Any]) -> Any:
        return self._counted(acquire)

    @contextmanager
    def _counted(self, acquire: Callable[[], Any]) -> Iterator[Any]:
        self.brackets += 1
        self.open_brackets += 1
        try:
            with acquire() as producer:
                yield producer
        finally:
            self.open_brackets -= 1


@pytest.fixture
def make_app() -> Iterator[Callable[..., Celery]]:
    """Apps on kombu's memory:// broker, never the current app; closed after the test."""
    apps: list[Celery] = []

    def make(*, base: type = ProbeApp, amqp: Any = RecordingAMQP, publishes: bool = False, **options: Any) -> Celery:
        backend = options.pop("backend", None)
        app = base("probe", broker="memory://", backend=backend, amqp=amqp, set_as_current=False)
        app.sends, app.publishes, app.brackets, app.open_brackets = [], publishes, 0, 0
        app.conf.update(options)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.close()


def _body(*args: Any, **kwargs: Any) -> None:
    return None


def tasks(app: Celery, *names: str, base: type = Task) -> list[Task]:
    return [app.task(name=name, base=base, shared=False)(_body) for name in names]


def new_queue() -> str:
    return f"contract-{uuid.uuid4().hex[:12]}"


@contextmanager
def received(app: Celery, queue: str) -> Iterator[Any]:
    """The oldest message the memory:// broker holds in `queue`, as kombu hands it to a worker."""
    with app.connection_for_read() as connection, connection.SimpleQueue(queue) as simple:
        yield simple.get(timeout=5)


# --- Publishing: HookedAMQP, repr_limit, message_headers, message_embed, BracketingCelery -------------------


def test_hooked_amqp_shown_writes_what_a_message_shows_of_its_arguments(make_app):
    """`AMQP.as_task_v2` writes the `argsrepr`/`kwargsrepr` headers; `shown` makes them, given Celery's limits,
    and by default exactly as Celery would."""
    given = []

    class Shown(HookedAMQP):
        def shown(self, value: Any, maxsize: int, levels: int) -> str:
            given.append((value, maxsize, levels))
            return "SHOWN"

    app = make_app(amqp=Shown)
    headers = app.amqp.create_task_message("i", "n", (1,), {"k": 2}).headers
    assert headers["argsrepr"] == "SHOWN" and headers["kwargsrepr"] == "SHOWN", broken(
        "celery", "AMQP.create_task_message", "no longer writes the argsrepr/kwargsrepr its as_task_v2 is given"
    )
    levels = app.conf.task_repr_maxlevels
    assert given == [((1,), AMQP.argsrepr_maxsize, levels), ({"k": 2}, AMQP.kwargsrepr_maxsize, levels)], broken(
        "celery", "AMQP.argsrepr_maxsize/kwargsrepr_maxsize/task_repr_maxlevels", "are no longer argsrepr's limits"
    )

    plain, hooked = make_app(base=Celery, amqp=AMQP), make_app(base=Celery, amqp=HookedAMQP)
    args, kwargs = (list(range(3000)), [[[[[["deep"]]]]]]), {"long": "v" * 3000}
    for name in ("argsrepr", "kwargsrepr"):
        expected = plain.amqp.create_task_message("i", "n", args, kwargs).headers[name]
        assert hooked.amqp.create_task_message("i", "n", args, kwargs).headers[name] == expected, broken(
            "celery", f"AMQP.as_task_v2 ({name})", "no longer shows arguments as saferepr(value, maxsize, maxlevels)"
        )


def test_hooked_amqp_connection_is_the_class_celery_builds_every_broker_connection_with(make_app):
    """`AMQP.Connection` builds the app's connections (and so Flower's broker URL, `app.connection().as_uri()`)."""
    app = make_app(amqp=HookedAMQP)
    for connection in (app.connection(), app.connection_for_read(), app.connection_for_write()):
        assert isinstance(connection, SchemedConnection), broken(
            "celery", "AMQP.Connection", "is no longer the class Celery.connection*() builds connections with"
        )
        connection.release()


def test_hooked_amqp_on_send_gets_every_publish_with_celerys_sender_and_message(make_app):
    """`send_task` hands each publish to `amqp.send_task_message(producer, name, message, **options)`, once,
    `message` being a (headers, properties, body, sent_event) tuple; what `send` does is on_send's: not
    calling it publishes nothing."""
    app = make_app(publishes=True)
    (a,) = tasks(app, "a")
    queue = new_queue()
    result = a.apply_async((1,), queue=queue)
    (sent,) = app.sends
    assert sent.message._fields == ("headers", "properties", "body", "sent_event"), broken(
        "celery",
        "AMQP.send_task_message",
        f"now gets a message shaped {getattr(sent.message, '_fields', sent.message)}",
    )
    assert sent.name == "a" and isinstance(sent.options, dict), broken(
        "celery", "AMQP.send_task_message", "is no longer called as (producer, name, message, **options)"
    )
    assert isinstance(sent.producer, kombu.Producer) and sent.options["queue"].name == queue, broken(
        "celery", "AMQP.send_task_message", "no longer gets a kombu producer and the routed queue in its options"
    )
    assert sent.send.__qualname__ == "AMQP._create_task_sender.<locals>.send_task_message", broken(
        "celery", "AMQP._create_task_sender", "no longer builds the sender send_task_message holds"
    )
    with received(app, queue) as message:
        assert message.headers["id"] == result.id, broken("celery", "AMQP.send_task_message", "no longer publishes")

    app.publishes = False
    held = new_queue()
    a.apply_async((2,), queue=held)
    assert len(app.sends) == 2
    with app.connection_for_read() as connection, connection.SimpleQueue(held) as simple:
        assert simple.qsize() == 0, broken(
            "celery", "Celery.send_task", "publishes other than through send_task_message"
        )


def test_hooked_amqp_as_task_v2_is_the_builder_send_task_uses_and_takes_argsrepr(make_app):
    """`create_task_message` is the app's `as_task_v2` (task protocol 2), which `send_task` calls with
    (task_id, name, args, kwargs) first and the rest by position; it takes `argsrepr`/`kwargsrepr` as given."""
    parameters = inspect.signature(AMQP.as_task_v2).parameters
    assert list(parameters)[:5] == ["self", "task_id", "name", "args", "kwargs"], broken(
        "celery", "AMQP.as_task_v2", f"no longer starts (task_id, name, args, kwargs): {list(parameters)[:5]}"
    )
    for name in ("argsrepr", "kwargsrepr"):
        assert name in parameters and parameters[name].default is None, broken(
            "celery", "AMQP.as_task_v2", f"no longer takes {name}"
        )

    class Shown(RecordingAMQP):
        def shown(self, value: Any, maxsize: int, levels: int) -> str:
            return "SHOWN"

    app = make_app(amqp=Shown)
    assert app.amqp.create_task_message == app.amqp.as_task_v2, broken(
        "celery", "AMQP.create_task_message", "is no longer the app's as_task_v2 (task_protocol 2)"
    )
    given = AMQP.as_task_v2(app.amqp, "i", "n", (1,), argsrepr="given", kwargsrepr="too").headers
    assert (given["argsrepr"], given["kwargsrepr"]) == ("given", "too"), broken(
        "celery", "AMQP.as_task_v2", "no longer writes the argsrepr/kwargsrepr it is given"
    )
    (a,) = tasks(app, "a")
    a.apply_async((1,), {"k": 2}, countdown=60, expires=120)
    (sent,) = app.sends
    headers = sent.message.headers
    assert headers["argsrepr"] == "SHOWN" and headers["kwargsrepr"] == "SHOWN", broken(
        "celery", "Celery.send_task", "no longer builds its message with amqp.create_task_message (as_task_v2)"
    )
    assert headers["eta"] and headers["expires"] and tuple(sent.message.body[:2]) == ((1,), {"k": 2}), broken(
        "celery", "Celery.send_task", "no longer passes as_task_v2 its arguments in the order it declares them"
    )


def test_hooked_amqp_send_task_message_takes_the_place_of_celerys_cached_sender(make_app):
    """`AMQP.send_task_message` is a cached property holding the sender Celery built; vetro's own, cached in
    its place, is what every `send_task` calls."""
    assert isinstance(AMQP.__dict__["send_task_message"], cached_property), broken(
        "celery", "AMQP.send_task_message", "is no longer a cached property"
    )
    app = make_app()
    sender = app.amqp.send_task_message
    assert sender is app.amqp.send_task_message, broken("celery", "AMQP.send_task_message", "is no longer cached")
    assert sender.__qualname__ == "HookedAMQP.send_task_message.<locals>.send", broken(
        "celery", "AMQP.send_task_message", "is no longer overridden by a subclass's cached property"
    )
    (a,) = tasks(app, "a")
    a.apply_async((1,))
    a.apply_async((2,))
    assert [tuple(sent.message.body[0]) for sent in app.sends] == [(1,), (2,)], broken(
        "celery", "Celery.send_task", "no longer sends through app.amqp.send_task_message"
    )


def test_repr_limit_is_the_size_celery_cuts_argsrepr_to(make_app):
    """`AMQP.argsrepr_maxsize` is the maxsize `as_task_v2` gives saferepr for `argsrepr`, per app."""
    app = make_app(base=Celery, amqp=AMQP)
    args = (list(range(3000)),)
    levels = app.conf.task_repr_maxlevels
    for limit in (repr_limit(app), 64):
        app.amqp.argsrepr_maxsize = limit
        assert repr_limit(app) == limit
        built = app.amqp.as_task_v2("i", "n", args).headers["argsrepr"]
        assert built == saferepr(args, limit, maxlevels=levels) and len(built) < len(repr(args)), broken(
            "celery", "AMQP.argsrepr_maxsize", f"no longer limits argsrepr (limit {limit}, got {len(built)} chars)"
        )


def test_safe_repr_is_how_celery_itself_writes_argsrepr_and_kwargsrepr(make_app):
    """`AMQP.as_task_v2` writes `saferepr(value, maxsize, maxlevels=task_repr_maxlevels)`: long values cut,
    deep ones cut at the level limit."""
    app = make_app(base=Celery, amqp=AMQP)
    levels = app.conf.task_repr_maxlevels
    args = (list(range(3000)), [[[[[["deep"]]]]]], "x" * 5000)
    kwargs = {"nested": {"a": {"b": {"c": {"d": {"e": 1}}}}}, "long": "v" * 5000}
    headers = app.amqp.as_task_v2("i", "n", args, kwargs).headers
    shown = (safe_repr(args, repr_limit(app), levels), safe_repr(kwargs, app.amqp.kwargsrepr_maxsize, levels))
    assert shown == (headers["argsrepr"], headers["kwargsrepr"]), broken(
        "celery", "AMQP.as_task_v2", "no longer writes argsrepr/kwargsrepr with celery.utils.saferepr"
    )
    assert len(shown[0]) < len(repr(args)) and "..." in shown[0]


def test_message_headers_are_the_headers_celery_publishes(make_app):
    """The `headers` of the message Celery built are the dict it publishes (after its signal receivers
    saw it): a header added there reaches the broker."""

    class Adding(RecordingAMQP):
        def on_send(self, send: Callable[..., Any], producer: Any, name: str, message: Any, options: dict) -> Any:
            message_headers(message)["vetro_probe"] = "added"
            return super().on_send(send, producer, name, message, options)

    app = make_app(amqp=Adding, publishes=True)
    (a,) = tasks(app, "a")
    queue = new_queue()
    seen = []

    def receiver(headers: dict | None = None, **_: Any) -> None:
        seen.append(dict(headers or {}))

    before_task_publish.connect(receiver, weak=False)
    try:
        a.apply_async((1,), queue=queue)
    finally:
        before_task_publish.disconnect(receiver)
    assert seen and seen[0].get("vetro_probe") == "added", broken(
        "celery", "AMQP.send_task_message", "no longer gives before_task_publish the message's own headers"
    )
    with received(app, queue) as message:
        assert message.headers.get("vetro_probe") == "added", broken(
            "celery", "AMQP.send_task_message", "no longer publishes the headers of the message it is given"
        )


def test_message_embed_is_the_bodys_callbacks_errbacks_chain_and_chord(make_app):
    """A protocol 2 body is (args, kwargs, embed); the embed holds callbacks, errbacks, chain and chord,
    and is published as is."""
    app = make_app(publishes=True)
    a, b, c = tasks(app, "a", "b", "c")
    queue = new_queue()
    a.apply_async((1,), queue=queue, link=b.s(), link_error=c.s())
    chain(a.s(2).set(queue=queue), b.s(), c.s()).apply_async()
    linked, chained = (message_embed(sent.message) for sent in app.sends)
    assert set(linked) == {"callbacks", "errbacks", "chain", "chord"}, broken(
        "celery", "AMQP.as_task_v2", f"now embeds {sorted(linked)} in a message's body"
    )
    assert [s["task"] for s in linked["callbacks"]] == ["b"] and [s["task"] for s in linked["errbacks"]] == ["c"]
    assert [s["task"] for s in chained["chain"]] == ["c", "b"], broken(
        "celery", "AMQP.as_task_v2", "no longer embeds the rest of a chain in the body"
    )
    with received(app, queue) as message:
        assert [s["task"] for s in message.decode()[2]["callbacks"]] == ["b"], broken(
            "celery", "AMQP.send_task_message", "no longer publishes the body's embed"
        )
    assert message_embed(app.amqp.as_task_v1("i", "n")) is None  # protocol 1: a dict body has no embed


def test_bracketing_celery_bracket_holds_all_one_call_of_celerys_api_sends(make_app):
    """Every publish is made inside `app.producer_or_acquire()`; a group passes its producer to its parts, so
    `apply_async` and a whole `group(...).apply_async()` each open exactly one bracket, and on_send runs
    inside it."""
    parameters = list(inspect.signature(Celery.producer_or_acquire).parameters)
    assert parameters == ["self", "producer"], broken("celery", "Celery.producer_or_acquire", f"now takes {parameters}")
    app = make_app()
    a, b = tasks(app, "a", "b")
    a.apply_async((1,))
    assert app.brackets == 1, broken("celery", "Celery.send_task", "no longer publishes inside producer_or_acquire()")
    group(a.s(1), b.s(2)).apply_async()
    assert app.brackets == 2, broken(
        "celery", "group.apply_async", f"opened {app.brackets - 1} producer_or_acquire() brackets, not one"
    )
    assert [sent.open_brackets for sent in app.sends] == [1, 1, 1], broken(
        "celery", "Celery.producer_or_acquire", "no longer holds the send_task_message of what it brackets"
    )
    assert app.open_brackets == 0


def test_forget_connections_makes_the_next_publish_use_the_broker_configured_now(make_app):
    """`AMQP.producer_pool` caches its pool in `_producer_pool`, bound to the broker of its first use, and
    `Celery.close()` does not drop it: after `forget_connections()` a publish goes to the new broker."""
    app = make_app(base=BracketingCelery)
    (a,) = tasks(app, "a")
    a.apply_async((1,))
    assert "elsewhere" not in app.amqp.producer_pool.connections.connection.as_uri()
    app.conf.broker_url = "memory://elsewhere/"
    app.close()
    assert "elsewhere" not in app.amqp.producer_pool.connections.connection.as_uri(), broken(
        "celery", "AMQP._producer_pool", "is dropped by Celery.close(): forget_connections may now be close()"
    )
    app.conf.task_queues = [Queue("elsewhere-queue", Exchange("elsewhere-exchange", "topic"), "elsewhere-queue")]
    app.forget_connections()
    a.apply_async((1,))
    assert "elsewhere" in app.amqp.producer_pool.connections.connection.as_uri(), broken(
        "celery", "Celery.amqp", "no longer holds the producer pool AMQP.producer_pool builds"
    )
    assert app.amqp.queues["elsewhere-queue"].exchange.type == "topic", broken(
        "celery", "Celery.amqp", "no longer holds the queues AMQP.queues builds from task_queues"
    )


def test_new_task_id_is_a_task_id_as_celery_makes_one(make_app):
    """Celery gives a message without a task id a random UUID, as a 36-character string."""
    app = make_app()
    (a,) = tasks(app, "a")
    made = [a.apply_async().id, a.s().freeze().id]
    ours = [new_task_id(), new_task_id()]
    for task_id in made + ours:
        parsed = uuid.UUID(task_id)
        assert str(parsed) == task_id and parsed.version == 4, broken(
            "celery", "utils.uuid", f"now makes task ids like {made[0]!r}, not as {ours[0]!r}"
        )
    assert ours[0] != ours[1]


def test_backoff_interval_is_the_countdown_autoretry_for_retries_with(make_app):
    """A task's `autoretry_for` retries after `get_exponential_backoff_interval(retry_backoff, retries,
    retry_backoff_max, retry_jitter)`: the factor doubled at each retry, capped; with full jitter, at
    most that."""
    app = make_app()
    countdowns: list[tuple[int, Any]] = []

    class Recording(Task):
        def retry(self, *args: Any, **kwargs: Any) -> Exception:
            countdowns.append((self.request.retries, kwargs.get("countdown")))
            return Ignore()  # autoretry raises what retry returns: the eager run ends there

    options = {"autoretry_for": (Boom,), "retry_backoff": 3, "retry_backoff_max": 20, "base": Recording}

    @app.task(name="flaky", shared=False, retry_jitter=False, **options)
    def flaky() -> None:
        raise Boom("again")

    @app.task(name="jittery", shared=False, retry_jitter=True, **options)
    def jittery() -> None:
        raise Boom("again")

    for retries in range(5):
        flaky.apply(retries=retries)
    expected = [(retries, backoff_interval(3, retries, 20, False)) for retries in range(5)]
    assert countdowns == expected == [(0, 3), (1, 6), (2, 12), (3, 20), (4, 20)], broken(
        "celery", "app.autoretry", f"retried after {countdowns}, not {expected}"
    )
    countdowns.clear()
    for retries in range(5):
        jittery.apply(retries=retries)
    for retries, countdown in countdowns:
        cap = backoff_interval(3, retries, 20, False)
        assert 0 <= countdown <= cap and 0 <= backoff_interval(3, retries, 20, True) <= cap, broken(
            "celery", "app.autoretry (retry_jitter)", f"retried after {countdown}s at retry {retries}"
        )


# --- Routing and message templates -------------------------------------------------------------------------


def route_by_first_argument(name: str, args: Any, kwargs: Any, options: Any, task: Any = None, **_: Any) -> dict:
    return {"queue": "high" if args and args[0] > 10 else "low"}


def test_routes_by_name_only_tells_task_routes_maps_from_router_functions(make_app):
    """Celery turns a `task_routes` dict into a `MapRoute`, which routes by the task's name alone; a router
    function (or its dotted name) may look at the arguments."""
    mapped = make_app(task_routes={"a": {"queue": "qa"}, "vetro.*": {"queue": "qv"}})
    routes = mapped.amqp.router.routes
    assert routes and all(isinstance(route, MapRoute) for route in routes), broken(
        "celery", "AMQP.router.routes", f"no longer holds a task_routes dict as a MapRoute: {routes!r}"
    )
    assert routes_by_name_only(mapped) and routes_by_name_only(make_app())
    route = mapped.amqp.router.route
    assert route({}, "a", (1,))["queue"].name == route({}, "a", (99,))["queue"].name == "qa", broken(
        "celery", "MapRoute", "no longer routes by the task's name alone"
    )
    assert route({}, "vetro.reconcile", ())["queue"].name == "qv", broken(
        "celery", "MapRoute", "no longer routes a glob pattern"
    )
    for routes in ([route_by_first_argument], [f"{__name__}:route_by_first_argument"]):
        assert not routes_by_name_only(make_app(task_routes=routes))


def test_route_of_is_where_send_task_sends_the_task_with_those_arguments(make_app):
    """`Router.route(options, name, args, kwargs, task)` is how `send_task` picks a message's queue."""
    app = make_app(task_routes=[route_by_first_argument])
    (a,) = tasks(app, "a")
    for args in ((1,), (99,)):
        a.apply_async(args)
    for sent in app.sends:
        args = tuple(sent.message.body[0])
        summary = route_of(app, a, args)
        hash(summary)
        assert dict(summary)["queue"] == sent.options["queue"].name, broken(
            "celery", "Router.route", f"says {summary} for {args}, but send_task sent to {sent.options['queue'].name}"
        )
    assert route_of(app, a, (1,)) != route_of(app, a, (99,))


def test_protocol_header_names_are_the_headers_of_every_message_celery_builds(make_app):
    """Celery's task protocol writes the same set of headers in every message (before signal receivers)."""
    app = make_app()
    a, b = tasks(app, "a", "b")
    a.apply_async((1,))
    a.apply_async((1,), countdown=5, expires=60, priority=3)
    group(a.s(1), b.s(2)).apply_async()
    chain(a.s(1), b.s()).apply_async()
    names = protocol_header_names(app)
    for sent in app.sends:
        assert set(sent.message.headers) == names, broken(
            "celery", "AMQP.as_task_v2", f"wrote {sorted(set(sent.message.headers) ^ names)} only in some messages"
        )


def test_lineage_is_the_root_and_parent_send_task_gives_a_message(make_app):
    """`send_task` takes a message's parent and root from `app.current_worker_task` (a root of its own
    outside one)."""
    app = make_app()
    (child,) = tasks(app, "child")

    @app.task(name="inner", bind=True, shared=False)
    def inner(self: Task) -> tuple:
        child.apply_async(task_id="child-of-inner")
        return lineage(app, "child-of-inner")

    @app.task(name="outer", bind=True, shared=False)
    def outer(self: Task) -> tuple:
        child.apply_async(task_id="child-of-outer")
        return lineage(app, "child-of-outer"), inner.apply(task_id="inner-1").get()

    child.apply_async(task_id="root-1")
    outside = lineage(app, "root-1")
    of_outer, of_inner = outer.apply(task_id="outer-1").get()
    sent = {s.message.headers["id"]: (s.message.headers["root_id"], s.message.headers["parent_id"]) for s in app.sends}
    expected = {"root-1": outside, "child-of-outer": tuple(of_outer), "child-of-inner": tuple(of_inner)}
    assert sent == expected, broken("celery", "Celery.send_task (root_id, parent_id)", f"gave {sent}, not {expected}")
    assert expected == {
        "root-1": ("root-1", None),
        "child-of-outer": ("outer-1", "outer-1"),
        "child-of-inner": ("outer-1", "inner-1"),
    }


@contextmanager
def signal_kwargs(signal: Any) -> Iterator[list[dict]]:
    sent: list[dict] = []

    def receiver(**kwargs: Any) -> None:
        sent.append(kwargs)

    signal.connect(receiver, weak=False)
    try:
        yield sent
    finally:
        signal.disconnect(receiver)


def _shape(kwargs: dict) -> dict[str, type]:
    return {name: type(value) for name, value in kwargs.items() if name != "signal"}


def assert_sent_alike(signal: str, vetro_sent: dict, celery_sent: dict) -> None:
    """vetro sent `signal` with the argument names Celery sends it with, each of the same type."""
    names, shape = sorted(celery_sent), _shape(celery_sent)
    assert sorted(vetro_sent) == names, broken("celery", signal, f"is now sent with {names}")
    assert _shape(vetro_sent) == shape, broken("celery", signal, f"arguments now are {shape}")


def test_before_publish_sends_before_task_publish_as_celery_does(make_app):
    """`before_task_publish` is sent with sender, body, exchange, routing_key, declare, headers, properties
    and retry_policy: vetro's copy sends the same arguments, of the same types."""
    app = make_app(publishes=True)
    (a,) = tasks(app, "a")
    queue = new_queue()
    with signal_kwargs(before_task_publish) as sent:
        a.apply_async((1,), queue=queue)
        celery_sent = sent[-1]
        body = ((1,), {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None})
        before_publish("a", body, "", queue, {"id": "x"}, {"correlation_id": "x", "reply_to": "", "priority": 0}, {})
        vetro_sent = sent[-1]
    assert_sent_alike("before_task_publish", vetro_sent, celery_sent)
    assert celery_sent["sender"] == "a" and celery_sent["routing_key"] == queue and celery_sent["exchange"] == ""
    assert {"correlation_id", "reply_to"} <= set(celery_sent["properties"]), broken(
        "celery", "before_task_publish", "properties no longer carry correlation_id and reply_to"
    )


def test_what_a_before_task_publish_receiver_changes_is_published_as_on_celerys_path(make_app):
    """A receiver may change the message's headers and its properties' correlation_id and reply_to; Celery
    publishes the changed dicts, and so must a message vetro copies from a template."""
    app = make_app(publishes=True)
    (a,) = tasks(app, "a")

    def receiver(headers: dict, properties: dict, **_: Any) -> None:
        headers["tenant"] = "t-1"
        properties["reply_to"] = "replies"

    before_task_publish.connect(receiver, weak=False)
    try:
        a.apply_async((1,), queue=new_queue())
        celery_sent = app.sends[-1]
        headers, properties = {"id": "x"}, {"correlation_id": "x", "reply_to": "", "priority": 0}
        before_publish("a", ((1,), {}, {}), "", "q", headers, properties, {})
    finally:
        before_task_publish.disconnect(receiver)
    assert celery_sent.message.headers["tenant"] == "t-1" and celery_sent.message.properties["reply_to"] == "replies", (
        broken("celery", "before_task_publish", "receivers' changes are no longer published")
    )
    assert headers["tenant"] == "t-1" and properties["reply_to"] == "replies" and properties["priority"] == 0


def test_after_publish_sends_after_task_publish_as_celery_does(make_app):
    """`after_task_publish` is sent with sender, body, headers, exchange and routing_key: vetro's copy sends
    the same arguments, of the same types."""
    app = make_app(publishes=True)
    (a,) = tasks(app, "a")
    queue = new_queue()
    with signal_kwargs(after_task_publish) as sent:
        a.apply_async((1,), queue=queue)
        celery_sent = sent[-1]
        after_publish("a", ((1,), {}, {}), "", queue, {"id": "x"})
        vetro_sent = sent[-1]
    assert_sent_alike("after_task_publish", vetro_sent, celery_sent)
    assert celery_sent["sender"] == "a" and celery_sent["routing_key"] == queue


# --- The worker ---------------------------------------------------------------------------------------------


class Screening(ScreeningConsumer):
    """Records what it screens and hands nothing on."""

    def screen(self, message: Any, handle: Callable[[Any], Any]) -> Any:
        self.screened.append((message, handle))
        return None


class AfterTasks(bootsteps.StartStopStep):
    """A consumer step like vetro's heartbeat: it needs the task consumer."""

    requires = (TASKS_STEP,)


def worker_consumer(app: Celery, consumer_cls: type = Consumer, **options: Any) -> Any:
    """A real Celery consumer, built as a WorkController builds it but not started, with Celery's base pool
    and kombu's timer unless given others. Its `controller` is a stand-in (only the pidbox reads it, for
    `use_eventloop`): a real WorkController sends `worker_init`, whose receivers (vetro's among them) a
    unit test must not run."""
    options.setdefault("timer", EventLoopTimer(max_interval=10.0))
    options.setdefault("pool", BasePool(limit=1))
    consumer = consumer_cls(
        lambda request: None,
        app=app,
        hostname="contract@probe",
        controller=SimpleNamespace(use_eventloop=False, state=worker_state),
        without_mingle=True,
        without_gossip=True,
        without_heartbeat=True,
        **options,
    )
    consumer.screened = []
    return consumer


@contextmanager
def tasks_step_started(consumer: Any) -> Iterator[Any]:
    """The consumer's Tasks step started on a memory:// connection, as the worker starts it."""
    step = next(step for step in consumer.blueprint.order if isinstance(step, symbol_by_name(TASKS_STEP)))
    consumer.connection = consumer.connect()
    try:
        step.start(consumer)
        yield step
    finally:
        step.shutdown(consumer)
        consumer.connection.close()


def test_screening_consumer_screens_every_message_before_celerys_handler(make_app):
    """Both worker loops ask the consumer for `create_task_handler()`; vetro's handler calls
    `screen(message, handle=...)` with the kombu message and Celery's own handler."""
    for loop in (loops.asynloop, loops.synloop):
        assert "create_task_handler" in loop.__code__.co_names, broken(
            "celery", f"worker.loops.{loop.__name__}", "no longer asks the consumer for create_task_handler()"
        )
    parameters = inspect.signature(Consumer.create_task_handler).parameters
    assert all(p.default is not p.empty for name, p in parameters.items() if name != "self"), broken(
        "celery", "Consumer.create_task_handler", "now needs arguments"
    )
    app = make_app()
    consumer = worker_consumer(app, Screening)
    handler = consumer.create_task_handler()
    handler("the message")
    ((message, handle),) = consumer.screened
    assert message == "the message"
    assert handle.__qualname__ == "Consumer.create_task_handler.<locals>.on_task_received", broken(
        "celery", "Consumer.create_task_handler", f"now returns {handle.__qualname__}"
    )


def test_tasks_step_is_the_consumer_step_that_sets_up_the_task_consumer(make_app):
    """`celery.worker.consumer.tasks:Tasks` is a default consumer bootstep; its start sets `task_consumer`,
    and a step that requires it by that name starts after it."""
    tasks_step = symbol_by_name(TASKS_STEP)
    assert issubclass(tasks_step, bootsteps.StartStopStep), broken("celery", TASKS_STEP, "is no longer a bootstep")
    assert TASKS_STEP in Consumer.Blueprint.default_steps, broken(
        "celery", "Consumer.Blueprint.default_steps", f"no longer include {TASKS_STEP}"
    )
    app = make_app(task_queues=[Queue(new_queue())])
    app.steps["consumer"].add(AfterTasks)
    consumer = worker_consumer(app)
    order = [type(step) for step in consumer.blueprint.order]
    assert AfterTasks in order and order.index(tasks_step) < order.index(AfterTasks), broken(
        "celery", "bootsteps.Blueprint", f"no longer starts a step requiring {TASKS_STEP} after it"
    )
    assert consumer.task_consumer is None
    with tasks_step_started(consumer):
        assert isinstance(consumer.task_consumer, kombu.Consumer), broken(
            "celery", TASKS_STEP, "no longer sets the consumer's task_consumer when it starts"
        )


def test_running_task_count_follows_the_tasks_a_worker_accepts_and_finishes(make_app):
    """`celery.worker.state.active_requests` holds each request from `task_accepted` to `task_ready`."""
    app = make_app(publishes=True)
    (a,) = tasks(app, "a")
    queue = new_queue()
    a.apply_async((1,), queue=queue)
    counts, total = worker_state.total_count.copy(), worker_state.all_total_count[:]
    try:
        with received(app, queue) as message:
            request = Request(message, app=app, task=a)
            before = running_task_count()
            worker_state.task_accepted(request)
            assert running_task_count() == before + 1, broken(
                "celery", "worker.state.task_accepted", "no longer adds the request to active_requests"
            )
            worker_state.task_ready(request)
            assert running_task_count() == before, broken(
                "celery", "worker.state.task_ready", "no longer removes the request from active_requests"
            )
    finally:
        worker_state.total_count.clear()
        worker_state.total_count.update(counts)
        worker_state.all_total_count[:] = total


def test_consumer_queues_are_the_queues_the_task_consumer_takes_from(make_app):
    """A consumer's `task_consumer` (None until the Tasks step starts) is a kombu consumer of the worker's
    queues, and a queue added at run time (`celery control add_consumer`) joins them."""
    first, second, added = sorted(new_queue() for _ in range(3))
    app = make_app(task_queues=[Queue(second), Queue(first)])
    consumer = worker_consumer(app)
    assert consumer_queues(consumer) == []
    with tasks_step_started(consumer):
        assert consumer_queues(consumer) == [first, second], broken(
            "celery", "Consumer.task_consumer", f"now consumes {consumer_queues(consumer)}"
        )
        consumer.add_task_queue(added)
        assert consumer_queues(consumer) == [first, second, added], broken(
            "celery", "Consumer.add_task_queue", "no longer adds the queue to task_consumer.queues"
        )
        consumer.cancel_task_queue(added)
        assert consumer_queues(consumer) == [first, second], broken(
            "celery", "Consumer.cancel_task_queue", "no longer removes the queue from task_consumer.queues"
        )
    assert consumer_queues(consumer) == []


def test_pool_size_is_the_prefork_pools_processes_else_the_configured_concurrency(make_app):
    """The prefork pool's `num_processes` property is its running processes; before it starts (or with a
    pool without it) the configured `worker_concurrency` is what a worker means to run."""
    assert isinstance(inspect.getattr_static(TaskPool, "num_processes"), property), broken(
        "celery", "concurrency.prefork.TaskPool.num_processes", "is no longer a property"
    )
    app = make_app(worker_concurrency=5)
    pool = TaskPool(limit=2, initargs=(app, "contract@probe"))  # as the worker's Pool step builds it
    consumer = worker_consumer(app, pool=pool)
    assert pool_size(consumer) == 5
    pool.start()
    try:
        assert pool_size(consumer) == 2, broken(
            "celery", "concurrency.prefork.TaskPool.num_processes", f"says {pool.num_processes} for 2 processes"
        )
    finally:
        pool.terminate()
    consumer.pool = None
    assert pool_size(consumer) == 5


def test_every_calls_a_function_on_the_workers_timer_until_cancelled(make_app):
    """The consumer's `timer` has `call_repeatedly(seconds, function, args, priority=)`, returning an entry
    whose `.cancel()` stops it: Celery's timer thread (a worker without an event loop) and kombu's timer
    (what the Timer step gives a worker with one)."""
    app = make_app()
    thread_timer = timer2.Timer()
    consumer = worker_consumer(app, timer=thread_timer)
    calls: list[str] = []
    try:
        entry = every(consumer, 0.01, calls.append, "beat")
        wait_until(lambda: len(calls) >= 2, 10, "timer2.Timer to call twice")
        entry.cancel()
        wait_until(lambda: len(thread_timer) == 0, 10, "a cancelled entry to leave timer2.Timer's schedule")
    finally:
        thread_timer.stop()
    assert set(calls) == {"beat"}, broken("celery", "utils.timer2.Timer.call_repeatedly", "no longer passes args")

    loop_timer = EventLoopTimer(max_interval=10.0)
    consumer.timer = loop_timer
    calls.clear()
    entry = every(consumer, 0.01, calls.append, "beat")
    scheduled = iter(loop_timer)
    deadline = time.monotonic() + 10

    def run_due() -> None:
        delay, due = next(scheduled)
        if due is not None:
            loop_timer.apply_entry(due)
        elif delay:
            threading.Event().wait(min(delay, 0.01))

    while len(calls) < 2 and time.monotonic() < deadline:
        run_due()
    assert calls == ["beat", "beat"], broken("kombu", "asynchronous.timer.Timer.call_repeatedly", "no longer repeats")
    entry.cancel()
    while len(loop_timer) and time.monotonic() < deadline:
        run_due()
    assert len(loop_timer) == 0 and calls == ["beat", "beat"], broken(
        "kombu", "asynchronous.timer.Entry.cancel", "no longer stops a repeated call"
    )


def test_queue_of_is_the_queue_a_message_was_taken_from(make_app):
    """Celery publishes to the default exchange with the queue's name as routing key (even for a queue
    declared with its own exchange and key), and kombu's message, Celery's worker request and the running
    task's request carry it in `delivery_info`."""
    plain, own = new_queue(), new_queue()
    app = make_app(publishes=True, task_queues=[Queue(plain), Queue(own, Exchange(f"{own}.x"), routing_key="key")])

    @app.task(name="where", bind=True, shared=False)
    def where(self: Task) -> str | None:
        return queue_of(self.request)

    for queue in (plain, own):
        where.apply_async(queue=queue)
        with received(app, queue) as message:
            request = Request(message, app=app, task=where)
            shown = (queue_of(message), queue_of(request), request.execute())
            assert shown == (queue, queue, queue), broken(
                "celery", "delivery_info['routing_key']", f"is {shown} for a message taken from {queue}"
            )
    assert queue_of(SimpleNamespace()) is None and queue_of(SimpleNamespace(delivery_info=None)) is None


# --- A running task's request -------------------------------------------------------------------------------


def test_header_reads_a_message_header_as_a_field_of_the_running_request(make_app):
    """A worker makes each custom header of a message a field of the task's request (`Context.get`)."""
    app = make_app(publishes=True)

    @app.task(name="reads", bind=True, shared=False)
    def reads(self: Task) -> tuple:
        return header(self.request, "vetro_probe"), header(self.request, "vetro_absent", "default")

    queue = new_queue()
    reads.apply_async(queue=queue, headers={"vetro_probe": "v"})
    with received(app, queue) as message:
        got = Request(message, app=app, task=reads).execute()
    assert tuple(got) == ("v", "default"), broken(
        "celery", "Context (task.request)", f"no longer has a message's custom headers as fields: {got}"
    )
    reads.push_request(id="x", vetro_probe="pushed")
    try:
        assert header(reads.request, "vetro_probe") == "pushed"
    finally:
        reads.pop_request()


def test_attach_keeps_a_value_on_the_request_that_run_body_hands_to_the_body(make_app):
    """`Task.__call__` pushes a request built from the running one (`push_request` copies its fields), so
    what is attached to the worker's request is read by the body `run_body` runs; a task with its own
    `__call__` is called by Celery's tracer."""

    class Attaching(Task):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            attach(self.request, "vetro_job", f"job-of-{self.request.id}")
            return run_body(self, args, kwargs)

    app = make_app()

    @app.task(name="body", bind=True, base=Attaching, shared=False)
    def body(self: Task, x: int) -> tuple:
        return attached(self.request, "vetro_job"), x, self.request.id, tuple(self.request.args or ())

    got = body.apply((5,), task_id="run-1").get()
    assert tuple(got) == ("job-of-run-1", 5, "run-1", (5,)), broken(
        "celery", "Task.__call__/push_request", f"no longer hands the body the running request's fields: {got}"
    )
    body.push_request(id="run-2")
    try:
        attach(body.request, "vetro_job", "J")
        assert attached(body.request, "vetro_job") == "J"
        assert run_body(body, (6,), {}) == ("J", 6, "run-2", (6,)), broken(
            "celery", "Task.__call__", "no longer pushes a request with the arguments it is called with"
        )
    finally:
        body.pop_request()
    assert attached(body.request, "vetro_job") is None


# --- Results ------------------------------------------------------------------------------------------------


READ: dict[str, dict[str, Any]] = {}


class Results(ReadOnlyBackend):
    """Reads what a test put in READ."""

    reads: ClassVar[list[str]] = []

    def read(self, task_id: str) -> dict[str, Any]:
        self.reads.append(task_id)
        return READ.get(task_id, {"status": "PENDING", "result": None, "traceback": None})


def test_read_only_backend_reads_every_result_through_read(make_app):
    """`AsyncResult` reads through the backend's `_get_task_meta_for`; what Celery would store, forget or
    restore goes to hooks that here do nothing; a backend that `supports_autoexpire` gets no cleanup task."""
    app = make_app(backend=f"{__name__}:Results", result_expires=3600)
    READ["ro-1"] = {"status": "SUCCESS", "result": 3, "traceback": None}
    try:
        result = app.AsyncResult("ro-1")
        assert result.get(timeout=1) == 3 and result.state == "SUCCESS", broken(
            "celery", "BaseBackend._get_task_meta_for", "is no longer how AsyncResult reads a result"
        )
        assert "ro-1" in Results.reads
        assert app.AsyncResult("ro-unknown").state == "PENDING"
        app.backend.store_result("ro-1", 4, "SUCCESS")
        app.backend.mark_as_failure("ro-2", ValueError("x"))
        app.backend.forget("ro-1")
        assert GroupResult.restore("group-1", app=app) is None, broken(
            "celery", "GroupResult.restore", "no longer reads through the backend's _restore_group"
        )
        app.backend.save_group("group-1", GroupResult("group-1", [app.AsyncResult("ro-1")], app=app))
        app.backend.delete_group("group-1")
    finally:
        READ.clear()
    scheduler = Scheduler(app, lazy=True)
    scheduler.install_default_entries({})
    assert "celery.backend_cleanup" not in scheduler.schedule, broken(
        "celery", "Scheduler.install_default_entries", "schedules backend_cleanup for a supports_autoexpire backend"
    )


class Boom(Exception):  # noqa: N818 (the name the failure line shows: "Boom(...)")
    pass


class Outer:
    class NestedError(Exception):
        pass


def test_failure_meta_is_a_failure_as_celerys_backends_serialize_an_exception(make_app):
    """`Backend.exception_to_python` rebuilds an exception from exc_type, exc_module and exc_message, the
    keys `prepare_exception` writes with a JSON serializer; `AsyncResult` rebuilds a read FAILURE with it."""
    app = make_app(backend=f"{__name__}:Results")
    backend = app.backend
    rebuilt = backend.exception_to_python(failure_meta("builtins.ValueError", "x"))
    assert type(rebuilt) is ValueError and rebuilt.args == ("x",), broken(
        "celery", "Backend.exception_to_python", f"rebuilt {rebuilt!r} from failure_meta"
    )
    prepared = backend.prepare_exception(Boom("no"), "json")
    meta = failure_meta(f"{Boom.__module__}.{Boom.__qualname__}", "no")
    assert set(meta) == set(prepared), broken("celery", "Backend.prepare_exception", f"now writes {sorted(prepared)}")
    assert {**meta, "exc_message": list(meta["exc_message"])} == {
        **prepared,
        "exc_message": list(prepared["exc_message"]),
    }, broken("celery", "Backend.prepare_exception", f"now writes {prepared}, not {meta}")
    READ["failed-1"] = {"status": "FAILURE", "result": meta, "traceback": None}
    try:
        with pytest.raises(Boom, match=r"^no$"):
            app.AsyncResult("failed-1").get(timeout=1)
    finally:
        READ.clear()


def test_failure_meta_rebuilds_an_exception_class_nested_in_a_class(make_app):
    """Celery serializes exc_module as the class's `__module__` and exc_type as its `__qualname__`, and
    rebuilds a nested class by walking the qualified name: what `failure_meta` makes of the
    '<module>.<qualified name>' vetro records is what Celery would have written."""
    backend = make_app(backend=f"{__name__}:Results").backend
    kind = Outer.NestedError
    meta = failure_meta(f"{kind.__module__}.{kind.__qualname__}", "x")
    prepared = backend.prepare_exception(kind("x"), "json")
    assert meta == {**prepared, "exc_message": list(prepared["exc_message"])}, broken(
        "celery", "Backend.prepare_exception", f"now writes {prepared} for a nested class, not {meta}"
    )
    assert type(backend.exception_to_python(meta)) is kind, broken(
        "celery", "Backend.exception_to_python", "no longer rebuilds a nested class from its qualified name"
    )
    gone = backend.exception_to_python(failure_meta("vetro_no_such_module.sub.GoneError", "y"))
    assert isinstance(gone, Exception) and type(gone).__name__ == "GoneError" and gone.args == ("y",), broken(
        "celery", "Backend.exception_to_python", f"rebuilt {gone!r} for a class it cannot import"
    )


# --- Celery's task trace log lines --------------------------------------------------------------------------


@contextmanager
def trace_records() -> Iterator[list[logging.LogRecord]]:
    """The records of Celery's trace logger at INFO (the tracer asks whether INFO is on when it is built)."""
    logger = logging.getLogger(TRACE_LOGGER)
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = records.append
    level, disabled = logger.level, logger.disabled
    logger.setLevel(logging.INFO)
    logger.disabled = False
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.disabled = disabled


def traced(make_app: Callable[..., Celery]) -> tuple[logging.LogRecord, logging.LogRecord, str, str]:
    """The trace records of a task that succeeds and of one that raises an expected (`throws`) error."""
    app = make_app()

    @app.task(name="succeeds", shared=False)
    def succeeds() -> str:
        return "the-result-value"

    @app.task(name="fails", shared=False, throws=(Boom,))
    def fails() -> None:
        raise Boom("expected")

    with trace_records() as records:
        succeeds.apply(task_id="ok-1")
        fails.apply(task_id="bad-1")
    (success,) = [r for r in records if isinstance(r.args, dict) and r.args.get("id") == "ok-1"]
    (failure,) = [r for r in records if isinstance(r.args, dict) and r.args.get("id") == "bad-1"]
    return success, failure, "ok-1", "bad-1"


def test_trace_logger_is_the_logger_celerys_tracer_logs_each_outcome_to(make_app):
    """`celery.app.trace` logs a success and an expected failure at INFO, each with a dict of arguments."""
    from celery.app import trace

    assert trace.logger.name == TRACE_LOGGER, broken("celery", "app.trace.logger", f"is now {trace.logger.name}")
    success, failure, _, _ = traced(make_app)
    assert success.name == failure.name == TRACE_LOGGER and success.levelno == failure.levelno == logging.INFO, broken(
        "celery", "app.trace", "no longer logs a success and an expected failure at INFO on its logger"
    )


def test_success_line_is_celerys_success_line_without_the_result(make_app):
    """The success record's arguments hold name, id, runtime and return_value (`LOG_SUCCESS`)."""
    success, failure, task_id, _ = traced(make_app)
    line = success_line(success.args)
    assert line is not None and line.startswith(f"Task succeeds[{task_id}] succeeded in "), broken(
        "celery", "app.trace.LOG_SUCCESS", f"arguments are now {sorted(success.args)}"
    )
    assert success.getMessage().startswith(line.rsplit(" in ", 1)[0] + " in "), broken(
        "celery", "app.trace.LOG_SUCCESS", f"now reads {success.getMessage()!r}"
    )
    assert "the-result-value" in success.getMessage() and "the-result-value" not in line
    assert success_line(failure.args) is None and success_line(None) is None


def test_failure_shown_is_how_celerys_failure_line_shows_the_exception(make_app):
    """The failure record's arguments hold the exception's repr as `exc` (`LOG_FAILURE`)."""
    success, failure, _, task_id = traced(make_app)
    shown = failure_shown(failure.args)
    assert shown.startswith("Boom(") and "expected" in shown, broken(
        "celery", "app.trace.LOG_FAILURE", f"arguments are now {sorted(failure.args)}"
    )
    assert failure.getMessage() == f"Task fails[{task_id}] raised expected: {shown}", broken(
        "celery", "app.trace.LOG_FAILURE", f"now reads {failure.getMessage()!r}"
    )
    assert failure_shown(success.args) == "" and failure_shown(None) == ""


# --- Canvas: how Celery serializes and sends signatures -----------------------------------------------------

CANVAS: list[dict[str, Any]] = []


class Recorded(Task):
    """Records the options Celery's canvas gives each task's apply_async, and sends nothing."""

    def apply_async(self, args: Any = None, kwargs: Any = None, task_id: Any = None, producer: Any = None, **options):
        CANVAS.append({"task": self.name, "args": args, **options})
        return self.AsyncResult(task_id or "id")


def canvas_app(make_app: Callable[..., Celery]) -> list[Task]:
    CANVAS.clear()
    app = make_app(backend=f"{__name__}:Results")  # a chord asks the backend's apply_chord first
    return tasks(app, "a", "b", "c", "d", base=Recorded)


def test_chain_rest_is_the_rest_of_a_chain_in_order(make_app):
    """A chain sends only its first task, with the rest in its `chain` option, last first."""
    a, b, c, _ = canvas_app(make_app)
    result = chain(a.s(1), b.s(), c.s()).apply_async()
    (first,) = CANVAS
    rest = chain_rest(first)
    assert first["task"] == "a" and [s["task"] for s in rest] == ["b", "c"], broken(
        "celery", "chain.run", f"now sends {first['task']} with chain {[s['task'] for s in first.get('chain', [])]}"
    )
    assert rest[-1]["options"]["task_id"] == result.id, broken("celery", "chain.run", "no longer ends with its result")
    assert chain_rest({}) == [] and chain_rest({"chain": None}) == []


def test_chain_last_options_are_the_options_of_the_chains_last_task(make_app):
    """A chain that is a group's member sends its first task; the group's marks are on its last task's
    options, kept first in the `chain` option; a member that is one task carries them itself."""
    a, b, c, d = canvas_app(make_app)
    chord([chain(a.s(1), b.s()), c.s(2)], d.s()).apply_async()
    first, second = CANVAS
    last = chain_last_options(first)
    assert last is first["chain"][0]["options"] and last.get("group_index") == 0, broken(
        "celery", "chord/group freeze", "no longer marks the last task of a chain that is a member"
    )
    assert chain_last_options(second) is second and second.get("group_index") == 1
    assert last.get("group_id") == second.get("group_id") is not None


def test_membership_is_what_freezing_a_group_or_chord_puts_on_its_members(make_app):
    """Each member of a chord (the last task of a chained one) carries group_id, group_index and chord."""
    a, b, c, d = canvas_app(make_app)
    chord([chain(a.s(1), b.s()), c.s(2)], d.s()).apply_async()
    for member in CANVAS:
        marks = chain_last_options(member)
        missing = [name for name in MEMBERSHIP if marks.get(name) is None]
        assert not missing, broken("celery", "chord freeze", f"no longer puts {missing} on the member {member['task']}")
        assert marks["chord"]["task"] == "d"
    CANVAS.clear()
    group(chain(a.s(1), b.s()), c.s(2)).apply_async()
    for member in CANVAS:
        marks = chain_last_options(member)
        assert marks.get("group_id") is not None and marks.get("group_index") is not None, broken(
            "celery", "group freeze", f"no longer puts group_id and group_index on the member {member['task']}"
        )


def _json(value: Any) -> Any:
    """As a message carries it: JSON."""
    return json.loads(json.dumps(value))


def test_task_signature_is_a_task_signature_as_celery_serializes_it(make_app):
    """A `Signature` is a dict of task, args, kwargs, options, subtask_type and immutable."""
    app = make_app()
    (a,) = tasks(app, "a")
    celerys = a.s(1, k=2).set(task_id="t-1", queue="q")
    ours = task_signature("a", [1], {"k": 2}, {"task_id": "t-1", "queue": "q"})
    assert _json(ours) == _json(celerys), broken("celery", "Signature", f"now serializes as {_json(celerys)}")
    rebuilt = signature(ours, app=app)
    assert type(rebuilt) is type(celerys) and _json(rebuilt) == _json(celerys) and rebuilt.id == "t-1", broken(
        "celery", "Signature.from_dict", "no longer reads a task signature's dict"
    )


def test_group_signature_is_a_group_as_celery_serializes_it(make_app):
    """A group serializes as `celery.group` with its members in kwargs.tasks and its id as task_id."""
    app = make_app()
    a, b = tasks(app, "a", "b")
    members = [a.s(1), b.s(2)]
    celerys = group(members)
    celerys.set(task_id="g-1")
    ours = group_signature([_json(member) for member in members], "g-1")
    assert _json(ours) == _json(celerys), broken("celery", "group", f"now serializes as {_json(celerys)}")
    rebuilt = signature(_json(ours), app=app)
    assert isinstance(rebuilt, group) and rebuilt.id == "g-1" and _json(list(rebuilt.tasks)) == _json(members), broken(
        "celery", "group.from_dict", "no longer reads a group's dict"
    )


def test_chord_signature_is_a_chord_celery_reads_back(make_app):
    """A chord serializes as `celery.chord` with kwargs.header and kwargs.body. Celery itself writes the
    header as a list of its tasks; a header written as a group (as vetro does) reads back the same chord."""
    app = make_app()
    a, b, c = tasks(app, "a", "b", "c")
    members, body = [a.s(1), b.s(2)], c.s()
    celerys = chord(members, body)
    ours = chord_signature(group_signature([_json(member) for member in members], "g-1"), _json(body))
    assert {k: v for k, v in _json(ours).items() if k != "kwargs"} == {
        k: v for k, v in _json(celerys).items() if k != "kwargs"
    }, broken("celery", "chord", f"now serializes as {_json(celerys)}")
    assert {"header", "body"} <= set(_json(celerys)["kwargs"]), broken(
        "celery", "chord", "no longer keeps its header and body in kwargs"
    )
    rebuilt, own = signature(_json(ours), app=app), signature(_json(celerys), app=app)
    assert type(rebuilt) is type(own) and _json(list(rebuilt.tasks)) == _json(list(own.tasks)) == _json(members), (
        broken("celery", "chord.from_dict", "no longer reads a chord whose header is a group's dict")
    )
    assert _json(rebuilt.body) == _json(own.body) == _json(body)


# --- Revoke ---------------------------------------------------------------------------------------------------


@contextmanager
def revoke_listener(extra: list[str]) -> Iterator[list[tuple[list[str], str]]]:
    """A revoke listener for the test's length: it records what it is told and answers `extra`."""
    from pipeline.adapter import internals

    told: list[tuple[list[str], str]] = []

    def listen(task_ids: list[str], by: str) -> list[str]:
        told.append((task_ids, by))
        return extra

    on_revoke(listen)
    try:
        yield told
    finally:
        internals._revoke_listeners.remove(listen)


def test_a_workers_revoke_command_tells_the_listeners_and_revokes_what_they_add(make_app):
    """Celery's `revoke` control command (what `celery control revoke` and `app.control.revoke` reach) is the
    entry of `Panel.data`, called as (state, task_id, terminate, signal, **arguments)."""
    from celery.worker.control import Panel

    extra = f"running-{uuid.uuid4().hex[:6]}"
    asked = f"asked-{uuid.uuid4().hex[:6]}"
    with revoke_listener([extra]) as told:
        state = SimpleNamespace(app=make_app())
        reply = Panel.data["revoke"](state, task_id=[asked], terminate=False, **{REVOKED_BY: "probe"})
    try:
        assert told == [([asked], "probe")], broken("celery", "Panel.data['revoke']", "is no longer vetro's wrapper")
        assert {asked, extra} <= set(worker_state.revoked), broken(
            "celery", "worker.control.revoke", f"no longer flags the ids it is given as revoked (replied {reply})"
        )
    finally:
        worker_state.revoked.discard(asked)
        worker_state.revoked.discard(extra)


def test_app_control_revoke_tells_the_listeners_then_broadcasts_with_who_sent_it(make_app, monkeypatch):
    """`AsyncResult.revoke()` calls `app.control.revoke`, which broadcasts 'revoke' with its keyword arguments."""
    app = make_app(base=BracketingCelery)
    assert isinstance(app.control, ListeningControl), broken("celery", "Celery.control_cls", "is no longer used")
    sent: list[tuple[str, dict]] = []

    def broadcast(mailbox: Any, command: str, arguments: dict, *args: Any, **kwargs: Any) -> None:
        sent.append((command, arguments))

    monkeypatch.setattr(kombu.pidbox.Mailbox, "_broadcast", broadcast)
    with revoke_listener(["step-2"]) as told:
        app.AsyncResult("job-1").revoke()
    assert told == [(["job-1"], "AsyncResult.revoke")]
    (command, arguments) = sent[0]
    assert command == "revoke" and arguments["task_id"] == ["job-1", "step-2"], broken(
        "celery", "Control.revoke", f"now broadcasts {command} {arguments}"
    )
    assert arguments.get(REVOKED_BY) == "AsyncResult.revoke", broken("celery", "Control.revoke", "drops arguments")


def test_app_control_revoke_still_broadcasts_when_a_listener_cannot_note_it(make_app, monkeypatch):
    """The results store is down, the broker is not: the workers are still told (each notes the job itself),
    and the caller still hears that it could not be noted here."""
    from pipeline.adapter import internals

    app = make_app(base=BracketingCelery)
    sent: list[dict] = []
    monkeypatch.setattr(kombu.pidbox.Mailbox, "_broadcast", lambda _, __, arguments, *a, **k: sent.append(arguments))

    def down(task_ids: list[str], by: str) -> list[str]:
        raise ConnectionError("the results store is down")

    on_revoke(down)
    try:
        with pytest.raises(ConnectionError):
            app.AsyncResult("job-1").revoke()
    finally:
        internals._revoke_listeners.remove(down)
    assert [arguments["task_id"] for arguments in sent] == [["job-1"]]
