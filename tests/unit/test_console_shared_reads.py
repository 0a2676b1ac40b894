"""Pages that refresh themselves share what they read for a moment; a page an operator opens is read fresh."""

from __future__ import annotations

from itertools import count

from starlette.requests import Request

from vetro.web.shared import REFRESH_HEADER, shared


def request(refresh: bool) -> Request:
    headers = [(REFRESH_HEADER.encode(), b"1")] if refresh else []
    return Request({"type": "http", "method": "GET", "path": "/", "headers": headers, "query_string": b""})


def test_refreshes_within_the_moment_share_one_read_and_an_opened_page_reads_afresh():
    reads = count(1)
    key = ("test", object())
    assert shared(request(refresh=False), key, lambda: next(reads)) == 1
    assert [shared(request(refresh=True), key, lambda: next(reads)) for _ in range(20)] == [1] * 20
    assert shared(request(refresh=False), key, lambda: next(reads)) == 2  # the operator opened it: fresh
    assert shared(request(refresh=True), key, lambda: next(reads)) == 2  # and refreshes share that
