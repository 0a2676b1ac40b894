"""Logs: structlog over the standard library, JSON in production and readable in development (VETRO_LOG_FORMAT).

Every line logged while a task runs (vetro's, Celery's, a stage's own `logging` calls) carries
the job's context: pipeline, job id, correlation id, stage, destination, attempt and task id,
bound when the task starts (pipeline.watching.instruments), so no stage code passes them along, as
structlog's context variables; when it ends, exactly those are put back as they were, so a task run
eagerly inside a caller's code (a web request's) leaves the caller's own bindings as it found them.
Payloads stay out: Celery's line for a task that succeeded drops its return value unless
VETRO_LOG_PAYLOADS is set (and then it is redacted, pipeline.privacy). A step that fails for
good is logged once by vetro (pipeline.watching.instruments), so Celery's own INFO line for it is dropped.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from contextvars import Token
from typing import Any

import structlog
from celery.signals import setup_logging

from pipeline.adapter.internals import TRACE_LOGGER, failure_shown, success_line
from settings import get_settings

DEAD_LETTERED = "DeadLettered("  # how Celery shows the exception vetro fails a dead-lettered task with


def bind(fields: dict[str, Any]) -> Mapping[str, Token]:
    """Every line logged from now on in this task carries `fields`; what `unbind` needs to undo just that."""
    return structlog.contextvars.bind_contextvars(**fields)


def unbind(bound: Mapping[str, Token]) -> None:
    """Put back the fields `bind` changed, as they were before it (other bindings are left alone)."""
    try:
        structlog.contextvars.reset_contextvars(**bound)
    except ValueError:  # bound in another context (a signal sent from elsewhere): forget them instead
        structlog.contextvars.unbind_contextvars(*bound)


def _without_payloads(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Celery's success line without the task's result (it is the job's data)."""
    record = event_dict.get("_record")
    args = event_dict.pop("positional_args", None)  # the record's arguments (pass_foreign_args)
    if record is not None and record.name == TRACE_LOGGER and not get_settings().log_payloads:
        event_dict["event"] = success_line(args) or event_dict["event"]
    return event_dict


class _OnceForDeadLetters(logging.Filter):
    """Drop Celery's 'raised expected: DeadLettered(...)': vetro has logged that failure already, once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name != TRACE_LOGGER or not failure_shown(record.args).startswith(DEAD_LETTERED)


def _readable(_: Any, __: str, event_dict: dict[str, Any]) -> str:
    """One line for people: time, level, message, logger, then the job's fields.

    structlog's ConsoleRenderer costs four times as much a line (its column machinery), and a
    worker at INFO logs two lines a task.
    """
    time, level, event = event_dict.pop("timestamp", ""), event_dict.pop("level", ""), event_dict.pop("event", "")
    logger, exception = event_dict.pop("logger", ""), event_dict.pop("exception", None)
    fields = " ".join(f"{name}={value}" for name, value in event_dict.items())
    line = f"{time} {level:<7} {event} [{logger}] {fields}".rstrip()
    return f"{line}\n{exception}" if exception else line


def configure(level: int | str = logging.INFO) -> None:
    """Route every standard-library log line through structlog's renderer, with the job's context."""
    json = get_settings().log_format == "json"
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _without_payloads,
    ]
    renderer = structlog.processors.JSONRenderer() if json else _readable
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        pass_foreign_args=True,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info if json else structlog.processors.ExceptionRenderer(),
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.__stderr__)
    handler.setFormatter(formatter)
    handler.addFilter(_OnceForDeadLetters())
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # the store's migration check, in every new process
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


@setup_logging.connect
def _configure_worker(loglevel: int | str | None = None, **_: Any) -> None:
    """Celery asks before it configures logging; answering means it leaves it to vetro."""
    configure(loglevel or logging.INFO)
