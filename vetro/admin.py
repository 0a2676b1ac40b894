"""What an admin does beyond the dead letters: force a circuit breaker, drop quarantined messages. One
implementation for the CLI and the console; each action is written to the audit log (dlq.audit).

The action comes first: in an incident the dead-letter database may be the thing that is down, and a
breaker must still be forceable. An audit entry that cannot be written is logged, and said.
"""

from __future__ import annotations

import logging
import re

import pybreaker
from sqlalchemy.exc import SQLAlchemyError

from dlq import audit
from dlq.actions import Actor
from pipeline.dependencies import breakers
from pipeline.jobs import quarantine
from pipeline.jobs.pipelines import dependencies

log = logging.getLogger("vetro.admin")
ENTRY_ID = re.compile(r"^\d{1,20}-\d{1,20}$")  # a Redis stream id
FORCED = {"open": pybreaker.STATE_OPEN, "closed": pybreaker.STATE_CLOSED}


class AdminError(ValueError):
    """An action that names nothing (an unknown breaker, a malformed id): one line saying so."""


def known_breaker(name: str) -> str:
    known = dependencies()
    if name not in known:
        raise AdminError(f"no breaker {name[:80]!r}; known: {', '.join(known) or 'none'}")
    return name


def force_breaker(name: str, state: str, actor: Actor) -> bool:
    """Force the breaker open or closed; whether the audit log has it."""
    if state not in FORCED:
        raise AdminError(f"cannot force a breaker {state[:20]!r}: open or closed")
    breakers.force(known_breaker(name), FORCED[state])
    return _audited(actor, f"breaker-{state}", {"breaker": name})


def quarantine_ids(entry_ids: list[str]) -> list[str]:
    for entry_id in entry_ids:
        if not ENTRY_ID.match(entry_id):
            raise AdminError(f"{entry_id!r:.60} is not a quarantine id (like 1763935200000-0)")
    return entry_ids


def drop_quarantined(entry_ids: list[str], actor: Actor) -> tuple[int, bool]:
    """Drop exactly these quarantined messages: how many there were, and whether the audit log has it."""
    dropped = quarantine.drop(quarantine_ids(entry_ids))
    return dropped, _audited(actor, "quarantine-drop", {"dropped": dropped}, entry_ids)


def _audited(actor: Actor, action: str, outcome: dict, ids: list[str] | None = None) -> bool:
    try:
        audit.write(actor.audited, actor.via, action, ids=ids, outcome=outcome)
    except SQLAlchemyError as error:
        log.warning("%s by %s is not in the audit log: %s", action, actor.audited, type(error).__name__)
        return False
    return True
