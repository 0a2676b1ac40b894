"""Bulk actions running in the background (a paced replay of thousands of rows): their progress, kept in
SQL so every console process shows it, and a stop an operator asks for, seen within about a second."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from dlq.db import session
from dlq.models import Operation
from dlq.store import utcnow

RUNNING, STOPPING, STOPPED, FINISHED, FAILED, INTERRUPTED = (
    "running",
    "stopping",
    "stopped",
    "finished",
    "failed",
    "interrupted",
)
ACTIVE = (RUNNING, STOPPING)
# An active operation not heard from for this long lost its process (a console restarted mid-replay).
SILENT_AFTER = timedelta(seconds=60)


def begin(kind: str, actor: str, total: int, incident: str | None, rate: float | None, audit_id: int) -> int:
    now = utcnow()
    operation = Operation(
        kind=kind,
        actor=actor,
        incident=incident,
        state=RUNNING,
        total=total,
        done=0,
        refused=0,
        rate=rate,
        audit_id=audit_id,
        started_at=now,
        updated_at=now,
    )
    with session() as active:
        active.add(operation)
        active.flush()
        return operation.id


def advance(operation_id: int, done: int, refused: int) -> None:
    with session() as active:
        active.execute(
            update(Operation)
            .where(Operation.id == operation_id)
            .values(done=done, refused=refused, updated_at=utcnow())
        )


def end(operation_id: int, error: str | None = None) -> None:
    """Finished, or stopped when a stop was asked for, or failed with `error`."""
    with session() as active:
        operation = active.get(Operation, operation_id)
        if operation is None:
            return
        operation.state = FAILED if error else STOPPED if operation.state == STOPPING else FINISHED
        operation.error = error
        operation.updated_at = utcnow()


def request_stop(operation_id: int) -> bool:
    """Ask a running operation to stop; False when it is not running."""
    with session() as active:
        asked = active.execute(
            update(Operation)
            .where(Operation.id == operation_id, Operation.state == RUNNING)
            .values(state=STOPPING, updated_at=utcnow())
        ).rowcount
    return bool(asked)


def stop_requested(operation_id: int) -> bool:
    with session() as active:
        return active.scalar(select(Operation.state).where(Operation.id == operation_id)) != RUNNING


def get(operation_id: int) -> dict | None:
    with session() as active:
        operation = active.get(Operation, operation_id)
        return shown(operation) if operation else None


def recent(limit: int = 20) -> list[dict]:
    with session() as active:
        return [shown(o) for o in active.scalars(select(Operation).order_by(Operation.id.desc()).limit(limit))]


def shown(operation: Operation) -> dict:
    """The operation as people see it: an active one whose process went silent is interrupted."""
    values = operation.as_dict()
    if operation.state in ACTIVE and utcnow() - operation.updated_at > SILENT_AFTER:
        values["state"] = INTERRUPTED
    return values
