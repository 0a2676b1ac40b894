"""Which rows a bulk action acts on: a filter resolved to ids, named by a digest, checked again when it acts.

The console and the CLI preview a selection (its count, a sample and its digest) and act on the
digest they were shown: if the rows that match have changed in between, the action is refused with
the new preview, never applied to a set nobody saw (sidekiq#3243: "Delete All" under a filter).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from dlq.db import session
from dlq.models import DeadLetter, Status
from dlq.store import RowFilter

# The rows an action takes when the filter names no status: those it can act on.
ACTS_ON = {
    "replay": (Status.FAILED, Status.REVIEWING, Status.QUARANTINED),
    "discard": (Status.FAILED, Status.REVIEWING, Status.QUARANTINED, Status.REPLAYING),
    "claim": (Status.FAILED, Status.QUARANTINED),
}
SAMPLE = 20
CONFIRM_ABOVE = 100  # a larger selection needs its count typed back


class SelectionError(ValueError):
    """A bulk action that may not go ahead: the message says why in one line."""


class StaleSelectionError(SelectionError):
    """The rows that match changed since the preview: `current` is the new one, to show instead."""

    def __init__(self, current: Selection) -> None:
        super().__init__(f"the selection changed since it was shown ({current.count} rows match now): look at it again")
        self.current = current


def shown(row_filter: RowFilter) -> dict[str, Any]:
    """A filter as people (and the audit log) read it: only what was given."""
    return {
        name: value.isoformat() if isinstance(value, datetime) else value
        for name, value in asdict(row_filter).items()
        if value
    }


def digest(ids: list[int] | list[str]) -> str:
    """A name for exactly these rows, the same whatever their order."""
    return hashlib.sha256(",".join(map(str, sorted(ids))).encode()).hexdigest()


@dataclass(frozen=True)
class Selection:
    action: str
    row_filter: RowFilter
    ids: list[int]

    @property
    def count(self) -> int:
        return len(self.ids)

    @property
    def digest(self) -> str:
        return digest(self.ids)

    def needs_confirmation(self) -> bool:
        return self.count > CONFIRM_ABOVE

    def filter_shown(self) -> dict[str, Any]:
        return shown(self.row_filter)

    def preview(self) -> dict[str, Any]:
        sample = rows_of(self.ids[:SAMPLE])
        return {
            "action": self.action,
            "filter": self.filter_shown(),
            "count": self.count,
            "digest": self.digest,
            "confirm": self.needs_confirmation(),
            "sample": [summary(row) for row in sample],
        }


def resolve(action: str, row_filter: RowFilter, everything: bool = False) -> Selection:
    """The ids the filter names for `action`, newest failure first (a filter without a status takes
    the statuses the action acts on). An empty filter selects nothing unless `everything` says so."""
    if action not in ACTS_ON:
        raise SelectionError(f"unknown action {action!r}: expected one of {', '.join(ACTS_ON)}")
    if row_filter.is_empty() and not everything:
        return Selection(action, row_filter, [])
    statement = row_filter.apply(select(DeadLetter.id))
    if not row_filter.status and not row_filter.ids:
        statement = statement.where(DeadLetter.status.in_(ACTS_ON[action]))
    with session() as active:
        ids = list(active.scalars(statement.order_by(DeadLetter.last_failed_at.desc(), DeadLetter.id.desc())))
    return Selection(action, row_filter, ids)


def confirmed(
    action: str, row_filter: RowFilter, shown_digest: str, typed_count: int | None = None, everything: bool = False
) -> Selection:
    """The selection to act on, if it is the one that was shown (and, when large, its count typed back)."""
    current = resolve(action, row_filter, everything)
    if current.digest != shown_digest:
        raise StaleSelectionError(current)
    if not current.ids:
        raise SelectionError(f"nothing matches: nothing to {action}")
    if current.needs_confirmation() and typed_count != current.count:
        raise SelectionError(f"{current.count} rows: type their number to confirm a selection this large")
    return current


def summary(row: DeadLetter) -> dict[str, Any]:
    """A row in a line: what a preview's sample and a list show."""
    return {"id": row.id, "job_id": row.job_id, "step": row.scope, "status": row.status, "error": row.message[:200]}


def rows_of(ids: list[int]) -> list[DeadLetter]:
    """The rows with these ids, in the order given (missing ones left out)."""
    if not ids:
        return []
    with session() as active:
        found = {row.id: row for row in active.scalars(select(DeadLetter).where(DeadLetter.id.in_(ids)))}
    return [found[row_id] for row_id in ids if row_id in found]
