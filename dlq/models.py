"""The dead-letter store's tables: one row per job and failed step (with everything needed to replay it),
the audit log of what operators did, and the background operations they started."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, DateTime, Float, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from pipeline.sealing import SealedValueError, open_document


class Status(StrEnum):
    FAILED = "failed"
    REVIEWING = "reviewing"  # an operator claimed it (claimed_by) and is finding out why
    REPLAYING = "replaying"
    RESOLVED = "resolved"
    DISCARDED = "discarded"
    QUARANTINED = "quarantined"


class Base(DeclarativeBase):
    def as_dict(self) -> dict[str, Any]:
        """The row's columns, times as ISO strings: for JSON, exports and pages."""
        values = {column.name: getattr(self, column.name) for column in self.__table__.columns}
        return {name: value.isoformat() if isinstance(value, datetime) else value for name, value in values.items()}


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
    claimed_by: Mapped[str | None] = mapped_column(String(128))  # who is reviewing it (since 0003)
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime())

    def as_dict(self) -> dict[str, Any]:
        """The row for people and exports, its input opened when it was sealed (pipeline.sealing)."""
        return {**super().as_dict(), "input": self.opened_input()}

    def opened_input(self) -> Any:
        """The step's input; still sealed if no configured key opens it."""
        try:
            return open_document(self.input)
        except SealedValueError:
            return self.input


class AuditEntry(Base):
    """One thing an operator did, from the CLI (the OS user) or the console (the signed-in user).

    `ids_digest` names exactly the rows acted on (dlq.selection.digest) without storing them all; `diff`
    is an edited input's change, sealed or redacted as the dead letters' inputs are.
    """

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(), index=True)
    actor: Mapped[str] = mapped_column(String(128), index=True)
    via: Mapped[str] = mapped_column(String(16))  # cli, console, api
    action: Mapped[str] = mapped_column(String(32), index=True)
    filter: Mapped[dict[str, Any]] = mapped_column(JSON)
    count: Mapped[int] = mapped_column(Integer)
    ids_digest: Mapped[str] = mapped_column(String(64))
    incident: Mapped[str | None] = mapped_column(String(128))
    reason: Mapped[str | None] = mapped_column(Text)
    diff: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    outcome: Mapped[dict[str, Any]] = mapped_column(JSON)


class Operation(Base):
    """A bulk action running in the background (a paced replay): its progress, and a stop an operator asks for."""

    __tablename__ = "operations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(128))
    incident: Mapped[str | None] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(16), index=True)  # running, stopping, stopped, finished, failed
    total: Mapped[int] = mapped_column(Integer)
    done: Mapped[int] = mapped_column(Integer, default=0)
    refused: Mapped[int] = mapped_column(Integer, default=0)
    rate: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    audit_id: Mapped[int | None] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime())
    updated_at: Mapped[datetime] = mapped_column(DateTime())
