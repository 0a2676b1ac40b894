"""What an operator does to dead letters: one implementation, whose two faces are the CLI and the console.

Each action acts on a `dlq.selection.Selection` (exactly the rows that were shown) and writes the audit
log: who, through which face, on which rows, and what came of it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import update

from dlq import audit
from dlq.db import session
from dlq.models import DeadLetter, Status
from dlq.replay import REPLAY_BATCH, ReplayReport
from dlq.replay import replay as replay_rows
from dlq.selection import ACTS_ON, Selection, SelectionError, rows_of
from dlq.store import discard as discard_rows
from dlq.store import utcnow

Progress = Callable[[int, int], None]  # (rows done so far, of which refused)


@dataclass(frozen=True)
class Actor:
    """Who acts, and through which face (cli, console, api); on the CLI, the OS user who ran it, which the
    audit log keeps beside a name given with --by."""

    name: str
    via: str
    os_user: str | None = None

    @property
    def audited(self) -> str:
        return self.name if self.os_user in (None, self.name) else f"{self.os_user} as {self.name}"


def replay(
    selection: Selection,
    actor: Actor,
    *,
    incident: str | None = None,
    rate: float | None = None,
    force: bool = False,
    progress: Progress | None = None,
    stopped: Callable[[], bool] | None = None,
    audit_id: int | None = None,
) -> ReplayReport:
    """Replay the selection's rows from their failed steps, through the guards, at most `rate` a second.

    Rows are read and replayed a chunk at a time (a second's worth when paced), so a stop takes effect
    within about a second and a selection of any size never sits in memory.
    """
    entry = audit_id or start_replay_audit(selection, actor, incident, rate)
    report = ReplayReport()
    chunk = max(1, int(rate)) if rate else REPLAY_BATCH
    for first in range(0, selection.count, chunk):
        if stopped is not None and stopped():
            break
        part = replay_rows(rows_of(selection.ids[first : first + chunk]), force=force, rate=rate)
        report.replayed += part.replayed
        report.refused |= part.refused
        report.seconds += part.seconds
        if progress is not None:
            progress(len(report.replayed) + len(report.refused), len(report.refused))
    audit.finish(entry, outcome(report, selection.count))
    return report


def start_replay_audit(selection: Selection, actor: Actor, incident: str | None, rate: float | None) -> int:
    """The audit entry of a replay, written before it starts (a background one is seen at once)."""
    return audit.write(
        actor.audited,
        actor.via,
        "replay",
        selection=selection,
        incident=incident,
        outcome={"state": "started", "rate": rate},
    )


def outcome(report: ReplayReport, selected: int) -> dict:
    refused = sorted({reason for reason in report.refused.values()})
    return {
        "selected": selected,
        "replayed": len(report.replayed),
        "refused": len(report.refused),
        "not_reached": selected - len(report.replayed) - len(report.refused),
        "reasons": refused[:10],
    }


def discard(selection: Selection, actor: Actor, reason: str) -> int:
    """Mark the selection's rows discarded with a reason; how many were (rows no longer open are left)."""
    if not reason.strip():
        raise SelectionError("say why: a discard needs a reason")
    discarded = sum(
        discard_rows(selection.ids[first : first + REPLAY_BATCH], actor.name, reason)
        for first in range(0, selection.count, REPLAY_BATCH)
    )
    outcome = {"discarded": discarded}
    audit.write(actor.audited, actor.via, "discard", selection=selection, reason=reason, outcome=outcome)
    return discarded


def claim(row_id: int, actor: Actor) -> bool:
    """Take a failed row into review (failed -> reviewing, claimed by `actor`); False when it is not open
    to review (someone else has it, or it is replaying, resolved or discarded)."""
    now = utcnow()
    with session() as active:
        claimed = active.execute(
            update(DeadLetter)
            .where(DeadLetter.id == row_id, DeadLetter.status.in_(ACTS_ON["claim"]))
            .values(status=Status.REVIEWING, claimed_by=actor.name, claimed_at=now, updated_at=now)
        ).rowcount
    if claimed:
        audit.write(actor.audited, actor.via, "claim", ids=[row_id], outcome={"claimed": True})
    return bool(claimed)
