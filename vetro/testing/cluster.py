"""A Redis Cluster on loopback: three masters, each a redis-server of its own, for the result store's tests.

`RedisClusterGroup.url` is the `redis+cluster://` URL vetro is given as VETRO_RESULT_STORE_URL. The
slots are split in three, as `redis-cli --cluster create` splits them; the nodes are joined with
CLUSTER ADDSLOTS and CLUSTER MEET, which is what that command sends, without its prompt. With
`replicas`, each master gets that many replicas (CLUSTER REPLICATE), and `kill_master` then
`wait_for_failover` show a master lost and its replica promoted by the cluster itself.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
from collections.abc import Sequence

import redis
from redis.crc import key_slot

from vetro.testing.processes import RedisServer, free_port, kill_process, wait_until

SLOTS = 16384
MASTERS = 3
BUS_OFFSET = 10000  # a node's cluster bus listens on its port + 10000
BACKLOG_BYTES = 64 * 1024 * 1024  # more than loopback's socket buffers hold (a few MiB each way)


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
    """Cluster-enabled masters (three) sharing the 16,384 slots, each with `replicas` replicas; started and stopped
    together. `node_timeout_ms`: how long a master may not answer before its replica is promoted; `options`: more
    of redis-server's, for every node."""

    def __init__(
        self, masters: int = MASTERS, replicas: int = 0, node_timeout_ms: int | None = None, options: Sequence[str] = ()
    ) -> None:
        options = ["--cluster-enabled", "yes", *options]
        if node_timeout_ms:
            options += ["--cluster-node-timeout", str(node_timeout_ms)]
        self.masters = [RedisServer(extra_args=options, choose_port=cluster_port) for _ in range(masters)]
        # The replicas of master n: replicas[n * replicas_per_master:(n + 1) * replicas_per_master].
        self.replicas = [RedisServer(extra_args=options, choose_port=cluster_port) for _ in range(masters * replicas)]
        self.replicas_per_master = replicas
        self.killed: list[RedisServer] = []

    @property
    def nodes(self) -> list[RedisServer]:
        return self.masters + self.replicas

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes) + "/0"

    def start(self) -> RedisClusterGroup:
        for node in self.nodes:
            node.extra_args += ["--cluster-config-file", f"{node.directory}/nodes.conf"]
            node.start()
        for number, node in enumerate(self.masters):
            self._client(node).execute_command("CLUSTER ADDSLOTS", *self.slots(number))
        for node in self.nodes[1:]:
            self._client(node).execute_command("CLUSTER MEET", "127.0.0.1", self.masters[0].port)
        wait_until(self._ok, 60, "the Redis Cluster to agree on its slots")
        for number, replica in enumerate(self.replicas):
            master = self._id(self.masters[number // self.replicas_per_master])
            wait_until(lambda r=replica, m=master: self._knows(r, m), 30, "a replica to know its master")
            self._client(replica).execute_command("CLUSTER REPLICATE", master)
        wait_until(self._replicating, 60, "every replica to hold its master's data")
        return self

    @staticmethod
    def _client(node: RedisServer) -> redis.Redis:
        return redis.Redis(port=node.port, socket_timeout=5, decode_responses=True)

    def _knows(self, node: RedisServer, node_id: str) -> bool:
        known = self._client(node).cluster("NODES")  # redis-py answers with address -> the node's fields
        return any(fields.get("node_id") == node_id for fields in known.values())

    def _id(self, node: RedisServer) -> str:
        return self._client(node).execute_command("CLUSTER MYID")

    def _ok(self) -> bool:
        live = [node for node in self.nodes if node not in self.killed]
        for node in live:
            info = self._client(node).cluster("INFO")  # redis-py answers with a dict
            if info.get("cluster_state") != "ok" or int(info.get("cluster_known_nodes", 0)) != len(self.nodes):
                return False
        return True

    def _replicating(self) -> bool:
        return all(self._client(node).info("replication").get("master_link_status") == "up" for node in self.replicas)

    def slots(self, number: int) -> range:
        """The slots master `number` was given."""
        share = SLOTS // len(self.masters)
        return range(number * share, SLOTS if number == len(self.masters) - 1 else (number + 1) * share)

    def replicas_of(self, number: int) -> list[RedisServer]:
        return self.replicas[number * self.replicas_per_master : (number + 1) * self.replicas_per_master]

    def wait_caught_up(self, number: int, timeout: float = 30) -> None:
        """Wait until master `number`'s replicas hold what it had written when this was called."""
        written = self._client(self.masters[number]).info("replication")["master_repl_offset"]

        def caught_up() -> bool:
            return all(
                self._client(replica).info("replication").get("slave_repl_offset", -1) >= written
                for replica in self.replicas_of(number)
            )

        wait_until(caught_up, timeout, f"master {number}'s replicas to catch up")

    def pause_replicas(self, number: int) -> None:
        """SIGSTOP master `number`'s replicas, then fill their links past the kernel's socket buffers: from here what
        the master acknowledges waits in its own memory for the replicas, and dies with it."""
        for replica in self.replicas_of(number):
            os.kill(replica.process.pid, signal.SIGSTOP)
        slots = self.slots(number)
        name = next(f"backlog-{n}" for n in itertools.count() if key_slot(f"backlog-{n}".encode()) in slots)
        self._client(self.masters[number]).set(name, "x" * BACKLOG_BYTES, ex=300)

    def resume_replicas(self, number: int) -> None:
        for replica in self.replicas_of(number):
            if replica.process is not None and replica.process.poll() is None:
                os.kill(replica.process.pid, signal.SIGCONT)

    def kill_master(self, number: int = 0) -> RedisServer:
        """SIGKILL master `number` (a crash: no failover is asked for); returns it."""
        master = self.masters[number]
        kill_process(master.process)
        self.killed.append(master)
        return master

    def wait_for_failover(self, number: int = 0, timeout: float = 120) -> RedisServer:
        """Wait until a replica of master `number` is a master serving its slots; returns it."""

        def promoted() -> RedisServer | None:
            for replica in self.replicas_of(number):
                if self._client(replica).info("replication").get("role") == "master" and self._ok():
                    return replica
            return None

        return wait_until(promoted, timeout, f"a replica of master {number} to be promoted")

    def stop(self) -> None:
        for number in range(len(self.masters)):
            self.resume_replicas(number)  # a stopped process ignores SIGTERM until it runs again
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> RedisClusterGroup:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
