"""The dead-letter table: one row per job and failed step, with everything needed to replay it."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, DateTime, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from pipeline.sealing import SealedValueError, open_document


class Status(StrEnum):
    FAILED = "failed"
    REPLAYING = "replaying"
    RESOLVED = "resolved"
    DISCARDED = "discarded"
    QUARANTINED = "quarantined"


class Base(DeclarativeBase):
    pass


class DeadLetter(Base):
    """A step that failed for good. Times are naive UTC, the same in SQLite and PostgreSQL."""

    __tablename__ = "dead_letters"
    __table_args__ = (
        UniqueConstraint("job_id", "scope", name="uq_dead_letters_job_scope"),
        Index("ix_dead_letters_status_last_failed", "status", "last_failed_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(String(64), index=True)
    scope: Mapped[str] = mapped_column(String(160))  # the stage, or "operate.<destination>"
    pipeline: Mapped[str] = mapped_column(String(64))
    stage: Mapped[str] = mapped_column(String(64), index=True)
    destination: Mapped[str | None] = mapped_column(String(96))
    # {"args": [...], "kwargs": {...}} of the failed step; {"sealed": ...} with encryption keys set
    input: Mapped[dict[str, Any]] = mapped_column(JSON)
    headers: Mapped[dict[str, Any]] = mapped_column(JSON)
    idempotency_key: Mapped[str] = mapped_column(String(256))
    correlation_id: Mapped[str] = mapped_column(String(256))
    exception_type: Mapped[str] = mapped_column(String(256))
    message: Mapped[str] = mapped_column(Text)
    traceback: Mapped[str] = mapped_column(Text)
    failure_class: Mapped[str] = mapped_column(String(16), index=True)
    attempts: Mapped[int] = mapped_column(Integer)
    first_failed_at: Mapped[datetime] = mapped_column(DateTime())
    last_failed_at: Mapped[datetime] = mapped_column(DateTime())
    worker_host: Mapped[str | None] = mapped_column(String(256))
    fingerprint: Mapped[str] = mapped_column(String(16), index=True)
    status: Mapped[str] = mapped_column(String(16), default=Status.FAILED)
    replay_count: Mapped[int] = mapped_column(Integer, default=0)
    replay_task_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    discarded_by: Mapped[str | None] = mapped_column(String(128))
    discard_reason: Mapped[str | None] = mapped_column(Text)
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime())
    updated_at: Mapped[datetime] = mapped_column(DateTime())

    def as_dict(self) -> dict[str, Any]:
        """The row for people and exports, its input opened when it was sealed (pipeline.privacy)."""
        values = {column.name: getattr(self, column.name) for column in self.__table__.columns}
        values["input"] = self.opened_input()
        return {name: value.isoformat() if isinstance(value, datetime) else value for name, value in values.items()}

    def opened_input(self) -> Any:
        """The step's input; still sealed if no configured key opens it."""
        try:
            return open_document(self.input)
        except SealedValueError:
            return self.input
