"""Is the core healthy: the broker and result store answer, and every queue with messages waiting is being drained.

"Connected but not consuming" is the failure that process and TCP checks miss, so readiness
looks at the queues themselves: a queue whose oldest message has waited longer than
VETRO_HEALTH_STALL_SECONDS while no worker took a message from it for as long is stalled
(the worker heartbeat, pipeline.telemetry.heartbeat). Open breakers and slow dependencies are reported,
and make the service degraded, not unready: the pipeline waits them out by design.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pybreaker
import redis
from kombu import Connection

from pipeline.adapter.internals import OLDEST, envelope_header, queue_keys
from pipeline.context import SENT_AT
from pipeline.dependencies import breakers
from pipeline.jobs.pipelines import dependencies
from pipeline.jobs.reconciler import last_sweep, messages_waiting
from pipeline.redis_servers import connect
from pipeline.telemetry import heartbeat, metrics
from settings import get_settings

RESULT_STORE = "result_store"  # the name of its check
PROBE_TIMEOUT = 3  # seconds a server may take to answer a health probe
RECONCILER_GRACE = 60  # seconds: beat starting, or a sweep of a large backlog, is no outage
BREAKER_STATES = {pybreaker.STATE_CLOSED: 0, pybreaker.STATE_HALF_OPEN: 1, pybreaker.STATE_OPEN: 2}


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class QueueState:
    name: str
    length: int
    oldest_age: float | None  # seconds the oldest waiting message has waited (None: empty, or cannot tell)
    consumed_ago: float | None  # seconds since a worker last took a message from it (None: never seen)
    workers: int  # live workers consuming it
    processes: int  # their pool processes
    stalled: bool


@dataclass(frozen=True)
class DependencyLatency:
    name: str
    calls: int
    p50: float | None
    p95: float | None
    slow_calls: int


@dataclass
class CoreHealth:
    checks: list[Check] = field(default_factory=list)
    queues: list[QueueState] = field(default_factory=list)
    workers: list[heartbeat.Worker] = field(default_factory=list)
    breakers: list[breakers.BreakerStatus] = field(default_factory=list)
    dependencies: list[DependencyLatency] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # why it is not ready
    warnings: list[str] = field(default_factory=list)  # why it is degraded

    @property
    def store_answered(self) -> bool:
        """The result store answered, so the heartbeats, breakers and metrics kept there were read."""
        return all(check.ok for check in self.checks if check.name == RESULT_STORE)


def _probe_client(url: str) -> redis.Redis:
    return connect(url, socket_connect_timeout=PROBE_TIMEOUT, socket_timeout=PROBE_TIMEOUT, retry=None)


def _sent_at(raw: bytes | None) -> float | None:
    value = envelope_header(raw, SENT_AT) if raw else None
    return float(value) if isinstance(value, int | float) else None


def _redis_queues(url: str, names: list[str]) -> dict[str, tuple[int, float | None]]:
    """Each queue's length and the send time of its oldest message, over all its priority lists."""
    client = _probe_client(url)
    try:
        pipe = client.pipeline(transaction=False)
        for name in names:
            for key in queue_keys(name):
                pipe.llen(key)
                pipe.lindex(key, OLDEST)
        answers = iter(pipe.execute())
    finally:
        client.close()
    found = {}
    for name in names:
        lengths, oldest = [], []
        for _ in queue_keys(name):
            lengths.append(int(next(answers)))
            sent_at = _sent_at(next(answers))
            if sent_at is not None:
                oldest.append(sent_at)
        found[name] = (sum(lengths), min(oldest, default=None))
    return found


def _amqp_queues(url: str, tls: dict | None, names: list[str]) -> dict[str, tuple[int, float | None]]:
    """Each queue's length (AMQP cannot show the oldest message without taking it)."""
    found = {}
    with Connection(url, connect_timeout=PROBE_TIMEOUT, ssl=tls or False) as connection:
        connection.ensure_connection(max_retries=1)
        for name in names:
            found[name] = (messages_waiting(connection, name), None)
    return found


