"""Circuit breakers per external dependency, with state shared by every worker in Redis.

pybreaker does the state machine; this module adds what a fleet of workers needs:
- the state lives in Redis (`CircuitRedisStorage`), so failures on any worker count together;
- half-open lets one trial call through across all workers (a Redis lock), not one per worker;
- only unhealthy answers count (timeouts, connection errors, 5xx); a 4xx or 429 does not;
- an open breaker raises DependencyWaitError with the seconds to half-open, so the stage waits
  instead of spending retries.

When the breaker's Redis cannot be reached, calls go ahead without a breaker (fail-open), after
one probe bounded by STORE_TIMEOUT, and a warning is logged at most once a minute: an outage
of the breaker store must not stop the pipeline, and the stage's own backoff still limits load.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import pybreaker
import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from pipeline.failures import DependencyWaitError, is_unbuildable_request, loaded_httpx
from pipeline.redis_servers import connect, read_keys
from pipeline.telemetry import metrics
from settings import get_settings

log = logging.getLogger("vetro.breakers")
T = TypeVar("T")

NAMESPACE = "vetro:breaker"
STORE_TIMEOUT = 0.5  # seconds for any one breaker-store command; bounds the delay when Redis is gone
TRIAL_MARGIN = 2  # seconds a half-open trial lock outlives the longest HTTP call
WARN_EVERY = 60  # seconds between two "breaker store unreachable" warnings
KEY_TTL = 7 * 24 * 3600  # seconds a breaker's keys outlive their last change (a missing breaker is closed)


class _Expiring:
    """Mixed into a client so that every key pybreaker writes gets a lifetime (pybreaker 1.4.1 sets none).
    Each of pybreaker's writes touches one key, so a Redis Cluster takes them as they are."""

    def set(self, name: str, value: Any, *args: Any, **kwargs: Any) -> Any:
        if not args and not any(kwargs.get(option) for option in ("ex", "px", "exat", "pxat", "keepttl")):
            kwargs["ex"] = KEY_TTL
        return super().set(name, value, *args, **kwargs)

    def setnx(self, name: str, value: Any) -> Any:
        return super().set(name, value, nx=True, ex=KEY_TTL)

    def incr(self, name: str, amount: int = 1) -> Any:
        pipe = self.pipeline(transaction=True)  # one key: one slot
        pipe.incrby(name, amount)
        pipe.expire(name, KEY_TTL)
        return pipe.execute()[0]

    def transaction(self, func: Any, *watches: str, **kwargs: Any) -> Any:
        result = super().transaction(func, *watches, **kwargs)
        for name in watches:
            self.expire(name, KEY_TTL)
        return result


class _ExpiringClient(_Expiring, redis.Redis):
    pass


class _ExpiringCluster(_Expiring, RedisCluster):
    pass


class _SnapshotStorage(pybreaker.CircuitRedisStorage):
    """pybreaker's Redis storage, answering a call's reads from the snapshot `call` has just taken (one MGET).

    pybreaker reads the state once or twice per call and sets the failure count to 0 after every
    success: three round trips for each HTTP call through a closed breaker. With the snapshot, a
    success costs none of its own, and the count is reset only if it was not 0 when the call
    began. A failure, a change of state and every call outside `seen` go to Redis as before.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._snapshot = threading.local()
        super().__init__(*args, **kwargs)

    @contextmanager
    def seen(self, state: str, failures: int) -> Iterator[None]:
        self._snapshot.value = (state, failures)
        try:
            yield
        finally:
            self._snapshot.value = None

    def _seen(self) -> tuple[str, int] | None:
        return getattr(self._snapshot, "value", None)

    @property
    def state(self) -> str:
        seen = self._seen()
        return seen[0] if seen else super().state

    @state.setter
    def state(self, state: str) -> None:
        self._snapshot.value = None  # the state changed: what was read before no longer holds
        pybreaker.CircuitRedisStorage.state.fset(self, state)  # type: ignore[attr-defined]

    def reset_counter(self) -> None:
        seen = self._seen()
        if seen is None or seen[1]:
            super().reset_counter()


def is_unhealthy(exc: BaseException) -> bool:
    """Does this failure say the dependency is unhealthy (as opposed to rejecting our request)?"""
    httpx = loaded_httpx()
    if httpx and isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code >= 500
    if is_unbuildable_request(exc):
        return False
    return isinstance(exc, TimeoutError | ConnectionError) or bool(httpx and isinstance(exc, httpx.TransportError))


class LoggingListener(pybreaker.CircuitBreakerListener):
    """Logs every state change this process sees (its own, or noticed from another worker)."""

    def state_change(self, cb: pybreaker.CircuitBreaker, old_state: Any, new_state: Any) -> None:
        old = old_state.name if old_state else "?"
        if old == new_state.name:
            return
        log.warning("breaker %s: %s -> %s (pid %d)", cb.name, old, new_state.name, os.getpid())
        metrics.count(metrics.BREAKER_TRANSITIONS, cb.name, new_state.name)
        # When it last changed, for operators: each process that sees the change notes the time (one that
        # notices it from another worker's write, a moment later). A store that is down is the breaker's to bear.
        with contextlib.suppress(redis.RedisError):
            _local().client.set(_key(cb.name, "changed_at"), str(int(time.time())))


@dataclass
class _Process:
    """This process's breakers and store client (rebuilt after fork)."""

    pid: int
    client: redis.Redis
    breakers: dict[str, pybreaker.CircuitBreaker]
    storages: dict[str, _SnapshotStorage]


_process: _Process | None = None
_last_warning = 0.0  # when this process last warned that the store is unreachable


