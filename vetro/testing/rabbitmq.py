"""A RabbitMQ node of a test's own, listening for TLS only (`amqps://`) on loopback.

The machine's RabbitMQ is shared and speaks plain AMQP; a TLS test needs a broker whose listeners it
chooses. This node has its own name, ports, data directory and config, and is stopped (its whole
process group) when the test ends. It runs `rabbitmq-server` from RabbitMQ's own directory, not the
Debian wrapper, which would switch to the `rabbitmq` user (who cannot read the test's files).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

from vetro.testing.processes import free_port, reaped, spawn, wait_until
from vetro.testing.tls import Certificates

SERVER_SCRIPT = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")


class RabbitMQNode:
    """`amqps://` only, with `certificates`' server certificate; clients may present one of theirs (mutual TLS)."""

    def __init__(self, certificates: Certificates) -> None:
        self.certificates = certificates
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="vetro-rabbitmq-"))
        self.process: subprocess.Popen | None = None

    def url(self, **tls: str) -> str:
        """The node's URL, its TLS options (`ssl_ca_certs=...`) in the query, as a producer would write it."""
        query = "&".join(f"{name}={value}" for name, value in tls.items())
        return f"amqps://guest:guest@127.0.0.1:{self.port}//" + (f"?{query}" if query else "")

    def start(self, timeout: float = 120) -> RabbitMQNode:
        if not SERVER_SCRIPT.exists():
            raise RuntimeError(f"no {SERVER_SCRIPT}: install Debian's rabbitmq-server")
        certificates = self.certificates
        (self.directory / "rabbitmq.conf").write_text(
            "\n".join(
                [
                    "listeners.tcp = none",
                    f"listeners.ssl.default = 127.0.0.1:{self.port}",
                    f"ssl_options.cacertfile = {certificates.ca}",
                    f"ssl_options.certfile = {certificates.cert}",
                    f"ssl_options.keyfile = {certificates.key}",
                    "ssl_options.verify = verify_peer",  # a client's certificate, when it gives one, is checked
                    "ssl_options.fail_if_no_peer_cert = false",
                    "loopback_users = none",
                    "",
                ]
            )
        )
        (self.directory / "enabled_plugins").write_text("[].\n")  # no management listener on a shared port
        env = {
            **os.environ,
            "RABBITMQ_NODENAME": f"vetro-{self.port}@localhost",
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_CONFIG_FILE": str(self.directory / "rabbitmq"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.directory / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(self.directory / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.directory / "log"),
            "RABBITMQ_PID_FILE": str(self.directory / "pid"),
        }
        log = open(self.directory / "server.log", "wb")  # noqa: SIM115 - the process holds it
        self.process = spawn([str(SERVER_SCRIPT)], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.directory)
        log.close()
        wait_until(self._listening, timeout, f"a RabbitMQ node on port {self.port}", interval=0.5)
        return self

    def _listening(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            output = (self.directory / "server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the RabbitMQ node exited with {self.process.returncode}:\n{output}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def stop(self, timeout: float = 60) -> None:
        """SIGTERM to the node's process group (the script stops the VM cleanly), SIGKILL if it lingers."""
        if self.process is not None:
            self._signal_group(signal.SIGTERM)
            try:
                wait_until(self._ended, timeout, "the RabbitMQ node to stop", interval=0.2)
            except TimeoutError:
                self._signal_group(signal.SIGKILL)
                self.process.wait()
            reaped(self.process)
            self.process = None
        shutil.rmtree(self.directory, ignore_errors=True)

    def _ended(self) -> bool:
        """The script has exited (and is reaped) and nothing of its group is left."""
        if self.process.poll() is None:
            return False
        try:
            os.killpg(self.process.pid, 0)
        except ProcessLookupError:
            return True
        return False

    def _signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)

    def __enter__(self) -> RabbitMQNode:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
