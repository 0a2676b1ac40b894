"""The order pipeline's calls to its partners: the customer service and destination webhooks."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from pipeline.dependencies import http_request
from tasks.orders.config import CUSTOMER_SERVICE, orders_settings, webhook_dependency


def fetch_customer(customer_id: str, correlation_id: str) -> dict[str, Any]:
    url = f"{orders_settings().customer_url}/customers/{quote(customer_id, safe='')}"
    return http_request(CUSTOMER_SERVICE, "GET", url, headers={"X-Correlation-Id": correlation_id})


def deliver(destination: str, body: dict[str, Any], idempotency_key: str, correlation_id: str) -> dict[str, Any]:
    """POST the order to the destination's webhook; the key makes a repeated call a no-op there."""
    return http_request(
        webhook_dependency(destination),
        "POST",
        orders_settings().destination_url(destination),
        json=body,
        headers={"Idempotency-Key": idempotency_key, "X-Correlation-Id": correlation_id},
    )
