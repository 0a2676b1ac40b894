"""The provider sync's record checks, and the stub provider's cursors."""

import pydantic
import pytest

from tasks.partner_stub import decode_cursor, encode_cursor, provider_record
from tasks.provider_sync.models import to_contact


def test_a_provider_record_becomes_a_contact_with_a_lower_case_email():
    contact = to_contact("acme", provider_record("acme", 7, version=3))
    assert (contact.external_id, contact.email, contact.version) == ("acme:acme-00007", "contact.7@acme.example", 3)


@pytest.mark.parametrize(
    "record",
    [
        provider_record("acme", 13, version=1),  # no email
        {"id": "x", "name": "n", "email": "not-an-email", "version": 1},
        {"id": "../../etc", "name": "n", "email": "a@b.example", "version": 1},
        {"id": "x", "name": "", "email": "a@b.example", "version": 1},
        ["not", "a", "record"],
        None,
    ],
)
def test_a_record_the_destination_cannot_take_is_refused_with_the_field_named(record):
    with pytest.raises(pydantic.ValidationError):
        to_contact("acme", record)


def test_the_stub_provider_refuses_a_cursor_it_did_not_issue():
    assert decode_cursor(encode_cursor(40)) == 40
    for forged in ("zz", "", encode_cursor(-1), "eyJ4IjogMX0="):
        with pytest.raises(ValueError, match="invalid cursor"):
            decode_cursor(forged)
