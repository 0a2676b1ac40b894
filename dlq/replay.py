"""Replay dead letters: re-enter each job at its failed step, with the same job id and idempotency key.

Steps that already succeeded answer from their idempotency guards, so a replay never repeats
a completed effect, however often it is run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from dlq import store
from dlq.models import DeadLetter, Status
from pipeline import jobs
from pipeline.canvas import get_pipeline, stage_task_id
from pipeline.context import JobContext


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


def replay_row(row: DeadLetter) -> None:
    """Mark one row replaying and publish its replay."""
    job = JobContext(row.job_id, row.idempotency_key, row.correlation_id, row.pipeline, replay=row.replay_count + 1)
    task_id = stage_task_id(row.job_id, row.stage, row.destination)
    # Marked before publishing: a replay that fails at once must find its row already replaying.
    store.mark_replaying(row.id, task_id)
    try:
        get_pipeline(row.pipeline).replay(row.stage, row.destination, row.input, job)
    except Exception:
        store.unmark_replaying(row.id, row.status)
        raise
    jobs.record_replayed(job)
    # If an earlier replay already finished the job, this one ends at the guards without reaching
    # the completion again: the row is resolved now. (Read after marking, so no finish slips between.)
    if (jobs.get_job(row.job_id) or {}).get("status") == jobs.COMPLETED:
        store.resolve_job(row.job_id)


def replay(rows: list[DeadLetter], force: bool = False, rate: float | None = None) -> ReplayReport:
    """Replay `rows` in order, at most `rate` per second."""
    report = ReplayReport()
    started = time.monotonic()
    for number, row in enumerate(rows):
        reason = refusal(row, force)
        if reason:
            report.refused[row.id] = reason
            continue
        if rate:
            pause = started + number / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)  # pacing the publishes at `rate`
        replay_row(row)
        report.replayed.append(row.id)
    report.seconds = time.monotonic() - started
    return report
