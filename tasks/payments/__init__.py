"""The payment saga: reserve stock, charge the card, ship; a failure for good undoes what was done.

    validate -> reserve_stock -> charge -> ship
                 undone by        undone by
                 release_stock    refund

When `ship` fails for good (the carrier refuses the address, say), vetro runs `refund`, then
`release_stock`, each guarded, retried and dead-lettered like any step, and the job ends
`compensated`. Every call carries the job's idempotency key, so a redelivered call, or a
compensation replayed, is one effect at the payment service. Written only with vetro's
public API; its own settings are PAYMENTS_* (config.py).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pipeline import Pipeline, Stage, register, stage
from pipeline.dependencies import http_request
from tasks.payments.config import PAYMENT_SERVICE, payments_settings

PIPELINE = "payments"


class Payment(BaseModel):
    """What a producer submits: the order, what it buys, what it costs, where it goes."""

    model_config = ConfigDict(extra="forbid")

    order_id: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    sku: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    quantity: int = Field(ge=1, le=1000)
    amount: Decimal = Field(gt=0, max_digits=12, decimal_places=2)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    country: str = Field(pattern=r"^[A-Z]{2}$")


def service_call(self: Stage, action: str, **body: Any) -> dict[str, Any]:
    """POST to the payment service with the job's idempotency key: a repeated call is one effect."""
    url = f"{payments_settings().service_url.rstrip('/')}/payments/{action}"
    headers = {"Idempotency-Key": self.job.idempotency_key, "X-Correlation-Id": self.job.correlation_id}
    return http_request(PAYMENT_SERVICE, "POST", url, json=body, headers=headers)


@stage("validate", PIPELINE)
def validate(self: Stage, payload: dict[str, Any]) -> dict[str, Any]:
    return Payment.model_validate(payload).model_dump(mode="json")


@stage("reserve_stock", PIPELINE, dependencies=[PAYMENT_SERVICE])
def reserve_stock(self: Stage, payment: dict[str, Any]) -> dict[str, Any]:
    order_id, sku, quantity = payment["order_id"], payment["sku"], payment["quantity"]
    answer = service_call(self, "reservations", order_id=order_id, sku=sku, quantity=quantity)
    return {**payment, "reservation_id": answer["effect_id"]}


@stage("charge", PIPELINE, dependencies=[PAYMENT_SERVICE])
def charge(self: Stage, reserved: dict[str, Any]) -> dict[str, Any]:
    order_id, amount, currency = reserved["order_id"], reserved["amount"], reserved["currency"]
    answer = service_call(self, "charges", order_id=order_id, amount=amount, currency=currency)
    return {**reserved, "charge_id": answer["effect_id"]}


@stage("ship", PIPELINE, dependencies=[PAYMENT_SERVICE])
def ship(self: Stage, charged: dict[str, Any]) -> dict[str, Any]:
    """A carrier that refuses the address answers 422: a permanent failure, which starts the compensations."""
    order_id, country, reservation_id = charged["order_id"], charged["country"], charged["reservation_id"]
    answer = service_call(self, "shipments", order_id=order_id, country=country, reservation_id=reservation_id)
    return {**charged, "shipment_id": answer["effect_id"]}


@stage("refund", PIPELINE, dependencies=[PAYMENT_SERVICE])
def refund(self: Stage, charged: dict[str, Any]) -> dict[str, Any]:
    """Undo `charge`, given what it recorded."""
    order_id, charge_id, amount = charged["order_id"], charged["charge_id"], charged["amount"]
    answer = service_call(self, "refunds", order_id=order_id, charge_id=charge_id, amount=amount)
    return {"refund_id": answer["effect_id"], "charge_id": charged["charge_id"]}


@stage("release_stock", PIPELINE, dependencies=[PAYMENT_SERVICE])
def release_stock(self: Stage, reserved: dict[str, Any]) -> dict[str, Any]:
    """Undo `reserve_stock`, given what it recorded."""
    order_id, reservation_id = reserved["order_id"], reserved["reservation_id"]
    answer = service_call(self, "releases", order_id=order_id, reservation_id=reservation_id)
    return {"release_id": answer["effect_id"], "reservation_id": reserved["reservation_id"]}


PAYMENTS = register(
    Pipeline(
        PIPELINE,
        [validate, reserve_stock, charge, ship],
        compensations={reserve_stock: release_stock, charge: refund},
    )
)
