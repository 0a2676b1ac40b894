"""`vetro health --this-host`, a worker pod's liveness probe: alive while a worker of this host beats, not
once it has stopped; it reads one Redis hash and asks nothing of the other workers."""

from __future__ import annotations

import pytest

from tests.conftest import worker_env
from tests.helpers import vetro
from vetro.testing.processes import RedisServer, WorkerProcess, wait_until

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
