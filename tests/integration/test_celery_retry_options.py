"""Celery's retry options on a stage mean what they mean in Celery, on a real worker: attempts and delays.

The habits stages (tests/pipelines.py) fail their payload's first `fail` attempts and note when each
attempt began; each test sends one with `.delay()` and reads its `AsyncResult`.
"""

from __future__ import annotations

import itertools
import uuid

import pytest

from pipeline.jobs.ledger import get_job, job_of_task
from pipeline.store import redis_client
from tests.helpers import fast_env, workers
from tests.pipelines import Flaky, asks_to_retry, autoretried, fixed_delay, not_autoretried
from vetro.testing.processes import wait_until

pytestmark = pytest.mark.integration
SLACK = 10  # seconds a retry may come late on a loaded machine; never early


def attempts_of(key: str) -> list[float]:
    return [float(at) for at in redis_client().lrange(f"vetro-test:attempts:{key}", 0, -1)]


def gaps(key: str) -> list[float]:
    times = attempts_of(key)
    return [later - earlier for earlier, later in itertools.pairwise(times)]


def payload(fail: int, **more: object) -> dict:
    return {"key": f"habit-{uuid.uuid4().hex[:8]}", "fail": fail, **more}


def assert_waited(key: str, delays: list[float]) -> None:
    """Each retry came no earlier than its delay (less a clock's jitter), and not much later."""
    found = gaps(key)
    assert len(found) == len(delays), found
    for gap, delay in zip(found, delays, strict=True):
        assert delay - 0.5 <= gap <= delay + SLACK, (found, delays)


def test_autoretry_for_retries_with_celerys_backoff_and_its_cap(worker):
    sent = payload(fail=3)
    assert autoretried.delay(sent).get(timeout=90) == 4
    assert_waited(sent["key"], [2, 4, 4])  # retry_backoff=2 doubling, retry_backoff_max=4, no jitter


def test_autoretry_for_stops_at_max_retries_and_get_raises_the_failure(worker):
    sent = payload(fail=10)
    result = autoretried.delay(sent)
    with pytest.raises(Flaky):
        result.get(timeout=90)
    assert len(attempts_of(sent["key"])) == 4  # the first run and max_retries=3 retries
    assert record_of(result)["failure_class"] == "transient"


def test_autoretry_for_without_retry_backoff_waits_default_retry_delay(worker):
    sent = payload(fail=2)
    assert fixed_delay.delay(sent).get(timeout=90) == 3
    assert_waited(sent["key"], [1, 1])


def test_dont_autoretry_for_is_handed_off_at_once(worker):
    sent = payload(fail=1)
    result = not_autoretried.delay(sent)
    with pytest.raises(Flaky):
        result.get(timeout=60)
    assert len(attempts_of(sent["key"])) == 1
    assert record_of(result)["failure_class"] == "permanent"


def test_self_retry_runs_again_after_its_countdown(worker):
    sent = payload(fail=2, countdown=1)
    assert asks_to_retry.delay(sent).get(timeout=90) == 3
    assert_waited(sent["key"], [1, 1])


def test_self_retry_stops_at_its_max_retries_and_hands_off_what_it_retried_for(worker):
    sent = payload(fail=10, countdown=0, max_retries=1)
    with pytest.raises(Flaky, match="attempt 2 of"):
        asks_to_retry.delay(sent).get(timeout=60)
    assert len(attempts_of(sent["key"])) == 2


def test_a_self_retry_longer_than_a_worker_may_hold_a_message_hops_and_runs_once(partner):
    # Visibility 8 s, time limit 2 s: a worker holds a message at most 4 s, so a 7 s countdown hops.
    with workers(fast_env(visibility=8, time_limit=2)):
        sent = payload(fail=1, countdown=7)
        assert asks_to_retry.delay(sent).get(timeout=90) == 2
        assert_waited(sent["key"], [7])
        assert not ran_again(sent["key"]), attempts_of(sent["key"])


def ran_again(key: str) -> bool:
    """Another run of the step within twice the visibility timeout, as a message held too long would get."""
    try:
        wait_until(lambda: len(attempts_of(key)) > 2, 16, "a second delivery")
    except TimeoutError:
        return False
    return True


def record_of(result) -> dict:
    """The ledger's record of the job a `.delay()` opened."""
    _, job_id = job_of_task(result.id)
    return get_job(job_id)
