"""Routing rules: which destinations an order goes to."""

import pytest

from settings import RouteRule, Settings
from tasks.routing import destinations_for

DEFAULT_RULES = Settings().routes


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


def test_rules_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("VETRO_ROUTES", '[{"destination": "crm", "order_types": ["refund"]}]')
    assert destinations_for("refund", "eu", Settings().routes) == ["crm"]
