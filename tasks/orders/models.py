"""The order event a producer sends and the canonical order the later stages work on."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.failures import PermanentError

SUPPORTED_SCHEMA_VERSIONS = (1,)
OrderType = Literal["purchase", "refund", "exchange", "subscription"]
Region = Literal["eu", "us", "apac"]


class OrderLine(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sku: str = Field(min_length=1, max_length=64)
    quantity: int = Field(gt=0, le=10_000)
    unit_price: Decimal = Field(ge=0, max_digits=12, decimal_places=2)


class OrderEvent(BaseModel):
    """Version 1 of an order event, as producers submit it."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int
    order_id: str = Field(min_length=1, max_length=64)
    order_type: OrderType
    customer_id: str = Field(min_length=1, max_length=64)
    region: Region
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    lines: list[OrderLine] = Field(min_length=1, max_length=500)
    placed_at: datetime


class Customer(BaseModel):
    id: str
    name: str
    tier: str
    email: str


class CanonicalOrder(BaseModel):
    """The shape every destination receives, whatever the event's version was."""

    order_id: str
    order_type: OrderType
    region: Region
    customer: Customer
    currency: str
    total: Decimal
    item_count: int
    lines: list[OrderLine]
    placed_at: datetime


def parse_order_event(payload: Any) -> OrderEvent:
    """The event, or a PermanentError naming the first bad field."""
    if not isinstance(payload, dict):
        raise PermanentError(f"order event must be a JSON object, got {type(payload).__name__}")
    version = payload.get("schema_version")
    if type(version) is not int or version not in SUPPORTED_SCHEMA_VERSIONS:  # true and 1.0 equal 1, but are not
        raise PermanentError(f"schema_version: unsupported version {version!r}; supported: {SUPPORTED_SCHEMA_VERSIONS}")
    try:
        return OrderEvent.model_validate(payload)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "order"
        more = f" (+{error.error_count() - 1} more)" if error.error_count() > 1 else ""
        raise PermanentError(f"{field}: {first['msg']}{more}") from None


def to_canonical(event: OrderEvent, customer: Customer) -> CanonicalOrder:
    total = sum((line.unit_price * line.quantity for line in event.lines), Decimal("0"))
    return CanonicalOrder(
        order_id=event.order_id,
        order_type=event.order_type,
        region=event.region,
        customer=customer,
        currency=event.currency,
        total=total,
        item_count=sum(line.quantity for line in event.lines),
        lines=event.lines,
        placed_at=event.placed_at,
    )
