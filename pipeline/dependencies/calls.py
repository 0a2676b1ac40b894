"""Every call to an external dependency goes through here: its shared rate limit, then its breaker.

A dependency is a name ("customer-service", "webhook-billing") that breakers and rate limits
are configured by; a stage lists the ones it calls (`@stage(..., dependencies=[...])`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx

from pipeline.dependencies import breakers, ratelimit
from pipeline.failures import DependencyWaitError
from pipeline.telemetry import metrics
from settings import get_settings

T = TypeVar("T")
log = logging.getLogger("vetro.dependencies")
_client: tuple[int, httpx.Client] | None = None

# httpx logs every request at INFO, which drowns a worker's log; failures are logged by the stage.
logging.getLogger("httpx").setLevel(logging.WARNING)


def call(dependency: str, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call `function` once the dependency's rate limit allows it, through its circuit breaker.

    Raises DependencyWaitError (a transient wait, not a failure) when the call must wait.
    """
    ratelimit.acquire(dependency)
    started = time.monotonic()
    try:
        return breakers.call(dependency, function, *args, **kwargs)
    except DependencyWaitError:  # the breaker kept the call from being made: nothing to time
        started = None
        raise
    finally:
        if started is not None:
            _timed(dependency, time.monotonic() - started)


def _timed(dependency: str, seconds: float) -> None:
    """Every call's duration goes to a histogram; one slower than VETRO_SLOW_CALL_SECONDS is also counted and logged."""
    metrics.observe(metrics.CALL_DURATION, seconds, dependency)
    threshold = get_settings().slow_call_seconds
    if seconds >= threshold:
        metrics.count(metrics.SLOW_CALLS, dependency)
        log.warning("slow call to %s: %.2fs (VETRO_SLOW_CALL_SECONDS=%s)", dependency, seconds, threshold)


def http() -> httpx.Client:
    """One pooled HTTP client per process (created after fork), with vetro's timeouts."""
    global _client
    if _client is None or _client[0] != os.getpid():
        settings = get_settings()
        timeout = httpx.Timeout(settings.http_read_timeout, connect=settings.http_connect_timeout)
        _client = (os.getpid(), httpx.Client(timeout=timeout, limits=httpx.Limits(max_keepalive_connections=10)))
    return _client[1]


ERROR_BODY_CHARS = 300  # of an error answer's body, kept in the error: the partner's reason is the cause


def _json(method: str, url: str, **options: Any) -> Any:
    response = http().request(method, url, **options)
    if response.is_error:
        reason = f"{response.status_code} {response.reason_phrase} from {method} {url}"
        body = response.text[:ERROR_BODY_CHARS].strip()
        message = f"{reason}: {body}" if body else reason
        raise httpx.HTTPStatusError(message, request=response.request, response=response)
    return response.json() if response.content else None


def http_request(dependency: str, method: str, url: str, **options: Any) -> Any:
    """An HTTP call to a dependency (rate limit, breaker, timeouts); its JSON answer.

    Errors surface as httpx exceptions, which the failure classifier maps: timeouts, 408, 429
    and 5xx are transient (a Retry-After is honoured), other 4xx permanent.
    """
    return call(dependency, _json, method, url, **options)
