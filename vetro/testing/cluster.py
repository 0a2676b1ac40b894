"""A Redis Cluster on loopback: three masters, each a redis-server of its own, for the result store's tests.

`RedisClusterGroup.url` is the `redis+cluster://` URL vetro is given as VETRO_RESULT_STORE_URL. The
slots are split in three, as `redis-cli --cluster create` splits them; the nodes are joined with
CLUSTER ADDSLOTS and CLUSTER MEET, which is what that command sends, without its prompt.
"""

from __future__ import annotations

import socket

import redis

from vetro.testing.processes import RedisServer, free_port, wait_until

SLOTS = 16384
MASTERS = 3
BUS_OFFSET = 10000  # a node's cluster bus listens on its port + 10000


def cluster_port() -> int:
    """A free loopback port whose bus port (+10000) exists and is free too."""
    while True:
        port = free_port()
        if port + BUS_OFFSET > 65535:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + BUS_OFFSET))
            except OSError:
                continue
        return port


class RedisClusterGroup:
    """Three cluster-enabled masters sharing the 16,384 slots; started and stopped together."""

    def __init__(self, masters: int = MASTERS) -> None:
        self.nodes = [
            RedisServer(extra_args=["--cluster-enabled", "yes"], choose_port=cluster_port) for _ in range(masters)
        ]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes) + "/0"

    def start(self) -> RedisClusterGroup:
        for node in self.nodes:
            node.extra_args += ["--cluster-config-file", f"{node.directory}/nodes.conf"]
            node.start()
        share = SLOTS // len(self.nodes)
        for number, node in enumerate(self.nodes):
            last = SLOTS - 1 if number == len(self.nodes) - 1 else (number + 1) * share - 1
            self._client(node).execute_command("CLUSTER ADDSLOTS", *range(number * share, last + 1))
        for node in self.nodes[1:]:
            self._client(node).execute_command("CLUSTER MEET", "127.0.0.1", self.nodes[0].port)
        wait_until(self._ok, 60, "the Redis Cluster to agree on its slots")
        return self

    @staticmethod
    def _client(node: RedisServer) -> redis.Redis:
        return redis.Redis(port=node.port, socket_timeout=5, decode_responses=True)

    def _ok(self) -> bool:
        for node in self.nodes:
            info = self._client(node).cluster("INFO")  # redis-py answers with a dict
            if info.get("cluster_state") != "ok" or int(info.get("cluster_known_nodes", 0)) != len(self.nodes):
                return False
        return True

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> RedisClusterGroup:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
