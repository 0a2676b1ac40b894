"""The reference pipeline for order events: validate, enrich, transform, route, operate, finish."""

from __future__ import annotations

from typing import Any

from pipeline import jobs
from pipeline.canvas import Pipeline, fan_out, register
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
    event = parse_order_event(enriched["event"])
    customer = Customer.model_validate(enriched["customer"])
    return to_canonical(event, customer).model_dump(mode="json")


@stage("route", PIPELINE)
def route(self: Stage, order: dict[str, Any]) -> list[str]:
    """Pick destinations by the routing rules and fan out one `operate` each, joined by `finish`."""
    destinations = destinations_for(order["order_type"], order["region"], get_settings().routes)
    fan_out(self.job, {dest: operate.si(order, dest) for dest in destinations}, finish.s())
    return destinations


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
    jobs.record_completed(self.job, destinations)
    return {"job_id": self.job.job_id, "destinations": destinations}


ORDERS = register(Pipeline(PIPELINE, [validate, enrich, transform, route]))
