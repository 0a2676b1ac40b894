"""Redis over TLS (`rediss://`), with certificates the test makes: a worker, producers and health reach it with
the authority named in the URL, and, where the server asks for one (mutual TLS), with a client certificate;
a client that does not trust the server, or that the server does not trust, is refused."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from pipeline import submit
from tests.helpers import assert_every_effect_once, eu_purchases, fast_env, producing_to, vetro, wait_for_completion
from vetro.testing.processes import RedisServer, WorkerProcess
from vetro.testing.tls import Certificates, make_certificates

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> Certificates:
    return make_certificates(str(tmp_path_factory.mktemp("tls")))


@pytest.fixture(scope="module", params=["server certificate", "mutual"])
def tls_redis(request, certificates) -> Iterator[RedisServer]:
    with RedisServer(tls=certificates, tls_clients=request.param == "mutual") as server:
        yield server


@pytest.fixture
def tls_worker(tls_redis, partner) -> Iterator[WorkerProcess]:
    env = fast_env(visibility=16, time_limit=10, VETRO_BROKER_URL=tls_redis.url, VETRO_RESULT_STORE_URL=tls_redis.url)
    worker = WorkerProcess(env, concurrency=2, name="tls").start()
    try:
        yield worker
    finally:
        worker.stop()


def test_jobs_run_end_to_end_over_tls(tls_redis, tls_worker, partner):
    orders = eu_purchases("tls", 5)
    with producing_to(tls_redis.url):
        records = wait_for_completion([submit(order, key) for order, key in orders], timeout=120)
    assert [record["status"] for record in records] == ["completed"] * 5
    assert_every_effect_once(partner.url, [key for _, key in orders])
    health = vetro("health", env={"VETRO_BROKER_URL": tls_redis.url, "VETRO_RESULT_STORE_URL": tls_redis.url})
    # Ready (exit 0); it may be degraded by other tests' dead letters in the shared store.
    assert health.returncode == 0, health.stdout + health.stderr
    assert "does not answer" not in health.stdout + health.stderr


def test_the_port_speaks_only_tls_and_an_untrusted_authority_is_refused(tls_redis):
    plain = tls_redis.url.replace("rediss://", "redis://").split("?")[0]
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(plain, socket_timeout=2, socket_connect_timeout=2).ping()
    untrusting = tls_redis.url.split("?")[0]  # the system's authorities only: the test's is not among them
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        redis.Redis.from_url(untrusting, socket_timeout=2, socket_connect_timeout=2).ping()
    refused = vetro("health", "--json", env={"VETRO_BROKER_URL": untrusting, "VETRO_RESULT_STORE_URL": untrusting})
    assert refused.returncode == 1
    assert "the result store does not answer" in refused.stdout
    assert "certificate verify failed" in refused.stdout  # the check's detail says why


def test_a_server_that_asks_for_a_client_certificate_refuses_a_client_without_one(certificates):
    with RedisServer(tls=certificates, tls_clients=True) as server:
        assert redis.Redis.from_url(server.url, socket_timeout=5).ping()
        anonymous = server.url.split("&ssl_certfile=")[0]
        with pytest.raises(redis.ConnectionError):
            redis.Redis.from_url(anonymous, socket_timeout=2, socket_connect_timeout=2).ping()
