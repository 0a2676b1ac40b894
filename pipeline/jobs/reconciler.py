"""The reconciler: finds jobs that stopped moving and drives them on, or dead-letters them as stalled.

A job is due when it has shown no sign of life for longer than the stall bound
(`pipeline.jobs.pipelines.stall_after`: visibility timeout + longest hard time limit + a margin), from its
opening or from the last step that pushed its due time (one does when it is nearer than
`push_due_within`: two time limits and the margin; a job's first steps usually need not). A sweep
looks only at due jobs (a sorted set, never a scan of the keyspace), and for each:
- it has ended (completed or dead-lettered): stop watching it;
- a step of it is running (its lease is held): look again when the lease ends;
- its message is still waiting in the queue (the queue has consumed nothing sent after the job
  was last touched): look again one bound later;
- otherwise the message is gone (dropped by a broker restart, popped by a consumer that died,
  purged, or a join never published): publish again the steps the job still needs, from its
  ledger, through the same guards, so a step that already ran answers from its guard. After
  `reconcile_max_redrives` re-drives with no step recorded, the job is dead-lettered as stalled.

One sweep runs at a time across the fleet (a redis-py lock with an owner token); beat
schedules it every `reconcile_interval` seconds, and `vetro reconcile` runs one by hand.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from redis.exceptions import LockError

from pipeline.adapter.app import app
from pipeline.adapter.routing import queue_of_task
from pipeline.failures import FailureClass, StalledJobError
from pipeline.jobs import driver, ledger
from pipeline.jobs.outcomes import completed
from pipeline.jobs.pipelines import namespaces, stall_after, task_named
from pipeline.jobs.sink import FailedStep
from pipeline.plan import Step
from pipeline.store import key, redis_client
from pipeline.telemetry import metrics
from settings import get_settings

log = logging.getLogger("vetro.reconciler")

RECONCILE_TASK = "vetro.reconcile"
LOCK_KEY = key("reconciler", "lock")
LOCK_SECONDS = 120  # a sweep holding the lock longer than this has died; another may start
SWEPT_KEY = key("reconciler", "swept_at")  # when beat last ran a sweep: health tells a fleet without beat
SWEPT_TTL = 86_400
BATCH = 500  # due jobs of each pipeline examined per sweep; the rest wait for the next one
FRONTIER_SLACK = 5  # seconds: a message sent this long after the job's last touch was consumed after it


class Verdict(StrEnum):
    ENDED = "ended"
    RUNNING = "running"
    QUEUED = "queued"
    REDRIVEN = "re-driven"
    DEAD_LETTERED = "dead-lettered"
    ERROR = "error"


@dataclass(frozen=True)
class Finding:
    job_id: str
    verdict: Verdict
    reason: str
    steps: list[str] = field(default_factory=list)


class _Queues:
    """What the queues look like during one sweep: length and frontier, read once per queue."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[int, float]] = {}

    def ahead_of(self, queue: str, touched_at: float) -> int:
        """Messages in `queue` that may still hold the job's message (0: it cannot be waiting there)."""
        if queue not in self._seen:
            self._seen[queue] = (queue_length(queue), ledger.frontier(queue))
        length, frontier = self._seen[queue]
        return length if length and frontier < touched_at + FRONTIER_SLACK else 0


def queue_length(queue: str) -> int:
    """Messages waiting in a queue, asked of the broker itself (Redis or RabbitMQ)."""
    with app.connection_for_read() as connection:
        return messages_waiting(connection, queue)


def messages_waiting(connection: Any, queue: str) -> int:
    """Messages waiting in a queue, on an open broker connection."""
    try:
        return int(connection.default_channel.queue_declare(queue=queue, passive=True).message_count)
    except connection.channel_errors:  # no such queue yet: nothing waits in it
        return 0


def _queue_of(step: Step) -> str:
    task_named(step.task)  # loads the pipelines when this process has not yet
    return step.options.get("queue") or queue_of_task(step.task) or get_settings().queue


