"""The payment saga on real workers against the stub's payment service: a failure for good at
`ship` undoes `charge` then `reserve_stock`, each once, whatever kills the worker meanwhile.
"""

from __future__ import annotations

import json
import signal
import uuid

import pytest

from dlq import store
from pipeline.jobs.ledger import COMPENSATED, settled
from tests.helpers import call_times, effects_by_key, fast_env, set_faults, vetro, wait_for_jobs, workers
from vetro.testing.processes import wait_until

pytestmark = pytest.mark.integration

UNDONE = ["payments/refunds", "payments/releases"]
DONE_AND_UNDONE_ONCE = dict.fromkeys(["payments/reservations", "payments/charges", *UNDONE], 1)
SHIPPED = {"payments/reservations", "payments/charges", "payments/shipments"}


def saga_env() -> dict[str, str]:
    return fast_env(visibility=8, time_limit=5, VETRO_STAGES__PAYMENTS__REFUND__TECHNICAL_RETRIES="0")


def submit_payment(env: dict[str, str], country: str) -> tuple[str, str]:
    key = f"pay-{uuid.uuid4().hex[:8]}"
    payment = {"order_id": key, "sku": "sku-7", "quantity": 2, "amount": "49.90", "currency": "EUR", "country": country}
    submitted = vetro("submit", "--pipeline", "payments", "--json", json.dumps(payment), "--key", key, env=env)
    assert submitted.returncode == 0, submitted.stderr
    return submitted.stdout.strip(), key


def effects_of(partner_url: str, key: str) -> dict[str, int]:
    """Deliveries per payment-service action that carried the job's key."""
    return {action: row["deliveries"] for (k, action), row in effects_by_key(partner_url).items() if k == key}


def job_show(job_id: str) -> dict:
    shown = vetro("job", "show", job_id, "--json")
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


def test_a_failure_for_good_at_ship_refunds_then_releases_once_each(partner):
    env = saga_env()
    with workers(env):
        shipped, shipped_key = submit_payment(env, "DE")
        refused, key = submit_payment(env, "AQ")  # no carrier ships there: 422, a permanent failure
        done, record = wait_for_jobs([shipped, refused], timeout=90)
    assert done["status"] == "completed" and "compensations" not in job_show(shipped)
    assert set(effects_of(partner.url, shipped_key)) == SHIPPED

    assert (record["status"], record["failed_stage"], record["failure_class"]) == ("compensated", "ship", "permanent")
    assert effects_of(partner.url, key) == DONE_AND_UNDONE_ONCE
    assert call_times(partner.url, "/payments/refunds")[-1] < call_times(partner.url, "/payments/releases")[-1]
    shown = job_show(refused)
    assert shown["compensations"] == [
        {"stage": "refund", "status": "done"},
        {"stage": "release_stock", "status": "done"},
    ]
    assert "no carrier ships to AQ" in shown["compensating_for"]

    # The failure is in the dead-letter store, to be seen and grouped; replaying it would ship an order
    # whose payment was refunded, so it is refused.
    [row] = store.rows(store.RowFilter(job=refused))
    assert (row.stage, row.failure_class) == ("ship", "permanent")
    replayed = vetro("dlq", "replay", "--job", refused, "--yes", env=env)
    assert replayed.returncode == 1 and "its job was compensated after this failure" in replayed.stderr


@pytest.mark.long
def test_a_worker_killed_during_a_compensation_does_not_repeat_it(partner):
    env = saga_env()
    set_faults(partner.url, ack_delay_ms=20_000, scope="/payments/refunds")  # the refund is made, its answer held
    with workers(env) as (first,):
        job_id, key = submit_payment(env, "AQ")
        wait_until(lambda: "payments/refunds" in effects_of(partner.url, key), 60, "the refund to be made")
        first.kill(signal.SIGKILL)
    set_faults(partner.url, ack_delay_ms=0)
    with workers(env):
        record = wait_for_jobs([job_id], timeout=120)[0]
    assert record["status"] == "compensated"
    effects = effects_of(partner.url, key)
    assert set(effects) == {"payments/reservations", "payments/charges", *UNDONE}  # one refund, one release
    assert effects["payments/refunds"] == 2  # the redelivered refund carried the same key: no second refund
    assert effects["payments/releases"] == 1


def test_a_compensation_that_fails_for_good_ends_the_job_failed_and_its_replay_finishes_undoing(partner):
    env = saga_env()
    set_faults(partner.url, error_rate=1.0, error_status=400, scope="/payments/refunds")
    with workers(env):
        job_id, key = submit_payment(env, "AQ")
        record = wait_for_jobs([job_id], timeout=90)[0]
        assert (record["status"], record["failed_stage"]) == ("failed", "refund")
        assert "payments/releases" not in effects_of(partner.url, key)  # nothing runs past a failed compensation
        set_faults(partner.url, error_rate=0.0)  # the payment service is fixed
        replayed = vetro("dlq", "replay", "--job", job_id, "--yes", env=env)
        assert "replayed 1 dead letter(s)" in replayed.stderr, replayed.stderr  # the refund; `ship` is refused
        wait_until(lambda: settled([job_id], COMPENSATED), 90, "the job to be compensated")
    assert effects_of(partner.url, key) == DONE_AND_UNDONE_ONCE
    # The replayed compensation's row is resolved; the failure that started the compensations stays
    # open for the operator to see (and refuses a replay).
    assert {row.stage: row.status for row in store.rows(store.RowFilter(job=job_id))} == {
        "ship": "failed",
        "refund": "resolved",
    }
