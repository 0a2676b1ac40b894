"""A job's due time: set when it opens, pushed by a step only when it is near (pipeline.jobs.ledger.due_soon).

The reconciler looks at a job once its due time passes. A step that starts while the job's due time is
still far away leaves it (one command fewer a step); one that starts when it is near pushes it."""

from __future__ import annotations

import time

import pytest

from pipeline import submit_many
from pipeline.jobs import closing, ledger
from pipeline.jobs.guard import CLAIMED, Guard
from pipeline.jobs.pipelines import push_due_within, stall_after
from pipeline.store import JobKeys, redis_client
from tasks.orders.samples import sample_order
from tests.helpers import quiet_redis

pytestmark = pytest.mark.integration


def claimed(job_id: str) -> float:
    """Claim the job's first step as a worker would, and give back the due time the claim read."""
    pipe = redis_client().pipeline(transaction=False)
    guard = Guard("orders", job_id, "validate")
    guard.claim("test-owner", 30, pipe)
    answer = guard.parse_claim(pipe.execute()[0])
    assert answer.status == CLAIMED
    return answer.due_at


def test_a_job_opens_with_its_due_time_and_a_step_soon_after_leaves_it():
    with quiet_redis():  # no worker: the test claims the step itself
        before = time.time()
        [job_id] = submit_many([sample_order(1, prefix="due")])
        scored = redis_client().zscore(ledger.due_key("orders"), job_id)
        due_at = claimed(job_id)
    assert due_at == pytest.approx(scored)  # the record keeps the due time the due set was given
    assert before + stall_after() <= due_at <= time.time() + stall_after()
    assert not ledger.due_soon(due_at)  # within the visibility timeout less a time limit of opening


def test_a_step_starting_near_its_jobs_due_time_pushes_it():
    assert ledger.due_soon(time.time() + push_due_within() - 1)
    with quiet_redis():
        [job_id] = submit_many([sample_order(2, prefix="due")])
        redis_client().hdel(JobKeys("orders", job_id).record, ledger.DUE_AT)  # a job the release before opened
        assert ledger.due_soon(claimed(job_id))  # 0: its due time is pushed, as every step did before


def test_a_completed_job_leaves_the_due_set_with_the_next_batch():
    with quiet_redis():
        [job_id] = submit_many([sample_order(3, prefix="due")])
        closing.close_soon("orders", job_id)
        assert redis_client().zscore(ledger.due_key("orders"), job_id) is not None  # not a command a job
        closing.flush()
        assert redis_client().zscore(ledger.due_key("orders"), job_id) is None
