"""vetro's counters and histograms: counted in each process, added up in Redis, served by `vetro serve`.

Workers run on many machines and their pool processes come and go, so a process's counts are
not kept in the process: each one adds what it counted to one hash per metric in the result
store, about once a second (a background thread) and when it exits. `vetro serve`, anywhere,
reads those hashes and shows the whole fleet, and a replaced pool process loses nothing it
flushed. A process killed outright loses at most its last second of counts.

Labels are bounded by design: pipelines, stages, failure classes, exception classes, task
names, queues, dependencies and host names; never a job id, never a process id.
"""

from __future__ import annotations

import bisect
import functools
import json
import logging
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import redis

from pipeline.batching import Batch
from pipeline.store import key, redis_client

log = logging.getLogger("vetro.metrics")

FLUSH_EVERY = 1.0  # seconds between two flushes of one process's counts
LIFETIME_EVERY = 60.0  # seconds between two settings of a metric's lifetime by one process
METRIC_TTL = 8 * 24 * 3600  # a metric's hash lives this long past its last flush (then it reads as reset)
TASK_LABELS = ("name", "hostname", "queue_name")
RUNTIME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 30.0, 60.0)
JOB_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0)
CALL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class Metric:
    """A counter (its exposed name adds `_total`) or, with buckets, a histogram."""

    name: str
    help: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()

    @functools.cached_property
    def key(self) -> str:
        """Its hash in the result store: one field per label set (and, for a histogram, per bucket)."""
        return key("metrics", self.name)


# The names and labels of the de-facto Celery exporter (danihodovic/celery-exporter), so the
# community dashboards and alerts read them unchanged.
TASK_SENT = Metric("celery_task_sent", "Task messages published.", TASK_LABELS)
TASK_RECEIVED = Metric("celery_task_received", "Task messages a worker received.", TASK_LABELS)
TASK_STARTED = Metric("celery_task_started", "Tasks a worker started.", TASK_LABELS)
TASK_SUCCEEDED = Metric("celery_task_succeeded", "Tasks that succeeded.", TASK_LABELS)
TASK_FAILED = Metric("celery_task_failed", "Tasks that failed.", ("name", "hostname", "exception", "queue_name"))
TASK_RETRIED = Metric("celery_task_retried", "Tasks retried later (a retry or a wait).", TASK_LABELS)
TASK_REJECTED = Metric("celery_task_rejected", "Task messages rejected (given back, or refused).", TASK_LABELS)
TASK_REVOKED = Metric("celery_task_revoked", "Tasks revoked.", TASK_LABELS)
TASK_RUNTIME = Metric("celery_task_runtime", "Seconds a task ran.", TASK_LABELS, RUNTIME_BUCKETS)
TASK_QUEUE_WAIT = Metric(
    "celery_task_queue_wait_time", "Seconds from publishing a task to its start.", TASK_LABELS, JOB_BUCKETS
)

# vetro's own.
JOBS_SUBMITTED = Metric("vetro_jobs_submitted", "New jobs submitted.", ("pipeline",))
JOBS_COMPLETED = Metric("vetro_jobs_completed", "Jobs that completed.", ("pipeline",))
JOBS_FAILED = Metric("vetro_jobs_failed", "Jobs that failed for good (dead-lettered).", ("pipeline",))
ACTIVITY = {JOBS_SUBMITTED.key: "submitted", JOBS_COMPLETED.key: "completed", JOBS_FAILED.key: "failed"}
ACTIVITY_TTL = 2 * 3600  # a minute's counts of jobs are kept two hours (the console charts the last one)
JOBS_COMPENSATED = Metric("vetro_jobs_compensated", "Jobs whose failure was undone by compensations.", ("pipeline",))
JOB_DURATION = Metric(
    "vetro_job_duration_seconds", "Seconds from a job's submission to its completion.", ("pipeline",), JOB_BUCKETS
)
STEP_FAILURES = Metric(
    "vetro_step_failures", "Failed attempts of a step, by class.", ("pipeline", "stage", "failure_class")
)
STEP_RETRIES = Metric(
    "vetro_step_retries", "Retries scheduled after a failure.", ("pipeline", "stage", "failure_class")
)
DEPENDENCY_WAITS = Metric(
    "vetro_dependency_waits", "Steps put off by an open breaker or a rate limit.", ("pipeline", "stage")
)
DEAD_LETTERS = Metric(
    "vetro_dead_letters", "Steps that failed for good and were dead-lettered.", ("pipeline", "stage", "failure_class")
)
IDEMPOTENCY_HITS = Metric(
    "vetro_idempotency_hits",
    "Duplicates suppressed: a step already recorded, or a job submitted again (stage 'submit').",
    ("pipeline", "stage"),
)
REPLAYS = Metric("vetro_replays", "Dead-lettered jobs replayed.", ("pipeline",))
QUARANTINED = Metric("vetro_quarantined", "Messages a worker refused and quarantined.", ("queue_name",))
BREAKER_TRANSITIONS = Metric(
    "vetro_breaker_transitions", "Circuit breaker state changes seen.", ("dependency", "state")
)
RATE_LIMIT_WAITS = Metric("vetro_rate_limit_waits", "Calls that waited for a rate limit's token.", ("dependency",))
REDRIVES = Metric("vetro_redrives", "Jobs the reconciler found stalled and drove on.", ("pipeline",))
STALLED = Metric("vetro_stalled_jobs", "Jobs dead-lettered as stalled after their re-drives.", ("pipeline",))
CALL_DURATION = Metric(
    "vetro_dependency_call_duration_seconds", "Seconds a call to a dependency took.", ("dependency",), CALL_BUCKETS
)
SLOW_CALLS = Metric("vetro_dependency_slow_calls", "Calls slower than VETRO_SLOW_CALL_SECONDS.", ("dependency",))

