"""An upgrade keeps what is in flight: jobs started on the previous release's workers finish on this release's,
and dead letters the previous release wrote replay on this one.

The previous release runs from a `git worktree` of its commit, with this checkout's installed packages:
its producer submits, its worker starts the jobs and dead-letters some, then it is killed mid-flight.
This release's workers and beat take over: every job ends, each delivery once, and the old dead letters
replay to completion with this release's command.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from settings import reset_settings
from tasks.orders.samples import sample_order
from tests.conftest import worker_env
from tests.helpers import effects_by_key, effects_summary, fast_env, set_faults, vetro, wait_for_jobs
from vetro.testing.processes import BeatProcess, RedisServer, WorkerProcess, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.long]

REPO = Path(__file__).resolve().parents[2]
# The releases before the canvas engine changed what the ledger holds (e10cad6), and before the core's
# modules moved into subpackages and the dead-letter store's schema took migration 0002 (dd7f602), and before a
# job's record held its steps' results and leases (99ba4a5).
PREVIOUS = os.environ.get("VETRO_TEST_PREVIOUS_RELEASES", "e10cad6,dd7f602,99ba4a5").split(",")
SETTLE = 180


@pytest.fixture(scope="module", params=PREVIOUS)
def previous_release(request, tmp_path_factory) -> Iterator[Path]:
    release = request.param
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs git and this checkout's history (the previous release is checked out from it)")
    known = subprocess.run(["git", "cat-file", "-e", f"{release}^{{commit}}"], cwd=REPO, capture_output=True)
    if known.returncode != 0:
        pytest.skip(f"the previous release {release} is not in this checkout's history (a shallow clone?)")
    path = tmp_path_factory.mktemp("previous-release") / "vetro"
    added = ["git", "worktree", "add", "--detach", str(path), release]
    subprocess.run(added, cwd=REPO, check=True, capture_output=True)
    yield path
    subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=REPO, capture_output=True)


def in_release(path: Path, env: dict[str, str]) -> dict[str, str]:
    """Settings for a process of the release checked out at `path` (its code first on the path)."""
    return env | {"PYTHONPATH": str(path)}


def run_previous(path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=path,
        env={**os.environ, **worker_env(), **in_release(path, env)},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    with RedisServer(appendonly=True) as redis:
        saved = {name: os.environ[name] for name in ("VETRO_BROKER_URL", "VETRO_RESULT_STORE_URL")}
        os.environ.update({"VETRO_BROKER_URL": redis.url, "VETRO_RESULT_STORE_URL": redis.url})
        reset_settings()
        yield redis
        os.environ.update(saved)
        reset_settings()


def test_jobs_and_dead_letters_of_the_previous_release_finish_on_this_one(
    previous_release, private_redis, partner, tmp_path
):
    env = fast_env(
        visibility=8,
        time_limit=5,
        VETRO_BROKER_URL=private_redis.url,
        VETRO_RESULT_STORE_URL=private_redis.url,
        VETRO_RECONCILE_INTERVAL="1",
        VETRO_PIPELINES="tasks.orders,tests.pipelines",
        VETRO_ALL_STAGES__TECHNICAL_RETRIES="0",
        VETRO_DATABASE_URL=f"sqlite:///{tmp_path}/dlq.db",
    )
    set_faults(partner.url, latency_ms=250)  # slow deliveries: jobs are mid-flight when the old worker dies
    run = uuid.uuid4().hex[:8]
    orders = tmp_path / "orders.jsonl"
    orders.write_text("".join(json.dumps(sample_order(n, prefix=f"upgrade-{run}")) + "\n" for n in range(24)))
    refunds = tmp_path / "refunds.jsonl"
    refunds.write_text("".join(json.dumps({"refund_id": f"r-{run}-{n}", "amount": "5.00"}) + "\n" for n in range(3)))

    # The previous release: its schema, its producer submits, its worker starts the jobs; the card service is
    # down for it.
    migrated = run_previous(previous_release, env, "vetro.cli", "db", "upgrade")
    assert migrated.returncode == 0, migrated.stderr
    old = WorkerProcess(
        in_release(previous_release, env | {"REFUNDS_CARD_SERVICE_DOWN": "true"}),
        concurrency=2,
        name=f"previous-{run}",
        cwd=str(previous_release),
    ).start()
    try:
        # The refunds first, until they are dead letters; then the orders, and the old worker dies as soon as a
        # few have completed: however long the refunds took, the rest of the orders are in flight.
        failing = run_previous(previous_release, env, "vetro.cli", "submit", "--pipeline", "refunds", str(refunds))
        assert failing.returncode == 0, failing.stderr
        wait_until(
            lambda: _dead_letters(previous_release, env, run) >= 3,
            120,
            "the previous release to dead-letter the refunds",
        )
        submitted = run_previous(previous_release, env, "vetro.cli", "submit", str(orders))
        assert submitted.returncode == 0, submitted.stderr
        order_ids, refund_ids = submitted.stdout.split(), failing.stdout.split()
        wait_until(lambda: _completed(order_ids) >= 3, 120, "the previous release to complete some orders")
        assert _completed(order_ids) < len(order_ids), "every order finished before the upgrade: nothing was in flight"
    finally:
        old.kill()  # mid-flight: its unacknowledged messages come back after the visibility timeout
        old.stop()

    # This release takes over, as the upgrade guide says: its schema first, then its workers; the card service
    # is back.
    upgraded = vetro("db", "upgrade", env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    processes = [WorkerProcess(env, concurrency=2, name=f"upgraded{n}-{run}") for n in range(2)] + [BeatProcess(env)]
    try:
        for process in processes:
            process.start()
        records = wait_for_jobs(order_ids, timeout=SETTLE)
        replayed = vetro("dlq", "replay", "--error", f"r-{run}-", "--yes", env=env)
        assert replayed.returncode == 0, replayed.stderr
        refunded = wait_for_jobs(refund_ids, timeout=SETTLE)
    finally:
        for process in processes:
            process.stop()

    assert [record["status"] for record in records] == ["completed"] * len(order_ids)
    assert [record["status"] for record in refunded] == ["completed"] * len(refund_ids)
    effects = effects_by_key(partner.url)
    for record in records:
        for destination in json.loads(record["branches"]):
            assert (record["idempotency_key"], destination) in effects
    assert effects_summary(partner.url)["duplicate_effects"] == 0


def _completed(job_ids: list[str]) -> int:
    from pipeline.jobs.ledger import get_jobs

    return sum(1 for record in get_jobs(job_ids) if record and record["status"] == "completed")


def _dead_letters(release: Path, env: dict[str, str], run: str) -> int:
    """The refunds of this run in the dead-letter store (their error names the refund), as `release` lists them."""
    listed = run_previous(release, env, "vetro.cli", "dlq", "list", "--error", f"r-{run}-", "--json")
    return len(json.loads(listed.stdout or "[]")) if listed.returncode == 0 else 0
