"""The dead-letter store on workers: take failed jobs from the core, refuse an unmigrated database, housekeeping."""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import worker_init, worker_ready
from sqlalchemy.exc import SQLAlchemyError

from dlq import store
from dlq.db import NotMigratedError, require_migrated
from pipeline import outcomes
from pipeline.app import app

log = logging.getLogger("vetro.dlq")

outcomes.dead_letter_sink(store.record_failure)
outcomes.on_recovered(store.resolve_recovered)
outcomes.on_compensated(store.resolve_compensated)

FLUSH_TASK = "vetro.dlq.flush_spool"
PURGE_TASK = "vetro.dlq.purge"


@worker_init.connect
def _refuse_unmigrated_database(**_: Any) -> None:
    try:
        require_migrated()
    except NotMigratedError as error:
        raise SystemExit(f"vetro: {error}") from None
    except SQLAlchemyError as error:
        # A database that is down is not a reason to stay down: failures are spooled meanwhile.
        log.warning("dead-letter database unreachable at start-up (%s); dead letters will be spooled", error)


@worker_ready.connect
def _flush_at_start(**_: Any) -> None:
    try:
        store.flush_spool()
    except SQLAlchemyError as error:
        log.warning("spooled dead letters not flushed yet: %s", type(error).__name__)


@app.task(name=FLUSH_TASK, ignore_result=True, acks_late=False)
def flush_spool() -> int:
    """Write dead letters spooled while the database was down (run by celery beat)."""
    try:
        return store.flush_spool()
    except SQLAlchemyError as error:
        log.warning("dead-letter database still unavailable: %s", type(error).__name__)
        return 0


@app.task(name=PURGE_TASK, ignore_result=True, acks_late=False)
def purge() -> int:
    """Delete resolved and discarded rows past the retention settings (run by celery beat)."""
    return store.purge_by_policy()
