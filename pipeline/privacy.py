"""Personal data, redacted wherever Celery shows a job's data (what vetro keeps is sealed: pipeline.sealing).

Flower, `celery events` and the worker's log lines show a task's arguments from the
`argsrepr`/`kwargsrepr` its message carries, and its result from what the task returns. vetro's
message builder (pipeline.adapter.app, with pipeline.adapter.shown) writes those reprs with every field named in
VETRO_REDACT_FIELDS (or ending in `_<name>`) replaced by "[redacted]", and a stage returns its
result redacted the same way (pipeline.jobs.stages); the job itself still gets every value.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from settings import get_settings

REDACTED = "[redacted]"


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
