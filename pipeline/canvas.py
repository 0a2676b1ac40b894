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
from pipeline.idempotency import Guard

_PIPELINES: dict[str, Pipeline] = {}


def stage_task_id(job_id: str, stage: str, destination: str | None = None) -> str:
    return f"{job_id}.{stage}" + (f".{destination}" if destination else "")


def job_id_of(task_id: str) -> str:
    """The job a stage's task id belongs to (job ids are UUIDs, which have no dots)."""
    return task_id.split(".", 1)[0]


@dataclass(frozen=True)
class FanOut:
    """One `part` per destination in parallel, then `join` once with all their results (a chord).

    `planner` is the stage whose recorded result lists the destinations, so a replay of one
    part can rebuild the whole fan-out: the parts that already succeeded answer from their
    guards, and the join gets every destination's result.
    """

    part: Any  # a Stage task taking (payload, destination)
    join: Any  # a Stage task taking the list of the parts' results
    planner: str

    def publish(self, job: JobContext, payload: Any, destinations: Sequence[str]) -> None:
        group_id = stage_task_id(job.job_id, "fanout") + (f".replay{job.replay}" if job.replay else "")
        header = group(
            self.part.si(payload, destination).set(
                task_id=stage_task_id(job.job_id, self.part.stage, destination), headers=job.headers()
            )
            for destination in destinations
        ).set(task_id=group_id)
        chord(header, self.join.s()).apply_async(task_id=stage_task_id(job.job_id, self.join.stage))


@dataclass(frozen=True)
class Pipeline:
    """A named sequence of stages, the last of which may start a fan-out."""

    name: str
    stages: Sequence[Any]  # Stage tasks, in order
    fan_out: FanOut | None = None

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

    def replay(self, stage: str, destination: str | None, step_input: dict[str, Any], job: JobContext) -> None:
        """Re-enter the pipeline at `stage` with the failed step's input."""
        args, kwargs = step_input.get("args", []), step_input.get("kwargs", {})
        fan_out = self.fan_out
        if stage in self.stage_names():
            self.signature(args[0], job, start_stage=stage).apply_async()
        elif fan_out and stage == fan_out.part.stage:
            planned = Guard(job.idempotency_key, fan_out.planner).result()
            fan_out.publish(job, args[0], planned or [destination])
        elif fan_out and stage == fan_out.join.stage:
            task_id = stage_task_id(job.job_id, stage)
            fan_out.join.si(*args, **kwargs).set(task_id=task_id, headers=job.headers()).apply_async()
        else:
            raise ValueError(f"pipeline {self.name!r} has no stage {stage!r}")


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
