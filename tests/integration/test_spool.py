"""The dead-letter spool on a real Redis: concurrent flushers, a flusher that dies, an entry that cannot be written."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter

import pytest
from redis.cluster import RedisCluster

from dlq import spool, store
from pipeline.store import redis_client
from tests.helpers import dead_letter_event
from vetro.testing.processes import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def empty_spool(redis_server):
    client = redis_client()
    keys = [spool.SPOOL_KEY, spool.PARKED_KEY, spool.FLUSHERS_KEY, spool.LOCK_KEY]
    client.delete(*keys)
    yield
    client.delete(*keys)
    for pattern in (f"{spool.PROCESSING_PREFIX}:*", OLD_PROCESSING + "*"):
        for name in list(client.scan_iter(pattern)):
            client.delete(name)


OLD_PROCESSING = "vetro:dlq:spool:processing:"  # how the release before named a flusher's list


def fill(count: int) -> None:
    for number in range(count):
        spool.push({"kind": "failure", "n": number})


def test_two_flushers_over_a_long_backlog_write_every_entry_exactly_once(monkeypatch):
    # Each batch outlasts the lock, so the second flusher gets it while the first is still writing:
    # the two run side by side, as when a flush is slow.
    monkeypatch.setattr(spool, "LOCK_SECONDS", 1)
    fill(1000)
    written: Counter = Counter()
    lock = threading.Lock()

    def slow_write(entries: list[dict]) -> None:
        time.sleep(1.2)  # a slow database: longer than the lock lasts
        with lock:
            written.update(entry["n"] for entry in entries)

    flushed: list[int] = []
    flushers = [threading.Thread(target=lambda: flushed.append(spool.flush(slow_write))) for _ in range(2)]
    flushers[0].start()
    wait_until(lambda: spool.size() < 1000 and not redis_client().exists(spool.LOCK_KEY), 30, "the lock to lapse")
    flushers[1].start()
    for thread in flushers:
        thread.join(120)
    assert sorted(written) == list(range(1000))
    assert set(written.values()) == {1}, "an entry was written twice"
    assert sorted(flushed) != [0, 1000], "the flushers did not overlap"
    assert sum(flushed) == 1000 and spool.size() == 0


@pytest.mark.parametrize("processing", [f"{spool.PROCESSING_PREFIX}:dead", OLD_PROCESSING + "dead"])
def test_entries_a_dead_flusher_had_taken_go_back_to_the_spool(processing):
    client = redis_client()
    if isinstance(client, RedisCluster) and processing.startswith(OLD_PROCESSING):
        pytest.skip("the release before never ran on a Redis Cluster: no list of its names is there")
    fill(5)
    client.sadd(spool.FLUSHERS_KEY, processing)
    client.lmove(spool.SPOOL_KEY, processing, "LEFT", "RIGHT")  # taken, then its flusher died: no alive key
    written: list[int] = []
    assert spool.flush(lambda entries: written.extend(e["n"] for e in entries)) == 5
    assert sorted(written) == [0, 1, 2, 3, 4]


def test_an_entry_that_cannot_be_written_is_parked_and_the_rest_are_written():
    good = [f"good-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    spool.push({"kind": "failure", **vars(dead_letter_event(good[0]))})
    spool.push({"kind": "failure", "job_id": "broken"})  # missing every other field
    spool.push({"kind": "failure", **vars(dead_letter_event(good[1]))})
    assert store.flush_spool() == 3
    assert all(store.rows(store.RowFilter(job=job)) for job in good)
    [parked] = spool.parked()
    assert json.loads(parked["entry"])["job_id"] == "broken" and parked["error"].startswith("TypeError")
    assert spool.size() == 0


def test_a_database_outage_leaves_every_entry_in_the_spool():
    from sqlalchemy.exc import OperationalError

    spool.push({"kind": "failure", **vars(dead_letter_event("waits-1"))})
    spool.push({"kind": "failure", **vars(dead_letter_event("waits-2"))})

    def database_down(entries: list[dict]) -> None:
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    with pytest.raises(OperationalError):
        spool.flush(database_down, outage=OperationalError)
    assert spool.size() == 2 and not spool.parked()
