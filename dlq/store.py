"""The dead-letter store's operations: record a failure, query, group by cause, resolve, discard, purge.

A row is keyed by (job, step): a job that fails again at the same step updates its row.
When the database cannot be reached, changes are spooled in Redis (dlq.spool) and written later.
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from traceback import format_exception
from typing import Any

from kombu.utils.json import dumps
from sqlalchemy import (
    Integer,
    Select,
    String,
    bindparam,
    case,
    cast,
    delete,
    func,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from dlq import spool
from dlq.db import session
from dlq.fingerprint import fingerprint
from dlq.models import DeadLetter, Status
from pipeline.context import JobContext
from pipeline.jobs.sink import FailedStep
from pipeline.sealing import seal_document
from settings import get_settings

log = logging.getLogger("vetro.dlq")

OPEN = (Status.FAILED, Status.REVIEWING, Status.REPLAYING, Status.QUARANTINED)
FINISHED = (Status.RESOLVED, Status.DISCARDED)
MAX_ROW_ID = 2**63 - 1  # the largest BIGINT (64-bit) id: a larger one overflows SQLite's driver before the query runs


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class DeadLetterEvent:
    """One failure, as it travels from a worker to the database (possibly via the spool)."""

    job_id: str
    scope: str
    pipeline: str
    stage: str
    destination: str | None
    input: dict[str, Any]
    headers: dict[str, Any]
    idempotency_key: str
    correlation_id: str
    exception_type: str
    message: str
    traceback: str
    failure_class: str
    attempts: int
    failed_at: str  # ISO, naive UTC
    worker_host: str | None

    @classmethod
    def from_failure(cls, step: FailedStep, failure_class: str, exc: BaseException, attempts: int) -> DeadLetterEvent:
        job = step.job
        return cls(
            job_id=job.job_id,
            scope=step.scope,
            pipeline=job.pipeline,
            stage=step.stage,
            destination=step.destination,
            # Through kombu's JSON, as the message carried it: a datetime or Decimal argument stays readable.
            input=seal_document(dumps({"args": step.args, "kwargs": step.kwargs})),
            headers=job.headers(),
            idempotency_key=job.idempotency_key,
            correlation_id=job.correlation_id,
            exception_type=f"{type(exc).__module__}.{type(exc).__qualname__}",
            message=str(exc)[:10_000],
            traceback="".join(format_exception(exc))[-20_000:],
            failure_class=str(failure_class),
            attempts=attempts,
            failed_at=utcnow().isoformat(),
            worker_host=step.worker_host,
        )


def record_failure(step: FailedStep, failure_class: str, exc: BaseException, attempts: int) -> None:
    """The core's dead-letter sink (see pipeline.jobs.sink): one row per job and failed step."""
    record(DeadLetterEvent.from_failure(step, failure_class, exc, attempts))


def record(event: DeadLetterEvent) -> None:
    """Store the failure; if the database is down, spool it in Redis (raises only if both are down)."""
    try:
        with session() as active:
            write(active, event)
    except SQLAlchemyError as error:
        log.warning("dead-letter database unavailable (%s); spooling job %s", type(error).__name__, event.job_id)
        spool.push({"kind": "failure", **asdict(event)})


def write(active: Session, event: DeadLetterEvent) -> bool:
    """Insert the job's row for this step, or update it when the job failed there before; returns whether
    it wrote. A spooled copy older than the failure the row already holds changes nothing."""
    failed_at = datetime.fromisoformat(event.failed_at)
    now = utcnow()
    values = {name: value for name, value in asdict(event).items() if name != "failed_at"}
    values |= {
        "fingerprint": fingerprint(event.stage, event.exception_type, event.message),
        "last_failed_at": failed_at,
        "updated_at": now,
        "first_failed_at": failed_at,
        "replay_count": 0,
        "replay_task_ids": [],
        "status": Status.FAILED,
        "quarantine_after": get_settings().quarantine_after,
    }
    if active.execute(_upsert(active.get_bind().dialect.name), values).first() is None:
        return False
    # A replay that got past this job's other failed steps and failed here: those replays are over.
    active.execute(
        update(DeadLetter)
        .where(
            DeadLetter.job_id == event.job_id, DeadLetter.scope != event.scope, DeadLetter.status == Status.REPLAYING
        )
        .values(status=Status.FAILED, updated_at=now)
    )
    return True


