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
from celery.backends.base import BaseBackend
from celery.result import AsyncResult

from pipeline import ledger
from pipeline.plan import Leaf, Node, result_of, terminals
from pipeline.store import redis_client

FAILED_JOB = (ledger.FAILED, ledger.COMPENSATING, ledger.COMPENSATED)


class LedgerBackend(BaseBackend):
    """Celery's result backend interface over the job ledger (read only)."""

    supports_autoexpire = True  # the ledger's keys expire by themselves (README, "Redis keys")
    persistent = True

    def __init__(self, app: Any, url: str | None = None, **kwargs: Any) -> None:
        super().__init__(app, url=url, **kwargs)

    def _get_task_meta_for(self, task_id: str) -> dict[str, Any]:
        found = _find(task_id)
        if found is None:
            return {"task_id": task_id, "status": states.PENDING, "result": None, "traceback": None}
        state, node = found
        return self.meta_from_decoded({"task_id": task_id, **_meta(state, node)})

    # Nothing is stored: the guard records results, the ledger joins chords.
    def _store_result(self, task_id: str, result: Any, state: str, traceback: Any = None, **kwargs: Any) -> Any:
        return result

    def _forget(self, task_id: str) -> None:
        return None

    def apply_chord(self, header_result_args: Any, body: Any, **kwargs: Any) -> None:
        return None

    def on_chord_part_return(self, request: Any, state: Any, result: Any, **kwargs: Any) -> None:
        return None

    def _save_group(self, group_id: str, result: Any) -> Any:
        return result

    def _restore_group(self, group_id: str) -> None:
        return None

    def _delete_group(self, group_id: str) -> None:
        return None

    def as_uri(self, include_password: bool = False) -> str:
        return "vetro://ledger"


def _find(task_id: str) -> tuple[ledger.JobState, Node | None] | None:
    """The job a task id belongs to, and its node (None: the whole job)."""
    indexed = ledger.job_of_task(task_id)
    if indexed is not None:
        state = ledger.load(*indexed)
        return (state, state.plan.node_by_task_id(task_id)) if state else None
    job_id, _, scope = task_id.partition(".")
    record = ledger.get_job(job_id)
    if record is None:
        return None
    state = ledger.load(record["pipeline"], job_id)
    if state is None:
        return None
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
    failed_stage = record.get("failed_stage")
    if state.status in FAILED_JOB and failed_stage:
        return {"status": states.FAILURE, "result": _error(record), "traceback": record.get("traceback")}
    scopes = terminals(target) if not isinstance(target, Leaf) else (target.scope,)
    if any(ledger.leases_held(state.context.pipeline, state.context.job_id, scopes)):
        return {"status": states.STARTED, "result": None, "traceback": None}
    if isinstance(target, Leaf) and _retried(state, target.scope):
        return {"status": states.RETRY, "result": None, "traceback": None}
    return {"status": states.PENDING, "result": None, "traceback": None}


def _retried(state: ledger.JobState, scope: str) -> bool:
    keys = ledger.JobKeys(state.context.pipeline, state.context.job_id)
    return bool(redis_client().hget(keys.attempts, f"failed:{scope}"))


def _error(record: dict[str, str]) -> dict[str, Any]:
    """The dead-lettered failure, as Celery's backends serialize an exception (rebuilt with its class)."""
    kind = record.get("error_type") or "pipeline.results.StepFailed"
    module, _, name = kind.rpartition(".")
    message = record.get("error", "").split(": ", 1)[-1]
    return {"exc_type": name, "exc_module": module, "exc_message": [message]}


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
        from pipeline.app import app

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

    def ready(self) -> bool:
        return self.async_result().ready()

    def successful(self) -> bool:
        return self.async_result().successful()

    def failed(self) -> bool:
        return self.async_result().failed()
