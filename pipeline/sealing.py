"""Personal data, sealed wherever vetro keeps it: with VETRO_ENCRYPTION_KEYS set, Fernet.

What vetro stores of a job (its payload and step results in Redis, its dead letters' inputs in
SQL, quarantined bodies) is sealed. The first key seals; every key opens (MultiFernet), so keys
rotate by putting the new one first. A value stored before a key was set is read as it is, so
turning encryption on needs no migration.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from settings import get_settings

SEALED = "fernet:"  # never the start of a JSON text, so a sealed value cannot be taken for a plain one
SEALED_DOCUMENT = "sealed"  # the one key of a sealed JSON document (a dead letter's input)


class SealedValueError(ValueError):
    """A sealed value that none of the configured keys opens (the key that sealed it was removed)."""


def sealing() -> bool:
    return bool(get_settings().encryption_keys)


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key) for key in keys])


def _keys() -> tuple[str, ...]:
    return tuple(key.get_secret_value() for key in get_settings().encryption_keys)


def seal_bytes(data: bytes) -> bytes:
    """`data` encrypted with the first key (no key set: `data` itself)."""
    keys = _keys()
    return _fernet(keys).encrypt(data) if keys else data


def open_bytes(token: bytes) -> bytes:
    """What `seal_bytes` sealed."""
    keys = _keys()
    if not keys:
        raise SealedValueError("a sealed value, and VETRO_ENCRYPTION_KEYS is not set")
    try:
        return _fernet(keys).decrypt(token)
    except InvalidToken:
        raise SealedValueError("a sealed value that no key in VETRO_ENCRYPTION_KEYS opens") from None


def seal(text: str) -> str:
    """A stored text (JSON), sealed when keys are set (every step result passes here: settings read once)."""
    keys = _keys()
    return SEALED + _fernet(keys).encrypt(text.encode()).decode() if keys else text


def unseal(stored: bytes | str) -> str:
    """The text `seal` stored; a text stored unsealed is returned as it is."""
    text = stored.decode() if isinstance(stored, bytes) else stored
    return open_bytes(text[len(SEALED) :].encode()).decode() if text.startswith(SEALED) else text


def seal_document(encoded: str) -> Any:
    """A JSON document for a SQL column, from its JSON text: as it is, or `{"sealed": ...}` when keys are set."""
    return {SEALED_DOCUMENT: seal(encoded)} if sealing() else json.loads(encoded)


def open_document(stored: Any) -> Any:
    """The document `seal_document` stored."""
    if isinstance(stored, dict) and set(stored) == {SEALED_DOCUMENT}:
        return json.loads(unseal(stored[SEALED_DOCUMENT]))
    return stored
