"""Property: whatever a producer sends through `submit` or `vetro submit`, each job completes or is
dead-lettered as permanent, nothing is left running or lost, and the worker never exits.

Each test waits for the jobs its own property submitted, so either runs alone or in any order.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import InvalidJobError, submit
from pipeline.jobs.ledger import get_jobs
from tasks.orders.samples import sample_order
from tests.helpers import run_module
from vetro.testing.processes import wait_until

pytestmark = pytest.mark.integration

# Text with control characters and lone surrogates; integers far beyond 64 bits; any float.
TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)
SCALARS = st.none() | st.booleans() | st.integers(-(10**400), 10**400) | st.floats() | TEXT
JSON_LIKE = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4), max_leaves=60
)
ORDER_FIELDS = ["schema_version", "order_id", "order_type", "customer_id", "region", "currency", "lines", "placed_at"]


def nested(levels: int, leaf: object) -> object:
    for _ in range(levels):
        leaf = [leaf]
    return leaf


def with_field(field: str, value: object) -> dict:
    return sample_order(1, prefix="fuzz") | {field: value}


SHALLOW = st.dictionaries(TEXT, JSON_LIKE, max_size=6) | st.builds(with_field, st.sampled_from(ORDER_FIELDS), JSON_LIKE)
DEPTHS = st.integers(1, 3000)
PAYLOADS = SHALLOW | st.builds(lambda depth: {"deep": nested(depth, 1)}, DEPTHS)
LINES = (
    st.binary(max_size=60)
    | SHALLOW.map(lambda payload: json.dumps(payload, default=str).encode())
    | DEPTHS.map(lambda depth: b'{"deep": ' + b"[" * depth + b"1" + b"]" * depth + b"}")
)


def assert_each_ended_and_the_worker_serves(submitted: list[str], worker) -> None:
    """Every job a property submitted completed or was dead-lettered as permanent; the worker still runs jobs."""

    def settled() -> tuple[list] | None:
        records = get_jobs(submitted)
        return (records,) if all(r and r["status"] in ("completed", "failed") for r in records) else None

    (records,) = wait_until(settled, 180, f"{len(submitted)} fuzzed jobs to end")
    assert {r["failure_class"] for r in records if r["status"] == "failed"} <= {"permanent"}
    assert worker.alive()
    job_id = submit(sample_order(2, prefix="after-fuzz"))
    assert wait_until(lambda: get_jobs([job_id])[0]["status"] == "completed", 90, "a normal job after the fuzz")


def test_any_payload_is_refused_in_one_line_or_becomes_a_job_that_ends(worker, partner):
    submitted: list[str] = []

    @settings(max_examples=60, deadline=None)
    @given(payload=PAYLOADS)
    def refused_in_one_line_or_submitted(payload):
        try:
            submitted.append(submit(payload))
        except InvalidJobError as refused:
            assert "\n" not in str(refused) and len(str(refused)) < 400

    refused_in_one_line_or_submitted()
    assert submitted, "no generated payload became a job"
    assert_each_ended_and_the_worker_serves(submitted, worker)


def test_any_bytes_on_stdin_are_refused_in_one_line_or_become_jobs_that_end(worker, partner):
    submitted: list[str] = []

    @settings(max_examples=12, deadline=None)
    @given(lines=st.lists(LINES, max_size=4))
    def refused_in_one_line_or_submitted(lines):
        result = run_module("vetro.cli", "submit", "-", stdin=b"\n".join(lines))
        assert result.returncode in (0, 2), result.stderr
        if result.returncode == 2:
            assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
        else:
            submitted.extend(result.stdout.split())

    refused_in_one_line_or_submitted()
    assert_each_ended_and_the_worker_serves(submitted, worker)
