"""Pipelines of the tests' own, outside vetro's packages (workers load them with VETRO_PIPELINES).

- clock: stage results plain JSON cannot carry (a datetime, a Decimal);
- stubborn: a stage that ignores its soft time limit;
- refunds: a team's pipeline with stage names of its own and settings of its own (REFUNDS_*),
  written only with vetro's public API;
- metered: outcomes chosen by the payload (fail permanently, fail once, wait once, succeed), then
  a fan-out to the destinations it names, so the tests of metrics, logs and timelines know
  exactly what ran;
- shop: stages composed with Celery's canvas;
- habits: stages declared with Celery's retry options, or retrying with `self.retry`, each
  failing its payload's first `fail` attempts and noting when each attempt began.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline import (
    DependencyWaitError,
    FanOut,
    PermanentError,
    Pipeline,
    Stage,
    TechnicalError,
    TransientError,
    read_settings,
    register,
    stage,
)
from pipeline.dependencies import http_request


@stage("validate", "clock")
def stamp(self: Stage, payload: dict[str, Any]) -> dict[str, Any]:
    """A result with a datetime and a Decimal, as a stage written with the standard library returns."""
    return {"at": datetime.now(UTC), "amount": Decimal(payload["amount"])}


@stage("finish", "clock")
def double(self: Stage, stamped: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(stamped["at"], datetime) or not isinstance(stamped["amount"], Decimal):
        raise TypeError(f"the previous result lost its types: {stamped!r}")
    return {"stamped_at": stamped["at"], "doubled": stamped["amount"] * 2}


CLOCK = register(Pipeline("clock", [stamp, double]))


@stage("validate", "stubborn")
def hang(self: Stage, payload: dict[str, Any]) -> dict[str, Any]:
    """A stage that ignores its soft time limit, so only the hard limit stops it."""
    while True:
        try:
            time.sleep(0.2)
        except SoftTimeLimitExceeded:
            continue


STUBBORN = register(Pipeline("stubborn", [hang]))


class RefundsSettings(BaseSettings):
    """A team's own pipeline keeps its own settings, with its own prefix."""

    model_config = SettingsConfigDict(env_prefix="REFUNDS_", extra="ignore")

    partner_url: str = "http://127.0.0.1:8765"
    card_service_down: bool = False  # charge_card fails, as a bug of the card service would make it


