"""Personal data: what Celery shows is redacted; what vetro keeps is sealed, and keys rotate."""

from datetime import datetime
from decimal import Decimal

import pytest
from celery.utils.saferepr import saferepr
from cryptography.fernet import Fernet

from pipeline.adapter.app import app
from pipeline.adapter.shown import shown
from pipeline.jobs.guard import decode, encode
from pipeline.privacy import REDACTED, redact
from pipeline.sealing import SealedValueError, open_bytes, open_document, seal_bytes, seal_document
from settings import ConfigError, get_settings, reset_settings

OLD, NEW = Fernet.generate_key().decode(), Fernet.generate_key().decode()
ORDER = {
    "order_id": "o-1",
    "customer": {"id": "c-1", "name": "Ada Lovelace", "email": "ada@example.com", "tier": "gold"},
    "billing_address": {"street": "12 St James's Square"},
    "lines": [{"sku": "A1", "Phone": "+44 20 7946 0000"}],
}


@pytest.fixture(autouse=True)
def _fresh_settings():
    reset_settings()
    yield
    reset_settings()


def keys(monkeypatch, *values: str) -> None:
    monkeypatch.setenv("VETRO_ENCRYPTION_KEYS", ",".join(values))
    reset_settings()


def test_personal_fields_are_redacted_at_any_depth_and_the_value_itself_is_untouched():
    shown = redact(ORDER)
    assert shown == {
        "order_id": "o-1",
        "customer": {"id": "c-1", "name": REDACTED, "email": REDACTED, "tier": "gold"},
        "billing_address": REDACTED,  # '<anything>_address', the whole value
        "lines": [{"sku": "A1", "Phone": REDACTED}],  # names match in any case
    }
    assert ORDER["customer"]["email"] == "ada@example.com"


def test_the_redacted_fields_are_a_setting(monkeypatch):
    monkeypatch.setenv("VETRO_REDACT_FIELDS", "tier")
    reset_settings()
    assert redact(ORDER)["customer"] == {
        "id": "c-1",
        "name": "Ada Lovelace",
        "email": "ada@example.com",
        "tier": REDACTED,
    }
    monkeypatch.setenv("VETRO_REDACT_FIELDS", "")
    reset_settings()
    assert redact(ORDER) == ORDER


def test_the_arguments_a_task_message_shows_are_redacted_and_its_body_is_whole():
    message = app.amqp.create_task_message(
        "id-1", "orders.enrich", (ORDER,), {"contact": {"email": "x@y.z"}}, create_sent_event=True
    )
    for text in (message.headers["argsrepr"], message.headers["kwargsrepr"], *message.sent_event.values()):
        assert "ada@example.com" not in str(text) and "Ada Lovelace" not in str(text) and "x@y.z" not in str(text)
    assert REDACTED in message.headers["argsrepr"] and REDACTED in message.sent_event["kwargs"]
    assert message.body[0] == (ORDER,) and message.body[1] == {"contact": {"email": "x@y.z"}}


class Loud:
    def __repr__(self) -> str:
        raise RuntimeError("a repr of its own that fails")


@pytest.mark.parametrize(
    "arguments",
    [
        ({"n": 1, "s": "it's", "f": 1.5, "none": None, "ok": True},),
        ({"a": {"b": {"c": {"d": 1}}}},),  # deeper than Celery shows
        ("x" * 5000,),  # longer than Celery shows
        (list(range(5000)),),
        ({1: 2}, [], ()),
        (datetime(2026, 1, 2), Decimal("1.10")),
    ],
)
def test_the_arguments_a_message_shows_fit_celerys_limits(arguments):
    """Plain JSON values that fit are shown as `repr` shows them; the rest as Celery's `saferepr` cuts them."""
    text = shown(arguments, 1024, 3)
    if len(repr(arguments)) > 1024 or "'d'" in repr(arguments) or isinstance(arguments[0], datetime):
        assert text == saferepr(arguments, 1024, maxlevels=3)
    else:
        assert text == repr(arguments)


def test_an_argument_whose_repr_fails_is_still_shown():
    assert "Unrepresentable" in shown((Loud(),), 1024, 3)


def test_shown_arguments_are_redacted():
    assert "Ada" not in shown((ORDER,), 1024, 5) and REDACTED in shown((ORDER,), 1024, 5)


def test_without_keys_values_are_stored_as_they_are():
    assert encode(ORDER).startswith("{") and decode(encode(ORDER)) == ORDER
    assert seal_document('{"args": [1]}') == {"args": [1]}


def test_with_a_key_stored_values_are_sealed_and_read_back(monkeypatch):
    plain = encode(ORDER)
    keys(monkeypatch, NEW)
    sealed = encode(ORDER)
    assert sealed.startswith("fernet:") and "ada@example.com" not in sealed
    assert decode(sealed) == ORDER
    assert decode(plain) == ORDER  # stored before the key was set: read as it is
    document = seal_document('{"args": [{"email": "ada@example.com"}]}')
    assert set(document) == {"sealed"} and "ada@" not in document["sealed"]
    assert open_document(document) == {"args": [{"email": "ada@example.com"}]}
    assert open_bytes(seal_bytes(b"\xff raw body")) == b"\xff raw body"


def test_keys_rotate_new_first_and_a_removed_key_fails_in_one_line(monkeypatch):
    keys(monkeypatch, OLD)
    under_old = encode(ORDER)
    keys(monkeypatch, NEW, OLD)
    under_new = encode(ORDER)
    assert decode(under_old) == decode(under_new) == ORDER
    keys(monkeypatch, NEW)
    with pytest.raises(SealedValueError, match=r"^a sealed value that no key in VETRO_ENCRYPTION_KEYS opens$"):
        decode(under_old)
    monkeypatch.delenv("VETRO_ENCRYPTION_KEYS")
    reset_settings()
    with pytest.raises(SealedValueError, match="VETRO_ENCRYPTION_KEYS is not set"):
        decode(under_new)


def test_a_bad_key_is_one_line_naming_the_variable_and_never_echoed(monkeypatch):
    keys(monkeypatch, NEW, "not-a-key-but-secret")
    with pytest.raises(ConfigError) as refused:
        get_settings()
    assert str(refused.value).startswith("VETRO_ENCRYPTION_KEYS: key 2 is not a Fernet key")
    assert "not-a-key-but-secret" not in str(refused.value) and NEW not in str(refused.value)
