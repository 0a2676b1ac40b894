"""The dead-letter store on workers: take failed jobs from the core, refuse an unmigrated database, housekeeping.

A worker loads SQLAlchemy only when it first writes or reads a dead letter, and never loads
Alembic: the migration check runs in a child process at start-up. Together they are about a
third of a worker's memory, which a worker whose jobs succeed never needs.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from typing import Any

from celery.signals import worker_init, worker_ready

from dlq import spool
from pipeline.adapter.app import app
from pipeline.context import JobContext
from pipeline.jobs import sink
from pipeline.jobs.sink import FailedStep

log = logging.getLogger("vetro.dlq")

FLUSH_TASK = "vetro.dlq.flush_spool"
PURGE_TASK = "vetro.dlq.purge"
CHECK_SECONDS = 120  # the migration check's own process; its database connection times out well before


@sink.dead_letter_sink
def _record_failure(step: FailedStep, failure_class: str, exc: BaseException, attempts: int) -> None:
    from dlq import store

    store.record_failure(step, failure_class, exc, attempts)


@sink.on_recovered
def _resolve_recovered(job: JobContext) -> None:
    from dlq import store

    store.resolve_recovered(job)


@sink.on_compensated
def _resolve_compensated(job: JobContext, compensations: list[str]) -> None:
    from dlq import store

    store.resolve_compensated(job, compensations)


@worker_init.connect
def _refuse_unmigrated_database(**_: Any) -> None:
    """`python -m dlq.db`: exit 0 migrated, 2 not migrated, 1 unreachable (each with its one line)."""
    try:
        check = subprocess.run(
            [sys.executable, "-m", "dlq.db"], capture_output=True, text=True, timeout=CHECK_SECONDS, check=False
        )
    except subprocess.TimeoutExpired:
        returncode, said = 1, f"no answer within {CHECK_SECONDS}s"
    else:
        returncode = check.returncode
        said = ((check.stdout.strip() or check.stderr.strip()).splitlines() or [""])[-1]
    if returncode == 2:
        raise SystemExit(f"vetro: {said}")
    if returncode != 0:
        # A database that is down is not a reason to stay down: failures are spooled meanwhile.
        log.warning("dead-letter database unreachable at start-up (%s); dead letters will be spooled", said)


@worker_ready.connect
def _flush_at_start(**_: Any) -> None:
    flush_spool()


@app.task(name=FLUSH_TASK, ignore_result=True, acks_late=False)
def flush_spool() -> int:
    """Write dead letters spooled while the database was down (run by celery beat)."""
    if not spool.pending():  # the usual case, answered without loading the database layer
        return 0
    from sqlalchemy.exc import SQLAlchemyError

    from dlq import store

    try:
        return store.flush_spool()
    except SQLAlchemyError as error:
        log.warning("dead-letter database still unavailable: %s", type(error).__name__)
        return 0


@app.task(name=PURGE_TASK, ignore_result=True, acks_late=False)
def purge() -> int:
    """Delete resolved and discarded rows past the retention settings, and audit entries as old (run by beat)."""
    from datetime import timedelta

    from dlq import audit, store
    from settings import get_settings

    purged = store.purge_by_policy()
    audit.purge(timedelta(days=get_settings().dlq_retention_days))
    return purged
