"""`vetro serve` and `vetro health` over real workers, each test on a Redis and a dead-letter database of its own.

What an operator's monitoring reads must equal what ran; readiness must turn when a worker stops
taking messages (SIGSTOP: alive, connected, consuming nothing) and when the broker goes away.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import fast_env, serving, vetro, workers
from vetro.testing.processes import RedisServer, wait_until

pytestmark = pytest.mark.integration

STALL_SECONDS = 4


@pytest.fixture
def fleet() -> Iterator[tuple[RedisServer, dict[str, str]]]:
    """A Redis and a migrated SQLite dead-letter database of the test's own, and settings naming them."""
    from dlq.db import upgrade

    server = RedisServer().start()
    database = f"sqlite:///{tempfile.mkdtemp(prefix='vetro-ops-')}/dlq.db"
    upgrade(database)
    env = fast_env(
        10,
        5,
        VETRO_BROKER_URL=server.url,
        VETRO_RESULT_STORE_URL=server.url,
        VETRO_DATABASE_URL=database,
        VETRO_HEALTH_STALL_SECONDS=str(STALL_SECONDS),
    )
    try:
        yield server, env
    finally:
        server.stop()


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    text = httpx.get(f"{url}/metrics", timeout=30).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def submit_readings(env: dict[str, str], readings: list[dict]) -> None:
    path = Path(tempfile.mkdtemp(prefix="vetro-readings-")) / "readings.jsonl"
    path.write_text("".join(json.dumps(reading) + "\n" for reading in readings))
    result = vetro("submit", "--pipeline", "metered", str(path), env=env)
    assert result.returncode == 0, result.stderr


def ready(url: str) -> httpx.Response:
    return httpx.get(f"{url}/health/ready", timeout=30)


def test_scraped_counters_equal_what_ran(fleet):
    _, env = fleet
    outcomes = ["ok"] * 4 + ["permanent"] * 3 + ["flaky"] * 2 + ["waits"] * 2 + ["technical"]
    readings = [{"id": f"r{n}", "outcome": outcome} for n, outcome in enumerate(outcomes)]
    check, store = "metered.check", "metered.store"
    expected = {
        ("vetro_jobs_submitted_total", ()): 12,
        ("vetro_idempotency_hits_total", (("stage", "submit"),)): 1,
        ("vetro_jobs_completed_total", ()): 8,
        ("vetro_jobs_failed_total", ()): 4,
        ("vetro_job_duration_seconds_count", ()): 8,
        ("vetro_step_failures_total", (("stage", "check"), ("failure_class", "permanent"))): 3,
        ("vetro_step_failures_total", (("stage", "check"), ("failure_class", "transient"))): 2,
        ("vetro_step_failures_total", (("stage", "check"), ("failure_class", "technical"))): 3,
        ("vetro_step_retries_total", (("stage", "check"), ("failure_class", "transient"))): 2,
        ("vetro_step_retries_total", (("stage", "check"), ("failure_class", "technical"))): 2,
        ("vetro_dead_letters_total", (("stage", "check"), ("failure_class", "permanent"))): 3,
        ("vetro_dead_letters_total", (("stage", "check"), ("failure_class", "technical"))): 1,
        ("vetro_dependency_waits_total", (("stage", "check"),)): 2,
        ("celery_task_started_total", (("name", check),)): 4 + 3 + 2 * 2 + 2 * 2 + 3,
        ("celery_task_succeeded_total", (("name", check),)): 8,
        ("celery_task_succeeded_total", (("name", store),)): 8,
        ("celery_task_retried_total", (("name", check),)): 2 + 2 + 2,
        ("celery_task_failed_total", (("name", check), ("exception", "DeadLettered"))): 4,
        ("vetro_dead_letter_rows", (("status", "failed"),)): 4,
    }
    with workers(env, concurrency=2), serving(env) as url:
        submit_readings(env, readings)
        submit_readings(env, readings[:1])  # the same key again: not a new job

        def observed() -> dict:
            samples = scrape(url)
            return {
                (name, labels): sum(
                    value
                    for (found, found_labels), value in samples.items()
                    if found == name and set(labels) <= found_labels
                )
                for name, labels in expected
            }

        try:
            wait_until(lambda: observed() == expected, 120, "the scraped counters to equal what ran", interval=1)
        except TimeoutError:
            differences = {key: (value, expected[key]) for key, value in observed().items() if value != expected[key]}
            pytest.fail(f"scraped (got, expected): {differences}")
        samples = scrape(url)
        open_groups = [labels for (name, labels), _ in samples.items() if name == "vetro_dead_letter_open_rows"]
        assert len(open_groups) == 2  # two causes: the unknown meter, and our bug
        assert not any(("job_id" in dict(labels)) for _, labels in samples)  # bounded labels
        _check_with_promtool(httpx.get(f"{url}/metrics", timeout=30).text)


