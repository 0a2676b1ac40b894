"""Results where Celery users look for them: a result backend that reads the job ledger.

`AsyncResult(id).get()`, `.state`, `.ready()`, `.result`, `.traceback` and a `GroupResult` work for
any step of a job: the guard's record *is* the step's result, so nothing is written twice. A task id
names a canvas's step (Celery's frozen id, indexed when the job opened), a declared pipeline's step
('<job id>.<scope>'), a pipeline or chord inside a canvas (its result is its last step's), or the
job itself (its id: the whole job's result).

States: SUCCESS once recorded; FAILURE once dead-lettered (its own failure, raised by `.get()` with
its class), or when the job failed elsewhere so the step will never run; STARTED while a run holds
its lease; RETRY after a failed attempt that will be retried; PENDING otherwise. Nothing is stored
here: chords are joined by the ledger (pipeline.plan), so `apply_chord` only lets Celery's canvas go on.
"""

from __future__ import annotations

from typing import Any

from celery import states
from celery.result import AsyncResult

from pipeline.adapter.internals import ReadOnlyBackend, failure_meta
from pipeline.jobs import ledger
from pipeline.plan import Leaf, Node, result_of, terminals
from pipeline.store import redis_client

FAILED_JOB = (ledger.FAILED, ledger.COMPENSATING, ledger.COMPENSATED)


class LedgerBackend(ReadOnlyBackend):
    """Celery's result backend interface over the job ledger: nothing is stored (the guard records results,
    the ledger joins chords), every result is read from the job's record."""

    def read(self, task_id: str) -> dict[str, Any]:
        found = _find(task_id)
        if found is None:
            return {"status": states.PENDING, "result": None, "traceback": None}
        state, node = found
        return _meta(state, node)

    def as_uri(self, include_password: bool = False) -> str:
        return "vetro://ledger"


def _find(task_id: str) -> tuple[ledger.JobState, Node | None] | None:
    """The job a task id belongs to, and its node (None: the whole job)."""
    indexed = ledger.job_of_task(task_id)
    if indexed is not None:
        state = ledger.load(*indexed)
        return (state, state.plan.node_by_task_id(task_id)) if state else None
    found = ledger.job_for(task_id)
    state = ledger.load(*found) if found else None
    if state is None:
        return None
    scope = task_id.partition(".")[2]
    if not scope:
        return state, None
    leaf = state.plan.leaf(scope)
    if leaf is None:
        return None
    return state, (leaf if "." not in scope else Leaf(scope, leaf.task))


def _meta(state: ledger.JobState, node: Node | None) -> dict[str, Any]:
    results = state.results
    target = state.plan.root if node is None else node
    done = all(scope in results for scope in terminals(target))
    if done and (node is not None or state.status == ledger.COMPLETED):
        return {"status": states.SUCCESS, "result": result_of(target, results), "traceback": None}
    record = state.record
    if state.status == ledger.REVOKED:  # `.get()` raises TaskRevokedError, as for any revoked task
        revoked = failure_meta("celery.exceptions.TaskRevokedError", f"revoked by {record.get('revoked_by')}")
        return {"status": states.REVOKED, "result": revoked, "traceback": None}
    failed_stage = record.get("failed_stage")
    if state.status in FAILED_JOB and failed_stage:
        return {"status": states.FAILURE, "result": _error(record), "traceback": record.get("traceback")}
    scopes = terminals(target) if not isinstance(target, Leaf) else (target.scope,)
    if any(ledger.leases_held(state, scopes)):
        return {"status": states.STARTED, "result": None, "traceback": None}
    if isinstance(target, Leaf) and _retried(state, target.scope):
        return {"status": states.RETRY, "result": None, "traceback": None}
    return {"status": states.PENDING, "result": None, "traceback": None}


def _retried(state: ledger.JobState, scope: str) -> bool:
    keys = ledger.JobKeys(state.context.pipeline, state.context.job_id)
    return bool(redis_client().hget(keys.attempts, f"failed:{scope}"))


def _error(record: dict[str, str]) -> dict[str, Any]:
    """The dead-lettered failure, as Celery's backends serialize an exception (rebuilt with its class)."""
    kind = _current_name(record.get("error_type") or f"{__name__}.{StepFailed.__name__}")
    return failure_meta(kind, record.get("error", "").split(": ", 1)[-1])


# vetro's own failures, as records written before the core's modules moved into subpackages name them.
_MOVED = {
    "pipeline.phases.": "pipeline.failures.",
    "pipeline.reconciler.": "pipeline.failures.",
    "pipeline.results.": "pipeline.jobs.results.",
}


def _current_name(kind: str) -> str:
    for old, new in _MOVED.items():
        if kind.startswith(old):
            return new + kind[len(old) :]
    return kind


class StepFailed(Exception):  # noqa: N818 (Celery shows it as the failure of a step recorded before error types were)
    """A dead-lettered step whose failure's class the ledger did not keep."""


class JobResult(str):
    """A job's id, as `submit()` returns it, which also reads the job like an `AsyncResult`:
    `submit(order).get(timeout=30)` is the job's final result (its last step's, or its join's)."""

    __slots__ = ()

    @property
    def id(self) -> str:
        return str(self)

    def async_result(self) -> AsyncResult:
        from pipeline.adapter.app import app

        return app.AsyncResult(str(self))

    def get(self, timeout: float | None = None, propagate: bool = True, interval: float = 0.5) -> Any:
        return self.async_result().get(timeout=timeout, propagate=propagate, interval=interval)

    @property
    def state(self) -> str:
        return self.async_result().state

    status = state

    @property
    def result(self) -> Any:
        return self.async_result().result

    @property
    def traceback(self) -> str | None:
        return self.async_result().traceback

    def revoke(self, terminate: bool = False, signal: str | None = None) -> None:
        """Cancel the job, as `AsyncResult.revoke` does (pipeline.jobs.revoke)."""
        self.async_result().revoke(terminate=terminate, signal=signal)

    def ready(self) -> bool:
        return self.async_result().ready()

    def successful(self) -> bool:
        return self.async_result().successful()

    def failed(self) -> bool:
        return self.async_result().failed()
