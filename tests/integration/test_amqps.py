"""RabbitMQ over TLS (`amqps://`), on a node of the test's own with certificates the test makes: a worker, producers
and health reach it with the authority named in the URL (and a client certificate, where one is given); a client
that does not trust the server, or that speaks plain AMQP to the TLS port, is refused."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from pipeline import submit
from tests.helpers import assert_every_effect_once, eu_purchases, fast_env, producing_to, vetro, wait_for_completion
from vetro.testing.processes import WorkerProcess
from vetro.testing.rabbitmq import SERVER_SCRIPT, RabbitMQNode
from vetro.testing.tls import Certificates, make_certificates

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> Certificates:
    return make_certificates(str(tmp_path_factory.mktemp("tls")))


@pytest.fixture(scope="module")
def node(certificates) -> Iterator[RabbitMQNode]:
    if not SERVER_SCRIPT.exists() and not os.environ.get("VETRO_TEST_REQUIRE_RABBITMQ"):
        pytest.skip(f"needs RabbitMQ ({SERVER_SCRIPT}, Debian's rabbitmq-server)")
    with RabbitMQNode(certificates) as started:
        yield started


def servers(broker_url: str, redis_url: str) -> dict[str, str]:
    return {"VETRO_BROKER_URL": broker_url, "VETRO_RESULT_STORE_URL": redis_url}


@pytest.mark.long  # a RabbitMQ node takes 8 to 20 s to start: the default tier's 12 minutes are spoken for
def test_jobs_run_end_to_end_over_tls(node, certificates, redis_server, partner):
    trusting = node.url(ssl_ca_certs=str(certificates.ca))
    worker = WorkerProcess(fast_env(visibility=16, time_limit=10) | servers(trusting, redis_server.url), name="amqps")
    worker.start()
    try:
        orders = eu_purchases("amqps", 5)
        with producing_to(trusting, results=redis_server.url):
            records = wait_for_completion([submit(order, key) for order, key in orders], timeout=120)
    finally:
        worker.stop()
    assert [record["status"] for record in records] == ["completed"] * 5
    assert_every_effect_once(partner.url, [key for _, key in orders])
    # With a client certificate as well (the node checks it: the same authority signed it).
    mutual = node.url(
        ssl_ca_certs=str(certificates.ca),
        ssl_certfile=str(certificates.client_cert),
        ssl_keyfile=str(certificates.client_key),
    )
    health = vetro("health", "--json", env=servers(mutual, redis_server.url))
    assert '"name": "broker",\n      "ok": true' in health.stdout, health.stdout + health.stderr


@pytest.mark.long
def test_the_port_speaks_only_tls_and_an_untrusted_authority_is_refused(node, certificates, redis_server):
    untrusting = node.url()  # the system's authorities only: the test's is not among them
    refused = vetro("health", "--json", env=servers(untrusting, redis_server.url))
    assert refused.returncode == 1
    assert "the broker does not answer" in refused.stdout
    assert "certificate verify failed" in refused.stdout  # the check's detail says why
    plain = vetro("health", "--json", env=servers(untrusting.replace("amqps://", "amqp://"), redis_server.url))
    assert plain.returncode == 1 and "the broker does not answer" in plain.stdout


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("amqps://h//?ssl_ca_cert={ca}", "ssl_ca_cert: not a TLS option of amqps:// URLs"),
        ("amqps://h//?ssl_ca_certs=/no/such/ca.pem", "ssl_ca_certs: '/no/such/ca.pem' is not a file"),
        ("amqps://h//?ssl_certfile={ca}", "ssl_certfile and ssl_keyfile: give both"),
        ("amqps://h//?ssl_cert_reqs=maybe", "ssl_cert_reqs: 'maybe' is not one of"),
        ("amqp://h//?ssl_ca_certs={ca}", "ssl_ca_certs: TLS options on a plain amqp:// URL (use amqps://)"),
    ],
)
def test_tls_options_that_name_nothing_are_refused_in_one_line(certificates, redis_server, query, message):
    url = query.format(ca=certificates.ca)
    for command in (["health"], ["submit", "--json", "{}"]):
        result = vetro(*command, env=servers(url, redis_server.url))
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert result.stderr.startswith(f"error: bad configuration: VETRO_BROKER_URL: {message}"), result.stderr
