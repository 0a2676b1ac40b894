"""What the operations endpoint serves (vetro.serve): one report of the whole service, and its Prometheus metrics.

The metrics are the fleet's counters and histograms (pipeline.telemetry.metrics) plus gauges read
at scrape time: queues, workers, breakers, dead letters, quarantine. Ready means the broker,
result store and SQL database answer and no queue is stalled; open breakers and new dead letters
make it degraded (still ready, said in the report).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    SummaryMetricFamily,
)
from prometheus_client.utils import floatToGoString
from sqlalchemy.exc import SQLAlchemyError

from dlq.health import DeadLetterHealth, dead_letter_health
from pipeline.jobs import quarantine
from pipeline.jobs.ledger import due_key
from pipeline.jobs.pipelines import namespaces
from pipeline.store import redis_client
from pipeline.telemetry import metrics
from pipeline.watching.health import BREAKER_STATES, Check, CoreHealth, core_health
from settings import get_settings
from vetro.console import first_line


@dataclass
class Report:
    """Everything health and the scrape-time gauges show, read once."""

    at: float
    core: CoreHealth
    dead_letters: DeadLetterHealth | None
    quarantined: int | None = None
    jobs_in_flight: dict[str, int] = field(default_factory=dict)

    @property
    def checks(self) -> list[Check]:
        return self.core.checks

    @property
    def ready(self) -> bool:
        return not self.core.problems

    @property
    def degraded(self) -> bool:
        return bool(self.core.warnings)

    def as_dict(self) -> dict[str, Any]:
        core = self.core
        return {
            "status": "unready" if not self.ready else "degraded" if self.degraded else "ok",
            "ready": self.ready,
            "degraded": self.degraded,
            "problems": core.problems,
            "warnings": core.warnings,
            "checks": [asdict(check) for check in core.checks],
            "queues": [asdict(queue) for queue in core.queues],
            "workers": [asdict(worker) | {"up": worker.up(self.at)} for worker in core.workers],
            "breakers": [asdict(status) for status in core.breakers],
            "dependencies": [asdict(latency) for latency in core.dependencies],
            "dead_letters": asdict(self.dead_letters) if self.dead_letters else None,
            "quarantined": self.quarantined,
            "jobs_in_flight": self.jobs_in_flight,
        }


def report() -> Report:
    settings = get_settings()
    core = core_health()
    result = Report(time.time(), core, None)
    try:
        result.dead_letters = dead_letter_health(settings.health_dead_letter_window, settings.metrics_top_fingerprints)
        core.checks.append(Check("database", True))
    except SQLAlchemyError as error:
        core.checks.append(Check("database", False, f"{type(error).__name__}: {first_line(error)}"[:300]))
        core.problems.append(f"the dead-letter database does not answer ({type(error).__name__})")
    if result.dead_letters and result.dead_letters.recent:
        minutes = settings.health_dead_letter_window / 60
        core.warnings.append(f"{result.dead_letters.recent} job(s) dead-lettered in the last {minutes:.0f} min")
    if core.store_answered:
        pipe = redis_client().pipeline(transaction=False)
        names = namespaces()
        for name in names:
            pipe.zcard(due_key(name))
        result.jobs_in_flight = dict(zip(names, pipe.execute(), strict=True))
        result.quarantined = quarantine.count()
    return result


def _counter(metric: metrics.Metric, series: list[metrics.Series]) -> CounterMetricFamily:
    family = CounterMetricFamily(metric.name, metric.help, labels=metric.labels)
    for s in series:
        family.add_metric([s.labels[name] for name in metric.labels], s.value)
    return family


def _histogram(metric: metrics.Metric, series: list[metrics.HistogramSeries]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(metric.name, metric.help, labels=metric.labels)
    for s in series:
        buckets = [(floatToGoString(bound), count) for bound, count in s.buckets]
        family.add_metric([s.labels[name] for name in metric.labels], buckets, s.total)
    return family


def _gauge(name: str, documentation: str, labels: tuple[str, ...], values: list[tuple[tuple, float]]) -> Any:
    family = GaugeMetricFamily(name, documentation, labels=labels)
    for label_values, value in values:
        family.add_metric([str(v) for v in label_values], value)
    return family


class ServiceCollector:
    """What Prometheus scrapes: the fleet's counters, then gauges from one fresh report."""

    def collect(self) -> Any:
        current = report()
        core = current.core
        yield _gauge("vetro_ready", "1 when the service is ready (see /health/ready).", (), [((), current.ready)])
        yield _gauge(
            "vetro_degraded",
            "1 when a breaker is open or jobs were dead-lettered lately.",
            (),
            [((), current.degraded)],
        )
        yield _gauge(
            "vetro_check_up", "1 when the server answers.", ("check",), [((c.name,), c.ok) for c in core.checks]
        )
        if not core.store_answered:
            return
        for metric, series in metrics.all_series():
            yield _histogram(metric, series) if metric.buckets else _counter(metric, series)
        yield from self._fleet(current)

    def _fleet(self, current: Report) -> Any:
        core = current.core
        queues = core.queues
        hosts: dict[str, list] = {}
        for worker in core.workers:
            hosts.setdefault(worker.name.rsplit("@", 1)[-1], []).append(worker)
        up = [w for w in core.workers if w.up(current.at)]
        yield _gauge(
            "celery_queue_length",
            "Messages waiting in the queue.",
            ("queue_name",),
            [((q.name,), q.length) for q in queues],
        )
        # The exporter's celery_active_worker_count, as the _count of a summary over the live workers consuming
        # each queue (observing each one's pool processes): promtool rejects a gauge named *_count.
        workers = SummaryMetricFamily(
            "celery_active_worker",
            "Live workers consuming the queue (_count) and their pool processes (_sum).",
            labels=("queue_name",),
        )
        for q in queues:
            workers.add_metric([q.name], q.workers, q.processes)
        yield workers
        yield _gauge(
            "celery_worker_up",
            "1 when a worker on the host sent a heartbeat lately.",
            ("hostname",),
            [((host,), any(w.up(current.at) for w in found)) for host, found in sorted(hosts.items())],
        )
        yield _gauge(
            "celery_worker_tasks_active",
            "Tasks the host's live workers are running.",
            ("hostname",),
            [((host,), sum(w.active for w in found if w.up(current.at))) for host, found in sorted(hosts.items())],
        )
        yield _gauge("vetro_workers_up", "Live workers.", (), [((), len(up))])
        yield _gauge(
            "vetro_queue_oldest_message_age_seconds",
            "Seconds the oldest waiting message has waited (0 when the queue is empty).",
            ("queue_name",),
            [((q.name,), q.oldest_age or 0.0) for q in queues],
        )
        yield _gauge(
            "vetro_queue_last_consumed_age_seconds",
            "Seconds since a worker last took a message from the queue.",
            ("queue_name",),
            [((q.name,), q.consumed_ago) for q in queues if q.consumed_ago is not None],
        )
        yield _gauge(
            "vetro_queue_stalled",
            "1 when messages wait longer than the bound and no worker took one within it.",
            ("queue_name",),
            [((q.name,), q.stalled) for q in queues],
        )
        yield _gauge(
            "vetro_breaker_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
            ("dependency",),
            [((b.name,), BREAKER_STATES.get(b.state, 2)) for b in core.breakers],
        )
        yield _gauge(
            "vetro_jobs_in_flight",
            "Unfinished jobs the reconciler watches.",
            ("pipeline",),
            sorted(((name,), count) for name, count in current.jobs_in_flight.items()),
        )
        if current.quarantined is not None:
            yield _gauge("vetro_quarantined_messages", "Messages in the quarantine.", (), [((), current.quarantined)])
        dead = current.dead_letters
        if dead is not None:
            yield _gauge(
                "vetro_dead_letter_rows",
                "Dead-letter rows by status.",
                ("status",),
                [((status,), count) for status, count in dead.by_status.items()],
            )
            yield _gauge(
                "vetro_dead_letter_open_rows",
                "Open (failed) dead-letter rows of the largest groups, by cause (fingerprint).",
                ("fingerprint", "pipeline", "stage", "failure_class"),
                [((g.fingerprint, g.pipeline, g.stage, g.failure_class), g.rows) for g in dead.open_groups],
            )
            yield _gauge(
                "vetro_dead_letters_recent",
                "Rows dead-lettered within VETRO_HEALTH_DEAD_LETTER_WINDOW.",
                (),
                [((), dead.recent)],
            )


def exposition() -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector())
    return generate_latest(registry)
