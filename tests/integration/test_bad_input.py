"""Bad input to `submit` and to `vetro submit`: a clear error, and nothing published."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from pipeline import InvalidJobError, submit, submit_many
from tasks.orders.samples import sample_order
from tests.helpers import job_records, quiet_redis, run_module, vetro
from vetro.testing.processes import RedisServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", autouse=True)
def own_redis() -> Iterator[RedisServer]:
    """Counting what a refusal left behind needs a Redis nothing else writes to."""
    with quiet_redis() as server:
        yield server


def nested(levels: int) -> dict:
    payload: dict = {"leaf": 1}
    for _ in range(levels):
        payload = {"n": payload}
    return payload


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (["not", "an", "object"], "expected a JSON object"),
        ("text", "expected a JSON object"),
        ({"blob": "x" * 300_000}, "over the limit of"),
        ({"n": float("inf")}, "not JSON-serialisable"),
        (nested(500), "nested deeper than 32 levels"),
        (nested(10_000), "nested deeper than 32 levels"),
        ({"items": [0] * 60_000}, "over 50000 values"),
        ({"lone": "\ud800"}, "not valid Unicode"),
        ({1: "int key"}, "object keys must be strings"),
        ({"when": object()}, "object is not a JSON value"),
        ({"big": 10**5000}, "not JSON-serialisable"),
    ],
)
def test_submit_refuses_bad_payloads_in_one_line_and_publishes_nothing(redis_server, payload, message):
    before = job_records()
    with pytest.raises(InvalidJobError, match=message) as refused:
        submit(payload)
    assert "\n" not in str(refused.value) and len(str(refused.value)) < 300
    assert job_records() == before


@pytest.mark.parametrize(
    ("key", "message"),
    [("a\nb", "printable ASCII"), ("k" * 201, "201 characters, over 200"), ("", "non-empty"), ("é", "ASCII")],
)
def test_submit_refuses_a_key_that_cannot_travel_in_a_header(redis_server, key, message):
    before = job_records()
    with pytest.raises(InvalidJobError, match=message):
        submit(sample_order(1, prefix="bad-key"), key)
    assert job_records() == before


def test_one_bad_payload_in_a_batch_publishes_none_of_it(redis_server):
    before = job_records()
    batch = [sample_order(n, prefix="batch-bad") for n in range(10)] + [[1, 2]]
    with pytest.raises(InvalidJobError, match="item 10: expected a JSON object"):
        submit_many(batch)
    assert job_records() == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["submit", "--json", "[1]"], "error: payload: expected a JSON object, got list"),
        (["submit", "--json", "{nope"], "error: --json: not valid JSON"),
        (["submit"], "error: give either --json"),
        (["submit", "/no/such/file.jsonl"], "error: /no/such/file.jsonl: no such file"),
        (["submit", "--json", "[" * 10_000 + "]" * 10_000], "error: --json: not valid JSON: nested too deeply"),
        (["submit", "--json", '{"n": ' + "9" * 5000 + "}"], "error: --json: not valid JSON: Exceeds the limit"),
        (["submit", "--json", json.dumps(nested(40))], "error: payload: nested deeper than 32 levels"),
        (["submit", "--json", "{}", "--key", "x" * 300], "error: payload: idempotency key of 300 characters"),
    ],
)
def test_the_cli_refuses_bad_input_in_one_line(redis_server, args, message):
    before = job_records()
    result = vetro(*args)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(message)
    assert job_records() == before


def test_a_bad_line_in_a_file_stops_the_whole_file(redis_server, tmp_path):
    path = tmp_path / "orders.jsonl"
    path.write_text('{"schema_version": 1}\n{"schema_version": 1, "x": 2}\n"just a string"\n')
    before = job_records()
    result = vetro("submit", str(path))
    assert result.returncode == 2
    assert f"{path}:3: expected a JSON object, got str" in result.stderr
    assert job_records() == before


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"a": 1}\n{"b": "\xff\xfe"}\n', "not UTF-8 (at byte 16)"),
        (b'{"a": 1}\n' + b"[" * 10_000 + b"]" * 10_000 + b"\n", ":2: not valid JSON: nested too deeply"),
        (b'{"n": ' + b"9" * 5000 + b"}\n", ":1: not valid JSON: Exceeds the limit"),
    ],
)
def test_a_file_or_stdin_that_is_not_utf8_json_lines_is_refused_in_one_line(redis_server, tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    before = job_records()
    for args, stdin in (([str(path)], None), (["-"], content)):
        result = run_module("vetro.cli", "submit", *args, stdin=stdin)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert message in result.stderr
    assert job_records() == before


def test_a_line_separator_inside_a_string_is_text_not_a_line_break(redis_server, tmp_path):
    path = tmp_path / "u2028.jsonl"
    path.write_bytes(json.dumps({"note": "one\u2028two"}, ensure_ascii=False).encode() + b"\n")
    result = vetro("submit", str(path))
    assert result.returncode == 0 and "submitted 1 new job(s)" in result.stderr, result.stderr


def test_the_cli_submits_a_file_and_prints_job_ids(worker, partner, tmp_path):
    path = tmp_path / "orders.jsonl"
    path.write_text("\n".join(json.dumps(sample_order(n, prefix="cli-file")) for n in range(3)) + "\n")
    result = vetro("submit", str(path))
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.split()) == 3
    assert "submitted 3 new job(s)" in result.stderr


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("CELERY_BROKER_URL", "redis://127.0.0.1:1/0", "CELERY_BROKER_URL is set"),
        ("VETRO_BROKER_URL", "foo://x", "VETRO_BROKER_URL: 'foo://x' is not a"),
        ("ORDERS_ROUTES", "[nope", "ORDERS_ROUTES: not valid JSON"),
        ("VETRO_ENCRYPTION_KEYS", "my-secret", "VETRO_ENCRYPTION_KEYS: key 1 is not a Fernet key"),
    ],
)
def test_a_bad_setting_is_one_line_from_the_worker_and_from_vetro(redis_server, variable, value, expected):
    from tests.helpers import celery_worker

    worker = celery_worker({variable: value})
    assert worker.returncode != 0 and len(worker.stderr.strip().splitlines()) == 1, worker.stderr
    assert expected in worker.stderr
    command = vetro("breakers", env={variable: value})
    assert command.returncode == 2 and len(command.stderr.strip().splitlines()) == 1, command.stderr
    assert command.stderr.startswith(f"error: bad configuration: {expected}")
    assert "my-secret" not in worker.stderr + command.stderr  # a key is never echoed


@pytest.mark.parametrize("args", [["job", "show", "some-job"], ["breakers"], ["reconcile"], ["quarantine", "list"]])
def test_a_command_whose_redis_is_down_says_so_in_one_line(args):
    from vetro.testing.processes import free_port

    closed = f"redis://127.0.0.1:{free_port()}/0"
    result = vetro(*args, env={"VETRO_BROKER_URL": closed, "VETRO_RESULT_STORE_URL": closed}, timeout=120)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("error: cannot reach a server vetro needs")
