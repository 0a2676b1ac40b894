"""The order pipeline's canvas on raw Celery, configured as a careful team would: the anchor `vetro chaos --engine
raw` measures vetro's canvases against (RELIABILITY.md).

The same stage bodies as tasks.orders (schema check, the customer service, the canonical order, one webhook
delivery per destination carrying the order's idempotency key, the receipts), without vetro: Celery's own
retries for a partner's errors, a Redis result backend for the chord, acks late, a lost worker's message
given back, prefetch 1.

    celery -A bench.raw_orders worker
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote

import httpx
from celery import Celery

from bench.raw_celery import CAREFUL
from tasks.orders.config import orders_settings
from tasks.orders.models import Customer, parse_order_event, to_canonical
from tasks.orders.routing import destinations_for

BROKER = os.environ.get("VETRO_BROKER_URL", "redis://127.0.0.1:6379/0")
app = Celery("raw_orders", broker=BROKER, backend=BROKER)
app.conf.update(
    CAREFUL,
    result_serializer="json",
    task_default_queue="raw_orders",
    broker_transport_options={
        "visibility_timeout": int(os.environ.get("VETRO_VISIBILITY_TIMEOUT", "60")),
        "unacked_restore_interval": 1,
        "unacked_restore_throttle": 1,
    },
)
RETRIES = {"autoretry_for": (httpx.HTTPError,), "retry_backoff": 1, "retry_backoff_max": 4, "max_retries": 12}


@app.task(name="raw_orders.validate")
def validate(payload: dict[str, Any]) -> dict[str, Any]:
    return parse_order_event(payload).model_dump(mode="json")


@app.task(name="raw_orders.enrich", **RETRIES)
def enrich(event: dict[str, Any]) -> dict[str, Any]:
    url = f"{orders_settings().customer_url}/customers/{quote(event['customer_id'], safe='')}"
    customer = httpx.get(url, timeout=5).raise_for_status().json()
    return {"event": event, "customer": Customer.model_validate(customer).model_dump(mode="json")}


@app.task(name="raw_orders.transform")
def transform(enriched: dict[str, Any]) -> dict[str, Any]:
    event = parse_order_event(enriched["event"])
    return to_canonical(event, Customer.model_validate(enriched["customer"])).model_dump(mode="json")


@app.task(name="raw_orders.operate", **RETRIES)
def operate(order: dict[str, Any], destination: str) -> dict[str, Any]:
    url = orders_settings().destination_url(destination)
    headers = {"Idempotency-Key": order["order_id"]}
    receipt = httpx.post(url, json=order, headers=headers, timeout=5).raise_for_status().json()
    return {"destination": destination, "receipt": receipt}


@app.task(name="raw_orders.route")
def route(order: dict[str, Any]) -> list[str]:
    return destinations_for(order["order_type"], order["region"], orders_settings().routes)


@app.task(name="raw_orders.finish")
def finish(deliveries: list[dict[str, Any]]) -> dict[str, Any]:
    return {delivery["destination"]: delivery["receipt"] for delivery in deliveries}


STAGES = {"validate": validate, "enrich": enrich, "transform": transform, "route": route, "operate": operate,
          "finish": finish}  # fmt: skip