COUNTERS = (
    TASK_SENT,
    TASK_RECEIVED,
    TASK_STARTED,
    TASK_SUCCEEDED,
    TASK_FAILED,
    TASK_RETRIED,
    TASK_REJECTED,
    TASK_REVOKED,
    JOBS_SUBMITTED,
    JOBS_COMPLETED,
    JOBS_FAILED,
    JOBS_COMPENSATED,
    STEP_FAILURES,
    STEP_RETRIES,
    DEPENDENCY_WAITS,
    DEAD_LETTERS,
    IDEMPOTENCY_HITS,
    REPLAYS,
    QUARANTINED,
    BREAKER_TRANSITIONS,
    RATE_LIMIT_WAITS,
    REDRIVES,
    STALLED,
    SLOW_CALLS,
)
HISTOGRAMS = (TASK_RUNTIME, TASK_QUEUE_WAIT, JOB_DURATION, CALL_DURATION)
HOSTNAME = socket.gethostname()


def _add(counted: float, more: float) -> float:
    return counted + more


# What this process counted since its last flush: (metric's key, field) -> amount.
_pending: Batch[tuple[str, str], float] = Batch("vetro-metrics", FLUSH_EVERY, _add, lambda: flush())
_lifetimes_set: dict[str, float] = {}  # a hash's name -> when this process last set its lifetime


def _field(metric: Metric, values: tuple[str, ...]) -> str:
    if len(values) != len(metric.labels):
        raise ValueError(f"{metric.name}: labels {metric.labels}, got {values!r}")
    return _encoded(values)


@functools.lru_cache(maxsize=4096)  # label sets are few (bounded by design); encoding them is per count
def _encoded(values: tuple[str, ...]) -> str:
    return json.dumps([str(value) for value in values], separators=(",", ":"))


def count(metric: Metric, *labels: str, amount: float = 1) -> None:
    """Add `amount` to a counter (labels in the metric's order)."""
    _pending.add((metric.key, _field(metric, labels)), amount)


def observe(metric: Metric, value: float, *labels: str) -> None:
    """Record one observation of a histogram: its bucket, its sum and its count."""
    field = _field(metric, labels)
    bucket = bisect.bisect_left(metric.buckets, value)  # len(buckets): only +Inf holds it
    _pending.add((metric.key, f"{field}|{bucket}"), 1)
    _pending.add((metric.key, f"{field}|sum"), value)


