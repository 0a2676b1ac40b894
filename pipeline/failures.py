"""Failure classes: what went wrong decides whether a stage retries or hands the job off.

transient  - the world was flaky (network, timeout, 408/429/5xx): retry with backoff; an open
             breaker or a spent rate limit is a wait, retried without spending the budget;
permanent  - the input can never succeed (bad payload, schema, other 4xx, a request that cannot
             be built): hand off at once;
business   - a stage's own rule said no (raise BusinessRuleError): hand off at once;
technical  - anything else, i.e. our bug: retry a few times, then hand off.
"""

from __future__ import annotations

import email.utils
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from types import ModuleType

import pydantic
import redis
from celery.exceptions import SoftTimeLimitExceeded


class FailureClass(StrEnum):
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    BUSINESS = "business"
    TECHNICAL = "technical"


class VetroError(Exception):
    """An error that already knows its failure class."""

    failure_class = FailureClass.TECHNICAL


class TransientError(VetroError):
    failure_class = FailureClass.TRANSIENT

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DependencyWaitError(TransientError):
    """The call was not made: its dependency's breaker is open or its rate limit is spent.

    The stage comes back after `retry_after` without spending its retry budget.
    """


class RetryRequestedError(TransientError):
    """A stage's own `self.retry(exc=..., countdown=...)`: the step runs again after `countdown` seconds exactly,
    within `max_retries` (the stage's transient budget when None); past it, the job is handed off with `cause`."""

    def __init__(self, cause: BaseException | None, countdown: float, max_retries: int | None) -> None:
        super().__init__(f"retry requested in {countdown:g}s" + (f": {type(cause).__name__}: {cause}" if cause else ""))
        self.cause = cause
        self.countdown = countdown
        self.max_retries = max_retries


class PermanentError(VetroError):
    failure_class = FailureClass.PERMANENT


class TechnicalError(VetroError):
    """Our own bug or an impossible state, said explicitly."""

    failure_class = FailureClass.TECHNICAL


class BusinessRuleError(VetroError):
    failure_class = FailureClass.BUSINESS


# vetro's own technical failures, which end a job whatever its stage (dead letters group by their names).
class PoisonJobError(TechnicalError):
    """The step's process died too often while running it (a poison message): handed off, not retried."""


class UnknownJobError(TechnicalError):
    """The job's ledger has no record of it: expired, or a message vetro did not publish."""


class StalledJobError(TechnicalError):
    """The job made no progress through several re-drives."""


@dataclass(frozen=True)
class Failure:
    failure_class: FailureClass
    retry_after: float | None = None  # seconds the failing side asked us to wait
    waiting: bool = False  # a wait for a dependency, not a failed attempt

    @property
    def retryable(self) -> bool:
        return self.failure_class in (FailureClass.TRANSIENT, FailureClass.TECHNICAL)


Rule = Callable[[BaseException], Failure | None]


RETRY_AFTER_CAP = 24 * 3600  # seconds; a longer Retry-After is read as this (a server's mistake, not a plan)


def retry_after_seconds(value: str | None) -> float | None:
    """Parse an HTTP Retry-After header (delay-seconds or an HTTP date); None if absent or unreadable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if not math.isfinite(seconds):
        return None
    return min(max(0.0, seconds), RETRY_AFTER_CAP)


def _vetro_error(exc: BaseException) -> Failure | None:
    if isinstance(exc, VetroError):
        return Failure(exc.failure_class, getattr(exc, "retry_after", None), isinstance(exc, DependencyWaitError))
    return None


def loaded_httpx() -> ModuleType | None:
    """httpx, once something has imported it: only then can an exception be one of its. A worker whose
    stages make no HTTP calls never loads it (with the CLI it pulls in, rich and pygments)."""
    return sys.modules.get("httpx")


def _http_status(exc: BaseException) -> Failure | None:
    httpx = loaded_httpx()
    if httpx is None or not isinstance(exc, httpx.HTTPStatusError):
        return None
    status = exc.response.status_code
    if status in (408, 429) or status >= 500:
        return Failure(FailureClass.TRANSIENT, retry_after_seconds(exc.response.headers.get("Retry-After")))
    return Failure(FailureClass.PERMANENT)


# A request that could not even be built (a header with a newline, a URL with a bad scheme or
# port): our input's fault, never the dependency's. Checked before the transport errors, of
# which httpx makes some of these a kind.
def is_unbuildable_request(exc: BaseException) -> bool:
    httpx = loaded_httpx()
    return bool(httpx and isinstance(exc, httpx.LocalProtocolError | httpx.UnsupportedProtocol | httpx.InvalidURL))


def _unbuildable_request(exc: BaseException) -> Failure | None:
    return Failure(FailureClass.PERMANENT) if is_unbuildable_request(exc) else None


_TRANSIENT_TYPES = (
    ConnectionError,
    TimeoutError,
    redis.ConnectionError,
    redis.TimeoutError,
    SoftTimeLimitExceeded,
)
_PERMANENT_TYPES = (pydantic.ValidationError, UnicodeError)


def _by_type(exc: BaseException) -> Failure | None:
    httpx = loaded_httpx()
    if isinstance(exc, _TRANSIENT_TYPES) or (httpx and isinstance(exc, httpx.TransportError)):
        return Failure(FailureClass.TRANSIENT)
    if isinstance(exc, _PERMANENT_TYPES):
        return Failure(FailureClass.PERMANENT)
    return None


DEFAULT_RULES: list[Rule] = [_vetro_error, _http_status, _unbuildable_request, _by_type]


class FailureClassifier:
    """Maps an exception to a Failure by the first rule that answers; unknown means technical.

    A pipeline extends it with `register(rule)` or `register_type(SomeError, FailureClass.X)`;
    rules registered later are asked first.
    """

    def __init__(self, rules: list[Rule] | None = None) -> None:
        self._rules: list[Rule] = list(rules if rules is not None else DEFAULT_RULES)

    def register(self, rule: Rule) -> None:
        self._rules.insert(0, rule)

    def register_type(self, exc_type: type[BaseException], failure_class: FailureClass) -> None:
        self.register(lambda exc: Failure(failure_class) if isinstance(exc, exc_type) else None)

    def classify(self, exc: BaseException) -> Failure:
        for rule in self._rules:
            failure = rule(exc)
            if failure is not None:
                return failure
        return Failure(FailureClass.TECHNICAL)

    def copy(self) -> FailureClassifier:
        return FailureClassifier(self._rules)


default_classifier = FailureClassifier()


class AutoretryClassifier:
    """A stage's Celery options over a classifier: `dont_autoretry_for` is handed off at once (permanent),
    `autoretry_for` is retried as transient; vetro's own errors and anything not listed keep their class."""

    def __init__(
        self,
        base: FailureClassifier,
        autoretry_for: tuple[type[BaseException], ...],
        dont_autoretry_for: tuple[type[BaseException], ...],
    ) -> None:
        self.base = base
        self.autoretry_for = autoretry_for
        self.dont_autoretry_for = dont_autoretry_for

    def classify(self, exc: BaseException) -> Failure:
        found = self.base.classify(exc)
        if isinstance(exc, VetroError):
            return found
        if isinstance(exc, self.dont_autoretry_for):
            return Failure(FailureClass.PERMANENT)
        if isinstance(exc, self.autoretry_for) and found.failure_class is not FailureClass.TRANSIENT:
            return Failure(FailureClass.TRANSIENT)
        return found
