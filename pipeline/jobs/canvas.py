"""Canvases in: stages published with Celery's own API (`.delay()`, `apply_async`, `chain`, `group`, `chord`,
nested, with `link` callbacks) become vetro jobs, whose plan is the canvas.

Celery sends a chain as its first task, carrying the rest of the chain in the message, and a group
or chord part by part (a chord's parts carry its body). Each of those sends is a stage's
`apply_async`, made inside one publishing bracket (pipeline.adapter.publishing). Here a stage's send is
captured instead; when the bracket closes, the captured sends are put back together into the
canvas they came from (`reassemble`), as Celery serializes signatures, and the canvas becomes a
job: its plan written to the ledger with its record, its first steps queued in the same round trip.
The task ids are Celery's own, frozen by the canvas, so the `AsyncResult`s Celery handed back find
their steps (pipeline.jobs.results).

Refused at publish, in one line, with nothing sent: a canvas mixing stages with a team's plain Celery
tasks (named), a shape vetro cannot run, arguments over the payload limits.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from celery import Task
from celery.exceptions import Reject
from kombu.utils.json import dumps, loads

from pipeline.adapter import publishing
from pipeline.adapter.app import app
from pipeline.adapter.internals import (
    CHAIN,
    chain_last_options,
    chord_signature,
    group_signature,
    membership,
    message_embed,
    new_task_id,
    task_signature,
)
from pipeline.adapter.signatures import from_signature
from pipeline.context import CORRELATION_ID, IDEMPOTENCY_KEY, JobContext
from pipeline.jobs import ledger
from pipeline.jobs.driver import longest_delay
from pipeline.jobs.pipelines import declaration, is_stage, stage_namespace
from pipeline.jobs.producer import InvalidJobError, Opening, check_arguments, check_key, open_jobs
from pipeline.plan import KEPT_OPTIONS, PIPELINE_TASK, Plan, PlanError
from pipeline.telemetry import metrics
from settings import get_settings

IDEMPOTENCY_OPTION = "idempotency_key"  # apply_async(..., idempotency_key=...), or the vetro_idempotency_key header


class UnsupportedCanvasError(InvalidJobError):
    """A canvas vetro cannot run as a job (a plain Celery task among its stages, a shape it cannot express);
    refused before anything is sent."""


@dataclass(frozen=True)
class Captured:
    """One stage's send, as Celery's canvas made it: the task, its arguments and its options."""

    task: str
    args: tuple
    kwargs: Mapping[str, Any]
    task_id: str
    options: Mapping[str, Any]

    def signature(self) -> dict[str, Any]:
        """The send as Celery serializes a signature, the rest of its chain included."""
        options = {"task_id": self.task_id}
        for name in (*KEPT_OPTIONS, CHAIN, "link", "link_error"):
            if self.options.get(name) is not None:
                options[name] = self.options[name]
        return task_signature(self.task, list(self.args), dict(self.kwargs), options)

    def membership(self) -> Mapping[str, Any]:
        """The group or chord this send's chain ends in: Celery marks its last task."""
        return membership(chain_last_options(self.options))


class PipelineSignature(Task):
    """`Pipeline.s()`: a declared pipeline as one signature of a canvas. Sending it opens a job, as a stage's does;
    it never runs as a task of its own (the shield refuses a message naming it)."""

    def apply_async(self, args: Any = None, kwargs: Any = None, task_id: str | None = None, **options: Any) -> Any:
        return capture(self, args, kwargs, task_id, options)


@app.task(name=PIPELINE_TASK, base=PipelineSignature, ignore_result=True)
def pipeline_signature(*args: Any, **kwargs: Any) -> None:
    raise Reject(f"{PIPELINE_TASK} is a signature, not a task to run", requeue=False)


def capture(task: Any, args: Any, kwargs: Any, task_id: str | None, options: Mapping[str, Any]) -> Any:
    """A stage's `apply_async` by Celery's API: captured in the bracket, which opens its job when it closes."""
    task_id = task_id or new_task_id()
    with publishing.bracket() as bracket:
        bracket.captured.append(Captured(task.name, tuple(args or ()), dict(kwargs or {}), task_id, dict(options)))
    return task.AsyncResult(task_id)


@publishing.on_close
def _open_captured(bracket: publishing.Bracket) -> None:
    """The bracket closed: open a job for each canvas captured in it, then send the plain messages it held."""
    if bracket.captured:
        if bracket.held:
            raise UnsupportedCanvasError(
                f"a canvas of vetro stages cannot include the plain Celery task {bracket.held[0][0]!r}: make it a "
                f"stage (@stage), or send it on its own: nothing was published"
            )
        open_canvases(reassemble(bracket.captured), bracket.captured)
    for task, message, _ in bracket.held:
        _refuse_stages_after_plain(task, message)
    for _, _, send in bracket.held:
        send()  # a plain task's message, sent as Celery would have


