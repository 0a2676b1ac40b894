"""Order schema validation and the transform to a canonical order."""

from decimal import Decimal

import pytest

from pipeline.failures import FailureClass, PermanentError
from tasks.orders.models import Customer, parse_order_event, to_canonical
from tasks.orders.samples import invalid_order, sample_order


def test_a_good_order_parses():
    event = parse_order_event(sample_order(1))
    assert event.order_id == "order-1"
    assert event.schema_version == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"order_type": "gift"}, "order_type"),
        ({"currency": "euro"}, "currency"),
        ({"lines": []}, "lines"),
        ({"placed_at": "yesterday"}, "placed_at"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_a_bad_field_is_a_permanent_failure_naming_it(change, field):
    with pytest.raises(PermanentError) as raised:
        parse_order_event({**sample_order(1), **change})
    assert str(raised.value).startswith(f"{field}:")
    assert raised.value.failure_class is FailureClass.PERMANENT


def test_a_bad_line_names_its_position():
    with pytest.raises(PermanentError, match=r"^lines\.0\.quantity: .*greater than 0"):
        parse_order_event(invalid_order(1))


def test_a_missing_field_is_named():
    order = sample_order(1)
    del order["customer_id"]
    with pytest.raises(PermanentError, match=r"^customer_id: Field required"):
        parse_order_event(order)


@pytest.mark.parametrize("version", [None, 2, "1", True, 1.0])
def test_an_unsupported_schema_version_is_refused(version):
    with pytest.raises(PermanentError, match=r"^schema_version: unsupported version"):
        parse_order_event({**sample_order(1), "schema_version": version})


def test_transform_totals_the_lines_and_keeps_the_customer():
    order = {
        **sample_order(1),
        "lines": [
            {"sku": "a", "quantity": 2, "unit_price": "19.90"},
            {"sku": "b", "quantity": 1, "unit_price": "0.20"},
        ],
    }
    customer = Customer(id="c1", name="C", tier="gold", email="c@example.com")
    canonical = to_canonical(parse_order_event(order), customer)
    assert canonical.total == Decimal("40.00")
    assert canonical.item_count == 3
    assert canonical.customer.tier == "gold"
    assert canonical.model_dump(mode="json")["total"] == "40.00"
