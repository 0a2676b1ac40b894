"""A task's arguments as its message shows them (`argsrepr`, what Flower and the logs show): redacted, and cut."""

from __future__ import annotations

from typing import Any

from pipeline.adapter.internals import safe_repr
from pipeline.privacy import redact

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
    return safe_repr(redacted, maxsize, levels)


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
