"""A job's record holds its steps' results and leases (format 3), and the records of the release before (results in
their own hash, leases as keys with a TTL) are still claimed, recorded and read as they were.

Each test claims and records steps as a worker would, on a Redis of its own, with no worker running."""

from __future__ import annotations

import json
import time

import pytest

from pipeline import submit_many
from pipeline.jobs import ledger
from pipeline.jobs.guard import BUSY, CLAIMED, COMPLETED, DONE, RECORDED, Guard, encode
from pipeline.store import JobKeys, redis_client
from pipeline.telemetry import heartbeat
from pipeline.watching.health import core_health
from pipeline.worker import startup
from settings import get_settings
from tasks.orders.samples import sample_order
from tests.helpers import quiet_redis, settings_set

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def quiet():
    """A Redis of the test's own: no worker takes the steps it claims."""
    with quiet_redis() as server:
        yield server


STAGES = ("validate", "enrich", "transform", "route", "operate")


def claim(job_id: str, scope: str, owner: str = "worker-a", lease: float = 30):
    pipe = redis_client().pipeline(transaction=False)
    guard = Guard("orders", job_id, scope)
    guard.claim(owner, lease, pipe)
    return guard.parse_claim(pipe.execute()[0])


def record(job_id: str, scope: str, value: object, last: bool = False):
    fan_ins = [("job", 1)] if last else []  # the job's own fan-in, of one chain: complete with its last step
    return Guard("orders", job_id, scope).record(encode(value), time.time(), fan_ins, last, first=scope == STAGES[0])


def opened(n: int, ledger_format: int = 3) -> tuple[str, JobKeys]:
    with settings_set({"VETRO_LEDGER_FORMAT": str(ledger_format)}):  # 2: as the releases before opened jobs
        [job_id] = submit_many([sample_order(n, prefix="formats")])
    keys = JobKeys("orders", job_id)
    assert redis_client().hget(keys.record, "format") == str(ledger_format).encode()
    return job_id, keys


def test_a_step_claimed_and_recorded_leaves_its_result_on_the_record_and_nothing_else():
    job_id, keys = opened(1)
    assert claim(job_id, "validate").status == CLAIMED
    assert claim(job_id, "validate", owner="worker-b").status == BUSY  # the lease is held
    assert record(job_id, "validate", {"ok": 1}).outcome == RECORDED
    answer = claim(job_id, "validate", owner="worker-b")
    assert answer.status == DONE and answer.result == {"ok": 1}
    assert not redis_client().exists(keys.results, keys.lease("validate"))  # no key of the release before
    assert ledger.load("orders", job_id).results == {"validate": {"ok": 1}}
    assert ledger.results_of("orders", job_id, ["validate", "enrich"]) == [{"ok": 1}, None]
    assert "result:validate" not in ledger.get_job(job_id)  # the timeline shows results, not the record


def test_a_lease_whose_holder_died_is_taken_over_once_it_ends_and_the_dead_run_is_counted():
    job_id, _ = opened(2)
    assert claim(job_id, "validate", lease=0.5).status == CLAIMED
    busy = claim(job_id, "validate", owner="worker-b")
    assert busy.status == BUSY and 0 < busy.retry_in <= 0.5
    assert ledger.leases_held(ledger.load("orders", job_id), ["validate"])  # the reconciler sees it running
    time.sleep(0.6)  # the lease's end, by the clock its holder wrote it with
    taken = claim(job_id, "validate", owner="worker-b")
    assert taken.status == CLAIMED and taken.crashed_runs == 1


def test_a_job_ending_within_its_first_lifetime_sets_none_again():
    """Its record was opened to live job_ttl and a margin: ending within the margin, it lives job_ttl past its end
    without a command of its own."""
    job_id, keys = opened(3)
    opened_ttl = redis_client().ttl(keys.record)
    for scope in STAGES:
        assert claim(job_id, scope).status == CLAIMED
    assert record(job_id, STAGES[-1], "done", last=True).outcome == COMPLETED
    assert opened_ttl > get_settings().job_ttl
    assert get_settings().job_ttl <= redis_client().ttl(keys.record) <= opened_ttl


def test_a_job_ending_after_its_margin_lives_job_ttl_from_its_end():
    job_id, keys = opened(4)
    redis_client().hset(keys.record, ledger.EXPIRES_AT, time.time() + 60)  # as if submitted long ago
    redis_client().expire(keys.record, 60)
    assert claim(job_id, "operate").status == CLAIMED
    assert record(job_id, "operate", "done", last=True).outcome == COMPLETED
    assert redis_client().ttl(keys.record) >= get_settings().job_ttl - 5
    assert float(redis_client().hget(keys.record, ledger.EXPIRES_AT)) >= time.time() + get_settings().job_ttl - 5


def test_a_record_of_the_release_before_keeps_its_results_hash_and_lease_keys():
    job_id, keys = opened(5, ledger_format=2)
    assert claim(job_id, "validate").status == CLAIMED
    assert redis_client().pttl(keys.lease("validate")) > 0  # its lease is a key, as before
    assert claim(job_id, "validate", owner="worker-b").status == BUSY
    assert record(job_id, "validate", {"ok": 2}).outcome == RECORDED
    assert redis_client().hget(keys.results, "validate") is not None
    assert not redis_client().exists(keys.lease("validate"))
    assert claim(job_id, "validate", owner="worker-b").result == {"ok": 2}
    assert ledger.results_of("orders", job_id, ["validate"]) == [{"ok": 2}]
    for scope in STAGES[1:]:
        assert claim(job_id, scope).status == CLAIMED
        assert record(job_id, scope, scope, last=scope == STAGES[-1]).outcome in (RECORDED, COMPLETED)
    state = ledger.load("orders", job_id)
    assert state.status == ledger.COMPLETED and state.results["operate"] == "operate"
    assert redis_client().ttl(keys.results) > 0 and redis_client().ttl(keys.record) > 0  # each expires, as before


def test_a_worker_whose_clock_is_off_the_stores_redis_says_so_at_start(monkeypatch, caplog):
    assert abs(startup.check_clock()) < startup.CLOCK_OFF_WARNED  # this machine's clock is Redis's
    real = time.time
    monkeypatch.setattr(startup.time, "time", lambda: real() + 12)
    with caplog.at_level("ERROR", logger="vetro.worker"):
        assert startup.check_clock() == pytest.approx(12, abs=1)
    assert "clock is +12.0 s off the result store's Redis" in caplog.text


def test_workers_of_a_release_before_are_named_while_jobs_open_in_a_format_they_do_not_read(caplog):
    entry = {"at": time.time(), "active": 0, "concurrency": 2, "queues": ["vetro"]}  # as the release before beat
    redis_client().hset(heartbeat.WORKERS_KEY, "celery@old-host", json.dumps(entry))
    heartbeat.beat("celery@new-host", 0, 2, ["vetro"])
    warned = [warning for warning in core_health().warnings if "release before" in warning]
    with caplog.at_level("ERROR", logger="vetro.worker"):
        startup.check_older_workers()
    with settings_set({"VETRO_LEDGER_FORMAT": "2"}):  # what the upgrade says to set while they run
        assert not [warning for warning in core_health().warnings if "release before" in warning]
    assert len(warned) == 1 and "(celery@old-host)" in warned[0] and "VETRO_LEDGER_FORMAT=2" in warned[0]
    assert "worker(s) of a release before run (celery@old-host)" in caplog.text