def _check_reconciler(report: CoreHealth, now: float, interval: float) -> None:
    """Warn when workers run but the reconciler does not: without beat, a job that stalls stays stalled."""
    if not any(worker.up(now) for worker in report.workers):
        return
    swept = last_sweep()
    overdue = max(3 * interval, RECONCILER_GRACE)
    if swept is None:
        report.warnings.append("the reconciler has not run in the last day: is one `celery -A pipeline beat` running?")
    elif now - swept > overdue:
        report.warnings.append(
            f"the reconciler last ran {now - swept:.0f}s ago (every {interval:g}s expected): is beat running?"
        )


def _latencies(names: list[str]) -> list[DependencyLatency]:
    durations, slow = metrics.read((metrics.CALL_DURATION, metrics.SLOW_CALLS))
    by_name = {s.labels["dependency"]: s for s in metrics.histogram_series(metrics.CALL_DURATION, durations)}
    slow_by_name = {s.labels["dependency"]: s.value for s in metrics.counter_series(metrics.SLOW_CALLS, slow)}
    found = []
    for name in sorted(set(names) | set(by_name)):
        series = by_name.get(name)
        found.append(
            DependencyLatency(
                name,
                int(series.count) if series else 0,
                series.quantile(0.5) if series else None,
                series.quantile(0.95) if series else None,
                int(slow_by_name.get(name, 0)),
            )
        )
    return found


def core_health(now: float | None = None) -> CoreHealth:
    """Every check of the core; the store and broker are asked with short timeouts, never retried."""
    settings = get_settings()
    now = now or time.time()
    report = CoreHealth()
    bound = settings.health_stall_seconds
    try:
        _probe_client(settings.results_url).ping()
        report.checks.append(Check(RESULT_STORE, True))
    except redis.RedisError as error:
        report.checks.append(Check(RESULT_STORE, False, f"{type(error).__name__}: {error}"))
        report.problems.append(f"the result store does not answer ({type(error).__name__})")
        return report  # the heartbeat, breakers and metrics all live there
    report.workers = heartbeat.workers()
    consumed = heartbeat.consumed_at()
    live = [worker for worker in report.workers if worker.up(now)]
    names = sorted({*settings.stage_queues, settings.control_queue, *consumed, *(q for w in live for q in w.queues)})
    try:
        if settings.broker_is_redis:
            lengths = _redis_queues(settings.broker_url, names)
        else:
            lengths = _amqp_queues(*settings.broker_tls, names)
        report.checks.append(Check("broker", True))
    except Exception as error:
        report.checks.append(Check("broker", False, f"{type(error).__name__}: {error}"[:300]))
        report.problems.append(f"the broker does not answer ({type(error).__name__})")
        lengths = {}
    for name, (length, sent_at) in lengths.items():
        oldest = max(0.0, now - sent_at) if length and sent_at else None
        ago = now - consumed[name] if name in consumed else None
        waited_long = length > 0 and (oldest is None or oldest > bound)
        stalled = waited_long and (ago is None or ago > bound)
        consumers = [worker for worker in live if name in worker.queues]
        report.queues.append(
            QueueState(name, length, oldest, ago, len(consumers), sum(w.concurrency for w in consumers), stalled)
        )
        if stalled:
            taken = f"none taken for {ago:.0f}s" if ago is not None else "none ever taken"
            report.problems.append(
                f"queue {name} is not being consumed: {length} message(s) waiting, {taken} (bound {bound:.0f}s)"
            )
    _check_reconciler(report, now, settings.reconcile_interval)
    if hazard := heartbeat.older_readers(settings.ledger_format, report.workers, now):
        report.warnings.append(hazard)
    declared = dependencies()
    try:
        report.breakers = [breakers.status(name) for name in declared]
    except redis.RedisError as error:
        report.warnings.append(f"breaker states unreadable ({type(error).__name__})")
    for status in report.breakers:
        if status.state != pybreaker.STATE_CLOSED:
            report.warnings.append(f"breaker {status.name} is {status.state}")
    report.dependencies = _latencies(declared)
    return report
