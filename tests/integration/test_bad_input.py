"""Bad input to `submit` and to `vetro submit`: a clear error, and nothing published."""

from __future__ import annotations

import json

import pytest

from pipeline import InvalidJobError, submit, submit_many
from pipeline.store import redis_client
from tasks.orders.samples import sample_order
from tests.helpers import vetro

pytestmark = pytest.mark.integration


def published_jobs() -> int:
    """Jobs the producer has recorded; every publish writes one record first."""
    return sum(1 for _ in redis_client().scan_iter("vetro:*:job:*", count=1000))


@pytest.mark.parametrize("payload", [["not", "an", "object"], "text", {"blob": "x" * 300_000}, {"n": float("inf")}])
def test_submit_refuses_bad_payloads_and_publishes_nothing(redis_server, payload):
    before = published_jobs()
    with pytest.raises(InvalidJobError):
        submit(payload)
    assert published_jobs() == before


def test_one_bad_payload_in_a_batch_publishes_none_of_it(redis_server):
    before = published_jobs()
    batch = [sample_order(n, prefix="batch-bad") for n in range(10)] + [[1, 2]]
    with pytest.raises(InvalidJobError, match="item 10: expected a JSON object"):
        submit_many(batch)
    assert published_jobs() == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["submit", "--json", "[1]"], "error: payload: expected a JSON object, got list"),
        (["submit", "--json", "{nope"], "error: --json: not valid JSON"),
        (["submit"], "error: give either --json"),
        (["submit", "/no/such/file.jsonl"], "error: /no/such/file.jsonl: no such file"),
    ],
)
def test_the_cli_refuses_bad_input_in_one_line(redis_server, args, message):
    before = published_jobs()
    result = vetro(*args)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(message)
    assert published_jobs() == before


def test_a_bad_line_in_a_file_stops_the_whole_file(redis_server, tmp_path):
    path = tmp_path / "orders.jsonl"
    path.write_text('{"schema_version": 1}\n{"schema_version": 1, "x": 2}\n"just a string"\n')
    before = published_jobs()
    result = vetro("submit", str(path))
    assert result.returncode == 2
    assert f"{path}:3: expected a JSON object, got str" in result.stderr
    assert published_jobs() == before


def test_the_cli_submits_a_file_and_prints_job_ids(worker, partner, tmp_path):
    path = tmp_path / "orders.jsonl"
    path.write_text("\n".join(json.dumps(sample_order(n, prefix="cli-file")) for n in range(3)) + "\n")
    result = vetro("submit", str(path))
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.split()) == 3
    assert "submitted 3 new job(s)" in result.stderr
