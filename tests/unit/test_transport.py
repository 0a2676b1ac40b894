"""vetro's Redis transport keeps a worker alive where kombu 5.7.0's own one ends it (kombu#582, #970)."""

from __future__ import annotations

import pytest
from kombu import Connection
from kombu.transport import redis as kombu_redis

from pipeline.transport import Transport


def give_back_after_connection_loss(url: str, transport: type) -> None:
    """What a worker does when its broker connection drops: collect it, then give back unacked messages."""
    with Connection(url, transport=transport) as connection:
        channel = connection.default_channel
        connection.collect()
        channel.qos.restore_unacked()


def test_kombus_transport_fails_with_an_attribute_error_once_its_connection_is_collected(redis_server):
    with pytest.raises(AttributeError, match="'NoneType' object has no attribute"):
        give_back_after_connection_loss(redis_server.url, kombu_redis.Transport)


def test_vetros_transport_gives_the_messages_back(redis_server):
    give_back_after_connection_loss(redis_server.url, Transport)
