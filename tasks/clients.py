"""HTTP clients of the external services: the customer service and destination webhooks.

Every call has a timeout and goes through its dependency's shared rate limit and circuit
breaker. Errors surface as httpx exceptions, which the failure classifier maps (timeouts and
5xx are transient, other 4xx permanent).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import httpx

from pipeline import dependencies
from settings import CUSTOMER_SERVICE, get_settings, webhook_dependency

_client: tuple[int, httpx.Client] | None = None

# httpx logs every request at INFO, which drowns a worker's log; failures are logged by the stage.
logging.getLogger("httpx").setLevel(logging.WARNING)


def http() -> httpx.Client:
    """One pooled client per process (created after fork)."""
    global _client
    if _client is None or _client[0] != os.getpid():
        settings = get_settings()
        timeout = httpx.Timeout(settings.http_read_timeout, connect=settings.http_connect_timeout)
        _client = (os.getpid(), httpx.Client(timeout=timeout, limits=httpx.Limits(max_keepalive_connections=10)))
    return _client[1]


def _request(method: str, url: str, **options: Any) -> dict[str, Any]:
    response = http().request(method, url, **options)
    response.raise_for_status()
    return response.json()


def fetch_customer(customer_id: str, correlation_id: str) -> dict[str, Any]:
    url = f"{get_settings().customer_url}/customers/{customer_id}"
    return dependencies.call(CUSTOMER_SERVICE, _request, "GET", url, headers={"X-Correlation-Id": correlation_id})


def deliver(destination: str, body: dict[str, Any], idempotency_key: str, correlation_id: str) -> dict[str, Any]:
    """POST the order to the destination's webhook; the key makes a repeated call a no-op there."""
    return dependencies.call(
        webhook_dependency(destination),
        _request,
        "POST",
        get_settings().destination_url(destination),
        json=body,
        headers={"Idempotency-Key": idempotency_key, "X-Correlation-Id": correlation_id},
    )
