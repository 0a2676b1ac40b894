"""What a process hands to Redis in batches, about once a second, from a thread of its own.

A command a batch instead of one an event: counts added up (pipeline.telemetry.metrics), completed
jobs leaving their due sets (pipeline.jobs.closing). Each batch is flushed again when its process
exits (atexit, and the pool's `worker_process_shutdown`, see pipeline.watching.instruments). A
forked child starts with nothing pending: what its parent gathered is the parent's to flush.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")
_batches: list[Batch] = []


class Batch(Generic[K, V]):
    """Values gathered by key (`combine` merges two of one key); `flush` is called every `every` seconds by a
    daemon thread started with the first value, and takes what was gathered (`take`, `give_back`)."""

    def __init__(self, name: str, every: float, combine: Callable[[V, V], V], flush: Callable[[], None]) -> None:
        self.name, self.every, self.combine, self.flush = name, every, combine, flush
        self._start()
        _batches.append(self)

    def _start(self) -> None:
        self.lock = threading.Lock()
        self.values: dict[K, V] = {}
        self.thread: threading.Thread | None = None

    def add(self, key: K, value: V) -> None:
        with self.lock:
            self.values[key] = self.combine(self.values[key], value) if key in self.values else value
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self.thread.start()

    def take(self) -> dict[K, V]:
        with self.lock:
            values, self.values = self.values, {}
        return values

    def give_back(self, values: dict[K, V]) -> None:
        """What a flush could not hand over, for the next one."""
        for entry, value in values.items():
            self.add(entry, value)

    def _run(self) -> None:
        while True:
            time.sleep(self.every)
            self.flush()


def flush_all() -> None:
    """Flush every batch of this process now (it is about to exit)."""
    for batch in _batches:
        batch.flush()


def _forget_parents() -> None:
    for batch in _batches:
        batch._start()


os.register_at_fork(after_in_child=_forget_parents)
atexit.register(flush_all)