def _check_with_promtool(text: str) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing (CI installs Debian's prometheus package)")
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_ready_turns_503_when_a_worker_stops_consuming_and_200_when_it_resumes(fleet):
    _, env = fleet
    with workers(env, concurrency=1) as (worker,), serving(env) as url:
        wait_until(lambda: ready(url).status_code == 200, 60, "ready at start")
        worker.kill(signal.SIGSTOP)  # alive and connected, taking nothing
        try:
            submit_readings(env, [{"id": f"s{n}", "outcome": "ok"} for n in range(3)])
            answer = wait_until(
                lambda: (found := ready(url)).status_code == 503 and found, STALL_SECONDS * 10, "ready to turn 503"
            )
            assert any("queue vetro is not being consumed" in problem for problem in answer.json()["problems"])
            assert scrape(url)[("vetro_queue_stalled", frozenset({("queue_name", "vetro")}))] == 1
            health = vetro("health", env=env)
            assert health.returncode == 1
            assert "not being consumed" in health.stderr
        finally:
            worker.kill(signal.SIGCONT)
        wait_until(lambda: ready(url).status_code == 200, 90, "ready to return to 200 once the worker resumes")
        assert vetro("health", env=env).returncode == 0


def test_ready_turns_503_when_the_broker_is_down_and_health_says_why(fleet):
    server, env = fleet
    with serving(env) as url:
        wait_until(lambda: ready(url).status_code == 200, 60, "ready at start")
        server.shutdown()
        try:
            answer = ready(url)
            assert answer.status_code == 503
            assert any("does not answer" in problem for problem in answer.json()["problems"])
            health = vetro("health", "--json", env=env)
            assert health.returncode == 1
            report = json.loads(health.stdout)
            assert report["ready"] is False
            assert {check["name"]: check["ok"] for check in report["checks"]}["result_store"] is False
            assert httpx.get(f"{url}/health/live", timeout=10).status_code == 200  # the server itself is fine
        finally:
            server.start()
        wait_until(lambda: ready(url).status_code == 200, 60, "ready again once the broker is back")


def test_every_endpoint_asks_for_the_configured_credentials(fleet):
    _, env = fleet
    with serving({**env, "VETRO_SERVE_AUTH": "ops:s3cret"}) as url:
        for path in ("/metrics", "/health/live", "/health/ready"):
            assert httpx.get(f"{url}{path}", timeout=30).status_code == 401
            assert httpx.get(f"{url}{path}", auth=("ops", "wrong"), timeout=30).status_code == 401
            assert httpx.get(f"{url}{path}", auth=("ops", "s3cret"), timeout=30).status_code == 200


def test_a_slow_dependency_is_counted_logged_and_its_latency_shown(monkeypatch, caplog):
    from pipeline import dependencies
    from pipeline.telemetry import metrics
    from pipeline.watching.health import core_health
    from settings import reset_settings

    monkeypatch.setenv("VETRO_SLOW_CALL_SECONDS", "0.2")
    reset_settings()
    name = f"slowpoke-{os.getpid()}"
    try:
        for pause in (0.01, 0.01, 0.3):
            dependencies.call(name, time.sleep, pause)
        metrics.flush()
        durations, slow = metrics.read((metrics.CALL_DURATION, metrics.SLOW_CALLS))
        [calls] = [
            s for s in metrics.histogram_series(metrics.CALL_DURATION, durations) if s.labels["dependency"] == name
        ]
        assert calls.count == 3 and calls.quantile(0.5) < 0.2 < calls.quantile(0.95)
        assert {s.labels["dependency"]: s.value for s in metrics.counter_series(metrics.SLOW_CALLS, slow)}[name] == 1
        assert [r for r in caplog.records if f"slow call to {name}" in r.getMessage()]
        [shown] = [latency for latency in core_health().dependencies if latency.name == name]
        assert (shown.calls, shown.slow_calls) == (3, 1)
    finally:
        monkeypatch.delenv("VETRO_SLOW_CALL_SECONDS")
        reset_settings()
