"""What an operator does to dead letters: one implementation, whose two faces are the CLI and the console.

Each action acts on a `dlq.selection.Selection` (exactly the rows that were shown) and writes the audit
log: who, through which face, on which rows, and what came of it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy import update

from dlq import audit, operations
from dlq.db import session
from dlq.models import DeadLetter, Status
from dlq.replay import EXPIRED, REPLAY_BATCH, ReplayReport
from dlq.replay import replay as replay_rows
from dlq.selection import ACTS_ON, Selection, SelectionError, rows_of
from dlq.store import RowFilter, get_row, utcnow
from dlq.store import discard as discard_rows
from pipeline.jobs import driver, ledger
from pipeline.jobs.pipelines import task_named
from pipeline.jobs.producer import InvalidJobError, check_arguments

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
    diff: dict | None = None,
) -> ReplayReport:
    """Replay the selection's rows from their failed steps, through the guards, at most `rate` a second.

    Rows are read and replayed a chunk at a time (a second's worth when paced), so a stop takes effect
    within about a second and a selection of any size never sits in memory.
    """
    entry = audit_id or start_replay_audit(selection, actor, incident, rate, diff)
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


def start_replay_audit(
    selection: Selection, actor: Actor, incident: str | None, rate: float | None, diff: dict | None = None
) -> int:
    """The audit entry of a replay, written before it starts (a background one is seen at once); with
    `diff`, a replay with an edited input (the diff kept sealed or redacted, as inputs are)."""
    return audit.write(
        actor.audited,
        actor.via,
        "replay-edited" if diff else "replay",
        selection=selection,
        incident=incident,
        diff=audit.protected(diff) if diff else None,
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


def stop(operation_id: int, actor: Actor) -> bool:
    """Ask a running background operation to stop, audited like every other action; False (nothing
    audited) when it is not running."""
    if not operations.request_stop(operation_id):
        return False
    audit.write(actor.audited, actor.via, "stop", outcome={"operation": operation_id})
    return True


class EditError(ValueError):
    """An edited input that may not run: one line saying why (nothing was changed)."""


def replay_edited(row_id: int, edited: Any, actor: Actor, incident: str | None = None) -> ReplayReport:
    """Replay one dead letter's job from its failed step with the input an operator corrected.

    The input must be `{"args": [...], "kwargs": {...}}` within the payload limits, and its first argument
    must fit the stage's declared `input_model` (if it has one). The job then runs that step, and any
    re-drive of it, with this input; the audit log keeps the change.
    """
    row = get_row(row_id)
    if row is None:
        raise EditError(f"no dead letter with id {row_id}")
    if row.status not in ACTS_ON["replay"]:
        raise EditError(f"dead letter {row_id} is {row.status}: only a failed one is replayed with an edit")
    args, kwargs = _checked_shape(edited)
    state = ledger.load(row.pipeline, row.job_id)
    step = next((step for step in driver.pending(state) if step.scope == row.scope), None) if state else None
    if step is None:
        raise EditError(f"dead letter {row_id}: {EXPIRED if state is None else 'its job no longer runs that step'}")
    _check_model(task_named(step.task), args)
    ledger.edit_input(row.pipeline, row.job_id, row.scope, args, kwargs)
    diff = {"step": row.scope, "before": row.opened_input(), "after": {"args": args, "kwargs": kwargs}}
    return replay(Selection("replay", RowFilter(ids=[row_id]), [row_id]), actor, incident=incident, diff=diff)


def _checked_shape(edited: Any) -> tuple[list, dict]:
    shaped = isinstance(edited, dict) and set(edited) == {"args", "kwargs"}
    if not shaped or not isinstance(edited["args"], list) or not isinstance(edited["kwargs"], dict):
        raise EditError('the input must be {"args": [...], "kwargs": {...}}')
    try:
        check_arguments(edited, "the input")
    except InvalidJobError as error:
        raise EditError(str(error)) from None
    return edited["args"], edited["kwargs"]


def _check_model(task: Any, args: list) -> None:
    model = getattr(task, "input_model", None)
    if model is None:
        return
    if not args:
        raise EditError(f"{task.name} takes a {model.__name__} as its first argument: the input has none")
    try:
        model.model_validate(args[0])
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or model.__name__
        raise EditError(f"{task.name}'s {model.__name__}: {where}: {first['msg']}") from None
