"""Pipelines as declarations: the stages in order, then an optional fan-out, walked by the framework.

A pipeline is not a Celery canvas: vetro publishes each step itself once the step before it is
recorded. So the steps still to run can always be worked out from the ledger alone (the
job's payload and its recorded results), which is what lets the reconciler and replay
rebuild any job, whatever the broker dropped.

A step's task id is '<job id>.<scope>', where the scope is the stage, or '<stage>.<branch>'
for a fan-out part: a retry, a redelivery or a replay of a step has the same id.

A saga declares compensations: when a step fails for good, the compensations of the steps
already recorded run, last first, each a guarded step of its own given the result of the
step it undoes. Which ones must run (the plan) is fixed on the job's record when the failure
happens, so what is left of a compensation can also be worked out from the ledger alone.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache, cached_property
from typing import Any

from pipeline.failures import TechnicalError
from settings import ConfigError, get_settings
from settings.config import ENV_PREFIX, STALL_MARGIN_SECONDS, StagePolicy

_PIPELINES: dict[str, Pipeline] = {}
BRANCH_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Pipeline and stage names appear in environment variables (VETRO_STAGES__<PIPELINE>__<STAGE>__...).
NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


def check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise ValueError(f"{kind} name {name!r}: use lower-case letters, digits and '_', starting with a letter")
    return name


class Role(StrEnum):
    STEP = "step"  # a stage of the sequence, followed by the next one
    PLANNER = "planner"  # the last stage of the sequence when a fan-out follows: its result names the branches
    PART = "part"  # the fan-out's stage, run once per branch
    LAST = "last"  # the stage whose recorded result completes the job (the join, or the sequence's end)
    UNDO = "undo"  # a compensation: undoes a recorded step of a job that failed for good


def task_id(job_id: str, scope: str) -> str:
    return f"{job_id}.{scope}"


def destination_of(scope: str) -> str | None:
    """The branch a step's scope names ('operate.billing' -> 'billing'); None for a step that is no part."""
    return scope.split(".", 1)[1] if "." in scope else None


@dataclass(frozen=True)
class Step:
    """One message to publish: a stage's task, the step's scope and its arguments."""

    task: Any
    scope: str
    args: tuple


@dataclass(frozen=True)
class FanOut:
    """`part(part_input, branch)` once per branch the planner plans, then `join([results in branch order])`.

    The planner returns either a list of branch names, each part then getting the planner's own
    input (orders: one delivery per destination), or a mapping of branch name to that part's
    input (provider sync: one part per page, carrying the page's records).
    """

    part: Any
    join: Any