# What a new failure changes on a row that exists: not its identity, first failure or replays.
_FAILURE_COLUMNS = tuple(
    name for name in DeadLetterEvent.__dataclass_fields__ if name not in ("job_id", "scope", "failed_at")
)
_REFRESHED = (*_FAILURE_COLUMNS, "fingerprint", "last_failed_at", "updated_at")
_INSERTED = frozenset({"job_id", "scope", *_REFRESHED, "first_failed_at", "replay_count", "replay_task_ids", "status"})


def _literal(status: Status) -> Any:
    return literal_column(f"'{status}'")  # a constant of ours, written into the statement


@cache
def _upsert(dialect: str) -> Any:
    """One statement, compiled once: SQLite and PostgreSQL both have INSERT ... ON CONFLICT. A read then a
    write cost five times as much (bench.dead_letters), and two workers could collide between them.

    SQLAlchemy does not cache the compiled form of a dialect's INSERT (its `inherit_cache` is off), so
    it is compiled here, once, into a text statement whose parameters keep their columns' types.
    """
    table = DeadLetter.__table__
    columns = [column for column in table.c if column.name in _INSERTED]
    insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
    insert = insert.values({column.name: bindparam(column.name) for column in columns})
    quarantined = table.c.replay_count >= bindparam("quarantine_after")
    upsert = insert.on_conflict_do_update(
        index_elements=[table.c.job_id, table.c.scope],
        set_={name: insert.excluded[name] for name in _REFRESHED}
        | {"status": case((quarantined, _literal(Status.QUARANTINED)), else_=_literal(Status.FAILED))},
        where=or_(table.c.last_failed_at.is_(None), table.c.last_failed_at <= insert.excluded.last_failed_at),
    ).returning(table.c.id)
    named = (postgresql.dialect if dialect == "postgresql" else sqlite.dialect)(paramstyle="named")
    sql = re.sub(r":(\w+)::(\w+)", r"CAST(:\1 AS \2)", str(upsert.compile(dialect=named)))  # text() reads no ::casts
    typed = [bindparam(column.name, type_=column.type) for column in columns]
    return text(sql).bindparams(*typed, bindparam("quarantine_after", type_=Integer())).columns(table.c.id)


def resolve_recovered(job: JobContext) -> None:
    """The core's completion callback for a job that had dead letters (see pipeline.jobs.sink)."""
    resolve_job(job.job_id)


def resolve_compensated(job: JobContext, compensations: list[str]) -> None:
    """The core's callback for a job whose dead-lettered compensation has now run: resolve its rows
    (the failure that started the compensations stays open, for the operator to see)."""
    resolve_job(job.job_id, compensations)


def resolve_job(job_id: str, scopes: list[str] | None = None) -> None:
    """The job finished: its open rows (or those of `scopes`) are resolved (spooled if the database is down)."""
    try:
        with session() as active:
            _resolve(active, job_id, utcnow(), scopes)
    except SQLAlchemyError:
        spool.push({"kind": "resolve", "job_id": job_id, "at": utcnow().isoformat(), "scopes": scopes})


def _resolve(active: Session, job_id: str, at: datetime, scopes: list[str] | None = None) -> None:
    selected = update(DeadLetter).where(DeadLetter.job_id == job_id, DeadLetter.status.in_(OPEN))
    if scopes is not None:
        selected = selected.where(DeadLetter.scope.in_(scopes))
    active.execute(selected.values(status=Status.RESOLVED, resolved_at=at, updated_at=at))


