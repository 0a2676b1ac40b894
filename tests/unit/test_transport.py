"""vetro's Redis transport keeps a worker alive where kombu 5.7.0's own one ends it (kombu#582, #970), on a
Redis and behind Sentinels, and does kombu's bookkeeping with fewer commands."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis
from kombu import Connection
from kombu.transport import redis as kombu_redis

from pipeline.adapter.transport import DETACHED, SchemedConnection, SentinelTransport, Transport, captured
from vetro.testing.processes import RedisServer
from vetro.testing.sentinel import MASTER_NAME, SentinelServer


def give_back_after_connection_loss(url: str, transport: type) -> None:
    """What a worker does when its broker connection drops: collect it, then give back unacked messages."""
    with Connection(url, transport=transport, transport_options={"master_name": MASTER_NAME}) as connection:
        channel = connection.default_channel
        connection.collect()
        channel.qos.restore_unacked()


@pytest.fixture(scope="module")
def sentinel_url() -> Iterator[str]:
    """A master and one Sentinel watching it: a `sentinel://` broker."""
    with RedisServer() as master:
        sentinel = SentinelServer(master.port).start()
        try:
            yield f"sentinel://127.0.0.1:{sentinel.port}/0"
        finally:
            sentinel.stop()


def test_kombus_transport_fails_with_an_attribute_error_once_its_connection_is_collected(redis_server):
    with pytest.raises(AttributeError, match="'NoneType' object has no attribute"):
        give_back_after_connection_loss(redis_server.url, kombu_redis.Transport)


def test_vetros_transport_gives_the_messages_back(redis_server):
    give_back_after_connection_loss(redis_server.url, Transport)


def test_kombus_sentinel_transport_fails_with_an_attribute_error_once_its_connection_is_collected(sentinel_url):
    """What ended every worker a Sentinel failover disconnected: an error the consumer does not expect."""
    with pytest.raises(AttributeError, match="'NoneType' object has no attribute"):
        give_back_after_connection_loss(sentinel_url, kombu_redis.SentinelTransport)


def test_vetros_sentinel_transport_raises_a_lost_connection_instead(sentinel_url):
    """A ConnectionError, which kombu's connection lists (the worker ignores it while closing, and reconnects);
    the messages stay unacknowledged for the visibility-timeout restore."""
    with pytest.raises(redis.ConnectionError, match=DETACHED) as lost:
        give_back_after_connection_loss(sentinel_url, SentinelTransport)
    assert isinstance(lost.value, Connection(sentinel_url, transport=SentinelTransport).connection_errors)


def _publish(connection: Connection, queue: str, body: dict) -> None:
    with connection.Producer() as producer:
        producer.publish(body, routing_key=queue, serializer="json")


def test_a_publish_inside_captured_is_handed_over_not_sent(redis_server):
    queue = f"captured-{uuid.uuid4().hex}"
    client = redis.Redis.from_url(redis_server.url)
    with Connection(redis_server.url, transport=Transport) as connection:
        with captured() as pushes:
            _publish(connection, queue, {"n": 1})
        assert client.llen(queue) == 0
        assert [key for key, _ in pushes] == [queue]
        client.lpush(*pushes[0])  # what the guard's record script does with it
        message = connection.SimpleQueue(queue).get(timeout=5)
        assert message.payload == {"n": 1}
        message.ack()


def test_unacked_bookkeeping_still_gives_a_message_back_without_multi_exec(redis_server):
    queue = f"unacked-{uuid.uuid4().hex}"
    client = redis.Redis.from_url(redis_server.url)
    transactions = lambda: client.info("commandstats").get("cmdstat_multi", {}).get("calls", 0)  # noqa: E731
    with Connection(redis_server.url, transport=Transport) as connection:
        _publish(connection, queue, {"n": 2})
        channel = connection.default_channel
        before = transactions()
        message = channel.basic_get(queue)  # taken, not acked: kept in the unacked hash
        assert client.hexists(channel.unacked_key, message.delivery_tag)
        assert transactions() == before
        channel.qos.restore_unacked()  # what a worker that stops does (under its own WATCH/MULTI)
    with Connection(redis_server.url, transport=Transport) as connection:
        assert connection.SimpleQueue(queue).get(timeout=5).payload == {"n": 2}


def test_the_channel_reuses_one_client_until_its_pool_changes(redis_server):
    with Connection(redis_server.url, transport=Transport) as connection:
        channel = connection.default_channel
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
            assert first is second
        channel._disconnect_pools()  # a reconnect builds a new pool
        with channel.conn_or_acquire() as third:
            assert third is not first and third.connection_pool is channel.pool


@pytest.mark.parametrize(
    ("url", "transport", "shown"),
    [
        ("redis://127.0.0.1:6379/0", Transport, "redis://127.0.0.1:6379/0"),
        ("rediss://127.0.0.1:6380/0?ssl_cert_reqs=required", Transport, "rediss://127.0.0.1:6380/0"),
        (
            "sentinel://127.0.0.1:26379/0;sentinel://127.0.0.1:26380/0",
            SentinelTransport,
            "sentinel://127.0.0.1:26379/0",
        ),
    ],
)
def test_a_connection_on_vetros_transport_keeps_its_urls_scheme(url, transport, shown):
    """What Flower's broker view reads to choose how to count queues (kombu writes the transport's path)."""
    path = f"{transport.__module__}:{transport.__name__}"
    assert Connection(url, transport=path).as_uri(include_password=True).startswith(f"{path}://")
    assert SchemedConnection(url, transport=path).as_uri(include_password=True) == shown
