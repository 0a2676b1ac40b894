"""The heartbeat as a consumer step: it runs on the worker's own timer, so a stopped worker stops beating."""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps

from pipeline.adapter.app import app
from pipeline.adapter.internals import TASKS_STEP, consumer_queues, every, pool_size, running_task_count
from pipeline.telemetry.heartbeat import HEARTBEAT_EVERY, beat

log = logging.getLogger("vetro.heartbeat")


class Heartbeat(bootsteps.StartStopStep):
    """A consumer step: the heartbeat runs on the worker's own timer, so a stopped worker stops beating."""

    requires = (TASKS_STEP,)

    def __init__(self, consumer: Any, **_: Any) -> None:
        self.timer_entry = None

    def start(self, consumer: Any) -> None:
        self._beat(consumer)
        self.timer_entry = every(consumer, HEARTBEAT_EVERY, self._beat, consumer)

    def stop(self, consumer: Any) -> None:
        if self.timer_entry is not None:
            self.timer_entry.cancel()
            self.timer_entry = None

    def _beat(self, consumer: Any) -> None:
        try:
            beat(consumer.hostname, running_task_count(), pool_size(consumer), consumer_queues(consumer))
        except Exception as error:  # the store is down: health sees the beat missing, the worker goes on
            log.debug("heartbeat not written: %s", error)


app.steps["consumer"].add(Heartbeat)  # what health reads to tell a worker that stopped taking messages
