"""A TCP proxy on 127.0.0.1 that a test can cut: a "host"'s own way to a server, to partition it from the rest.

Each simulated host reaches Redis through a proxy of its own. `partition()` black-holes it: open
connections stay open but nothing crosses in either direction, and new ones are accepted and then
hear nothing, as when a network drops a host's packets (clients find out by their own timeouts).
`heal()` closes what the partition left hanging, so clients reconnect, and passes traffic again.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType

from vetro.testing.processes import free_port

CHUNK = 65536


class FaultProxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = free_port()
        self._cut = threading.Event()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None

    def url(self, scheme: str = "redis", path: str = "/0") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def start(self) -> FaultProxy:
        listener = socket.create_server(("127.0.0.1", self.port), backlog=128)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True, name=f"proxy-{self.port}").start()
        return self

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self._close_all()

    def partition(self) -> None:
        """Black-hole the host: nothing crosses, and no connection is closed (packets vanish, no RST)."""
        self._cut.set()

    def heal(self) -> None:
        """Pass traffic again; connections the partition left hanging are closed, so their clients reconnect."""
        self._close_all()
        self._cut.clear()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # closed by stop()
                return
            self._track(client)
            if self._cut.is_set():
                continue  # accepted, and then nothing: a black hole
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                self._forget(client)
                continue
            server.settimeout(None)
            self._track(server)
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(CHUNK):
                if self._cut.is_set():
                    continue  # dropped on the floor
                target.sendall(data)
        except OSError:
            pass
        finally:
            self._forget(source)
            self._forget(target)

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.add(sock)

    def _forget(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def _close_all(self) -> None:
        with self._lock:
            hanging = list(self._sockets)
        for sock in hanging:
            self._forget(sock)
