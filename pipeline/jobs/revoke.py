"""Revoking a job: Celery's revoke of any of its steps (or of the result a canvas or `submit` returned) cancels it.

The job's record says revoked, when and by which command: no step claims after that, a step that was
running keeps its result (or its failure) but starts nothing, the reconciler leaves it alone, and its
dead letters are not replayed (the workers drop a revoked step's id for hours: submit it again). The
steps that hold a lease are revoked with it, so Celery's `terminate=True` ends whichever one is running.
"""

from __future__ import annotations

import logging

from pipeline.adapter.internals import on_revoke
from pipeline.jobs import ledger

log = logging.getLogger("vetro.revoke")


def revoked(task_ids: list[str], by: str) -> list[str]:
    """Revoke the jobs these task ids belong to; the task ids of their steps that are running."""
    running: list[str] = []
    for task_id in task_ids:
        found = ledger.job_for(task_id)
        if found is None:
            continue  # not a vetro job's (a plain Celery task, or a job whose record expired)
        pipeline, job_id = found
        if ledger.revoke(pipeline, job_id, by) == ledger.REVOKED:
            log.warning("job %s revoked (%s, task %s)", job_id, by, task_id)
        state = ledger.load(pipeline, job_id)
        if state is not None:  # its steps, and a declared fan-out's parts (their scopes name their branches)
            scopes = {leaf.scope for leaf in state.plan.leaves()} | {
                step.scope for step in state.plan.pending(state.results)
            }
            held = ledger.leases_held(state, sorted(scopes))
            running += [state.plan.task_id_of(job_id, scope) for scope in held]
    return running


on_revoke(revoked)
