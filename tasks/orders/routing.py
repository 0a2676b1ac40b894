"""Which destinations an order goes to, by the rules in the order settings."""

from __future__ import annotations

from collections.abc import Iterable

from tasks.orders.config import RouteRule


def destinations_for(order_type: str, region: str, rules: Iterable[RouteRule]) -> list[str]:
    """Every destination whose rule matches the order's type and region, in rule order, once each."""
    chosen: list[str] = []
    for rule in rules:
        if rule.order_types and order_type not in rule.order_types:
            continue
        if rule.regions and region not in rule.regions:
            continue
        if rule.destination not in chosen:
            chosen.append(rule.destination)
    return chosen
