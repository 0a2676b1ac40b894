"""Sample order events for the demo, tests and benchmarks: mostly good, some bad on purpose."""

from __future__ import annotations

import random
from typing import Any

ORDER_TYPES = ("purchase", "refund", "exchange", "subscription")
REGIONS = ("eu", "us", "apac")


def sample_order(number: int, prefix: str = "order", rng: random.Random | None = None) -> dict[str, Any]:
    rng = rng or random.Random(number)
    return {
        "schema_version": 1,
        "order_id": f"{prefix}-{number}",
        "order_type": rng.choice(ORDER_TYPES),
        "customer_id": f"cust-{rng.randrange(1000)}",
        "region": rng.choice(REGIONS),
        "currency": "EUR",
        "lines": [
            {"sku": f"sku-{rng.randrange(50)}", "quantity": rng.randint(1, 5), "unit_price": "19.90"}
            for _ in range(rng.randint(1, 3))
        ],
        "placed_at": "2026-11-22T10:00:00Z",
    }


def invalid_order(number: int, prefix: str = "order") -> dict[str, Any]:
    """An order a producer got wrong: a schema error that no retry can fix."""
    order = sample_order(number, prefix)
    order["lines"][0]["quantity"] = 0
    return order


def unknown_customer_order(number: int, prefix: str = "order") -> dict[str, Any]:
    """A well-formed order whose customer the customer service does not know (a 404)."""
    return {**sample_order(number, prefix), "customer_id": f"unknown-{number}"}


def sample_batch(count: int, prefix: str, invalid_every: int = 25, unknown_every: int = 40) -> list[dict[str, Any]]:
    """`count` orders where every `invalid_every`-th is invalid and every `unknown_every`-th has no customer."""
    orders = []
    for number in range(count):
        if invalid_every and number % invalid_every == invalid_every - 1:
            orders.append(invalid_order(number, prefix))
        elif unknown_every and number % unknown_every == unknown_every - 1:
            orders.append(unknown_customer_order(number, prefix))
        else:
            orders.append(sample_order(number, prefix))
    return orders
