"""Personal data on real workers: Flower's events and the worker's logs show it redacted; Redis
and the dead-letter store keep it sealed; an operator still reads it and replays the job."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator

import pytest
from cryptography.fernet import Fernet

from dlq import store
from pipeline import submit
from pipeline.adapter.app import app
from pipeline.store import redis_client
from settings import reset_settings
from tasks.orders.samples import sample_order
from tests.helpers import effects_by_key, fast_env, set_faults, vetro, wait_for_completion, wait_for_jobs, workers
from vetro.testing.processes import wait_until

pytestmark = pytest.mark.integration

KEY = Fernet.generate_key().decode()
EMAIL_DOMAIN = "@example.com"  # the customer service's emails: '<customer id>@example.com'


@pytest.fixture
def sealed(monkeypatch) -> Iterator[dict[str, str]]:
    """An encryption key for this test process, the workers and the `vetro` commands."""
    monkeypatch.setenv("VETRO_ENCRYPTION_KEYS", KEY)
    reset_settings()
    yield fast_env(visibility=20, time_limit=8, VETRO_TASK_EVENTS="true")
    monkeypatch.delenv("VETRO_ENCRYPTION_KEYS")
    reset_settings()


class EventTap:
    """Every task event on the broker, as Flower and `celery events` receive them."""

    def __init__(self) -> None:
        self.events: list[dict] = []
        self._receiver = None
        self._thread = threading.Thread(target=self._capture, daemon=True)

    def _capture(self) -> None:
        with app.connection_for_read() as connection:
            self._receiver = app.events.Receiver(connection, handlers={"*": self.events.append})
            self._receiver.capture(limit=None, timeout=None, wakeup=False)

    def __enter__(self) -> EventTap:
        self._thread.start()
        wait_until(lambda: self._receiver is not None, 30, "the event receiver to start")
        return self

    def __exit__(self, *_: object) -> None:
        self._receiver.should_stop = True
        self._thread.join(10)


def order(customer: str) -> dict:
    return sample_order(1, prefix=f"pd-{uuid.uuid4().hex[:8]}") | {
        "customer_id": customer,
        "order_type": "purchase",
        "region": "eu",
    }


def stored_values(pipeline: str, job_id: str) -> str:
    """Everything Redis holds of one job (its record, results and counters), as one text."""
    client = redis_client()
    found = []
    for name in client.scan_iter(match=f"vetro:{pipeline}:job:{{{job_id}}}*"):
        if client.type(name) == b"hash":
            found.extend(value.decode() for value in client.hgetall(name).values())
    return "\n".join(found)


def test_flower_events_and_worker_logs_show_personal_fields_redacted_and_redis_keeps_them_sealed(sealed, partner):
    customer = f"cust-pd-{uuid.uuid4().hex[:6]}"
    with EventTap() as tap, workers(sealed) as (worker,):
        job_id = submit(order(customer))
        wait_for_completion([job_id], timeout=90)
        wait_until(lambda: sum(e["type"] == "task-succeeded" for e in tap.events) >= 5, 30, "the jobs' events")
        log = worker.log()

    shown = json.dumps(tap.events) + log
    assert customer in shown  # the customer's id is no personal field: operators can still follow the job
    assert "[redacted]" in shown
    assert EMAIL_DOMAIN not in shown and f"Customer {customer}" not in shown
    kept = stored_values("orders", job_id)
    assert "fernet:" in kept and customer not in kept and EMAIL_DOMAIN not in kept
    # The job itself had every value: the partner received the order.
    assert any(row["order_id"] for row in effects_by_key(partner.url).values())


def test_a_dead_letter_is_sealed_in_sql_shown_whole_to_the_operator_and_replayed(sealed, partner):
    set_faults(partner.url, error_rate=1.0, error_status=422, scope="/webhooks/billing")
    customer = f"cust-pd-{uuid.uuid4().hex[:6]}"
    with workers(sealed):
        job_id = submit(order(customer))
        wait_for_jobs([job_id], timeout=90)
        (row,) = store.rows(store.RowFilter(job=job_id))
        assert set(row.input) == {"sealed"} and EMAIL_DOMAIN not in json.dumps(row.input)

        shown = vetro("dlq", "show", str(row.id), "--json")
        assert shown.returncode == 0, shown.stderr
        step_input = json.loads(shown.stdout)["input"]
        assert step_input["args"][0]["customer"]["email"] == f"{customer}{EMAIL_DOMAIN}"

        set_faults(partner.url, error_rate=0)
        replayed = vetro("dlq", "replay", str(row.id), "--yes")
        assert replayed.returncode == 0, replayed.stderr
        assert wait_for_completion([job_id], timeout=90)[0]["status"] == "completed"


def test_a_quarantined_body_is_sealed_and_shown_whole(sealed):
    from pipeline.jobs import quarantine

    body = b'{"email": "ada' + EMAIL_DOMAIN.encode() + b'"'  # not even JSON: kept raw
    entry_id = quarantine.put("test: malformed", {"id": "m-1"}, body, "application/json", "vetro")
    ((_, raw),) = redis_client().xrange(quarantine.QUARANTINE_KEY, min=entry_id, max=entry_id)
    assert EMAIL_DOMAIN.encode() not in raw[b"body"]
    assert quarantine.get(entry_id).body == body
    quarantine.drop([entry_id])
