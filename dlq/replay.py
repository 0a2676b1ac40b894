"""Replay dead letters: drive each job on again from its ledger, with the same job id and idempotency key.

A replay publishes the steps the job still needs (pipeline.jobs.driver.pending): the failed step, or
for a fan-out every part not yet recorded, or the join; for a saga whose compensation failed,
the compensations not yet run. Steps that already succeeded answer
from their idempotency guards, so a replay never repeats a completed effect, however often it
is run. A job's ledger is kept for VETRO_REPLAY_WINDOW after it is dead-lettered; past that a
replay would run its completed steps again, so it is refused.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

from dlq import store
from dlq.models import DeadLetter, Status
from pipeline.jobs import driver, ledger
from pipeline.store import redis_client
from pipeline.telemetry import metrics


@dataclass
class ReplayReport:
    replayed: list[int] = field(default_factory=list)
    refused: dict[int, str] = field(default_factory=dict)  # row id -> why
    seconds: float = 0.0


def refusal(row: DeadLetter, force: bool) -> str | None:
    """Why this row may not be replayed, or None."""
    if row.status == Status.QUARANTINED and not force:
        return f"quarantined after {row.replay_count} failed replays (use --force)"
    if row.status in (Status.RESOLVED, Status.DISCARDED) and not force:
        return f"{row.status} (use --force)"
    return None


EXPIRED = "its job's record expired (kept VETRO_REPLAY_WINDOW after it failed): a replay would repeat its steps"
UNDONE = "its job was compensated after this failure (its earlier steps undone): submit it again as a new job"
# Celery's workers drop a revoked task id for hours (worker_state.REVOKE_EXPIRES, longer with --statedb), and
# a replay sends the failed step under its own id again: it would be dropped, and the job would stall.
REVOKED = "its job was revoked: the workers drop its steps; submit it again as a new job"


REPLAY_BATCH = 200  # rows marked in one transaction, and their jobs reopened and published in one round trip


def _ledger_refusal(row: DeadLetter, state: ledger.JobState | None) -> str | None:
    if state is None:
        return EXPIRED
    if state.status == ledger.REVOKED:
        return REVOKED  # even forced: a replay would be dropped
    if state.compensations is not None and row.scope not in state.compensations:
        return UNDONE  # only a compensation that failed may be replayed: it goes on undoing
    return None


def replay_batch(rows: list[DeadLetter], force: bool = False) -> list[str | None]:
    """Mark the rows replaying (one transaction), then reopen their jobs and publish what each still needs
    (one Redis round trip); for each row, the reason it could not be replayed, or None.

    The rows are marked first: a replay that fails at once must find its row already replaying. If
    the jobs cannot be reopened or published, the marks are undone and the error raised.
    """
    states = ledger.load_many([(row.pipeline, row.job_id) for row in rows])
    reasons = [refusal(row, force) or _ledger_refusal(row, state) for row, state in zip(rows, states, strict=True)]
    chosen = [(row, state) for row, state, reason in zip(rows, states, reasons, strict=True) if reason is None]
    store.mark_replaying({row.id: state.plan.task_id_of(row.job_id, row.scope) for row, state in chosen})
    # An earlier replay (or a redelivery) already finished the job: nothing to run again.
    for row, state in chosen:
        if state.status == ledger.COMPLETED:
            store.resolve_job(row.job_id)
    reopened = [
        (row, replace(state.context, replay=row.replay_count + 1), state)
        for row, state in chosen
        if state.status != ledger.COMPLETED
    ]
    try:
        pipe = redis_client().pipeline(transaction=False)
        ledger.reopen([(job, state.compensations is not None) for _, job, state in reopened], pipe)
        driver.publish_after(pipe, [(job, driver.pending(state)) for _, job, state in reopened])
    except Exception:
        store.unmark_replaying({row.id: row.status for row, _, _ in reopened})
        raise
    for row, _ in chosen:
        metrics.count(metrics.REPLAYS, row.pipeline)
    return reasons


def replay(rows: list[DeadLetter], force: bool = False, rate: float | None = None) -> ReplayReport:
    """Replay `rows` in order: in batches of REPLAY_BATCH, or one at a time at most `rate` per second."""
    report = ReplayReport()
    started = time.monotonic()
    size = 1 if rate else REPLAY_BATCH
    for first in range(0, len(rows), size):
        if rate:
            pause = started + first / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)  # pacing the publishes at `rate`
        batch = rows[first : first + size]
        for row, reason in zip(batch, replay_batch(batch, force), strict=True):
            if reason:
                report.refused[row.id] = reason
            else:
                report.replayed.append(row.id)
    report.seconds = time.monotonic() - started
    return report
