"""What producers may submit: a JSON object under the size limit."""

import pytest

from pipeline.jobs.producer import InvalidJobError, check_payload


@pytest.mark.parametrize("payload", [[1, 2], "text", 3, None])
def test_only_json_objects_are_jobs(payload):
    with pytest.raises(InvalidJobError, match="expected a JSON object"):
        check_payload(payload)


def test_values_json_cannot_carry_are_refused():
    with pytest.raises(InvalidJobError, match="object is not a JSON value"):
        check_payload({"when": object()})
    with pytest.raises(InvalidJobError, match="not JSON-serialisable"):
        check_payload({"amount": float("nan")})


def test_too_large_is_refused_with_the_limit(monkeypatch):
    with pytest.raises(InvalidJobError, match="over the limit of 262144"):
        check_payload({"blob": "x" * 300_000})


def test_the_derived_key_ignores_key_order():
    assert check_payload({"a": 1, "b": 2}).idempotency_key == check_payload({"b": 2, "a": 1}).idempotency_key
    assert check_payload({"a": 1}, "mine").idempotency_key == "mine"


def test_an_empty_key_is_refused():
    with pytest.raises(InvalidJobError, match="idempotency key"):
        check_payload({"a": 1}, " ")
