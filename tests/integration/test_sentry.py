"""Sentry on a real worker, its events sent to a stand-in for Sentry's ingest endpoint on 127.0.0.1.

A dead letter is one event, tagged; a transient retry is none; personal fields never leave the worker.
"""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipeline import submit
from tests.helpers import fast_env, wait_for_jobs, workers
from vetro.testing.processes import wait_until

pytestmark = pytest.mark.integration

SECRET = "jane.doe@example.com"


class Ingest(ThreadingHTTPServer):
    """Keeps the items of every envelope posted to it."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Envelope)
        self.items: list[tuple[str, dict]] = []
        self.raw: list[bytes] = []

    @property
    def dsn(self) -> str:
        return f"http://publickey@127.0.0.1:{self.server_address[1]}/1"

    def events(self) -> list[dict]:
        return [payload for kind, payload in self.items if kind == "event"]


class _Envelope(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.server.raw.append(body)
        lines = body.split(b"\n")
        for header, payload in zip(lines[1::2], lines[2::2], strict=False):
            if header.strip():
                self.server.items.append((json.loads(header).get("type"), json.loads(payload or b"{}")))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def ingest() -> Iterator[Ingest]:
    server = Ingest()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_a_dead_letter_is_one_tagged_event_and_a_retry_none(ingest):
    env = fast_env(10, 5, VETRO_SENTRY_DSN=ingest.dsn)
    with workers(env):
        failed = submit(
            {"id": "s1", "outcome": "permanent", "email": SECRET}, pipeline="metered", correlation_id="c-s1"
        )
        retried = submit({"id": "s2", "outcome": "flaky", "email": SECRET}, pipeline="metered", correlation_id="c-s2")
        wait_for_jobs([failed, retried], timeout=120)
        wait_until(lambda: ingest.events(), 60, "Sentry's event for the dead letter")
    [event] = ingest.events()
    tags = event["tags"]
    tags = dict(tags) if isinstance(tags, list) else tags
    assert tags["job_id"] == failed and tags["correlation_id"] == "c-s1"
    assert (tags["pipeline"], tags["stage"], tags["failure_class"]) == ("metered", "check", "permanent")
    assert event["exception"]["values"][-1]["type"] == "PermanentError"
    assert not any(SECRET.encode() in raw for raw in ingest.raw)
