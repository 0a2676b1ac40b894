"""What vetro works around in redis-py's Redis Cluster client, on a three-master cluster of the test's own.

When redis-py fixes these, the tests that show the bugs fail, and the workarounds in pipeline.store can go.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException

from pipeline.store import JobKeys, queue_script
from tests.helpers import settings_set
from vetro.testing.cluster import RedisClusterGroup

pytestmark = pytest.mark.integration

ECHO = "return {KEYS[1], ARGV[1]}"


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterGroup]:
    with RedisClusterGroup() as group, settings_set({"VETRO_RESULT_STORE_URL": group.url}):
        yield group


def client_of(cluster: RedisClusterGroup) -> RedisCluster:
    return RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", node.port) for node in cluster.nodes])


def keys_asked(cluster: RedisClusterGroup) -> int:
    """COMMAND calls the cluster's nodes have answered (COMMAND GETKEYS among them)."""
    return sum(
        int(redis.Redis(port=node.port).info("commandstats").get("cmdstat_command", {}).get("calls", 0))
        for node in cluster.nodes
    )


def test_redis_py_blocks_evalsha_on_a_cluster_pipeline(cluster):
    """redis/redis-py#2914: pipeline.store.queue_script sends EVALSHA as a raw command instead."""
    with pytest.raises(RedisClusterException, match="evalsha is blocked"):
        client_of(cluster).pipeline(transaction=False).evalsha("0" * 40, 1, "k{1}")


def test_redis_py_asks_a_node_for_a_raw_evalshas_keys_unless_given_its_node(cluster):
    client = client_of(cluster)
    sha = client.script_load(ECHO)
    before = keys_asked(cluster)
    pipe = client.pipeline(transaction=False)
    pipe.execute_command("EVALSHA", sha, 1, "k{1}", "a")
    assert pipe.execute() == [[b"k{1}", b"a"]]
    assert keys_asked(cluster) > before, "redis-py no longer asks: queue_script's target_nodes can go"


def test_a_script_queued_by_vetro_goes_to_its_slots_master_without_asking(cluster):
    from pipeline.store import redis_client

    keys = JobKeys("orders", "job-1").all(["validate"])[:2]
    client = redis_client()  # made: it has read the command table (one COMMAND)
    before = keys_asked(cluster)
    pipe = client.pipeline(transaction=False)
    queue_script(pipe, "echo", ECHO, keys, ["a"])
    assert pipe.execute() == [[keys[0].encode(), b"a"]]
    assert keys_asked(cluster) == before