def write_spooled(entries: list[dict[str, Any]]) -> None:
    with session() as active:
        for entry in entries:
            kind = entry.pop("kind")
            if kind == "failure":
                write(active, DeadLetterEvent(**entry))
            else:
                _resolve(active, entry["job_id"], datetime.fromisoformat(entry["at"]), entry.get("scopes"))


def flush_spool() -> int:
    """Write what was spooled while the database was down; stops (and raises) if it is still down."""
    return spool.flush(write_spooled, outage=(OperationalError, InterfaceError))


@dataclass
class RowFilter:
    """Which rows an operator means; every list and bulk command takes the same filter."""

    ids: list[int] = field(default_factory=list)
    stage: str | None = None
    status: str | None = None
    failure_class: str | None = None
    error: str | None = None  # text in the exception type or message, matched literally (no wildcards)
    fingerprint: str | None = None
    job: str | None = None
    key: str | None = None  # the job's idempotency key
    correlation: str | None = None  # its correlation id
    # Text anywhere in the row's input, or, for a sealed input (VETRO_ENCRYPTION_KEYS), in what is kept
    # in clear: the job id, key, correlation id and error.
    search: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def is_empty(self) -> bool:
        return not any(value for value in asdict(self).values())

    def apply(self, statement: Select) -> Select:
        conditions = []
        if self.ids:
            conditions.append(DeadLetter.id.in_(self.ids))
        if self.stage:
            conditions.append(or_(DeadLetter.stage == self.stage, DeadLetter.scope == self.stage))
        if self.status:
            conditions.append(DeadLetter.status == self.status)
        if self.failure_class:
            conditions.append(DeadLetter.failure_class == self.failure_class)
        if self.error:
            text = self.error.lower()  # '%' and '_' are escaped: an operator's text is text, not a pattern
            conditions.append(
                or_(
                    func.lower(DeadLetter.message).contains(text, autoescape=True),
                    func.lower(DeadLetter.exception_type).contains(text, autoescape=True),
                )
            )
        if self.fingerprint:
            conditions.append(DeadLetter.fingerprint == self.fingerprint)
        if self.job:
            conditions.append(DeadLetter.job_id == self.job)
        if self.key:
            conditions.append(DeadLetter.idempotency_key == self.key)
        if self.correlation:
            conditions.append(DeadLetter.correlation_id == self.correlation)
        if self.search:
            conditions.append(_searched(self.search))
        if self.since:
            conditions.append(DeadLetter.last_failed_at >= self.since)
        if self.until:
            conditions.append(DeadLetter.last_failed_at < self.until)
        return statement.where(*conditions)


def _searched(text: str) -> Any:
    """Rows whose input holds `text` (a sealed input is ciphertext: only its clear fields can match)."""
    text = text.lower()
    clear = [DeadLetter.job_id, DeadLetter.idempotency_key, DeadLetter.correlation_id, DeadLetter.message]
    return or_(
        func.lower(cast(DeadLetter.input, String)).contains(text, autoescape=True),
        *(func.lower(column).contains(text, autoescape=True) for column in clear),
    )


def rows(row_filter: RowFilter, limit: int | None = None, offset: int = 0) -> list[DeadLetter]:
    with session() as active:
        statement = row_filter.apply(select(DeadLetter)).order_by(DeadLetter.last_failed_at.desc(), DeadLetter.id)
        return list(active.scalars(statement.offset(offset).limit(limit)))


def count(row_filter: RowFilter) -> int:
    with session() as active:
        return active.scalar(row_filter.apply(select(func.count(DeadLetter.id))))


def get_row(row_id: int) -> DeadLetter | None:
    with session() as active:
        return active.get(DeadLetter, row_id)