def flush() -> None:
    """Add this process's counts to the shared hashes; kept for the next flush if Redis cannot take them.

    The jobs submitted, completed and failed are also added to this minute's hash (`activity`): the
    console's charts of the last hour. A flush a second per process, not a command per job.
    """
    values = _pending.take()
    if not values:
        return
    kept: dict[str, float] = {}
    try:
        pipe = redis_client().pipeline(transaction=False)
        for (name, field), amount in values.items():
            pipe.hincrbyfloat(name, field, amount)
        for name in {name for name, _ in values}:
            _keep(pipe, name, METRIC_TTL, kept)
        minute = activity_key(int(time.time() // 60 * 60))
        this_minute = [(ACTIVITY[name], field, amount) for (name, field), amount in values.items() if name in ACTIVITY]
        for what, field, amount in this_minute:
            pipe.hincrbyfloat(minute, what, amount)
            pipe.hincrbyfloat(minute, f"{what}|{field}", amount)  # and the pipeline's own
        if this_minute:
            _keep(pipe, minute, ACTIVITY_TTL, kept)
        pipe.execute()
        for name in [name for name, at in _lifetimes_set.items() if time.monotonic() - at >= LIFETIME_EVERY]:
            del _lifetimes_set[name]  # due again anyway: a minute's hash is not kept for ever
        _lifetimes_set.update(kept)
    except Exception as error:  # never lose counts, never fail what was being counted
        log.debug("metrics not flushed (%s); kept for the next flush", error)
        _pending.give_back(values)


def _keep(pipe: redis.client.Pipeline, name: str, ttl: int, kept: dict[str, float]) -> None:
    """Set the hash's lifetime (noted in `kept` once sent), unless this process did less than LIFETIME_EVERY
    ago: it lives at least `ttl` less that long past its last flush, for one command a minute, not a flush."""
    now = time.monotonic()
    if now - _lifetimes_set.get(name, -LIFETIME_EVERY) >= LIFETIME_EVERY:
        pipe.expire(name, ttl)
        kept[name] = now


def activity_key(minute: int) -> str:
    return key("activity", str(minute))


@dataclass(frozen=True)
class Activity:
    """Jobs submitted, completed and failed: each minute (all pipelines), and each pipeline (all minutes)."""

    by_minute: list[dict[str, int]]
    by_pipeline: dict[str, dict[str, int]]


def activity(minutes: int = 60, now: float | None = None) -> Activity:
    """The last `minutes` minutes' jobs, oldest minute first, from the hashes every process's flush adds to."""
    last = int((now or time.time()) // 60 * 60)
    starts = [last - 60 * back for back in range(minutes - 1, -1, -1)]
    pipe = redis_client().pipeline(transaction=False)
    for start in starts:
        pipe.hgetall(activity_key(start))
    by_minute, by_pipeline = [], {}
    for start, counts in zip(starts, pipe.execute(), strict=True):
        minute = {"minute": start, **dict.fromkeys(ACTIVITY.values(), 0)}
        for name, amount in counts.items():
            what, _, labels = name.decode().partition("|")
            if not labels:
                minute[what] = int(float(amount))
                continue
            pipeline = json.loads(labels)[0]
            totals = by_pipeline.setdefault(pipeline, dict.fromkeys(ACTIVITY.values(), 0))
            totals[what] += int(float(amount))
        by_minute.append(minute)
    return Activity(by_minute, dict(sorted(by_pipeline.items())))


@dataclass(frozen=True)
class Series:
    labels: dict[str, str]
    value: float


@dataclass(frozen=True)
class HistogramSeries:
    labels: dict[str, str]
    buckets: list[tuple[float, float]]  # (upper bound, cumulative count), +Inf last
    total: float

    @property
    def count(self) -> float:
        return self.buckets[-1][1]

    def quantile(self, q: float) -> float | None:
        """An estimate (linear within the bucket, as Prometheus's histogram_quantile); None without data."""
        if not self.count:
            return None
        rank, lower, below = q * self.count, 0.0, 0.0
        for bound, cumulative in self.buckets:
            if cumulative >= rank:
                if bound == float("inf"):
                    return lower
                inside = cumulative - below
                return lower + (bound - lower) * ((rank - below) / inside if inside else 0)
            lower, below = bound, cumulative
        return lower


def read(metrics: tuple[Metric, ...]) -> list[list[dict[bytes, bytes]]]:
    pipe = redis_client().pipeline(transaction=False)
    for metric in metrics:
        pipe.hgetall(metric.key)
    return pipe.execute()


def counter_series(metric: Metric, raw: dict[bytes, bytes]) -> list[Series]:
    return [
        Series(dict(zip(metric.labels, json.loads(field), strict=True)), float(value))
        for field, value in sorted(raw.items())
    ]


def histogram_series(metric: Metric, raw: dict[bytes, bytes]) -> list[HistogramSeries]:
    per_labels: dict[str, dict[str, float]] = {}
    for field, value in raw.items():
        labels, part = field.decode().rsplit("|", 1)
        per_labels.setdefault(labels, {})[part] = float(value)
    series = []
    for labels, parts in sorted(per_labels.items()):
        cumulative, buckets = 0.0, []
        for index, bound in enumerate((*metric.buckets, float("inf"))):
            cumulative += parts.get(str(index), 0.0)
            buckets.append((bound, cumulative))
        named = dict(zip(metric.labels, json.loads(labels), strict=True))
        series.append(HistogramSeries(named, buckets, parts.get("sum", 0.0)))
    return series


def all_series() -> Iterator[tuple[Metric, list[Series] | list[HistogramSeries]]]:
    """Every counter's and histogram's series, as the fleet has flushed them."""
    metrics = (*COUNTERS, *HISTOGRAMS)
    for metric, raw in zip(metrics, read(metrics), strict=True):
        yield metric, histogram_series(metric, raw) if metric.buckets else counter_series(metric, raw)
