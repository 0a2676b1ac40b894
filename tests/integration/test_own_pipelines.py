"""A team's own pipeline, from a module outside vetro (tests/pipelines.py), run as a user would run it.

Stock `celery -A pipeline worker` and `celery -A pipeline beat` processes load it from
VETRO_PIPELINES; jobs are submitted with `vetro submit --pipeline refunds`, fail into the
dead-letter store, are replayed with `vetro dlq replay`, and are re-driven by the reconciler.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from dlq import store
from pipeline.jobs.timeline import describe_job
from tasks.orders.samples import sample_order
from tests.helpers import effects_by_key, fast_env, run_module, vetro, wait_for_completion, wait_for_jobs
from vetro.testing.processes import BeatProcess, WorkerProcess

pytestmark = pytest.mark.integration


def team_env(partner_url: str, **extra: str) -> dict[str, str]:
    return fast_env(
        visibility=25,
        time_limit=5,
        VETRO_PIPELINES="tasks.orders,tests.pipelines",
        VETRO_RECONCILE_INTERVAL="1",
        VETRO_STAGES__REFUNDS__CHARGE_CARD__TECHNICAL_RETRIES="0",
        REFUNDS_PARTNER_URL=partner_url,
        **extra,
    )


@contextmanager
def stock_processes(env: dict[str, str], beat: bool = False) -> Iterator[WorkerProcess]:
    """`celery -A pipeline worker` (and `beat`), with nothing but settings."""
    worker = WorkerProcess(env, concurrency=2, name=f"team-{uuid.uuid4().hex[:4]}")
    started = [worker, *([BeatProcess(env)] if beat else [])]
    try:
        for process in started:
            process.start()
        yield worker
    finally:
        for process in started:
            process.stop()


def submit_refund(env: dict[str, str], key: str, amount: str = "12.50") -> str:
    refund = {"refund_id": key, "amount": amount}
    result = vetro("submit", "--pipeline", "refunds", "--json", json.dumps(refund), "--key", key, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_a_teams_pipeline_fails_into_the_store_and_is_replayed_with_the_stock_commands(partner):
    key = f"refund-{uuid.uuid4().hex[:8]}"
    with stock_processes(team_env(partner.url, REFUNDS_CARD_SERVICE_DOWN="true")) as worker:
        job_id = submit_refund(team_env(partner.url), key)
        failed = wait_for_jobs([job_id], timeout=90)[0]
        assert "refunds.charge_card" in worker.log()  # the stock worker registered the team's stages
    assert (failed["status"], failed["failed_stage"], failed["failure_class"]) == ("failed", "charge_card", "technical")
    [row] = store.rows(store.RowFilter(job=job_id))
    assert (row.pipeline, row.stage) == ("refunds", "charge_card")

    with stock_processes(team_env(partner.url)):  # the card service is back
        replayed = vetro("dlq", "replay", "--job", job_id, "--yes", env=team_env(partner.url))
        assert replayed.returncode == 0 and "replayed 1 dead letter(s)" in replayed.stderr, replayed.stderr
        record = wait_for_completion([job_id], timeout=90)[0]
    assert record["status"] == "completed"
    steps = describe_job(job_id)["steps"]
    assert [steps[name]["status"] for name in ("validate", "charge_card", "notify")] == ["done"] * 3
    assert effects_by_key(partner.url)[(key, "card-refunds")]["deliveries"] == 1


@pytest.mark.long
def test_a_teams_purged_job_is_re_driven_by_the_reconciler(partner):
    key = f"purged-refund-{uuid.uuid4().hex[:8]}"
    env = team_env(partner.url)
    job_id = submit_refund(env, key)  # no worker yet: the message waits in the queue
    purge = run_module("celery", "-A", "pipeline", "purge", "-f", "-Q", "vetro", env=env)
    assert purge.returncode == 0 and "Purged 1 message" in purge.stdout, purge.stdout + purge.stderr
    with stock_processes(env, beat=True):
        record = wait_for_jobs([job_id], timeout=180)[0]
    assert record["status"] == "completed" and int(record["redrives"]) == 1
    assert effects_by_key(partner.url)[(key, "card-refunds")]["deliveries"] == 1


def test_two_pipelines_sharing_stage_names_and_a_key_keep_their_own_steps(partner):
    key = f"shared-{uuid.uuid4().hex[:8]}"
    env = team_env(partner.url)
    with stock_processes(env):
        refund_id = submit_refund(env, key)
        order = vetro("submit", "--json", json.dumps(sample_order(1, prefix=key)), "--key", key, env=env)
        order_id = order.stdout.strip()
        records = wait_for_jobs([refund_id, order_id], timeout=90)
    assert refund_id != order_id and [r["status"] for r in records] == ["completed", "completed"]
    # Both pipelines have a `validate` stage and the jobs share their key: each ran its own.
    assert describe_job(refund_id)["steps"]["validate"]["result"]["refund_id"] == key
    assert describe_job(order_id)["steps"]["validate"]["result"]["order_id"].startswith(key)
