"""Small helpers the tests share: waiting for jobs and reading the partner's effects."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from redis.exceptions import ClusterDownError, RedisClusterException

from dlq import store
from pipeline.adapter.app import reconfigure
from pipeline.jobs.ledger import COMPLETED, UNFINISHED, get_jobs, settled
from settings import reset_settings
from settings.config import is_cluster
from tasks.orders.samples import sample_order
from tests.conftest import worker_env
from vetro.testing.processes import RedisServer, WorkerProcess, free_port, http_answers, reaped, spawn, wait_until


def wait_for_jobs(job_ids: list[str], timeout: float = 120) -> list[dict[str, str]]:
    """Every job's record once none is still queued."""
    return wait_until(lambda: settled(job_ids), timeout, f"{len(job_ids)} jobs to finish", interval=0.2)


def wait_for_completion(job_ids: list[str], timeout: float = 120) -> list[dict[str, str]]:
    """Every job's record once all are completed (after a replay, failed jobs stay failed until then)."""
    return wait_until(lambda: settled(job_ids, COMPLETED), timeout, f"{len(job_ids)} jobs to complete", interval=0.3)


def count_ended(job_ids: list[str]) -> int:
    """How many of the jobs have ended, whatever their outcome."""
    return sum(1 for record in get_jobs(job_ids) if record and record["status"] not in UNFINISHED)


# What reading the ledger raises while its Redis fails over: no master answers (a connection lost, a replica that
# refuses writes, a cluster whose slots are not all served yet, or none of whose nodes answers).
FAILING_OVER = (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError, ClusterDownError, RedisClusterException)


def count_settled(job_ids: list[str]) -> int:
    """How many have ended (0 while no master answers: a failover is under way)."""
    try:
        return count_ended(job_ids)
    except FAILING_OVER:
        return 0


def all_completed(job_ids: list[str]) -> bool:
    try:
        return settled(job_ids, COMPLETED) is not None
    except FAILING_OVER:
        return False


def wait_for_all_completed(job_ids: list[str], timeout: float = 300) -> None:
    """Wait until every job has completed, through a failover; a timeout names the jobs that had not."""
    try:
        wait_until(lambda: all_completed(job_ids), timeout, f"{len(job_ids)} jobs to complete")
    except TimeoutError as timed_out:
        stuck = [record for record in get_jobs(job_ids) if not record or record["status"] != COMPLETED]
        raise TimeoutError(f"{timed_out}; not completed: {stuck}") from None


def effects_by_key(partner_url: str) -> dict[tuple[str, str], dict]:
    rows = httpx.get(f"{partner_url}/effects", timeout=10).json()["effects"]
    return {(row["key"], row["destination"]): row for row in rows}


def set_faults(partner_url: str, **faults: object) -> None:
    httpx.post(f"{partner_url}/faults", json=faults, timeout=10).raise_for_status()


def effects_summary(partner_url: str) -> dict:
    return httpx.get(f"{partner_url}/effects", timeout=10).json()


EU_PURCHASE_DESTINATIONS = ("warehouse", "billing", "notifications")


def eu_purchases(prefix: str, count: int) -> list[tuple[dict, str]]:
    """Orders that reach every destination (purchases in the EU), each with an idempotency key of its own."""
    keys = [f"{prefix}-{uuid.uuid4().hex[:8]}" for _ in range(count)]
    eu_purchase = {"order_type": "purchase", "region": "eu"}
    return [(sample_order(n, prefix=key) | eu_purchase, key) for n, key in enumerate(keys)]


def submit_eu_purchases(prefix: str, count: int) -> tuple[list[str], list[str]]:
    """Submit `count` EU purchases (with `pipeline.submit`, to this process's broker); their job ids and keys."""
    from pipeline import submit

    orders = eu_purchases(prefix, count)
    return [submit(order, key) for order, key in orders], [key for _, key in orders]


def assert_every_effect_once(partner_url: str, keys: list[str]) -> None:
    """Each EU purchase's deliveries all made, and no effect anywhere made twice."""
    effects = effects_by_key(partner_url)
    missing = [(key, where) for key in keys for where in EU_PURCHASE_DESTINATIONS if (key, where) not in effects]
    assert not missing, f"{len(missing)} deliveries missing, e.g. {missing[:3]}"
    assert effects_summary(partner_url)["duplicate_effects"] == 0


