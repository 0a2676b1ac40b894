"""What many open consoles read, computed once for all of them: a page that refreshes itself (console.js
sends `X-Vetro-Refresh`) gets a value at most SHARED_SECONDS old, so twenty viewers cost the database,
Redis and the workers' CPU what one does. A page an operator opens or returns to is always read fresh.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from fastapi import Request

T = TypeVar("T")
SHARED_SECONDS = 3.0
REFRESH_HEADER = "x-vetro-refresh"
_MAX_KEYS = 256

_values: dict[Hashable, tuple[float, Any]] = {}
_lock = threading.Lock()


def refreshing(request: Request) -> bool:
    return request.headers.get(REFRESH_HEADER) == "1"


def shared(request: Request, key: Hashable, compute: Callable[[], T]) -> T:
    """`compute()`, or for a page refreshing itself, the value computed for `key` within SHARED_SECONDS."""
    if not refreshing(request):
        value = compute()
        _keep(key, value)
        return value
    with _lock:
        kept = _values.get(key)
    if kept is not None and time.monotonic() - kept[0] < SHARED_SECONDS:
        return kept[1]
    value = compute()
    _keep(key, value)
    return value


def _keep(key: Hashable, value: Any) -> None:
    with _lock:
        if len(_values) >= _MAX_KEYS:
            _values.clear()  # many filters at once: start again rather than grow
        _values[key] = (time.monotonic(), value)
