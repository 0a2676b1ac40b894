"""The dead-letter store as health and metrics see it: reachable, rows by status, the largest open groups."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import func, select

from dlq.db import session
from dlq.models import DeadLetter, Status
from dlq.store import utcnow


@dataclass(frozen=True)
class OpenGroup:
    fingerprint: str
    pipeline: str
    stage: str
    failure_class: str
    rows: int


@dataclass
class DeadLetterHealth:
    by_status: dict[str, int] = field(default_factory=dict)
    recent: int = 0  # rows failed within the window
    open_groups: list[OpenGroup] = field(default_factory=list)


def dead_letter_health(window_seconds: float, top: int) -> DeadLetterHealth:
    """Counts from the table's indexes; raises SQLAlchemyError when the database does not answer."""
    since = utcnow() - timedelta(seconds=window_seconds)
    with session() as active:
        by_status = dict(active.execute(select(DeadLetter.status, func.count()).group_by(DeadLetter.status)).all())
        recent = active.scalar(
            select(func.count()).where(DeadLetter.status == Status.FAILED, DeadLetter.last_failed_at >= since)
        )
        groups = active.execute(
            select(
                DeadLetter.fingerprint,
                func.min(DeadLetter.pipeline),
                func.min(DeadLetter.stage),
                func.min(DeadLetter.failure_class),
                func.count(),
            )
            .where(DeadLetter.status == Status.FAILED)
            .group_by(DeadLetter.fingerprint)
            .order_by(func.count().desc(), DeadLetter.fingerprint)
            .limit(top)
        ).all()
    return DeadLetterHealth(
        {status.value: int(by_status.get(status.value, 0)) for status in Status},
        int(recent or 0),
        [OpenGroup(*row[:4], int(row[4])) for row in groups],
    )
