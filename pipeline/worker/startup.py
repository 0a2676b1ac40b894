"""What a worker does when it starts: load what settings name, and check that Redis keeps its data.

The pipelines (VETRO_PIPELINES) and the dead-letter store (VETRO_DEAD_LETTER_STORE) are
imported here, so a stock `celery -A pipeline worker` runs any pipeline module, and a bad name
stops the worker with one line.

vetro keeps queued messages, step results and the job ledger in Redis. Without persistence a
Redis restart forgets all of them; with an evicting memory policy Redis deletes them under
memory pressure (vetro's keys all have lifetimes, so even the volatile-* policies pick them).
Either way jobs vanish with no trace, which no reconciler can repair. The worker says so
clearly at start, or refuses to start when VETRO_REQUIRE_DURABLE_REDIS is set. On a Redis Cluster,
each master is checked: any one of them can lose its share of the jobs.

A step's lease ends by the clock of the worker that claimed it and is read by the clock of the next
(pipeline.jobs.guard): a host whose clock is off the result store's Redis is logged at start, as are
workers of a release before that do not read the job records this one opens.

It also removes a binding earlier releases left on the broker (see `unbind_stale_control_queue`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from celery.signals import worker_init
from redis.cluster import RedisCluster

from pipeline.adapter.app import app
from pipeline.adapter.internals import unbind
from pipeline.jobs.pipelines import load_pipelines
from pipeline.jobs.sink import load_dead_letter_store
from pipeline.jobs.stages import LEASE_MARGIN
from pipeline.redis_servers import connect, where
from pipeline.store import redis_client
from pipeline.telemetry import heartbeat
from settings import ConfigError, get_settings

log = logging.getLogger("vetro.worker")
CLOCK_OFF_WARNED = 1.0  # seconds


def durability_problems(client: redis.Redis) -> list[str]:
    """What in this Redis's configuration can lose vetro's data; [] when nothing can."""
    try:
        config = {**client.config_get("appendonly"), **client.config_get("maxmemory*")}
    except redis.RedisError as error:
        return [f"its configuration could not be read ({type(error).__name__}: {error}); check it yourself"]
    problems = []
    if config.get("appendonly") != "yes":
        problems.append(
            "appendonly is off: a restart loses every queued message, step result and job record "
            "written since the last snapshot (turn on appendonly yes)"
        )
    policy = config.get("maxmemory-policy", "noeviction")
    if int(config.get("maxmemory") or 0) and policy != "noeviction":
        problems.append(
            f"maxmemory-policy is {policy}: when memory runs short Redis deletes messages and job "
            "records instead of refusing writes (set maxmemory-policy noeviction)"
        )
    return problems


def _servers(url: str, client: redis.Redis | RedisCluster) -> list[tuple[str, redis.Redis]]:
    """Each server behind `url` that holds vetro's data, named: a cluster's masters, else the one server."""
    if isinstance(client, RedisCluster):
        return [
            (f"the Redis Cluster master {node.name}", client.get_redis_connection(node))
            for node in client.get_primaries()
        ]
    return [(where(url), client)]


def check_redis_durability() -> None:
    """Warn about (or, if required, refuse) a Redis that can lose vetro's data: every problem of every server is
    logged, then a refusal names the first."""
    settings = get_settings()
    urls = {settings.results_url}
    if settings.broker_is_redis:
        urls.add(settings.broker_url)
    found = []
    for url in sorted(urls):
        try:
            client = connect(url, socket_connect_timeout=2, socket_timeout=5, decode_responses=True)
        except redis.RedisError as error:  # a Redis Cluster is reached as its client is made
            found.append((where(url), f"its configuration could not be read ({error}); check it yourself"))
            continue
        try:
            found += [
                (name, problem) for name, server in _servers(url, client) for problem in durability_problems(server)
            ]
        finally:
            client.close()
    for name, problem in found:
        log.warning("%s can lose jobs: %s", name, problem)
    if found and settings.require_durable_redis:
        name, problem = found[0]
        more = f" (and {len(found) - 1} more problem(s), logged above)" if len(found) > 1 else ""
        raise SystemExit(f"vetro: {name} can lose jobs: {problem}{more} (VETRO_REQUIRE_DURABLE_REDIS)")


def check_clock() -> float | None:
    """Log an error when this host's clock is more than CLOCK_OFF_WARNED seconds off the result store's Redis: leases
    hold only while hosts agree within LEASE_MARGIN. Returns the offset (None if Redis could not say)."""
    try:
        before = time.time()
        seconds, microseconds = redis_client().time()
        after = time.time()
    except redis.RedisError as error:
        log.warning("could not compare this host's clock with Redis's (%s)", error)
        return None
    offset = (before + after) / 2 - (seconds + microseconds / 1e6)
    if abs(offset) > CLOCK_OFF_WARNED:
        log.error(
            "this host's clock is %+.1f s off the result store's Redis: a step's lease holds only while hosts' "
            "clocks agree within %s s (synchronise them, e.g. with NTP)",
            offset,
            LEASE_MARGIN,
        )
    return offset


def check_older_workers() -> None:
    """Log an error if workers of a release before run beside this one while jobs open in a format they do not read."""
    try:
        hazard = heartbeat.older_readers(get_settings().ledger_format, heartbeat.workers(), time.time())
    except redis.RedisError as error:
        log.warning("could not read the other workers' heartbeats (%s)", error)
        return
    if hazard:
        log.error(hazard)


def load_configured_modules() -> None:
    """The pipelines and the dead-letter store settings name; a bad name ends the process in one line."""
    try:
        load_pipelines()
        load_dead_letter_store()
    except ConfigError as error:
        raise SystemExit(f"vetro: bad configuration: {error}") from None


# Celery imports this module (pipeline.adapter.app.CORE_MODULES) before it sends any start-up signal, so
# what the loaded modules connect to those signals (the store's migration check) still runs.
load_configured_modules()


def unbind_stale_control_queue() -> None:
    """Earlier releases bound the control queue by the default queue's key, so a message routed that way
    by hand reached both queues; the binding stays on the broker until removed (the queue is now bound by
    its own name, pipeline.adapter.app.bound_queue)."""
    settings = get_settings()
    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1)
            unbind(connection.default_channel, settings.control_queue, settings.queue, settings.queue)
    except Exception as error:  # the broker is reached again later; a binding left in place is harmless to vetro
        log.warning("could not remove the control queue's old binding (%s: %s)", type(error).__name__, error)


@worker_init.connect
def _check_at_start(**_: Any) -> None:
    check_redis_durability()
    check_clock()
    check_older_workers()
    unbind_stale_control_queue()
