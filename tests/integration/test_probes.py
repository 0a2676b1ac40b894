"""`vetro health --this-host`, a worker pod's liveness probe: alive while a worker of this host beats, not
once it has stopped; it reads one Redis hash and asks nothing of the other workers."""

from __future__ import annotations

import json

import pytest

from tests.conftest import worker_env
from tests.helpers import vetro
from vetro.testing.processes import BeatProcess, RedisServer, WorkerProcess, wait_until

pytestmark = pytest.mark.integration


def test_the_liveness_probe_follows_this_hosts_worker():
    with RedisServer() as redis:
        env = worker_env(VETRO_BROKER_URL=redis.url, VETRO_RESULT_STORE_URL=redis.url)
        probe = lambda: vetro("health", "--this-host", env=env)  # noqa: E731
        assert probe().returncode == 1 and "has sent a heartbeat lately" in probe().stderr
        worker = WorkerProcess(env, concurrency=1, name="probed").start()
        try:
            alive = wait_until(lambda: (answer := probe()).returncode == 0 and answer, 60, "the probe to pass")
            assert "probed@" in alive.stderr
        finally:
            worker.stop()
        wait_until(lambda: probe().returncode == 1, 60, "the probe to fail once the worker stopped")


def test_health_says_when_workers_run_without_the_reconciler_and_stops_once_beat_runs_it():
    """Without beat a stalled job is never driven on: health warns (degraded, still ready), until beat sweeps."""
    with RedisServer() as redis:
        env = worker_env(VETRO_BROKER_URL=redis.url, VETRO_RESULT_STORE_URL=redis.url, VETRO_RECONCILE_INTERVAL="1")
        warnings = lambda: json.loads(vetro("health", "--json", env=env).stdout)["warnings"]  # noqa: E731
        worker = WorkerProcess(env, concurrency=1, name="beatless").start()
        beat = BeatProcess(env)
        try:
            assert wait_until(
                lambda: any("the reconciler has not run" in warning for warning in warnings()), 60, "the warning"
            )
            beat.start()
            wait_until(lambda: not any("reconciler" in warning for warning in warnings()), 60, "beat's first sweep")
        finally:
            beat.stop()
            worker.stop()