def call_times(partner_url: str, path_prefix: str) -> list[float]:
    """When the partner received each call whose path starts with `path_prefix`."""
    calls = httpx.get(f"{partner_url}/calls", timeout=10).json()["calls"]
    return sorted(call["t"] for call in calls if call["path"].startswith(path_prefix))


def fast_env(visibility: int, time_limit: int, **extra: str) -> dict[str, str]:
    """Worker settings for crash tests: short limits so redelivery takes seconds."""
    defaults = {
        "VETRO_VISIBILITY_TIMEOUT": str(visibility),
        "VETRO_BREAKER__RESET_TIMEOUT": "3",
        "VETRO_ALL_STAGES__TIME_LIMIT": str(time_limit),
        "VETRO_ALL_STAGES__SOFT_TIME_LIMIT": str(time_limit - 1),
        "VETRO_ALL_STAGES__BACKOFF_BASE": "1",
        "VETRO_ALL_STAGES__BACKOFF_MAX": "2",
    }
    return worker_env(**(defaults | extra))


@contextmanager
def workers(env: dict[str, str], count: int = 1, concurrency: int = 2, plugins: bool = False) -> Iterator[list]:
    extra = ["--include", "tests.worker_plugins"] if plugins else []
    started = [
        WorkerProcess(env, concurrency=concurrency, name=f"w{n}-{uuid.uuid4().hex[:4]}", extra_args=extra)
        for n in range(count)
    ]
    try:
        yield [worker.start() for worker in started]
    finally:
        for worker in started:
            worker.stop()


def run_module(
    *args: str, env: dict[str, str] | None = None, stdin: str | bytes | None = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    """Run `python -m <args>` as an operator would, with the tests' settings (and `env` over them).

    Always over them: a partial `env` must never send a command to the machine's shared Redis.
    `stdin` as bytes is sent as it is (its output is still read as text).
    """
    result = subprocess.run(
        [sys.executable, "-m", *args],
        input=stdin.encode() if isinstance(stdin, str) else stdin,
        capture_output=True,
        env=worker_env() | (env or {}),
        timeout=timeout,
    )
    result.stdout, result.stderr = (stream.decode(errors="replace") for stream in (result.stdout, result.stderr))
    return result


@contextmanager
def serving(env: dict[str, str] | None = None) -> Iterator[str]:
    """`vetro serve` on a free loopback port, with the tests' settings (and `env` over them); its base URL."""
    port = free_port()
    process = spawn(
        [sys.executable, "-m", "vetro.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env={**os.environ, **worker_env(), **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: http_answers(f"{url}/health/live", (200, 401)), 60, "vetro serve to answer")  # 401: auth
        yield url
    finally:
        process.terminate()
        process.wait(10)
        reaped(process)


def vetro(*args: str, **options: Any) -> subprocess.CompletedProcess:
    """The `vetro` command."""
    return run_module("vetro.cli", *args, **options)


def celery_worker(env: dict[str, str]) -> subprocess.CompletedProcess:
    """`celery -A pipeline worker` run to its end: for tests of a worker that must refuse to start."""
    return run_module("celery", "-A", "pipeline", "worker", env=env, timeout=60)


class PostgresServer:
    """A private PostgreSQL cluster on a free port, which a test may stop and start (needs root)."""

    def __init__(self) -> None:
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
        if os.geteuid() != 0 or not bins:
            pytest.skip("a private PostgreSQL needs root and Debian's postgresql binaries")
        self.bin = bins[-1]
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="vetro-pg-"))
        shutil.chown(self.directory, "postgres", "postgres")
        self._as_postgres(
            str(self.bin / "initdb"), "-D", str(self.directory / "data"), "-U", "postgres", "--auth=trust", "-E", "UTF8"
        )

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *args: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *args], check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1"
        self._as_postgres(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.directory / "data"),
            "-o",
            options,
            "-w",
            "-l",
            str(self.directory / "log"),
            "start",
        )

    def stop(self) -> None:
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.directory / "data"), "-m", "fast", "-w", "stop")

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


