"""Failure classes and the retry policy built on Celery's backoff."""

from types import SimpleNamespace

import httpx
import pydantic
import pytest
from celery.exceptions import SoftTimeLimitExceeded

from pipeline.failures import (
    RETRY_AFTER_CAP,
    BusinessRuleError,
    FailureClass,
    FailureClassifier,
    PermanentError,
    TransientError,
    default_classifier,
    retry_after_seconds,
)
from pipeline.jobs.retry import retry_budget, retry_delay


def http_error(status: int, headers: dict | None = None) -> httpx.HTTPStatusError:
    request = httpx.Request("POST", "http://127.0.0.1/x")
    response = httpx.Response(status, headers=headers, request=request)
    return httpx.HTTPStatusError(f"{status}", request=request, response=response)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (httpx.ConnectError("refused"), FailureClass.TRANSIENT),
        (httpx.ReadTimeout("slow"), FailureClass.TRANSIENT),
        (http_error(503), FailureClass.TRANSIENT),
        (http_error(429), FailureClass.TRANSIENT),
        (http_error(408), FailureClass.TRANSIENT),
        (http_error(404), FailureClass.PERMANENT),
        (http_error(422), FailureClass.PERMANENT),
        (SoftTimeLimitExceeded(), FailureClass.TRANSIENT),
        (PermanentError("bad"), FailureClass.PERMANENT),
        (BusinessRuleError("no"), FailureClass.BUSINESS),
        (KeyError("oops"), FailureClass.TECHNICAL),
    ],
)
def test_classification(exc, expected):
    assert default_classifier.classify(exc).failure_class is expected


def test_a_pydantic_error_is_permanent():
    class Model(pydantic.BaseModel):
        x: int

    with pytest.raises(pydantic.ValidationError) as raised:
        Model(x="no")
    assert default_classifier.classify(raised.value).failure_class is FailureClass.PERMANENT


def test_retry_after_is_read_from_the_response():
    failure = default_classifier.classify(http_error(429, {"Retry-After": "7"}))
    assert failure.retry_after == 7


def test_retry_after_accepts_an_http_date():
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0
    assert retry_after_seconds(None) is None


@pytest.mark.parametrize("value", ["soon", "", "nan", "inf", "-inf", "Mon, 99 Foo 2026", "1e400", "\x00", "12 34"])
def test_a_malformed_retry_after_is_ignored_never_raised(value):
    assert retry_after_seconds(value) is None
    failure = default_classifier.classify(http_error(503, {"Retry-After": value}))
    assert failure.failure_class is FailureClass.TRANSIENT


def test_a_huge_retry_after_is_capped():
    assert retry_after_seconds("99999999999") == RETRY_AFTER_CAP


def test_a_pipeline_can_extend_the_mapping_without_touching_the_default():
    class OutOfStockError(Exception):
        pass

    classifier = default_classifier.copy()
    classifier.register_type(OutOfStockError, FailureClass.BUSINESS)
    assert classifier.classify(OutOfStockError()).failure_class is FailureClass.BUSINESS
    assert default_classifier.classify(OutOfStockError()).failure_class is FailureClass.TECHNICAL
    assert FailureClassifier().classify(TransientError("x")).failure_class is FailureClass.TRANSIENT


TASK = SimpleNamespace(
    transient_retries=3, technical_retries=1, retry_backoff=2, retry_backoff_max=30, retry_jitter=False
)


def test_transient_failures_back_off_exponentially_within_their_budget():
    transient = default_classifier.classify(httpx.ConnectError("x"))
    assert [retry_delay(TASK, transient, attempt) for attempt in (1, 2, 3)] == [2, 4, 8]
    assert retry_budget(TASK, transient) == 3


def test_technical_failures_get_their_own_smaller_budget():
    assert retry_budget(TASK, default_classifier.classify(KeyError("x"))) == 1


def test_permanent_and_business_failures_never_retry():
    assert retry_budget(TASK, default_classifier.classify(PermanentError("x"))) == 0
    assert retry_budget(TASK, default_classifier.classify(BusinessRuleError("x"))) == 0


def test_retry_after_is_a_floor_on_the_delay():
    failure = default_classifier.classify(http_error(503, {"Retry-After": "20"}))
    assert retry_delay(TASK, failure, 1) == 20


@pytest.mark.parametrize(
    ("exc", "unhealthy"),
    [
        (httpx.ConnectError("refused"), True),
        (httpx.ReadTimeout("slow"), True),
        (http_error(503), True),
        (http_error(500), True),
        (http_error(429), False),
        (http_error(404), False),
        (http_error(422), False),
        (ValueError("our bug"), False),
        (httpx.LocalProtocolError("Illegal header value b'a\\nb'"), False),
        (httpx.UnsupportedProtocol("Request URL has an unsupported protocol 'nope://'."), False),
        (httpx.InvalidURL("Invalid port"), False),
    ],
)
def test_only_unhealthy_answers_count_against_a_breaker(exc, unhealthy):
    from pipeline.dependencies.breakers import is_unhealthy

    assert is_unhealthy(exc) is unhealthy


@pytest.mark.parametrize(
    "exc",
    [
        httpx.LocalProtocolError("Illegal header value"),
        httpx.UnsupportedProtocol("unsupported protocol"),
        httpx.InvalidURL("Invalid port"),
    ],
)
def test_a_request_that_cannot_be_built_is_a_permanent_failure(exc):
    assert default_classifier.classify(exc).failure_class is FailureClass.PERMANENT
