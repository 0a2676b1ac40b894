"""The reference pipeline for order events: validate, enrich, transform, route, operate, finish."""

from __future__ import annotations

from typing import Any

from pipeline.canvas import FanOut, Pipeline, register
from pipeline.failures import TechnicalError
from pipeline.outcomes import complete
from pipeline.stage import Stage, stage
from settings import get_settings
from tasks import clients
from tasks.models import CanonicalOrder, Customer, parse_order_event, to_canonical
from tasks.routing import destinations_for

PIPELINE = "orders"


@stage("validate", PIPELINE)
def validate(self: Stage, payload: dict[str, Any]) -> dict[str, Any]:
    """Check the event against its schema; a bad field is a permanent failure naming it."""
    return parse_order_event(payload).model_dump(mode="json")


@stage("enrich", PIPELINE)
def enrich(self: Stage, event: dict[str, Any]) -> dict[str, Any]:
    """Attach the customer record from the customer service."""
    customer = clients.fetch_customer(event["customer_id"], self.job.correlation_id)
    return {"event": event, "customer": Customer.model_validate(customer).model_dump(mode="json")}


@stage("transform", PIPELINE)
def transform(self: Stage, enriched: dict[str, Any]) -> dict[str, Any]:
    if get_settings().demo_transform_bug:  # a switchable bug, to show dead letters and their replay
        raise TechnicalError(f"simulated bug in transform for order {enriched['event']['order_id']}")
    event = parse_order_event(enriched["event"])
    customer = Customer.model_validate(enriched["customer"])
    return to_canonical(event, customer).model_dump(mode="json")


@stage("operate", PIPELINE, destination_arg="destination")
def operate(self: Stage, order: dict[str, Any], destination: str) -> dict[str, Any]:
    """Deliver the order to one destination, once: the idempotency key travels with the call."""
    CanonicalOrder.model_validate(order)
    job = self.job
    receipt = clients.deliver(destination, order, job.idempotency_key, job.correlation_id)
    return {"destination": destination, "receipt": receipt}


@stage("finish", PIPELINE)
def finish(self: Stage, deliveries: list[dict[str, Any]]) -> dict[str, Any]:
    """Record the job's outcome once every destination has its delivery."""
    destinations = [delivery["destination"] for delivery in deliveries]
    complete(self.job, destinations)
    return {"job_id": self.job.job_id, "destinations": destinations}


DELIVERIES = FanOut(part=operate, join=finish, planner="route")


@stage("route", PIPELINE)
def route(self: Stage, order: dict[str, Any]) -> list[str]:
    """Pick destinations by the routing rules and fan out one `operate` each, joined by `finish`."""
    destinations = destinations_for(order["order_type"], order["region"], get_settings().routes)
    DELIVERIES.publish(self.job, order, destinations)
    return destinations


ORDERS = register(Pipeline(PIPELINE, [validate, enrich, transform, route], fan_out=DELIVERIES))