@stage("validate", "refunds")
def check_refund(self: Stage, refund: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(refund.get("amount"), str) or Decimal(refund["amount"]) <= 0:
        raise PermanentError(f"refund {refund.get('refund_id')!r}: amount must be a positive decimal string")
    return {"refund_id": refund["refund_id"], "amount": Decimal(refund["amount"])}


@stage("charge_card", "refunds", time_limit=20, soft_time_limit=15, dependencies=["card-service"])
def charge_card(self: Stage, refund: dict[str, Any]) -> dict[str, Any]:
    settings = read_settings(RefundsSettings)
    if settings.card_service_down:
        raise TechnicalError(f"card service rejected refund {refund['refund_id']}")
    receipt = http_request(
        "card-service",
        "POST",
        f"{settings.partner_url}/webhooks/card-refunds",
        json={"order_id": refund["refund_id"], "amount": str(refund["amount"])},
        headers={"Idempotency-Key": self.job.idempotency_key},
    )
    return {**refund, "charge": receipt}


@stage("notify", "refunds")
def notify(self: Stage, charged: dict[str, Any]) -> dict[str, Any]:
    return {"refund_id": charged["refund_id"], "notified": True}


REFUNDS = register(Pipeline("refunds", [check_refund, charge_card, notify]))


@stage("check", "metered", dependencies=["meter"])
def check_reading(self: Stage, reading: dict[str, Any]) -> dict[str, Any]:
    """'permanent' fails for good, 'flaky' fails once then succeeds, 'waits' waits once on its dependency."""
    outcome = reading.get("outcome")
    if outcome == "permanent":
        raise PermanentError(f"reading {reading.get('id')}: not a meter we know")
    if outcome == "technical":
        raise TechnicalError(f"reading {reading.get('id')}: a bug of ours")
    if outcome == "flaky" and not self.request.retries:
        raise TransientError(f"reading {reading.get('id')}: the meter did not answer")
    if outcome == "waits" and not self.request.retries:
        raise DependencyWaitError("the meter's breaker is open", retry_after=0.5)
    return {"id": reading.get("id"), "to": reading.get("to"), "wait_on": reading.get("wait_on")}


@stage("route", "metered")
def route_reading(self: Stage, checked: dict[str, Any]) -> list[str]:
    """Fan out to each destination the reading names (one, 'main', by default)."""
    return list(checked.get("to") or ["main"])


@stage("deliver", "metered")
def deliver_reading(self: Stage, checked: dict[str, Any], destination: str) -> dict[str, Any]:
    """A delivery to one destination; 'wait_on' names one that waits once on its dependency."""
    if checked.get("wait_on") == destination and not self.request.retries:
        raise DependencyWaitError(f"{destination} is rate limited", retry_after=0.5)
    return {"id": checked["id"], "destination": destination}


@stage("store", "metered")
def store_reading(self: Stage, deliveries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": deliveries[0]["id"], "stored": [delivery["destination"] for delivery in deliveries]}


METERED = register(
    Pipeline("metered", [check_reading, route_reading], fan_out=FanOut(part=deliver_reading, join=store_reading))
)


# shop: stages with no declared pipeline, composed only with Celery's canvas (tests/integration/test_canvas.py).
SHOP_FLAG = "vetro-test:shop:fixed"  # set in Redis: `mend` succeeds (the cause of its failure was fixed)


@stage("parse", "shop")
def parse(self: Stage, order: dict[str, Any]) -> dict[str, Any]:
    return {"id": order["id"], "items": list(order.get("items", []))}


@stage("price", "shop")
def price(self: Stage, order: dict[str, Any], discount: int = 0) -> dict[str, Any]:
    return {**order, "total": sum(item["price"] for item in order["items"]) - discount}


@stage("ship", "shop")
def ship(self: Stage, order: dict[str, Any]) -> str:
    return f"shipped {order['id']}"


@stage("bill", "shop")
def bill(self: Stage, order: dict[str, Any]) -> int:
    return order["total"]


@stage("email", "shop")
def email(self: Stage, order: dict[str, Any]) -> str:
    return f"mailed {order['id']}"


@stage("summarize", "shop")
def summarize(self: Stage, parts: list[Any]) -> dict[str, Any]:
    return {"parts": parts}


@stage("add", "shop")
def add(self: Stage, x: int, y: int = 0) -> int:
    return x + y


@stage("refuse", "shop")
def refuse(self: Stage, value: Any) -> Any:
    raise PermanentError(f"no {value!r}")


@stage("mend", "shop")
def mend(self: Stage, value: Any) -> Any:
    """Fails for good until a test sets SHOP_FLAG (an operator fixed the cause); then passes its input on."""
    from pipeline.store import redis_client

    if not redis_client().exists(SHOP_FLAG):
        raise PermanentError(f"cannot mend {value!r} yet")
    return value


class Parcel(BaseModel):
    """What `pack` takes: the input an operator's correction is checked against."""

    sku: str = Field(pattern=r"^[A-Z]{3}-\d+$")
    quantity: int = Field(gt=0)


@stage("pack", "shop", input_model=Parcel)
def pack(self: Stage, parcel: dict[str, Any]) -> dict[str, Any]:
    """Fails for good on a discontinued sku (OLD-*): an input an operator corrects and replays."""
    if parcel["sku"].startswith("OLD-"):
        raise PermanentError(f"sku {parcel['sku']} is discontinued")
    return {"packed": parcel["sku"], "quantity": parcel["quantity"]}


@stage("alert", "shop")
def alert(self: Stage, failed_task_id: str) -> dict[str, str]:
    """An errback (link_error): Celery calls it with the id of the task that failed."""
    return {"alerted": failed_task_id}


@stage("tally", "shop")
def tally(self: Stage, parts: list[Any]) -> dict[str, Any]:
    """A chord's body with an effect: each run counts itself in Redis, so a test sees how often it ran."""
    from pipeline.store import redis_client

    runs = redis_client().incr(f"vetro-test:tally:{self.job.idempotency_key}")
    redis_client().expire(f"vetro-test:tally:{self.job.idempotency_key}", 3600)
    return {"parts": parts, "run": runs}


class Flaky(Exception):  # noqa: N818 (a name a team's own code would have)
    """What the habits stages fail with, until their payload's `fail` attempts have run."""


def attempt(key: str) -> int:
    """Note when this attempt began (in the tests' Redis); which attempt it is."""
    from pipeline.store import redis_client

    name = f"vetro-test:attempts:{key}"
    number = redis_client().rpush(name, time.time())
    redis_client().expire(name, 3600)
    return number


def _flaky(payload: dict[str, Any]) -> int:
    number = attempt(payload["key"])
    if number <= payload["fail"]:
        raise Flaky(f"attempt {number} of {payload['key']}")
    return number


@stage(
    "backoff", "habits", autoretry_for=(Flaky,), retry_backoff=2, retry_backoff_max=4, retry_jitter=False, max_retries=3
)
def autoretried(self: Stage, payload: dict[str, Any]) -> int:
    return _flaky(payload)


@stage("fixed", "habits", autoretry_for=(Flaky,), default_retry_delay=1, max_retries=2)
def fixed_delay(self: Stage, payload: dict[str, Any]) -> int:
    return _flaky(payload)


@stage("listed", "habits", autoretry_for=(Exception,), dont_autoretry_for=(Flaky,))
def not_autoretried(self: Stage, payload: dict[str, Any]) -> int:
    return _flaky(payload)


@stage("asks", "habits", max_retries=4)
def asks_to_retry(self: Stage, payload: dict[str, Any]) -> int:
    """Retries itself, as a Celery task does: `self.retry(exc=..., countdown=...)`."""
    try:
        return _flaky(payload)
    except Flaky as exc:
        raise self.retry(exc=exc, countdown=payload["countdown"], max_retries=payload.get("max_retries")) from exc


@stage("slow", "habits", time_limit=30, soft_time_limit=25)
def slow(self: Stage, payload: dict[str, Any]) -> dict[str, Any]:
    """Notes its attempt, then takes `sleep` seconds (and fails for good with `fail`): a step to revoke as it runs."""
    attempt(payload["key"])
    time.sleep(payload.get("sleep", 0))
    if payload.get("fail"):
        raise PermanentError(f"{payload['key']} failed after its sleep")
    return payload


@stage("after", "habits")
def after(self: Stage, previous: Any) -> str:
    """What follows a revoked step: notes that it ran (it never should)."""
    key = previous["key"] if isinstance(previous, dict) else previous[0]["key"]
    attempt(f"{key}:after")
    return key
