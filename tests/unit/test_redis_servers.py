"""Reaching a Redis from its URL: Sentinel URLs parsed as kombu parses them, and the settings that go with them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pipeline.adapter.app import celery_config
from pipeline.redis_servers import is_sentinel, sentinel_address, where
from settings import Settings, reset_settings

SENTINELS = "sentinel://:s3cret@10.0.0.1:26379;sentinel://10.0.0.2:26380;sentinel://10.0.0.3/2"


def test_a_sentinel_url_lists_every_sentinel_with_the_first_ones_database_and_password():
    address = sentinel_address(SENTINELS)
    assert address.sentinels == [("10.0.0.1", 26379), ("10.0.0.2", 26380), ("10.0.0.3", 26379)]
    assert (address.db, address.password) == (0, "s3cret")
    assert sentinel_address("sentinel://h:1/3").db == 3
    assert is_sentinel(SENTINELS) and not is_sentinel("redis://h:6379/0")


def test_where_names_the_server_never_the_password(monkeypatch):
    monkeypatch.setenv("VETRO_SENTINEL_MASTER", "vetro")
    monkeypatch.setenv("VETRO_BROKER_URL", SENTINELS)
    reset_settings()
    try:
        assert "s3cret" not in where(SENTINELS)
        assert where(SENTINELS) == (
            "the Redis master 'vetro' of the Sentinels at 10.0.0.1:26379, 10.0.0.2:26380, 10.0.0.3:26379"
        )
        assert where("redis://:pw@cache:6380/1") == "the Redis at cache:6380"
    finally:
        monkeypatch.undo()
        reset_settings()


def test_a_sentinel_url_needs_the_masters_name():
    with pytest.raises(ValidationError, match="VETRO_SENTINEL_MASTER: required with a sentinel:// URL"):
        Settings(broker_url=SENTINELS)


def test_a_masters_name_without_a_sentinel_url_names_nothing():
    with pytest.raises(ValidationError, match="no URL is sentinel://: it names nothing"):
        Settings(broker_url="redis://127.0.0.1:6379/0", sentinel_master="vetro")


def test_the_broker_behind_sentinels_uses_vetros_transport_with_the_masters_name():
    config = celery_config(Settings(broker_url=SENTINELS, sentinel_master="vetro"))
    assert config["broker_transport"] == "pipeline.adapter.transport:SentinelTransport"
    assert config["broker_transport_options"]["master_name"] == "vetro"
    assert config["broker_transport_options"]["visibility_timeout"] == Settings().visibility_timeout


def test_a_result_store_behind_sentinels_may_sit_beside_a_rabbitmq_broker():
    settings = Settings(broker_url="amqp://guest@mq//", result_store_url=SENTINELS, sentinel_master="vetro")
    assert settings.results_url == SENTINELS
    assert celery_config(settings)["broker_transport"] is None


def test_the_transport_reaches_the_master_the_sentinels_name():
    """Contract: kombu's Sentinel channel is the one under vetro's (its pool asks the Sentinels)."""
    from kombu.transport import redis as kombu_redis

    from pipeline.adapter.transport import Channel, SentinelChannel, SentinelTransport

    assert SentinelTransport.Channel is SentinelChannel
    assert SentinelChannel.__mro__[1:3] == (Channel, kombu_redis.SentinelChannel)
    assert "master_name" in SentinelChannel.from_transport_options
