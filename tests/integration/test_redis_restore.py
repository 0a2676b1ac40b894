"""The ledger's Redis lost and restored from an older backup while workers run (docs/runbook.md).

A snapshot is taken while jobs are in flight; the jobs go on and end, more are submitted; then Redis is
lost with its files and started from the snapshot. The reconciler drives every job the backup held to
its end, though the backup knew many of them only half done; steps run again carry the job's key, so the
partner makes each effect once. The jobs submitted after the backup are gone from the ledger, and the
runbook's step (resubmit under the same keys) runs each of them once more, to one effect.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest

from pipeline import submit
from pipeline.jobs.ledger import get_jobs
from tests.helpers import (
    assert_every_effect_once,
    effects_by_key,
    eu_purchases,
    fast_env,
    producing_to,
    set_faults,
    wait_for_completion,
)
from vetro.testing.processes import BeatProcess, RedisServer, WorkerProcess, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.long]


@pytest.fixture
def fleet(partner) -> Iterator[RedisServer]:
    with RedisServer(appendonly=True) as redis_server:
        env = fast_env(visibility=16, time_limit=10, VETRO_RECONCILE_INTERVAL="2")
        env |= {"VETRO_BROKER_URL": redis_server.url, "VETRO_RESULT_STORE_URL": redis_server.url}
        processes = [WorkerProcess(env, concurrency=2, name="restore"), BeatProcess(env)]
        try:
            for process in processes:
                process.start()
            with producing_to(redis_server.url):
                yield redis_server
        finally:
            for process in processes:
                process.stop()


def test_a_restore_from_an_older_backup_drives_every_job_it_held_to_its_end(fleet, partner, tmp_path):
    set_faults(partner.url, latency_ms=1000)  # slow calls: jobs are still in flight when the backup is taken
    before = eu_purchases("backed-up", 30)
    held = [submit(order, key) for order, key in before]
    # Each stage runs for every job before the next stage does (one queue, in order): back up once the
    # deliveries, the last stage, have begun.
    ours = {key for _, key in before}
    delivered = lambda: sum(1 for key, _ in effects_by_key(partner.url) if key in ours)  # noqa: E731
    wait_until(lambda: delivered() >= 10, 240, "the first deliveries before the backup")
    backup = fleet.snapshot(tmp_path / "backup.rdb")
    statuses = Counter(record["status"] for record in get_jobs(held))
    assert statuses["queued"], f"every job had ended before the backup ({statuses}): nothing in flight to drive on"
    set_faults(partner.url, latency_ms=0)
    after = eu_purchases("after-backup", 10)
    later = [submit(order, key) for order, key in after]
    wait_for_completion(held + later, timeout=300)

    fleet.restore(backup)  # Redis lost with its files, started from the backup
    restored = get_jobs(held)
    assert all(record is not None for record in restored), "a job the backup held is missing"
    completed_in_backup = sum(1 for record in restored if record["status"] == "completed")
    print(f"the backup held {len(held)} jobs, {completed_in_backup} of them completed")
    assert completed_in_backup < len(held)
    assert get_jobs(later) == [None] * len(later)  # submitted after the backup: gone

    wait_for_completion(held, timeout=300)  # the reconciler and redelivery drive them on
    assert_every_effect_once(partner.url, [key for _, key in before])
    again = [submit(order, key) for order, key in after]  # the runbook: resubmit under the same keys
    wait_for_completion(again, timeout=300)
    assert_every_effect_once(partner.url, [key for _, key in after])
