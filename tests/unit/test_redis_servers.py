"""Reaching a Redis from its URL: Sentinel URLs parsed as kombu parses them, and the settings that go with them."""

from __future__ import annotations

import pytest
import redis
from pydantic import ValidationError

from pipeline.adapter.app import celery_config
from pipeline.redis_servers import cluster_address, connect, is_cluster, is_sentinel, sentinel_address, where
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


CLUSTER = "rediss+cluster://ops:pa%40ss@10.0.0.1:7000,10.0.0.2,10.0.0.3:7002/0?ssl_ca_certs=/etc/ca.pem&other=1"


def test_a_cluster_url_lists_every_node_with_its_credentials_and_tls_options():
    address = cluster_address(CLUSTER)
    assert address.nodes == [("10.0.0.1", 7000), ("10.0.0.2", 6379), ("10.0.0.3", 7002)]
    assert (address.username, address.password) == ("ops", "pa@ss")
    assert address.options == {"ssl": True, "ssl_ca_certs": "/etc/ca.pem"}
    assert cluster_address("redis+cluster://h:1/0").options == {}
    assert is_cluster(CLUSTER) and not is_cluster("redis://h:6379/0") and not is_cluster(SENTINELS)


def test_where_names_a_clusters_nodes_never_its_password():
    assert where(CLUSTER) == "the Redis Cluster of 10.0.0.1:7000, 10.0.0.2:6379, 10.0.0.3:7002"


def test_a_cluster_may_hold_the_result_and_breaker_stores_beside_a_redis_broker():
    settings = Settings(broker_url="redis://127.0.0.1:6379/0", result_store_url=CLUSTER, breaker_store_url=CLUSTER)
    assert settings.results_url == settings.breaker_url == CLUSTER


def test_a_cluster_cannot_be_the_broker():
    with pytest.raises(ValidationError, match="BROKER_URL: a Redis Cluster cannot be the broker"):
        Settings(broker_url="redis+cluster://10.0.0.1:7000/0")


def test_a_cluster_has_only_database_0():
    with pytest.raises(ValidationError, match="RESULT_STORE_URL: a Redis Cluster has only database 0, not '3'"):
        Settings(result_store_url="redis+cluster://10.0.0.1:7000,10.0.0.2:7000/3")


def test_a_cluster_url_that_lists_no_node_names_nothing():
    with pytest.raises(ValidationError, match="RESULT_STORE_URL: the redis\\+cluster:// URL lists no node"):
        Settings(result_store_url="redis+cluster://:pw@/0")


def test_submit_replicas_is_refused_with_a_cluster_store_where_wait_covers_one_master():
    with pytest.raises(ValidationError, match="SUBMIT_REPLICAS: not with a Redis Cluster result store"):
        Settings(result_store_url="redis+cluster://10.0.0.1:7000/0", submit_replicas=1)


def test_a_cluster_none_of_whose_nodes_answers_is_a_lost_redis_like_any_other():
    """redis-py's RedisCluster asks its nodes for the slots as it is made, and raises RedisClusterException (not a
    RedisError) when none answers; vetro's callers handle a lost Redis as redis.ConnectionError."""
    with pytest.raises(redis.ConnectionError, match=r"the Redis Cluster of 127\.0\.0\.1:1: Redis Cluster cannot be"):
        connect("redis+cluster://127.0.0.1:1/0", socket_connect_timeout=1)
