"""HTTP clients of the external services: the customer service and destination webhooks.

Every call has a timeout. Errors surface as httpx exceptions, which the failure classifier
maps (timeouts and 5xx are transient, other 4xx permanent).
"""

from __future__ import annotations

import os
from typing import Any

import httpx

from settings import get_settings

_client: tuple[int, httpx.Client] | None = None


def http() -> httpx.Client:
    """One pooled client per process (created after fork)."""
    global _client
    if _client is None or _client[0] != os.getpid():
        settings = get_settings()
        timeout = httpx.Timeout(settings.http_read_timeout, connect=settings.http_connect_timeout)
        _client = (os.getpid(), httpx.Client(timeout=timeout, limits=httpx.Limits(max_keepalive_connections=10)))
    return _client[1]


def fetch_customer(customer_id: str, correlation_id: str) -> dict[str, Any]:
    url = f"{get_settings().customer_url}/customers/{customer_id}"
    response = http().get(url, headers={"X-Correlation-Id": correlation_id})
    response.raise_for_status()
    return response.json()


def deliver(destination: str, body: dict[str, Any], idempotency_key: str, correlation_id: str) -> dict[str, Any]:
    """POST the order to the destination's webhook; the key makes a repeated call a no-op there."""
    response = http().post(
        get_settings().destination_url(destination),
        json=body,
        headers={"Idempotency-Key": idempotency_key, "X-Correlation-Id": correlation_id},
    )
    response.raise_for_status()
    return response.json()
