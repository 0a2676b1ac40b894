"""Bulk replays run in a thread of the console's process, their progress in SQL (dlq.operations) so any
console process shows it and an operator can stop it. The request that starts one returns at once: a
paced replay of thousands of rows never holds a request, or the console, while it runs."""

from __future__ import annotations

import logging
import threading

from dlq import actions, audit, operations
from dlq.selection import Selection

log = logging.getLogger("vetro.console")


def replay(selection: Selection, actor: actions.Actor, incident: str | None, rate: float | None, force: bool) -> int:
    """Start replaying the selection; the operation's id, to follow and to stop."""
    audit_id = actions.start_replay_audit(selection, actor, incident, rate)
    operation_id = operations.begin("replay", actor.audited, selection.count, incident, rate, audit_id)
    threading.Thread(
        target=_run,
        args=(operation_id, audit_id, selection, actor, incident, rate, force),
        name=f"vetro-operation-{operation_id}",
        daemon=True,
    ).start()
    return operation_id


def _run(
    operation_id: int,
    audit_id: int,
    selection: Selection,
    actor: actions.Actor,
    incident: str | None,
    rate: float | None,
    force: bool,
) -> None:
    try:
        actions.replay(
            selection,
            actor,
            incident=incident,
            rate=rate,
            force=force,
            progress=lambda done, refused: operations.advance(operation_id, done, refused),
            stopped=lambda: operations.stop_requested(operation_id),
            audit_id=audit_id,
        )
    except Exception as error:  # a failed operation says why on its page; the console goes on
        log.exception("operation %s failed", operation_id)
        reason = f"{type(error).__name__}: {error}"[:500]
        operations.end(operation_id, error=reason)
        audit.finish(audit_id, {"state": "failed", "error": reason})
    else:
        operations.end(operation_id)