@dataclass(frozen=True)
class Pattern:
    fingerprint: str
    count: int
    first_seen: datetime
    last_seen: datetime
    stage: str
    exception_type: str
    example: str


def patterns(row_filter: RowFilter) -> list[Pattern]:
    """Rows grouped by cause, largest group first."""
    with session() as active:
        grouped = active.execute(
            row_filter.apply(
                select(
                    DeadLetter.fingerprint,
                    func.count(DeadLetter.id),
                    func.min(DeadLetter.first_failed_at),
                    func.max(DeadLetter.last_failed_at),
                    func.max(DeadLetter.id),
                )
            )
            .group_by(DeadLetter.fingerprint)
            .order_by(func.count(DeadLetter.id).desc())
        ).all()
        examples = {
            row.id: row
            for row in active.scalars(select(DeadLetter).where(DeadLetter.id.in_([newest for *_, newest in grouped])))
        }
    return [
        Pattern(
            fp,
            total,
            first,
            last,
            examples[newest].scope,
            examples[newest].exception_type,
            examples[newest].message[:200],
        )
        for fp, total, first, last, newest in grouped
    ]


def stats() -> dict[str, dict[str, int]]:
    """Row counts by status, failure class and stage."""
    with session() as active:
        return {
            name: dict(active.execute(select(column, func.count(DeadLetter.id)).group_by(column)).all())
            for name, column in (
                ("status", DeadLetter.status),
                ("class", DeadLetter.failure_class),
                ("stage", DeadLetter.scope),
            )
        }


def discard(row_ids: list[int], by: str, reason: str) -> int:
    """Mark exactly the rows `row_ids` names discarded, those still open; returns how many (none for [])."""
    if not row_ids:
        return 0
    with session() as active:
        discarded = active.execute(
            update(DeadLetter)
            .where(DeadLetter.id.in_(row_ids), DeadLetter.status.in_(OPEN))
            .values(status=Status.DISCARDED, discarded_by=by, discard_reason=reason, updated_at=utcnow())
        )
        return discarded.rowcount


def purge(older_than: timedelta, max_rows: int | None = None) -> int:
    """Delete resolved and discarded rows older than `older_than`, then the oldest beyond `max_rows`."""
    cutoff = utcnow() - older_than
    with session() as active:
        deleted = active.execute(
            delete(DeadLetter).where(DeadLetter.status.in_(FINISHED), DeadLetter.updated_at < cutoff)
        ).rowcount
        if max_rows is not None:
            surplus = active.scalars(
                select(DeadLetter.id)
                .where(DeadLetter.status.in_(FINISHED))
                .order_by(DeadLetter.updated_at.desc())
                .offset(max_rows)
            ).all()
            if surplus:
                deleted += active.execute(delete(DeadLetter).where(DeadLetter.id.in_(surplus))).rowcount
        return deleted


def purge_by_policy() -> int:
    settings = get_settings()
    return purge(timedelta(days=settings.dlq_retention_days), settings.dlq_max_rows)


def unmark_replaying(statuses: dict[int, str]) -> None:
    """Undo mark_replaying for rows whose replay could not be published: row id -> its status before."""
    if not statuses:
        return
    with session() as active:
        for row in active.scalars(select(DeadLetter).where(DeadLetter.id.in_(statuses)).with_for_update()):
            row.status = statuses[row.id]
            row.replay_count -= 1
            row.replay_task_ids = row.replay_task_ids[:-1]


def mark_replaying(task_ids: dict[int, str]) -> None:
    """Mark rows replaying, in one transaction: row id -> the task id of the step the replay runs."""
    if not task_ids:
        return
    with session() as active:
        for row in active.scalars(select(DeadLetter).where(DeadLetter.id.in_(task_ids)).with_for_update()):
            row.status = Status.REPLAYING
            row.replay_count += 1
            row.replay_task_ids = [*row.replay_task_ids, task_ids[row.id]]
            row.updated_at = utcnow()
