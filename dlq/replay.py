"""Replay dead letters: drive each job on again from its ledger, with the same job id and idempotency key.

A replay publishes the steps the job still needs (pipeline.driver.pending): the failed step, or
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
from pipeline import driver, ledger
from pipeline.pipelines import task_id


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


def replay_row(row: DeadLetter) -> str | None:
    """Mark one row replaying and drive its job on; the reason it cannot be, or None."""
    state = ledger.load(row.pipeline, row.job_id)
    if state is None:
        return EXPIRED
    if state.compensations is not None and row.scope not in state.compensations:
        return UNDONE  # only a compensation that failed may be replayed: it goes on undoing
    if state.status == ledger.COMPLETED:
        # An earlier replay (or a redelivery) already finished the job: nothing to run again.
        store.mark_replaying(row.id, task_id(row.job_id, row.scope))
        store.resolve_job(row.job_id)
        return None
    job = replace(state.context, replay=row.replay_count + 1)
    # Marked before publishing: a replay that fails at once must find its row already replaying.
    store.mark_replaying(row.id, task_id(row.job_id, row.scope))
    try:
        ledger.reopen(job)
        driver.publish(job, driver.pending(state))
    except Exception:
        store.unmark_replaying(row.id, row.status)
        raise
    return None


def replay(rows: list[DeadLetter], force: bool = False, rate: float | None = None) -> ReplayReport:
    """Replay `rows` in order, at most `rate` per second."""
    report = ReplayReport()
    started = time.monotonic()
    for number, row in enumerate(rows):
        reason = refusal(row, force)
        if rate and not reason:
            pause = started + number / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)  # pacing the publishes at `rate`
        reason = reason or replay_row(row)
        if reason:
            report.refused[row.id] = reason
        else:
            report.replayed.append(row.id)
    report.seconds = time.monotonic() - started
    return report
