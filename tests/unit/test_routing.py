"""Routing rules: which destinations an order goes to."""

import pytest

from tasks.orders.config import DEFAULT_ROUTES as DEFAULT_RULES
from tasks.orders.config import OrdersSettings, RouteRule
from tasks.orders.routing import destinations_for


@pytest.mark.parametrize(
    ("order_type", "region", "expected"),
    [
        ("purchase", "eu", ["warehouse", "billing", "notifications"]),
        ("purchase", "apac", ["warehouse", "billing"]),
        ("refund", "us", ["billing", "notifications"]),
        ("exchange", "apac", ["warehouse"]),
        ("subscription", "apac", ["billing"]),
    ],
)
def test_default_rules(order_type, region, expected):
    assert destinations_for(order_type, region, DEFAULT_RULES) == expected


def test_an_empty_list_matches_everything_and_a_destination_appears_once():
    rules = [RouteRule(destination="audit"), RouteRule(destination="audit", regions=["eu"])]
    assert destinations_for("refund", "eu", rules) == ["audit"]


def test_no_rule_matching_means_no_destination():
    assert destinations_for("refund", "apac", [RouteRule(destination="x", regions=["eu"])]) == []


def test_rules_come_from_the_order_pipelines_own_settings(monkeypatch):
    monkeypatch.setenv("ORDERS_ROUTES", '[{"destination": "crm", "order_types": ["refund"]}]')
    assert destinations_for("refund", "eu", OrdersSettings().routes) == ["crm"]


def test_destination_urls_default_to_the_partner(monkeypatch):
    monkeypatch.setenv("ORDERS_PARTNER_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("ORDERS_DESTINATION_URLS", '{"billing": "http://127.0.0.1:9100/hook"}')
    settings = OrdersSettings()
    assert settings.destination_url("warehouse") == "http://127.0.0.1:9000/webhooks/warehouse"
    assert settings.destination_url("billing") == "http://127.0.0.1:9100/hook"
