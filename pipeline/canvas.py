"""Pipelines as Celery canvases, with task ids derived from the job so duplicates are recognisable.

A stage's task id is '<job id>.<stage>[.<destination>]': a retry, a redelivery or a replay of
the same step has the same id, which Celery's chord counter and Flower both key on.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from celery import Signature, chain, chord, group

from pipeline.app import TASK_MODULES
from pipeline.context import JobContext

_PIPELINES: dict[str, Pipeline] = {}


def stage_task_id(job_id: str, stage: str, destination: str | None = None) -> str:
    return f"{job_id}.{stage}" + (f".{destination}" if destination else "")


def job_id_of(task_id: str) -> str:
    """The job a stage's task id belongs to (job ids are UUIDs, which have no dots)."""
    return task_id.split(".", 1)[0]


@dataclass(frozen=True)
class Pipeline:
    """A named sequence of stages; the last one may fan out (see `fan_out`)."""

    name: str
    stages: Sequence[Any]  # Stage tasks, in order

    def stage_names(self) -> list[str]:
        return [task.stage for task in self.stages]

    def signature(self, payload: Any, job: JobContext, start_stage: str | None = None) -> Signature:
        """The chain from `start_stage` (default: the first) to the end, carrying the job's headers."""
        names = self.stage_names()
        start = names.index(start_stage) if start_stage else 0
        first, *rest = self.stages[start:]
        steps = [first.si(payload).set(task_id=stage_task_id(job.job_id, first.stage), headers=job.headers())]
        steps += [task.s().set(task_id=stage_task_id(job.job_id, task.stage)) for task in rest]
        return chain(*steps) if len(steps) > 1 else steps[0]


def fan_out(job: JobContext, parts: dict[str, Signature], then: Signature) -> None:
    """Run one signature per destination in parallel, then `then` once with all their results."""
    header = group(
        sig.set(task_id=stage_task_id(job.job_id, _stage_of(sig), destination)) for destination, sig in parts.items()
    ).set(task_id=stage_task_id(job.job_id, "fanout"))
    chord(header, then).apply_async(task_id=stage_task_id(job.job_id, _stage_of(then)))


def _stage_of(sig: Signature) -> str:
    return sig.task.rsplit(".", 1)[-1]


def register(pipeline: Pipeline) -> Pipeline:
    _PIPELINES[pipeline.name] = pipeline
    return pipeline


def get_pipeline(name: str) -> Pipeline:
    if not _PIPELINES:
        for module in TASK_MODULES:
            importlib.import_module(module)
    try:
        return _PIPELINES[name]
    except KeyError:
        raise ValueError(f"unknown pipeline {name!r}; known: {', '.join(sorted(_PIPELINES))}") from None
