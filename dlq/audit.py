"""The audit log: who did what to which dead letters, from the CLI or the console, kept as long as they are."""

from __future__ import annotations

import getpass
from datetime import timedelta
from typing import Any

from kombu.utils.json import dumps
from sqlalchemy import delete, func, select

from dlq.db import session
from dlq.models import AuditEntry
from dlq.selection import Selection, digest
from dlq.store import utcnow
from pipeline.privacy import redact
from pipeline.sealing import seal_document, sealing


def os_user() -> str:
    """Who runs a CLI command: the login name, as the audit log records it."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container's arbitrary user)
        return "unknown"


def protected(value: Any) -> dict[str, Any]:
    """A value the log keeps (an edited input's diff): sealed like the dead letters' inputs when keys are
    set, else with personal fields redacted like the logs."""
    if sealing():
        return seal_document(dumps(value))
    return {"redacted": redact(value)}


def write(
    actor: str,
    via: str,
    action: str,
    *,
    selection: Selection | None = None,
    ids: list[int] | list[str] | None = None,
    row_filter: dict[str, Any] | None = None,
    incident: str | None = None,
    reason: str | None = None,
    diff: dict[str, Any] | None = None,
    outcome: dict[str, Any] | None = None,
) -> int:
    """Record one action; its id. What it acted on is named by `selection` (a bulk action) or `ids` (rows,
    quarantined messages)."""
    acted = selection.ids if selection is not None else (ids or [])
    entry = AuditEntry(
        at=utcnow(),
        actor=actor[:128],
        via=via,
        action=action,
        filter=selection.filter_shown() if selection is not None else (row_filter or {}),
        count=len(acted),
        ids_digest=digest(acted),
        incident=incident[:128] if incident else None,
        reason=reason,
        diff=diff,
        outcome=outcome or {},
    )
    with session() as active:
        active.add(entry)
        active.flush()
        return entry.id


def finish(entry_id: int, outcome: dict[str, Any]) -> None:
    """What an action that ran in the background came to."""
    with session() as active:
        entry = active.get(AuditEntry, entry_id)
        if entry is not None:
            entry.outcome = outcome


def entries(
    limit: int = 50,
    offset: int = 0,
    action: str | None = None,
    actor: str | None = None,
    ids_digest: str | None = None,
) -> tuple[list[AuditEntry], int]:
    """The newest entries first (a page of them), and how many match in all; `ids_digest`: those that
    acted on exactly these rows (one row's history)."""
    statement = select(AuditEntry)
    if ids_digest:
        statement = statement.where(AuditEntry.ids_digest == ids_digest)
    if action:
        statement = statement.where(AuditEntry.action == action)
    if actor:
        statement = statement.where(AuditEntry.actor == actor)
    with session() as active:
        total = active.scalar(select(func.count()).select_from(statement.subquery()))
        page = list(active.scalars(statement.order_by(AuditEntry.id.desc()).offset(offset).limit(limit)))
    return page, total


def purge(older_than: timedelta) -> int:
    """Forget entries older than the dead letters' retention (they name rows that are gone)."""
    with session() as active:
        return active.execute(delete(AuditEntry).where(AuditEntry.at < utcnow() - older_than)).rowcount
