"""The shield in front of the worker: a message that is not a well-formed vetro task is quarantined.

Celery trusts its messages: a body that is not `[args, kwargs, embed]`, a `timelimit` that is
a string, a missing `id` or a task name it does not know end the worker ("Unrecoverable
error"), leave it looping on a KeyError while looking alive, or drop the message. This
consumer (Celery's `worker_consumer` setting) looks at each message before Celery does, and
anything Celery itself then fails on, is moved raw with the reason to the quarantine
(pipeline.jobs.quarantine) and acked. Connection errors still go to Celery, which reconnects.
"""

from __future__ import annotations

import datetime
import logging
import math
import re
from collections.abc import Callable
from typing import Any

from kombu.exceptions import ContentDisallowed, DecodeError

from pipeline.adapter.internals import ScreeningConsumer, queue_of
from pipeline.context import CORRELATION_ID, IDEMPOTENCY_KEY, JOB_ID, NOT_BEFORE, PIPELINE, REPLAY, SCOPE, SENT_AT
from pipeline.jobs import quarantine
from pipeline.jobs.pipelines import NAME, declared_plan
from pipeline.plan import BRANCH_NAME, PIPELINE_TASK
from pipeline.telemetry import heartbeat
from settings import get_settings

log = logging.getLogger("vetro.shield")

MAX_BODY_DEPTH = 200  # nesting of a message's body; deeper cannot be handed to a pool process
JOB_ID_FORM = re.compile(r"^[A-Za-z0-9-]{1,64}$")
SCOPE_FORM = re.compile(r"^[a-z][a-z0-9_]{0,62}(-[0-9]{1,6})?(\.[A-Za-z0-9_-]{1,64})?$")
OPTIONAL_TEXT = ("root_id", "parent_id", "group", "argsrepr", "kwargsrepr", "origin", "shadow", "lang")


class RefusedMessageError(ValueError):
    """Why a message is not a vetro task."""


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def _text(value: Any, limit: int = 255) -> bool:
    return isinstance(value, str) and 0 < len(value) <= limit and value.isprintable()


def _check_headers(headers: Any, tasks: Any) -> Any:
    """The headers as Celery's protocol 2 has them; returns the task."""
    if not isinstance(headers, dict):
        raise RefusedMessageError(f"headers are not a mapping ({type(headers).__name__})")
    name = headers.get("task")
    if not _text(name):
        raise RefusedMessageError(f"no task name (task header {name!r:.80})")
    if name not in tasks:
        raise RefusedMessageError(f"unknown task {name!r} (is its pipeline in VETRO_PIPELINES?)")
    if not _text(headers.get("id")):
        raise RefusedMessageError(f"no message id (id header {headers.get('id')!r:.80})")
    limits = headers.get("timelimit")
    if limits is not None and not (
        isinstance(limits, list | tuple) and len(limits) == 2 and all(v is None or _number(v) for v in limits)
    ):
        raise RefusedMessageError(f"timelimit header {limits!r:.80}: expected [soft, hard] seconds or nulls")
    for stamp in ("eta", "expires"):
        value = headers.get(stamp)
        if value is not None:
            try:
                datetime.datetime.fromisoformat(value)
            except (TypeError, ValueError):
                raise RefusedMessageError(f"{stamp} header {value!r:.80}: not an ISO 8601 time") from None
    retries = headers.get("retries")
    if retries is not None and not (isinstance(retries, int) and not isinstance(retries, bool) and retries >= 0):
        raise RefusedMessageError(f"retries header {retries!r:.80}: not a count")
    for header in OPTIONAL_TEXT:
        if headers.get(header) is not None and not isinstance(headers[header], str):
            raise RefusedMessageError(f"{header} header {headers[header]!r:.80}: not text")
    return tasks[name]


