"""Raw messages on vetro's queue that are not well-formed vetro tasks: each is quarantined with
its reason, the worker stays up and keeps consuming, and nothing reaches a partner.
"""

from __future__ import annotations

import json
import pickle
import uuid

import pytest
from kombu import Producer

from pipeline import app, submit
from pipeline.jobs import quarantine
from tasks.orders.samples import sample_order
from tests.helpers import call_times, vetro, wait_for_jobs
from vetro.testing.processes import wait_until

pytestmark = pytest.mark.integration

JOB_HEADERS = {
    "vetro_idempotency_key": "k",
    "vetro_correlation_id": "c",
    "vetro_pipeline": "orders",
    "vetro_replay": 0,
}


def task_headers(task: str = "orders.validate", job_id: str | None = None, **extra: object) -> dict:
    job_id = job_id or str(uuid.uuid4())
    return {"task": task, "id": f"{job_id}.{task.split('.')[-1]}", "vetro_job_id": job_id, **JOB_HEADERS, **extra}


def nested(levels: int) -> list:
    body: list = []
    for _ in range(levels):
        body = [body]
    return body


GOOD_BODY = json.dumps([[{"order_id": "x"}], {}, {}])
HOSTILE = {
    "body an object": (task_headers(), '{"a": 1}', "body is not [args, kwargs, embed]"),
    "body empty": (task_headers(), "[]", "body is not [args, kwargs, embed]"),
    "body null": (task_headers(), "null", "body is not [args, kwargs, embed]"),
    "body not json": (task_headers(), "{nope", "body cannot be decoded"),
    "body too deep": (task_headers(), json.dumps([nested(600), {}, {}]), "nested deeper than 200"),
    "timelimit text": (task_headers(timelimit="soon"), GOOD_BODY, "timelimit header"),
    "task a list": (task_headers() | {"task": ["orders.validate"]}, GOOD_BODY, "no task name"),
    "no id": ({k: v for k, v in task_headers().items() if k != "id"}, GOOD_BODY, "no message id"),
    "unknown task": (task_headers("refunds.nope"), GOOD_BODY, "unknown task 'refunds.nope'"),
    "no job": ({"task": "orders.validate", "id": "x.validate"}, GOOD_BODY, "a stage message without a job"),
    "replay text": (task_headers(vetro_replay="notanint"), GOOD_BODY, "vetro_replay header"),
    "key with a newline": (task_headers(vetro_idempotency_key="a\nb"), GOOD_BODY, "not a valid key"),
    "forged destination": (
        task_headers("orders.operate"),
        json.dumps([[{"order_id": "x"}, "../customers/zzz"], {}, {}]),
        "a fan-out part takes (input, branch)",
    ),
}


def quarantined(marker: str) -> quarantine.Entry:
    """The quarantine entry whose headers or reason carry `marker`, once there is one.

    Found by content, not as the newest: a raw message published with bare kombu can be
    delivered twice, so another test's copy may land after this test's message.
    """

    def found() -> quarantine.Entry | None:
        return next((e for e in quarantine.entries(limit=500) if marker in e.headers or marker in e.reason), None)

    return wait_until(found, 60, f"a quarantined message marked {marker}")


def publish_probe(headers: dict, body: str | bytes, content_type: str = "application/json") -> quarantine.Entry:
    """Publish a raw message marked with a probe header; its quarantine entry."""
    probe = uuid.uuid4().hex
    publish_raw(headers | {"probe": probe}, body, content_type)
    return quarantined(probe)


def publish_raw(headers: dict, body: str | bytes, content_type: str = "application/json") -> None:
    with app.connection_for_write() as connection:
        Producer(connection.default_channel).publish(
            body if isinstance(body, bytes) else body.encode(),
            exchange="vetro",
            routing_key="vetro",
            headers=headers,
            content_type=content_type,
            content_encoding="utf-8",
        )


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_malformed_message_is_quarantined_and_the_worker_goes_on(worker, partner, case):
    headers, body, reason = HOSTILE[case]
    entry = publish_probe(headers, body)
    assert reason in entry.reason and entry.body == (body if isinstance(body, bytes) else body.encode())
    assert worker.alive()
    job_id = submit(sample_order(1, prefix=f"after-{case.replace(' ', '-')}-{uuid.uuid4().hex[:6]}"))
    assert wait_for_jobs([job_id], timeout=90)[0]["status"] == "completed"
    assert call_times(partner.url, "/customers/zzz") == []


def test_a_pickled_message_is_quarantined_never_unpickled(worker, tmp_path):
    marker = tmp_path / "unpickled"
    body = pickle.dumps((open, (str(marker), "w")))  # would create the file if anything unpickled it
    entry = publish_probe(task_headers(), body, content_type="application/x-python-serialize")
    assert "body cannot be decoded" in entry.reason and not marker.exists()
    assert worker.alive()


def test_an_operator_lists_shows_and_drops_quarantined_messages(worker):
    entry = publish_probe(task_headers("refunds.nope"), GOOD_BODY)
    listed = vetro("quarantine", "list", "--json")
    assert listed.returncode == 0 and entry.id in [item["id"] for item in json.loads(listed.stdout)]
    shown = vetro("quarantine", "show", entry.id)
    assert shown.returncode == 0 and json.loads(shown.stdout)["body"] == GOOD_BODY
    assert "unknown task 'refunds.nope'" in json.loads(shown.stdout)["reason"]
    none = vetro("quarantine", "drop", "--yes")
    assert none.returncode == 2 and "say which" in none.stderr  # no ids and no --all: nothing dropped
    dropped = vetro("quarantine", "drop", entry.id, "--yes")
    assert dropped.returncode == 0 and "dropped 1" in dropped.stderr
    assert quarantine.get(entry.id) is None
    unknown = vetro("quarantine", "show", "nope")
    assert unknown.returncode == 2 and len(unknown.stderr.strip().splitlines()) == 1


def test_a_forged_part_for_a_real_job_is_quarantined_and_reaches_no_partner(worker, partner):
    job_id = submit(sample_order(1, prefix=f"forged-{uuid.uuid4().hex[:6]}"))
    record = wait_for_jobs([job_id], timeout=90)[0]
    assert record["status"] == "completed"
    headers = task_headers("orders.operate", job_id=job_id) | {"id": f"{job_id}.operate.evil"}
    publish_raw(headers, json.dumps([[{"order_id": "x"}, "evil"], {}, {}]))
    assert "branch 'evil' was not planned" in quarantined(f"not planned for job {job_id}").reason
    assert call_times(partner.url, "/webhooks/evil") == []
    assert wait_for_jobs([job_id])[0]["status"] == "completed"
