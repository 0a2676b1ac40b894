"""A Redis that fails over, on loopback: a master, a replica and three Sentinels, each a process of its own.

For the failover tests and runs: `SentinelGroup.url` is the `sentinel://` URL vetro is given (with
VETRO_SENTINEL_MASTER=`MASTER_NAME`); `kill_master()` is the crash, `cut_replica()` the lag that makes
a failover lose writes the master had acknowledged. Sentinels notice a master gone after
`DOWN_AFTER_MS` and promote the replica a few seconds later.

The replica reaches the master through a fault proxy (vetro.testing.proxy): cutting it drops the
replication stream on the floor. (Pausing the replica's process would not: the kernel keeps buffering
what the master sends, and the replica reads it all once resumed.)
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import redis

from vetro.testing.processes import (
    RedisServer,
    free_port,
    kill_process,
    redis_server_binary,
    spawn,
    terminate_process,
    wait_until,
)
from vetro.testing.proxy import FaultProxy

MASTER_NAME = "vetro"
DOWN_AFTER_MS = 2000
QUORUM = 2


class SentinelServer:
    """One `redis-server --sentinel` watching `master_port`, its config in a directory of its own."""

    def __init__(self, master_port: int) -> None:
        self.port = free_port()
        self.directory = tempfile.mkdtemp(prefix="vetro-sentinel-")
        self.config = Path(self.directory) / "sentinel.conf"
        self.config.write_text(
            "\n".join(
                [
                    f"port {self.port}",
                    "bind 127.0.0.1",
                    f"dir {self.directory}",
                    f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} {QUORUM}",
                    f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}",
                    f"sentinel failover-timeout {MASTER_NAME} 10000",
                    f"sentinel parallel-syncs {MASTER_NAME} 1",
                    "",
                ]
            )
        )
        self.process: subprocess.Popen | None = None

    def start(self) -> SentinelServer:
        args = [redis_server_binary(), str(self.config), "--sentinel", "--loglevel", "warning"]
        self.process = spawn(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self._answers, 15, f"a sentinel on port {self.port}")
        return self

    def _answers(self) -> bool:
        try:
            return bool(redis.Redis(port=self.port, socket_connect_timeout=1, socket_timeout=1).ping())
        except (redis.RedisError, OSError):
            return False

    def master_port(self) -> int | None:
        try:
            answer = redis.Redis(port=self.port, socket_timeout=2).sentinel_get_master_addr_by_name(MASTER_NAME)
        except (redis.RedisError, OSError):
            return None
        return int(answer[1]) if answer else None

    def stop(self) -> None:
        terminate_process(self.process)
        shutil.rmtree(self.directory, ignore_errors=True)


class SentinelGroup:
    """A master (append-only), one replica of it (through a proxy), and three Sentinels; stopped together."""

    def __init__(self) -> None:
        self.master = RedisServer(appendonly=True)
        self.replica = RedisServer(appendonly=True)
        self.link: FaultProxy | None = None
        self.sentinels: list[SentinelServer] = []

    @property
    def url(self) -> str:
        return ";".join(f"sentinel://127.0.0.1:{sentinel.port}" for sentinel in self.sentinels) + "/0"

    def start(self) -> SentinelGroup:
        self.master.start()
        self.link = FaultProxy(self.master.port).start()
        self.replica.extra_args = ["--replicaof", "127.0.0.1", str(self.link.port)]
        self.replica.start()
        wait_until(self._replica_in_sync, 30, "the replica to sync with the master")
        self.sentinels = [SentinelServer(self.master.port).start() for _ in range(3)]
        wait_until(self._sentinels_see_the_replica, 30, "every sentinel to see the replica")
        return self

    def _replica_in_sync(self) -> bool:
        info = redis.Redis(port=self.replica.port).info("replication")
        return info.get("master_link_status") == "up"

    def _sentinels_see_the_replica(self) -> bool:
        for sentinel in self.sentinels:
            client = redis.Redis(port=sentinel.port, socket_timeout=2, decode_responses=True)
            if not client.sentinel_slaves(MASTER_NAME):
                return False
        return True

    def master_port(self) -> int | None:
        """The master's port as a majority of the Sentinels say it is (None while they disagree)."""
        ports = [sentinel.master_port() for sentinel in self.sentinels]
        best = max(set(ports), key=ports.count)
        return best if ports.count(best) >= QUORUM else None

    def kill_master(self) -> None:
        """SIGKILL the master: the crash a failover is for."""
        kill_process(self.master.process)

    def cut_replica(self) -> None:
        """Drop the replication stream: the replica falls behind the master's acknowledged writes, and the
        master does not notice (the connection stays open)."""
        assert self.link is not None
        self.link.partition()

    def rejoin_old_master(self, timeout: float = 120) -> None:
        """Start the killed master again, as an operator would: the Sentinels make it a replica of the new master
        (what it alone held is dropped in the resync)."""
        self.master.start()

        def replicating() -> bool:
            info = redis.Redis(port=self.master.port, socket_timeout=2).info("replication")
            return info.get("role") == "slave" and info.get("master_link_status") == "up"

        wait_until(replicating, timeout, "the old master to rejoin as a replica")

    def wait_for_failover(self, timeout: float = 120) -> int:
        """Wait until the Sentinels name the replica as master and it serves writes; its port."""

        def promoted() -> bool:
            if self.master_port() != self.replica.port:
                return False
            info = redis.Redis(port=self.replica.port, socket_timeout=2).info("replication")
            return info.get("role") == "master"

        wait_until(promoted, timeout, "the Sentinels to promote the replica")
        return self.replica.port

    def stop(self) -> None:
        for sentinel in self.sentinels:
            sentinel.stop()
        self.replica.stop()
        self.master.stop()
        if self.link is not None:
            self.link.stop()

    def __enter__(self) -> SentinelGroup:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
