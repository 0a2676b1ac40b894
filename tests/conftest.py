"""Shared fixtures, on vetro's pytest plugin (vetro.testing.plugin): a private Redis and dead-letter store,
the partner stub and real worker processes.

The plugin starts the private Redis before any test module is imported, so no test ever talks to
the machine's shared Redis; the pipelines every process loads are the `vetro_pipelines` ini
option (pyproject.toml): the reference ones and the tests' own (tests/pipelines.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from vetro.testing.processes import RedisServer, WorkerProcess

pytest_plugins = ["vetro.testing.plugin"]

# Where the pipelines find their partners: nowhere until the partner fixture starts the stub.
PARTNER_URLS = (
    "ORDERS_PARTNER_URL",
    "REFUNDS_PARTNER_URL",
    "PROVIDER_SYNC_PROVIDER_URL",
    "PROVIDER_SYNC_DESTINATION_URL",
    "PAYMENTS_SERVICE_URL",
)
os.environ.update(dict.fromkeys(PARTNER_URLS, "http://127.0.0.1:1"))


@pytest.fixture(scope="session", autouse=True)
def redis_server(vetro_redis: RedisServer) -> RedisServer:
    """The tests' private Redis, for every test: a stray connection must never reach the shared one."""
    return vetro_redis


@pytest.fixture(scope="session")
def partner_server(vetro_partner):
    """The partner stub, where every reference pipeline (and the tests' own) finds its partners."""
    from settings import reset_settings

    for name in PARTNER_URLS:
        os.environ[name] = vetro_partner.url
    reset_settings()
    return vetro_partner


@pytest.fixture
def partner(partner_server):
    """The partner stub, with no effects recorded and no faults set."""
    httpx.post(f"{partner_server.url}/reset")
    yield partner_server
    httpx.post(f"{partner_server.url}/reset")


# Settings of vetro and of the reference pipelines, passed on to the processes tests start.
SETTINGS_PREFIXES = ("VETRO_", "ORDERS_", "PROVIDER_SYNC_", "PAYMENTS_", "REFUNDS_")


def worker_env(**overrides: str) -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key.startswith(SETTINGS_PREFIXES)} | overrides


@pytest.fixture(scope="module")
def vetro_worker_env() -> dict[str, str]:
    """The plugin's worker, with short backoffs and breaker resets for the reference pipelines' tests."""
    return worker_env(
        VETRO_STAGES__ORDERS__OPERATE__BACKOFF_BASE="1",
        VETRO_STAGES__ORDERS__OPERATE__BACKOFF_MAX="2",
        VETRO_STAGES__ORDERS__ENRICH__BACKOFF_BASE="1",
        VETRO_STAGES__ORDERS__ENRICH__BACKOFF_MAX="2",
        VETRO_BREAKER__RESET_TIMEOUT="3",
    )


@pytest.fixture(scope="module")
def worker(partner_server, vetro_worker: WorkerProcess) -> WorkerProcess:
    """A real prefork worker (2 processes) for a module's tests; modules that start their own don't use it."""
    return vetro_worker


POSTGRES_ADMIN_URL = os.environ.get("VETRO_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def require_postgres() -> None:
    """Skip, saying what is missing, when no PostgreSQL answers (CI sets VETRO_TEST_REQUIRE_POSTGRES: fail there)."""
    import psycopg

    try:
        psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=3).close()
    except psycopg.OperationalError as error:
        if os.environ.get("VETRO_TEST_REQUIRE_POSTGRES"):
            raise
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        pytest.skip(f"needs PostgreSQL at {POSTGRES_ADMIN_URL} (set VETRO_TEST_POSTGRES): {reason}")


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path) -> Iterator[str]:
    """A fresh, migrated dead-letter database of each kind, made the test's (and its workers') database."""
    import psycopg

    from dlq.db import upgrade
    from settings import reset_settings

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/dlq.db"
        name = None
    else:
        require_postgres()
        name = f"vetro_test_{os.getpid()}_{abs(hash(request.node.nodeid)) % 10**8}"
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
            admin.execute(f'CREATE DATABASE "{name}"')
        url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    upgrade(url)
    default = os.environ["VETRO_DATABASE_URL"]
    os.environ["VETRO_DATABASE_URL"] = url
    reset_settings()
    yield url
    os.environ["VETRO_DATABASE_URL"] = default
    reset_settings()
    if name:
        from dlq.db import engine

        engine(url).dispose()
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


CONSOLE_PASSWORD = "correct horse battery"
CONSOLE_PEOPLE = {"vera": "viewer", "otto": "operator", "ada": "admin"}


@pytest.fixture(scope="module")
def console_users(tmp_path_factory) -> Path:
    """A console users file: vera a viewer, otto an operator, ada an admin, all with CONSOLE_PASSWORD."""
    from vetro.web import users

    path = tmp_path_factory.mktemp("console") / "users.json"
    for name, role in CONSOLE_PEOPLE.items():
        users.add(path, name, users.Role.named(role), CONSOLE_PASSWORD)
    return path


@pytest.fixture
def console(database, console_users) -> Iterator[str]:
    """`vetro serve` with those users, on the test's dead-letter database; its base URL."""
    from tests.helpers import serving

    with serving({"VETRO_CONSOLE_USERS_FILE": str(console_users)}) as url:
        yield url