def dead_letter_event(
    job: str, scope: str = "transform", message: str = "boom for order order-1", **changes
) -> store.DeadLetterEvent:
    values = dict(
        job_id=job,
        scope=scope,
        pipeline="orders",
        stage=scope.split(".")[0],
        destination=scope.split(".")[1] if "." in scope else None,
        input={"args": [{"a": 1}], "kwargs": {}},
        headers={"vetro_job_id": job},
        idempotency_key=f"key-{job}",
        correlation_id=f"corr-{job}",
        exception_type="pipeline.failures.TechnicalError",
        message=message,
        traceback="Traceback ...",
        failure_class="technical",
        attempts=3,
        failed_at=store.utcnow().isoformat(),
        worker_host="w@h",
    )
    return store.DeadLetterEvent(**(values | changes))


@contextmanager
def producing_to(url: str, results: str | None = None, **settings: str) -> Iterator[None]:
    """This process publishes to another broker (`url`) and reads results from another Redis (`results`, else
    the broker) inside the block, with `settings` (VETRO_* variables) set too."""
    with settings_set({"VETRO_BROKER_URL": url, "VETRO_RESULT_STORE_URL": results or url, **settings}):
        yield


@contextmanager
def quiet_redis() -> Iterator[RedisServer]:
    """A Redis of the caller's own, which this process (and the commands it runs) publish to inside the block:
    nothing else writes there (the session's Redis is shared with other tests' workers), so what it holds is
    the caller's."""
    with RedisServer() as server, producing_to(server.url):
        yield server


# The result store is a Redis Cluster (`--vetro-result-store cluster`): a test of what only one Redis offers skips.
on_cluster = pytest.mark.skipif(
    is_cluster(os.environ.get("VETRO_RESULT_STORE_URL", "")),
    reason="the result store is a Redis Cluster, where this does not apply",
)


def job_records() -> int:
    """Jobs recorded in this process's result store: every publish writes one record (`...:job:{id}`) first.
    Only the records: a job a worker runs adds results, counters and leases under the same prefix. A set,
    because SCAN may return a key twice while Redis rehashes."""
    from pipeline.store import redis_client

    return len(set(redis_client().scan_iter("vetro:*:job:{*}", count=1000)))


@contextmanager
def settings_set(variables: dict[str, str]) -> Iterator[None]:
    """This process's settings with `variables` set inside the block; after it, those it changed as they were.
    Only those: a variable it found as given, and another fixture set meanwhile (the partner stub's URL, which
    a worker's settings copy from this process), is left as it is."""
    changed = {name: value for name, value in variables.items() if os.environ.get(name) != value}
    saved = {name: os.environ.get(name) for name in changed}
    os.environ.update(changed)
    reset_settings()
    reconfigure()
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        reset_settings()
        reconfigure()


RABBITMQ_URL = os.environ.get("VETRO_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672")


@contextmanager
def rabbitmq_vhost() -> Iterator[str]:
    """A throwaway virtual host on the machine's RabbitMQ (made and deleted with rabbitmqctl), as a broker URL.
    Skips, saying why, when there is none (CI sets VETRO_TEST_REQUIRE_RABBITMQ: fails there)."""
    name = f"vetro-test-{uuid.uuid4().hex[:8]}"
    made = (
        subprocess.run(["rabbitmqctl", "add_vhost", name], capture_output=True, text=True, timeout=120)
        if (shutil.which("rabbitmqctl"))
        else None
    )
    if made is None or made.returncode != 0:
        reason = "rabbitmqctl is not installed" if made is None else made.stderr.strip().splitlines()[-1:]
        if os.environ.get("VETRO_TEST_REQUIRE_RABBITMQ"):
            raise RuntimeError(f"no RabbitMQ to test on: {reason}")
        pytest.skip(f"needs RabbitMQ (rabbitmq-server, rabbitmqctl): {reason}")
    try:
        subprocess.run(
            ["rabbitmqctl", "set_permissions", "-p", name, "guest", ".*", ".*", ".*"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        yield f"{RABBITMQ_URL}/{name}"
    finally:
        subprocess.run(["rabbitmqctl", "delete_vhost", name], capture_output=True, timeout=120)
