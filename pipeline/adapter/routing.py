"""Where each stage's messages go (VETRO_QUEUES), and moving what waits in a queue to where it goes now.

Changing a running fleet's routing leaves the messages already queued where they were. `move_waiting`
takes each message from a queue and, when its task now goes elsewhere, republishes it there and then
acknowledges it (Celery's own `celery.contrib.migrate.move`); a message it leaves goes back to its queue
when the mover's connection closes. A crash between the republish and the acknowledgement leaves a copy
in each queue: the step's guard answers the second.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from celery.contrib.migrate import move

from pipeline.adapter.app import app, bound_queue
from settings import get_settings


def queue_of_task(name: str) -> str | None:
    """The queue the app routes a task's messages to now (None: a task this app does not know)."""
    task = app.tasks.get(name)
    if task is None:
        return None
    queue = app.amqp.router.route({}, name, (), {}, task)["queue"]
    return queue if isinstance(queue, str) else queue.name


def move_waiting(source: str, idle: float = 1.0) -> Counter[str]:
    """Move every message waiting in `source` whose task is now routed to another queue; how many went where.
    Stops once `source` has given nothing for `idle` seconds."""
    settings, moved = get_settings(), Counter[str]()

    def elsewhere(_: Any, message: Any) -> Any:
        destination = queue_of_task(message.headers.get("task") or "")
        if destination and destination != source:
            moved[destination] += 1
            return bound_queue(settings, destination)
        return None

    move(elsewhere, app=app, source=[bound_queue(settings, source, declare=False)], timeout=idle)
    return moved