@dataclass(frozen=True)
class Pipeline:
    """A named sequence of stages; with a fan-out, the last stage of the sequence plans it.

    `compensations` maps a stage of the sequence to the stage that undoes it (a saga).
    """

    name: str
    stages: Sequence[Any]
    fan_out: FanOut | None = None
    compensations: Mapping[Any, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_name("pipeline", self.name)
        if not self.stages:
            raise ValueError(f"pipeline {self.name!r} has no stages")
        if self.compensations and self.fan_out:
            # A failing part would leave its sibling parts running while the sequence is undone.
            raise ValueError(f"pipeline {self.name!r}: compensations are for pipelines without a fan-out")
        for task in self.compensations:
            if task not in self.stages:
                raise ValueError(f"pipeline {self.name!r}: {task.name} is compensated but is not one of its stages")
        for task in self.tasks():
            if getattr(task, "pipeline_name", self.name) != self.name:
                raise ValueError(f"stage {task.name} belongs to pipeline {task.pipeline_name!r}, not {self.name!r}")
        names = [task.stage for task in self.tasks()]
        if len(set(names)) != len(names):
            raise ValueError(f"pipeline {self.name!r} names a stage twice: {names}")

    def tasks(self) -> list[Any]:
        fan_out = (self.fan_out.part, self.fan_out.join) if self.fan_out else ()
        return [*self.stages, *fan_out, *self.compensations.values()]

    @cached_property
    def _roles(self) -> dict[str, Role]:
        """Each stage's role, worked out once (every message asks)."""
        roles = {task.stage: Role.STEP for task in self.stages}
        roles[self.stages[-1].stage] = Role.PLANNER if self.fan_out else Role.LAST
        if self.fan_out:
            roles[self.fan_out.part.stage] = Role.PART
            roles[self.fan_out.join.stage] = Role.LAST
        return roles | dict.fromkeys(self._undoes, Role.UNDO)

    def role(self, stage: str) -> Role:
        try:
            return self._roles[stage]
        except KeyError:
            raise ValueError(f"pipeline {self.name!r} has no stage {stage!r}") from None

    def scope(self, stage: str, args: tuple) -> str:
        """The guarded step a message runs: the stage, plus its branch (the last argument) for a part."""
        return f"{stage}.{args[-1]}" if self.role(stage) is Role.PART else stage

    def first(self, payload: Any) -> Step:
        task = self.stages[0]
        return Step(task, task.stage, (payload,))

    def after(self, stage: str, args: tuple, result: Any) -> list[Step]:
        """The steps a recorded step starts (the join is started by the fan-in, not here)."""
        role = self.role(stage)
        if role is Role.STEP:
            names = [task.stage for task in self.stages]
            task = self.stages[names.index(stage) + 1]
            return [Step(task, task.stage, (result,))]
        if role is Role.PLANNER:
            return self.parts(args[0], result) or [self.join([])]
        return []

    def parts(self, planner_input: Any, planned: Any) -> list[Step]:
        """One step per planned branch, with the part's input: the mapping's value, else the planner's input."""
        part = self.fan_out.part
        inputs = planned if isinstance(planned, dict) else dict.fromkeys(check_branches(planned), planner_input)
        return [Step(part, f"{part.stage}.{branch}", (inputs[branch], branch)) for branch in check_branches(planned)]

    def join(self, part_results: list[Any]) -> Step:
        return Step(self.fan_out.join, self.fan_out.join.stage, (part_results,))

    @property
    def _undoes(self) -> dict[str, str]:
        """Each compensation's stage name, and the stage it undoes."""
        return {undo.stage: task.stage for task, undo in self.compensations.items()}

    def compensation_plan(self, results: dict[str, Any]) -> list[str]:
        """The compensations a failure now calls for: those of the recorded steps, last first."""
        recorded = [task for task in self.stages if task.stage in results]
        return [self.compensations[task].stage for task in reversed(recorded) if task in self.compensations]

    def pending_compensation(self, plan: list[str], results: dict[str, Any]) -> list[Step]:
        """The next compensation of `plan` not yet recorded, given the result it undoes; [] when all ran."""
        tasks = {undo.stage: undo for undo in self.compensations.values()}
        for name in plan:
            if name not in results:
                return [Step(tasks[name], name, (results[self._undoes[name]],))]
        return []

    def stage_names(self) -> list[str]:
        return [task.stage for task in self.tasks()]

    def dependencies(self) -> set[str]:
        """The external dependencies its stages declare (the names breakers and rate limits use)."""
        return {name for task in self.tasks() for name in getattr(task, "dependencies", ())}

    def part_scopes(self, branches: list[str]) -> list[str]:
        return [f"{self.fan_out.part.stage}.{branch}" for branch in branches]

    def pending(self, payload: Any, results: dict[str, Any]) -> list[Step]:
        """The steps to run next, given the job's payload and recorded results; [] when it is complete."""
        step_input = payload
        for task in self.stages:
            if task.stage not in results:
                return [Step(task, task.stage, (step_input,))]
            planner_input, step_input = step_input, results[task.stage]
        if not self.fan_out:
            return []
        missing = [step for step in self.parts(planner_input, step_input) if step.scope not in results]
        if missing:
            return missing
        if self.fan_out.join.stage in results:
            return []
        return [self.join([results[scope] for scope in self.part_scopes(check_branches(step_input))])]


def check_branches(planned: Any) -> list[str]:
    """The planner's branch names (a list, or a mapping's keys): distinct short names of letters, digits, '_', '-'."""
    names = list(planned) if isinstance(planned, dict) else planned
    if not isinstance(names, list) or not all(isinstance(b, str) and BRANCH_NAME.match(b) for b in names):
        raise TechnicalError(
            f"a fan-out planner must return branch names (a list, or a mapping to each part's input), "
            f"got {planned!r:.200}"
        )
    if len(set(names)) != len(names):
        raise TechnicalError(f"a fan-out planner returned a branch twice: {planned!r:.200}")
    return names


def register(pipeline: Pipeline) -> Pipeline:
    """Make a pipeline known to this process (its module calls this when imported)."""
    _PIPELINES[pipeline.name] = pipeline
    _longest_time_limit.cache_clear()
    return pipeline


def load_pipelines() -> dict[str, Pipeline]:
    """Import every module VETRO_PIPELINES names (Python imports each once), then check the
    settings' stage overrides against what they declared; every entry point calls this."""
    for module in get_settings().pipelines:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise ConfigError(f"{ENV_PREFIX}PIPELINES: cannot import {module!r} ({error})") from None
    _check_overrides()
    return dict(_PIPELINES)


def _check_overrides() -> None:
    """An override naming a pipeline or stage that does not exist is a mistake, not a no-op."""
    for pipeline, stages in get_settings().stages.items():
        if pipeline not in _PIPELINES:
            known = ", ".join(sorted(_PIPELINES)) or "none"
            raise ConfigError(f"{ENV_PREFIX}STAGES__{pipeline.upper()}: no pipeline {pipeline!r} (known: {known})")
        names = _PIPELINES[pipeline].stage_names()
        for stage in stages:
            if stage not in names:
                raise ConfigError(
                    f"{ENV_PREFIX}STAGES__{pipeline.upper()}__{stage.upper()}: pipeline {pipeline!r} has no stage "
                    f"{stage!r} (its stages: {', '.join(names)})"
                )


def get_pipeline(name: str) -> Pipeline:
    if name not in _PIPELINES:
        load_pipelines()
    try:
        return _PIPELINES[name]
    except KeyError:
        known = ", ".join(sorted(_PIPELINES)) or "none"
        raise ValueError(f"unknown pipeline {name!r}; known: {known} (VETRO_PIPELINES)") from None


def dependencies() -> list[str]:
    """Every external dependency the loaded pipelines declare."""
    return sorted({name for pipeline in load_pipelines().values() for name in pipeline.dependencies()})


def stall_after() -> float:
    """Seconds without a sign of life after which a job counts as stalled.

    A running step ends within its hard time limit; a message held by a worker that died comes
    back after the visibility timeout; the margin absorbs clock skew and sweep delay.
    """
    return get_settings().visibility_timeout + _longest_time_limit() + STALL_MARGIN_SECONDS


@cache
def _longest_time_limit() -> int:
    """Asked on every claim; the stages' limits change only when a pipeline registers (which clears it)."""
    limits = [task.time_limit for pipeline in _PIPELINES.values() for task in pipeline.tasks()]
    return max(limits, default=StagePolicy().time_limit)
