"""Personal data: redacted wherever Celery shows a job's data, sealed wherever vetro keeps it.

Shown: Flower, `celery events` and the worker's log lines show a task's arguments from the
`argsrepr`/`kwargsrepr` its message carries, and its result from what the task returns. The
message builder below writes those reprs with every field named in VETRO_REDACT_FIELDS (or
ending in `_<name>`) replaced by "[redacted]", and a stage returns its result redacted the
same way (pipeline.stages); the job itself still gets every value.

Kept: with VETRO_ENCRYPTION_KEYS set, what vetro stores of a job (its payload and step results
in Redis, its dead letters' inputs in SQL, quarantined bodies) is sealed with Fernet. The first
key seals; every key opens (MultiFernet), so keys rotate by putting the new one first. A value
stored before a key was set is read as it is, so turning encryption on needs no migration.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from celery.app.amqp import AMQP
from celery.utils.saferepr import saferepr
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from settings import get_settings

REDACTED = "[redacted]"
SEALED = "fernet:"  # never the start of a JSON text, so a sealed value cannot be taken for a plain one
SEALED_DOCUMENT = "sealed"  # the one key of a sealed JSON document (a dead letter's input)


class SealedValueError(ValueError):
    """A sealed value that none of the configured keys opens (the key that sealed it was removed)."""


def redact(value: Any) -> Any:
    """`value` with every personal field's value replaced, at any depth; `value` itself is not changed."""
    fields = _fields(tuple(get_settings().redact_fields))
    return _redacted(value, fields) if fields else value


@lru_cache(maxsize=8)
def _fields(names: tuple[str, ...]) -> frozenset[str]:
    return frozenset(name.strip().lower() for name in names if name.strip())


def _personal(name: str, fields: frozenset[str]) -> bool:
    lowered = name.lower()
    return lowered in fields or any(lowered.endswith("_" + field) for field in fields)


def _redacted(value: Any, fields: frozenset[str]) -> Any:
    if isinstance(value, dict):
        return {
            name: REDACTED if isinstance(name, str) and _personal(name, fields) else _redacted(item, fields)
            for name, item in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(_redacted(item, fields) for item in value)
    return value


class RedactingAMQP(AMQP):
    """Celery's task message builder, writing the arguments it shows (argsrepr, kwargsrepr) redacted.

    Every message passes here: a producer's, a stage's next step, a retry. The task-sent event is
    built from the same reprs. Set as the app's `amqp` class (pipeline.app).
    """

    def as_task_v2(self, task_id, name, args=None, kwargs=None, *rest, argsrepr=None, kwargsrepr=None, **options):
        levels = self.app.conf.task_repr_maxlevels
        if argsrepr is None:
            argsrepr = shown(args or (), self.argsrepr_maxsize, levels)
        if kwargsrepr is None:
            kwargsrepr = shown(kwargs or {}, self.kwargsrepr_maxsize, levels)
        return super().as_task_v2(
            task_id, name, args, kwargs, *rest, argsrepr=argsrepr, kwargsrepr=kwargsrepr, **options
        )


_CONTAINERS = (dict, list, tuple)
_SCALARS = (type(None), bool, int, float)


def shown(value: Any, maxsize: int, levels: int) -> str:
    """Arguments as a message shows them (argsrepr, kwargsrepr): redacted, and cut to Celery's limits.

    Plain JSON values (what payloads and most results are) that fit are shown by `repr`, which is
    C; Celery's `saferepr` (pure Python, a fifth of a producer's time) cuts the others safely.
    """
    redacted = redact(value)
    if _fits(redacted, maxsize, levels):
        text = repr(redacted)
        if len(text) <= maxsize:
            return text
    return saferepr(redacted, maxsize, maxlevels=levels)


def _fits(value: Any, maxsize: int, levels: int) -> bool:
    """Only JSON's types, nested no deeper than `levels`, and short enough that `repr` stays within
    about `maxsize` characters: walked with a budget, so a huge value costs no more than a small one."""
    budget = maxsize
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        kind = type(item)  # exact types: a subclass may have a `repr` of its own, which could raise
        budget -= 1
        if kind is str:
            budget -= len(item)
        elif kind in _CONTAINERS:
            if depth > levels:
                return False
            children = [*item.keys(), *item.values()] if kind is dict else item
            pending.extend((child, depth + 1) for child in children)
        elif kind not in _SCALARS:
            return False
        if budget < 0:
            return False
    return True


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
