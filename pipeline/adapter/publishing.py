"""The publishing bracket: everything one call of Celery's API publishes, held until that call ends.

Celery's canvas sends a chain as its first task, and a group or a chord part by part, each inside
one `producer_or_acquire` of the app (celery/canvas.py, `group._apply_tasks`). vetro's app opens a
bracket there (pipeline.adapter.app.VetroCelery); a stage's `apply_async` inside it adds the stage to the
bracket instead of sending it, and a plain task's message waits in it too. When the outermost call
ends without an error, `on_close` hooks (pipeline.jobs.canvas) put the captured steps back together into
the canvas, open its job and send what waited; when it ends with one, nothing is sent.
One bracket per thread; a nested `producer_or_acquire` joins the open one and shares its producer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

_local = threading.local()
_on_close: list[Callable[[Bracket], None]] = []


@dataclass
class Bracket:
    captured: list[Any] = field(default_factory=list)  # stages' publishes, as pipeline.jobs.canvas captured them
    held: list[tuple[str, Any, Callable[[], None]]] = field(default_factory=list)  # (task, message, send)
    producer: Any = None
    _acquired: AbstractContextManager | None = None


def current() -> Bracket | None:
    return getattr(_local, "bracket", None)


def on_close(hook: Callable[[Bracket], None]) -> Callable[[Bracket], None]:
    """Register what a bracket does when it closes without an error (pipeline.jobs.canvas opens jobs)."""
    if hook not in _on_close:
        _on_close.append(hook)
    return hook


@contextmanager
def bracket() -> Iterator[Bracket]:
    """The open bracket, or a new one that closes when this block ends."""
    opened = current()
    if opened is not None:
        yield opened
        return
    _local.bracket = opened = Bracket()
    try:
        yield opened
        for hook in _on_close:
            hook(opened)
    finally:
        _local.bracket = None
        if opened._acquired is not None:
            opened._acquired.__exit__(None, None, None)


@contextmanager
def producer(acquire: Callable[[], AbstractContextManager]) -> Iterator[Any]:
    """A producer for a publish inside the bracket: the bracket's own, acquired once and kept until it closes,
    so a message held until then is sent on a producer still in hand."""
    with bracket() as opened:
        if opened.producer is None:
            opened._acquired = acquire()
            opened.producer = opened._acquired.__enter__()
        yield opened.producer


def hold(task: str, message: Any, send: Callable[[], None]) -> bool:
    """Hold a plain task's message until the bracket closes; False when no bracket is open (send it now)."""
    opened = current()
    if opened is None:
        return False
    opened.held.append((task, message, send))
    return True
