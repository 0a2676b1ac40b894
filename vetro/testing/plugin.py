"""vetro's pytest plugin: integration tests of your own pipelines on real parts.

Enable it in your `conftest.py` with `pytest_plugins = ["vetro.testing.plugin"]`, and name your
pipeline modules with `pytest --vetro-pipelines signups` (or the `vetro_pipelines` ini option, or
VETRO_PIPELINES). Before any test module is imported it starts a private redis-server on a free
port and a migrated SQLite dead-letter store, and points vetro's settings at them, so no test
touches a shared Redis. Fixtures:

- `vetro_redis`: that Redis (`.url`, `.restart()`), the broker and, unless `--vetro-result-store cluster`
  (or VETRO_TEST_RESULT_STORE=cluster) puts the result store on a private three-master Redis Cluster
  (vetro.testing.cluster), the result store too;
- `vetro_worker`: a real prefork `celery -A pipeline worker` running your pipelines, for a module's
  tests (`vetro_worker_env` adds settings to it);
- `vetro_beat`: `celery beat` (the reconciler and housekeeping), when a test asks for it;
- `vetro_partner`: the reference pipelines' partner stub, in a thread (`.url`).

`wait_for_job` and `job_timeline` (in `vetro.testing`) read a job's end and its steps.

Why not Celery's or pytest-celery's fixtures: Celery's `celery_worker` runs the worker in a thread of
the test process (no prefork pool, nothing to kill), and pytest-celery 1.3 starts its workers and
brokers in Docker containers. vetro's guarantees are about real processes dying and coming back, so
the plugin starts real ones; no test here needs a Docker engine.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from vetro.testing.cluster import RedisClusterGroup
from vetro.testing.processes import BeatProcess, RedisServer, WorkerProcess

REDIS = pytest.StashKey[RedisServer]()
STORES = ("redis", "cluster")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("vetro_pipelines", "modules of the pipelines the tests' workers load (VETRO_PIPELINES)")
    parser.addoption("--vetro-pipelines", default=None, help="modules of your pipelines (VETRO_PIPELINES)")
    parser.addoption(
        "--vetro-result-store",
        choices=STORES,
        default=None,
        help="the tests' result store: the broker's private Redis (default), or a private Redis Cluster "
        "(VETRO_TEST_RESULT_STORE)",
    )


def pytest_configure(config: pytest.Config) -> None:
    """A private Redis and dead-letter store, before anything reads vetro's settings."""
    server = RedisServer().start()
    config.add_cleanup(server.stop)
    config.stash[REDIS] = server
    os.environ.update({"VETRO_BROKER_URL": server.url, "VETRO_RESULT_STORE_URL": _result_store(config, server)})
    pipelines = config.getoption("--vetro-pipelines") or config.getini("vetro_pipelines")
    if pipelines:
        os.environ["VETRO_PIPELINES"] = ",".join(pipelines) if isinstance(pipelines, list) else pipelines
    database = f"sqlite:///{tempfile.mkdtemp(prefix='vetro-tests-')}/dlq.db"
    os.environ["VETRO_DATABASE_URL"] = database
    from dlq.db import upgrade
    from settings import reset_settings

    reset_settings()
    upgrade(database)


def _result_store(config: pytest.Config, server: RedisServer) -> str:
    store = config.getoption("--vetro-result-store") or os.environ.get("VETRO_TEST_RESULT_STORE") or "redis"
    if store not in STORES:
        raise pytest.UsageError(f"VETRO_TEST_RESULT_STORE: {store!r} is not one of {', '.join(STORES)}")
    if store == "redis":
        return server.url
    cluster = RedisClusterGroup().start()
    config.add_cleanup(cluster.stop)
    return cluster.url


@pytest.fixture(scope="session")
def vetro_redis(pytestconfig: pytest.Config) -> RedisServer:
    return pytestconfig.stash[REDIS]


@pytest.fixture(scope="module")
def vetro_worker_env() -> dict[str, str]:
    """Settings for the tests' workers, over the environment's (override it to add your own)."""
    return {}


@pytest.fixture(scope="module")
def vetro_worker(vetro_redis: RedisServer, vetro_worker_env: dict[str, str]) -> Iterator[WorkerProcess]:
    worker = WorkerProcess({**vetro_worker_env, "PYTHONPATH": _python_path()}, name="vetro-test-worker")
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture
def vetro_beat(vetro_redis: RedisServer, vetro_worker_env: dict[str, str]) -> Iterator[BeatProcess]:
    beat = BeatProcess({**vetro_worker_env, "PYTHONPATH": _python_path()})
    beat.start()
    yield beat
    beat.stop()


@pytest.fixture(scope="session")
def vetro_partner() -> Iterator[object]:
    from tasks.partner_stub import PartnerServer

    server = PartnerServer()
    server.start_in_thread()
    yield server
    server.shutdown()
    server.server_close()


def _python_path() -> str:
    """The test process's module path, so a worker imports the pipelines the tests do."""
    return os.pathsep.join(filter(None, [str(Path.cwd()), os.environ.get("PYTHONPATH", "")]))
