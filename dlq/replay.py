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
from pipeline.canvas import get_pipeline
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


def replay_row(row: DeadLetter) -> str:
    """Publish the replay of one row and mark it replaying; returns the first task id."""
    job = JobContext(row.job_id, row.idempotency_key, row.correlation_id, row.pipeline, replay=row.replay_count + 1)
    jobs.record_replayed(job)
    task_id = get_pipeline(row.pipeline).replay(row.stage, row.destination, row.input, job)
    store.mark_replaying(row.id, task_id)
    return task_id


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
