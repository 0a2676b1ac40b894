"""Every script and MULTI vetro sends stays in one Redis Cluster slot: the keys that share one, and the check."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from dlq import spool
from pipeline.jobs.ledger import dedup_key, due_key
from pipeline.store import CrossSlotError, JobKeys, one_slot


def slot(name: str) -> int:
    return key_slot(name.encode())


# An empty id never gets this far: the shield quarantines a message without one.
@pytest.mark.parametrize("job_id", ["5f0c1d2e-uuid", "a}b", "{x}", "a{b", "ü}{"])
def test_a_jobs_keys_share_one_slot_whatever_its_id_holds(job_id):
    keys = JobKeys("orders", job_id)
    assert one_slot(keys.all(["validate", "transform.0", "}{"])) is not None


def test_keys_of_two_slots_are_refused_on_any_redis():
    record = JobKeys("orders", "job-1").record
    with pytest.raises(CrossSlotError, match="keys of 2 Redis Cluster slots"):
        one_slot([record, due_key("orders")])
    with pytest.raises(CrossSlotError):
        one_slot([record, dedup_key("orders", "key-1")])
    assert one_slot([record]) == [record]


def test_a_flushers_processing_list_shares_the_spools_slot():
    assert slot(f"{spool.PROCESSING_PREFIX}:0123abcd") == slot(spool.SPOOL_KEY)