def _refuse_stages_after_plain(task: str, message: Any) -> None:
    """A plain task whose message carries stages to send after it (a chain, a chord, a callback): refused."""
    embed = message_embed(message)
    if not embed:
        return
    names = [name for name in _task_names(embed) if is_stage(name) or name == PIPELINE_TASK]
    if names:
        raise UnsupportedCanvasError(
            f"the plain Celery task {task!r} comes before the vetro stage {names[0]!r} in a canvas: put stages "
            f"first, or make {task!r} a stage (@stage): nothing was published"
        )


def _task_names(value: Any) -> list[str]:
    """Every task named in a message's embedded signatures, however nested."""
    found, pending = [], [value]
    while pending:
        item = pending.pop()
        if isinstance(item, Mapping):
            if isinstance(item.get("task"), str):
                found.append(item["task"])
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            pending.extend(item)
    return found


def reassemble(captured: list[Captured]) -> list[dict[str, Any]]:
    """The canvases a bracket's captured sends came from, as Celery serializes them (usually one).

    A send with no group is a canvas of its own (a task, or a chain carrying its rest). Sends with a
    group id are that group's members, in their group index's order; a group whose members carry a
    chord body is that chord's header; a chord whose body belongs to another group is that group's member.
    """
    roots: list[dict[str, Any]] = []
    members: dict[str, list[tuple[int, str, Any]]] = defaultdict(list)
    bodies: dict[str, dict[str, Any]] = {}
    for send in captured:
        member = send.membership()
        group_id = member["group_id"]
        if not group_id:
            roots.append(send.signature())
            continue
        members[group_id].append((member["group_index"] or 0, "send", send.signature()))
        if member["chord"]:
            bodies[group_id] = _plain(member["chord"])
    nested = set()
    for group_id, body in bodies.items():
        outer = membership(body.get("options") or {})
        if outer["group_id"] and outer["group_id"] != group_id:
            members[outer["group_id"]].append((outer["group_index"] or 0, "group", group_id))
            nested.add(group_id)

    def build(group_id: str) -> dict[str, Any]:
        tasks = [build(item) if kind == "group" else item for _, kind, item in sorted(members[group_id], key=_index)]
        group = group_signature(tasks, group_id)
        return chord_signature(group, bodies[group_id]) if group_id in bodies else group

    return roots + [build(group_id) for group_id in members if group_id not in nested]


def _index(member: tuple[int, str, Any]) -> int:
    return member[0]


def _plain(signature: Any) -> dict[str, Any]:
    """A signature as plain JSON data (Celery's Signature objects are dicts of dicts)."""
    return loads(dumps(signature))


def open_canvases(canvases: list[dict[str, Any]], captured: list[Captured]) -> None:
    """Check each canvas, then open its job: the plan on the record, its first steps queued."""
    identity = _identity(captured)
    openings = [_opening(canvas, identity) for canvas in canvases]
    submissions = open_jobs(openings)
    for opening, submission in zip(openings, submissions, strict=True):
        if submission.new:
            metrics.count(metrics.JOBS_SUBMITTED, opening.job.pipeline)
        else:
            metrics.count(metrics.IDEMPOTENCY_HITS, opening.job.pipeline, "submit")


def _identity(captured: list[Captured]) -> tuple[str | None, str | None]:
    """The idempotency key and correlation id the producer gave (an option, or a header), if any."""
    key = correlation = None
    for send in captured:
        headers = send.options.get("headers") or {}
        key = key or send.options.get(IDEMPOTENCY_OPTION) or headers.get(IDEMPOTENCY_KEY)
        correlation = correlation or headers.get(CORRELATION_ID)
    if key is not None:
        check_key(key, "idempotency key", get_settings().max_key_length)
    return key, correlation


def _opening(canvas: dict[str, Any], identity: tuple[str | None, str | None]) -> Opening:
    stored = dumps(canvas)
    try:
        plan = from_signature(loads(stored), declaration)
    except (PlanError, ValueError) as error:
        raise UnsupportedCanvasError(f"{error}: nothing was published") from None
    plain = sorted(task for task in plan.tasks() if not is_stage(task))
    if plain:
        raise UnsupportedCanvasError(
            f"a canvas of vetro stages cannot include the plain Celery task {plain[0]!r}: make it a stage "
            f"(@stage), or send it on its own: nothing was published"
        )
    _check_limits(plan, len(stored))
    first = plan.pending({})
    job_id = str(uuid.uuid4())
    key, correlation = identity
    # The job's keys live under its first stage's pipeline.
    job = JobContext(job_id, key or job_id, correlation or job_id, stage_namespace(first[0].task))
    return Opening(ledger.Opening(job, None, stored, plan.task_ids(), longest_delay(first)), first)


def _check_limits(plan: Plan, size: int) -> None:
    """The canvas's arguments are held to the payload limits (size, depth, values) submit holds a payload to."""
    settings = get_settings()
    if size > settings.max_payload_bytes * 2:
        raise UnsupportedCanvasError(
            f"canvas of {size} bytes, over twice the limit of {settings.max_payload_bytes} "
            f"(VETRO_MAX_PAYLOAD_BYTES): nothing was published"
        )
    for leaf in plan.leaves():
        check_arguments({"args": list(leaf.args), "kwargs": dict(leaf.kwargs)}, f"{leaf.task} ({leaf.scope})")
