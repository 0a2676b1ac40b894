"""A dead-letter filter from what people type (the CLI's options, the console's fields, the API's query):
one parser, one set of one-line errors, so every face accepts and refuses the same input."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from dlq.models import Status
from dlq.store import RowFilter, utcnow

FAILURE_CLASSES = ("transient", "permanent", "business", "technical")
_DURATION = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
MAX_TEXT = 256  # characters of a text field: longer matches nothing a row can hold


class FilterError(ValueError):
    """Input that names no filter: the message says which field and why, in one line."""


def duration(text: str) -> timedelta:
    match = _DURATION.match(text.strip())
    if not match:
        raise FilterError(f"{text[:40]!r} is not a duration like 30d, 12h or 15m")
    try:
        span = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
        utcnow() - span  # that long ago must be a date
    except OverflowError:
        raise FilterError(f"{text!r:.40} reaches back past any date vetro can hold") from None
    return span


def moment(text: str | None) -> datetime | None:
    """An ISO date-time (UTC), or a duration meaning that long ago (2h, 7d)."""
    if text is None or not text.strip():
        return None
    if _DURATION.match(text.strip()):
        return utcnow() - duration(text)
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise FilterError(f"{text[:40]!r} is neither an ISO date-time nor a duration like 2h") from None
    return parsed.replace(tzinfo=None) if parsed.tzinfo is None else parsed.astimezone(tz=None).replace(tzinfo=None)


def choice(value: str | None, allowed: tuple[str, ...], name: str) -> str | None:
    if value is not None and value not in allowed:
        raise FilterError(f"{name} {value[:40]!r}: expected one of {', '.join(allowed)}")
    return value or None


def _text(value: str | None, name: str) -> str | None:
    if value is not None and len(value) > MAX_TEXT:
        raise FilterError(f"{name}: at most {MAX_TEXT} characters")
    return value or None


def _when(text: str | None, name: str) -> datetime | None:
    try:
        return moment(text)
    except FilterError as error:
        raise FilterError(f"{name}: {error}") from None


def row_filter(
    *,
    ids: list[int] | None = None,
    stage: str | None = None,
    status: str | None = None,
    failure_class: str | None = None,
    error: str | None = None,
    fingerprint: str | None = None,
    job: str | None = None,
    key: str | None = None,
    correlation: str | None = None,
    search: str | None = None,
    since: str | None = None,
    until: str | None = None,
) -> RowFilter:
    """The filter these fields name (empty ones are left out), or FilterError naming the first bad one."""
    return RowFilter(
        ids=list(ids or []),
        stage=_text(stage, "stage"),
        status=choice(status or None, tuple(s.value for s in Status), "status"),
        failure_class=choice(failure_class or None, FAILURE_CLASSES, "class"),
        error=_text(error, "error"),
        fingerprint=_text(fingerprint, "fingerprint"),
        job=_text(job, "job"),
        key=_text(key, "key"),
        correlation=_text(correlation, "correlation"),
        search=_text(search, "search"),
        since=_when(since, "since"),
        until=_when(until, "until"),
    )