def _local() -> _Process:
    global _process
    if _process is None or _process.pid != os.getpid():
        # No retries and short timeouts: a slow or gone store costs one STORE_TIMEOUT, not several.
        # decode_responses must stay off: pybreaker's Redis storage decodes bytes itself.
        client = connect(
            get_settings().breaker_url,
            _ExpiringClient,
            _ExpiringCluster,
            socket_connect_timeout=STORE_TIMEOUT,
            socket_timeout=STORE_TIMEOUT,
            retry=Retry(NoBackoff(), 0),
            decode_responses=False,
        )
        _process = _Process(os.getpid(), client, {}, {})
    return _process


def _key(dependency: str, name: str) -> str:
    return f"{NAMESPACE}:{dependency}:pybreaker:{name}"


def breaker(dependency: str) -> pybreaker.CircuitBreaker:
    """The breaker of a dependency; raises redis.RedisError if its store cannot be reached."""
    local = _local()
    found = local.breakers.get(dependency)
    if found is None:
        policy = get_settings().breaker_policy(dependency)
        # pybreaker initialises its Redis keys here, and raises if Redis is down: not cached then.
        storage = _SnapshotStorage(pybreaker.STATE_CLOSED, local.client, namespace=f"{NAMESPACE}:{dependency}")
        found = pybreaker.CircuitBreaker(
            fail_max=policy.fail_max,
            reset_timeout=policy.reset_timeout,
            exclude=[lambda exc: not is_unhealthy(exc)],
            listeners=[LoggingListener()],
            state_storage=storage,
            name=dependency,
        )
        local.breakers[dependency], local.storages[dependency] = found, storage
    return found


def _seconds_to_half_open(dependency: str, opened_at: bytes | None) -> float:
    if not opened_at:
        return 0.0
    return max(0.0, int(opened_at) + get_settings().breaker_policy(dependency).reset_timeout - time.time())


def _warn_unreachable(dependency: str, error: Exception) -> None:
    global _last_warning
    if time.monotonic() - _last_warning > WARN_EVERY:
        _last_warning = time.monotonic()
        log.warning("breaker store unreachable (%s): calling %s without a circuit breaker", error, dependency)


def call(dependency: str, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call `function` through the dependency's breaker."""
    if not get_settings().breakers_enabled:
        return function(*args, **kwargs)
    try:
        local = _local()  # a Redis Cluster store is reached as its client is made
        cb = breaker(dependency)
        keys = [_key(dependency, name) for name in ("state", "opened_at", "fail_counter")]
        state, opened_at, failures = read_keys(local.client, keys)
    except redis.RedisError as error:
        _warn_unreachable(dependency, error)
        return function(*args, **kwargs)
    state = (state or b"closed").decode()
    if state == pybreaker.STATE_CLOSED:
        with local.storages[dependency].seen(state, int(failures or 0)):
            return _through(cb, dependency, function, *args, **kwargs)
    wait = _seconds_to_half_open(dependency, opened_at)
    if state == pybreaker.STATE_OPEN and wait > 0:
        raise DependencyWaitError(f"breaker {dependency} is open", retry_after=wait)
    # Time for a trial call: one for the whole fleet.
    trial_key = _key(dependency, "trial")
    trial_seconds = get_settings().http_connect_timeout + get_settings().http_read_timeout + TRIAL_MARGIN
    if not local.client.set(trial_key, os.getpid(), nx=True, px=int(trial_seconds * 1000)):
        raise DependencyWaitError(f"breaker {dependency}: a trial call is under way", retry_after=trial_seconds)
    try:
        return _through(cb, dependency, function, *args, **kwargs)
    finally:
        local.client.delete(trial_key)


def _through(
    cb: pybreaker.CircuitBreaker,
    dependency: str,
    function: Callable[..., T],
    *args: Any,
    **kwargs: Any,
) -> T:
    try:
        return cb.call(function, *args, **kwargs)
    except pybreaker.CircuitBreakerError as error:
        wait = _seconds_to_half_open(dependency, _local().client.get(_key(dependency, "opened_at")))
        raise DependencyWaitError(f"breaker {dependency}: {error}", retry_after=max(wait, 1.0)) from error


@dataclass(frozen=True)
class BreakerStatus:
    name: str
    state: str
    failures: int
    opened_at: float | None
    seconds_to_half_open: float | None
    fail_max: int
    reset_timeout: int
    changed_at: float | None = None  # when a worker last saw its state change (None: not since it was made)


def status(dependency: str) -> BreakerStatus:
    """What an operator sees for one breaker (read straight from the shared store)."""
    client = _local().client
    names = ("state", "fail_counter", "opened_at", "changed_at")
    state, failures, opened_at, changed_at = read_keys(client, [_key(dependency, name) for name in names])
    policy = get_settings().breaker_policy(dependency)
    state = (state or b"closed").decode()
    return BreakerStatus(
        name=dependency,
        state=state,
        failures=int(failures or 0),
        opened_at=float(opened_at) if opened_at and state != pybreaker.STATE_CLOSED else None,
        seconds_to_half_open=_seconds_to_half_open(dependency, opened_at) if state == pybreaker.STATE_OPEN else None,
        fail_max=policy.fail_max,
        reset_timeout=policy.reset_timeout,
        changed_at=float(changed_at) if changed_at else None,
    )


def force(dependency: str, state: str) -> None:
    """Force a breaker open (calls wait a full reset_timeout from now) or closed (failures forgotten)."""
    cb = breaker(dependency)
    if state == pybreaker.STATE_OPEN:
        cb.open()
    elif state == pybreaker.STATE_CLOSED:
        cb.close()
    else:
        raise ValueError(f"cannot force a breaker {state!r}; use open or closed")