def _depth(value: Any) -> int:
    """How deep lists and dicts nest, without recursion."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if depth > MAX_BODY_DEPTH:
                return depth
            pending.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _check_body(body: Any) -> tuple[list, dict]:
    if not (isinstance(body, list | tuple) and len(body) == 3):
        raise RefusedMessageError(f"body is not [args, kwargs, embed] ({type(body).__name__})")
    args, kwargs, embed = body
    if not isinstance(args, list | tuple) or not isinstance(kwargs, dict) or not isinstance(embed, dict | type(None)):
        raise RefusedMessageError("body is not [args, kwargs, embed]: wrong types")
    if _depth(body) > MAX_BODY_DEPTH:
        raise RefusedMessageError(f"body nested deeper than {MAX_BODY_DEPTH} levels")
    return list(args), kwargs


def _check_job(task: Any, headers: dict, args: list, kwargs: dict) -> None:
    """A stage runs only inside a job: its headers are present, well-typed and agree with the task."""
    job_id = headers.get(JOB_ID)
    if not (isinstance(job_id, str) and JOB_ID_FORM.match(job_id)):
        raise RefusedMessageError(
            f"a stage message without a job ({JOB_ID} {job_id!r:.80}): not sent by vetro's app (send_task by name, "
            f"another producer); send stages with apply_async, delay or a canvas from an app that imports them"
        )
    if not _text(headers.get(IDEMPOTENCY_KEY), get_settings().max_key_length) or not headers[IDEMPOTENCY_KEY].isascii():
        raise RefusedMessageError(f"{IDEMPOTENCY_KEY} header {headers.get(IDEMPOTENCY_KEY)!r:.80}: not a valid key")
    if not _text(headers.get(CORRELATION_ID)):
        raise RefusedMessageError(f"{CORRELATION_ID} header {headers.get(CORRELATION_ID)!r:.80}: not valid")
    replay = headers.get(REPLAY, 0)  # absent: the first run
    if not (isinstance(replay, int) and not isinstance(replay, bool) and replay >= 0):
        raise RefusedMessageError(f"{REPLAY} header {replay!r:.80}: not a count")
    for stamp in (SENT_AT, NOT_BEFORE):
        if headers.get(stamp) is not None and not _number(headers[stamp]):
            raise RefusedMessageError(f"{stamp} header {headers[stamp]!r:.80}: not a time")
    scope = headers.get(SCOPE)
    if scope is not None:  # the worker checks the step, its task and id against the job's plan
        if not (isinstance(scope, str) and SCOPE_FORM.match(scope)):
            raise RefusedMessageError(f"{SCOPE} header {scope!r:.80}: not a step's name")
        if not (isinstance(headers.get(PIPELINE), str) and NAME.match(headers[PIPELINE])):
            raise RefusedMessageError(f"{PIPELINE} header {headers.get(PIPELINE)!r:.80}: not a pipeline's name")
        return
    # A message of the first format: a declared pipeline's step, named by its task and arguments.
    if headers.get(PIPELINE) != task.pipeline_name:
        raise RefusedMessageError(f"{PIPELINE} header {headers.get(PIPELINE)!r:.80} is not {task.pipeline_name!r}")
    if kwargs:
        raise RefusedMessageError(f"a stage takes no keyword arguments, got {sorted(kwargs)!r:.80}")
    try:
        plan = declared_plan(task.pipeline_name)
    except ValueError:
        raise RefusedMessageError(f"no {SCOPE} header, and {task.name} is in no declared pipeline") from None
    if plan.fan_out_of_part(plan.scope_for(task.name, ("x",)) or "") is not None:
        if len(args) != 2 or not (isinstance(args[1], str) and BRANCH_NAME.match(args[1])):
            raise RefusedMessageError(f"a fan-out part takes (input, branch), got {len(args)} argument(s)")
    elif len(args) != 1:
        raise RefusedMessageError(f"a stage takes one argument, got {len(args)}")
    expected = f"{job_id}.{plan.scope_for(task.name, tuple(args))}"
    if headers["id"] != expected:
        raise RefusedMessageError(f"message id {headers['id']!r:.80} is not {expected!r}")


def inspect(headers: Any, decode: Any, tasks: Any) -> str | None:
    """Why this message is not a task a worker may run (None if it is one).

    `decode` returns the decoded body (it may raise); `tasks` is the app's task registry.
    """
    try:
        task = _check_headers(headers, tasks)
        try:
            body = decode()
        except (DecodeError, ContentDisallowed, ValueError, TypeError, RecursionError) as error:
            raise RefusedMessageError(f"body cannot be decoded: {type(error).__name__}: {error}"[:300]) from None
        args, kwargs = _check_body(body)
        if getattr(task, "stage", None):
            _check_job(task, headers, args, kwargs)
        elif task.name == PIPELINE_TASK:
            raise RefusedMessageError(f"{PIPELINE_TASK} is a pipeline's signature inside a canvas, not a message")
    except RefusedMessageError as refused:
        return str(refused)
    return None


class ShieldedConsumer(ScreeningConsumer):
    """Celery's consumer, with every task message inspected first and anything it cannot take quarantined."""

    def screen(self, message: Any, handle: Callable[[Any], Any]) -> Any:
        heartbeat.taken(queue_of(message))
        reason = inspect(message.headers, message.decode, self.app.tasks)
        if reason is None:
            try:
                return handle(message)
            except (*self.connection_errors, *self.channel_errors):
                raise
            except Exception as error:  # anything else would end the worker or leave it looping
                reason = f"the worker could not take it: {type(error).__name__}: {error}"[:500]
        _quarantine(message, reason)
        return None


def _quarantine(message: Any, reason: str) -> None:
    queue = queue_of(message)
    try:
        quarantine.put(reason, message.headers, message.body, message.content_type, queue)
    except Exception:
        # Nowhere to keep it: give it back rather than lose it (it comes back to this shield).
        log.exception("could not quarantine a message (%s); it goes back to the queue", reason)
        message.reject_log_error(log, (Exception,), requeue=True)
        return
    message.ack_log_error(log, (Exception,))
