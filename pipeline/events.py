"""Named events and their observers: how the job's life tells watching (metrics, logs, Sentry) what happened,
without importing it (as Dramatiq's middleware hooks do)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Events:
    """Observers: each event name maps to the callbacks told of it, with what happened."""

    def __init__(self) -> None:
        self._observers: dict[str, list[Callable[..., None]]] = {}

    def on(self, name: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
        def register(observer: Callable[..., None]) -> Callable[..., None]:
            self._observers.setdefault(name, []).append(observer)
            return observer

        return register

    def emit(self, name: str, *details: Any) -> None:
        for observer in self._observers.get(name, ()):
            observer(*details)
