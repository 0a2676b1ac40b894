"""The console's API under schemathesis: requests generated from its own OpenAPI document, sent to a real
`vetro serve` as a signed-in admin, never get a 500, and every refusal is one line of JSON.

The server runs on a Redis and a dead-letter database of this module's own, so whatever the generated
requests force or drop touches nothing another test reads.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from dlq.db import session, upgrade
from dlq.store import write
from tests.conftest import CONSOLE_PASSWORD
from tests.helpers import dead_letter_event, serving
from vetro.testing.processes import RedisServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fuzzed(console_users, tmp_path_factory) -> Iterator[dict]:
    """A console of the module's own, with a few dead letters, and an admin's session on it."""
    url = f"sqlite:///{tmp_path_factory.mktemp('fuzz')}/dlq.db"
    upgrade(url)
    with session(url) as active:
        for n in range(3):
            write(active, dead_letter_event(f"fuzz-{n}"))
    with RedisServer() as redis:
        env = {
            "VETRO_DATABASE_URL": url,
            "VETRO_BROKER_URL": redis.url,
            "VETRO_RESULT_STORE_URL": redis.url,
            "VETRO_CONSOLE_USERS_FILE": str(console_users),
        }
        with serving(env) as base:
            signed = httpx.post(f"{base}/api/session", json={"name": "ada", "password": CONSOLE_PASSWORD})
            yield {"url": base, "cookies": dict(signed.cookies), "csrf": signed.json()["csrf"]}


def test_no_request_the_api_documents_makes_it_fail(fuzzed):
    """Each operation's generated requests, one hypothesis run per operation. (schemathesis's own pytest
    integration, `from_fixture`, sets `node._nodeid`, which pytest 9 no longer has: its Python API is used.)"""
    schema = schemathesis.openapi.from_url(f"{fuzzed['url']}/api/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    fuzzed_paths = [operation for operation in operations if operation.path != "/api/session"]  # who asks, only
    assert len(fuzzed_paths) >= 15, [operation.label for operation in operations]
    for operation in fuzzed_paths:

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def answered(case):
            response = case.call(base_url=fuzzed["url"], headers={"x-csrf-token": fuzzed["csrf"]},
                                 cookies=fuzzed["cookies"])  # fmt: skip
            shown = f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:300]}"
            assert response.status_code < 500, shown
            if response.status_code >= 400:
                error = json.loads(response.text).get("error")
                assert isinstance(error, str) and error and "\n" not in error, shown

        answered()
