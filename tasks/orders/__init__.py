"""The reference order pipeline: validate, enrich, transform, route, then operate per destination, then finish.

Written only with vetro's public API (`pipeline`). Its own settings are ORDERS_* (config.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from celery import Signature, chain, chord

from pipeline import FanOut, PermanentError, Pipeline, Stage, TechnicalError, register, stage
from tasks.orders import clients
from tasks.orders.config import CUSTOMER_SERVICE, orders_settings, webhook_dependency
from tasks.orders.models import CanonicalOrder, Customer, parse_order_event, to_canonical
from tasks.orders.routing import destinations_for

PIPELINE = "orders"


@stage("validate", PIPELINE)
def validate(self: Stage, payload: dict[str, Any]) -> dict[str, Any]:
    """Check the event against its schema; a bad field is a permanent failure naming it."""
    return parse_order_event(payload).model_dump(mode="json")


@stage("enrich", PIPELINE, dependencies=[CUSTOMER_SERVICE])
def enrich(self: Stage, event: dict[str, Any]) -> dict[str, Any]:
    """Attach the customer record from the customer service."""
    customer = clients.fetch_customer(event["customer_id"], self.job.correlation_id)
    return {"event": event, "customer": Customer.model_validate(customer).model_dump(mode="json")}


@stage("transform", PIPELINE)
def transform(self: Stage, enriched: dict[str, Any]) -> dict[str, Any]:
    if orders_settings().transform_bug:  # a switchable bug, to show dead letters and their replay
        raise TechnicalError(f"simulated bug in transform for order {enriched['event']['order_id']}")
    event = parse_order_event(enriched["event"])
    customer = Customer.model_validate(enriched["customer"])
    return to_canonical(event, customer).model_dump(mode="json")


@stage("route", PIPELINE)
def route(self: Stage, order: dict[str, Any]) -> list[str]:
    """Pick destinations by the routing rules; vetro runs `operate` once for each."""
    return destinations_for(order["order_type"], order["region"], orders_settings().routes)


@stage("operate", PIPELINE, dependencies=[webhook_dependency(d) for d in orders_settings().destinations])
def operate(self: Stage, order: dict[str, Any], destination: str) -> dict[str, Any]:
    """Deliver the order to one destination, once: the idempotency key travels with the call."""
    if destination not in orders_settings().destinations:
        raise PermanentError(f"no route leads to destination {destination!r}")
    CanonicalOrder.model_validate(order)
    job = self.job
    receipt = clients.deliver(destination, order, job.idempotency_key, job.correlation_id)
    return {"destination": destination, "receipt": receipt}


@stage("finish", PIPELINE)
def finish(self: Stage, deliveries: list[dict[str, Any]]) -> dict[str, Any]:
    """Once every destination has its delivery: the receipts, by destination (the job then completes)."""
    return {delivery["destination"]: delivery["receipt"] for delivery in deliveries}


ORDERS = register(Pipeline(PIPELINE, [validate, enrich, transform, route], fan_out=FanOut(part=operate, join=finish)))


def order_canvas(order: dict[str, Any], stages: Mapping[str, Any] | None = None) -> Signature:
    """The same pipeline as a hand-built Celery canvas: the chain, then a chord of one `operate` per destination.

    The destinations come from the same routing rules `route` applies, read at publish time; an order whose
    type or region names no destination ends at `route` (it fails at `validate` first when it is invalid).
    `stages` gives other tasks of the same names (bench.raw_orders: the same bodies on raw Celery).
    """
    task = stages or {"validate": validate, "enrich": enrich, "transform": transform, "route": route,
                      "operate": operate, "finish": finish}  # fmt: skip
    destinations = destinations_for(str(order.get("order_type")), str(order.get("region")), orders_settings().routes)
    steps = [task["validate"].s(order), task["enrich"].s(), task["transform"].s()]
    if not destinations:
        return chain(*steps, task["route"].s())
    return chain(*steps, chord([task["operate"].s(destination) for destination in destinations], task["finish"].s()))