def examine(pipeline: str, job_id: str, now: float, queues: _Queues, dry_run: bool = False) -> Finding:
    """Decide what a due job needs, and (unless `dry_run`) do it."""
    settings = get_settings()
    state = ledger.load(pipeline, job_id)
    if state is None or (state.status not in ledger.UNFINISHED and state.errbacks_for is None):
        if not dry_run:
            if state is not None and state.status == ledger.COMPLETED:
                completed(state.context, state.record.get("dead_lettered") == "1")  # in case a crash skipped it
            ledger.close(pipeline, job_id)
        return Finding(job_id, Verdict.ENDED, state.status if state else "its record expired")
    steps = driver.pending(state)
    if not steps:  # every step recorded, the ending itself interrupted
        if not dry_run:
            driver.finish(state)
        return Finding(job_id, Verdict.ENDED, "every step recorded")
    scopes = [step.scope for step in steps]
    leases = ledger.leases_held(state, scopes)
    if leases:
        if not dry_run:
            ledger.postpone(pipeline, job_id, now + max(leases.values()) + FRONTIER_SLACK)
        return Finding(job_id, Verdict.RUNNING, f"{', '.join(leases)} running", scopes)
    ahead = queues.ahead_of(_queue_of(steps[0]), state.number("touched_at"))
    if ahead:
        if not dry_run:
            ledger.postpone(pipeline, job_id, now + stall_after())
        return Finding(job_id, Verdict.QUEUED, f"waiting in a queue of {ahead} message(s)", scopes)
    idle = now - state.number("touched_at")
    reason = f"no sign of life for {idle:.0f}s: {', '.join(scopes)} neither running nor in the queue"
    stalls = int(state.number("stalls"))
    if stalls >= settings.reconcile_max_redrives:
        reason = f"stalled: no progress after {stalls} re-drive(s); {reason}"
        if not dry_run:
            for step in steps:
                stage = getattr(task_named(step.task), "stage", step.task)
                failed = FailedStep(state.context, stage, step.scope, list(step.args), dict(step.kwargs))
                driver.fail(failed, FailureClass.TECHNICAL, StalledJobError(reason), stalls, state.plan)
            metrics.count(metrics.STALLED, pipeline)
        return Finding(job_id, Verdict.DEAD_LETTERED, reason, scopes)
    if not dry_run:
        driver.redrive(state, steps, reason)
        metrics.count(metrics.REDRIVES, pipeline)
    return Finding(job_id, Verdict.REDRIVEN, reason, scopes)


def sweep(dry_run: bool = False, limit: int = BATCH) -> list[Finding] | None:
    """Examine every due job; None if another sweep holds the lock (a dry run never takes it)."""
    lock = redis_client().lock(LOCK_KEY, timeout=LOCK_SECONDS, blocking=False)
    if not dry_run and not lock.acquire():
        return None
    try:
        now, queues, findings = time.time(), _Queues(), []
        for pipeline in namespaces():
            if not dry_run:
                ledger.trim_index(pipeline, now)
            for job_id in ledger.due(pipeline, now, limit):
                try:
                    findings.append(examine(pipeline, job_id, now, queues, dry_run))
                except Exception as error:  # one job's trouble must not stop the sweep; it stays due
                    log.exception("reconciling job %s failed", job_id)
                    findings.append(Finding(job_id, Verdict.ERROR, f"{type(error).__name__}: {error}"))
        return findings
    finally:
        if not dry_run:
            try:
                lock.release()
            except LockError:
                log.warning("the reconciler's lock expired during a sweep (over %ds)", LOCK_SECONDS)


def last_sweep() -> float | None:
    """When beat last had the reconciler sweep (None: not in the last day)."""
    swept = redis_client().get(SWEPT_KEY)
    return float(swept) if swept else None


@app.task(name=RECONCILE_TASK, ignore_result=True, acks_late=False)
def reconcile() -> int:
    """One sweep (run by celery beat); returns how many jobs it re-drove or dead-lettered."""
    findings = sweep() or []  # None: another sweep runs now, which says as much of beat
    redis_client().set(SWEPT_KEY, f"{time.time():.3f}", ex=SWEPT_TTL)
    acted = [f for f in findings if f.verdict in (Verdict.REDRIVEN, Verdict.DEAD_LETTERED)]
    if acted:
        log.warning("reconciler: %d job(s) re-driven or dead-lettered", len(acted))
    return len(acted)
