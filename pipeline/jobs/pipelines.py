"""Pipelines as declarations: vetro's shorthand for a canvas of stages, and one way to build a job's plan.

A declared pipeline is the stages in order, then an optional fan-out (the last stage plans it by
naming branches, the part runs once per branch, then the join), and a saga's compensations. It
runs on the same plan executor as any Celery canvas (pipeline.plan): `submit()` opens a job whose
plan is the declaration, and `pipeline.s(payload)` is a signature to put in a bigger canvas.

A declared pipeline's step has the task id '<job id>.<scope>', where the scope is the stage, or
'<stage>.<branch>' for a fan-out part: a retry, a redelivery or a replay of a step has the same id.

A saga declares compensations: when a step fails for good, the compensations of the steps
already recorded run, last first, each a guarded step of its own given the result of the
step it undoes. Which ones must run is fixed on the job's record when the failure happens, so
what is left of a compensation can also be worked out from the ledger alone.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import Any

from celery import Signature
from kombu.utils.json import loads
from pydantic_settings import BaseSettings

from pipeline.adapter.app import app
from pipeline.adapter.signatures import from_signature
from pipeline.plan import PIPELINE_TASK, Declared, Plan, from_declared
from settings import ConfigError, get_settings, read_settings
from settings.config import ENV_PREFIX, STALL_MARGIN_SECONDS, StagePolicy

_PIPELINES: dict[str, Pipeline] = {}
_STAGES: dict[str, Any] = {}  # every stage declared in this process, by task name
# Pipeline and stage names appear in environment variables (VETRO_STAGES__<PIPELINE>__<STAGE>__...).
NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
CANVAS_PLANS = 256  # parsed canvas plans kept per process (a job's steps often run in the same one)


def check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise ValueError(f"{kind} name {name!r}: use lower-case letters, digits and '_', starting with a letter")
    return name


def destination_of(scope: str) -> str | None:
    """The branch a step's scope names ('operate.billing' -> 'billing'); None for a step that is no part."""
    return scope.split(".", 1)[1] if "." in scope else None


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

    def declared(self) -> Declared:
        """The declaration as plain names, for the plan executor."""
        fan_out = (self.fan_out.part.name, self.fan_out.join.name) if self.fan_out else None
        undo = {task.name: undoing.name for task, undoing in self.compensations.items()}
        return Declared(self.name, tuple(task.name for task in self.stages), fan_out, undo)

    def signature(self, *args: Any, **options: Any) -> Signature:
        """The whole pipeline as one signature of a Celery canvas: `chain(fetch.s(), orders.s(), notify.s())`.

        Given no payload, it takes the previous step's result as its first stage's input.
        """
        return Signature(PIPELINE_TASK, args, {"name": self.name}, options, app=app)

    s = signature

    def stage_names(self) -> list[str]:
        return [task.stage for task in self.tasks()]

    def dependencies(self) -> set[str]:
        """The external dependencies its stages declare (the names breakers and rate limits use)."""
        return {name for task in self.tasks() for name in getattr(task, "dependencies", ())}


def register(pipeline: Pipeline) -> Pipeline:
    """Make a pipeline known to this process (its module calls this when imported)."""
    _PIPELINES[pipeline.name] = pipeline
    _longest_time_limit.cache_clear()
    declared_plan.cache_clear()
    return pipeline


def register_stage(task: Any) -> Any:
    """Make a stage known to this process (`@stage` calls this): its pipeline's name is a namespace of jobs
    even when no pipeline is declared for it (a team that composes its stages only with Celery's canvas)."""
    _STAGES[task.name] = task
    _longest_time_limit.cache_clear()
    return task


def namespaces() -> list[str]:
    """Every name jobs are kept under: the declared pipelines', and every stage's pipeline."""
    load_pipelines()
    return sorted(set(_PIPELINES) | {task.pipeline_name for task in _STAGES.values()})


def stage_tasks() -> dict[str, Any]:
    """Every stage the configured pipelines declare, by task name."""
    load_pipelines()
    return dict(sorted(_STAGES.items()))


def is_stage(name: str) -> bool:
    return name in _STAGES


def task_named(name: str) -> Any:
    """The Celery task a plan's step names, loading the pipelines' modules if this process has not yet."""
    if name not in app.tasks:
        load_pipelines()
    return app.tasks[name]


def stage_namespace(name: str) -> str:
    """The pipeline a stage's task belongs to: where the jobs it starts are kept."""
    return _STAGES[name].pipeline_name


def declaration(name: str) -> Declared:
    """A declared pipeline, as the plan executor reads it (`Pipeline.s()` inside a canvas names it)."""
    return get_pipeline(name).declared()


def plan_of(record: Mapping[str, str], payload: Any = None) -> Plan:
    """A job's plan from its ledger record: its canvas, or its pipeline's declaration given its payload."""
    stored = record.get("plan")
    if stored is not None:
        return canvas_plan(stored)
    return declared_plan(record["pipeline"]).given(payload)


@lru_cache(maxsize=CANVAS_PLANS)
def canvas_plan(stored: str) -> Plan:
    """A canvas's plan from the signature stored on its job's record (parsed once per process and job)."""
    return from_signature(loads(stored), declaration)


@cache
def declared_plan(name: str) -> Plan:
    """A declared pipeline's plan, built once per process (a job's payload is given to it when needed)."""
    return from_declared(declaration(name))


def load_pipelines() -> dict[str, Pipeline]:
    """Import every module VETRO_PIPELINES names (Python imports each once), read the settings classes they
    define, then check the settings' stage overrides and queues against what they declared; every entry
    point calls this, so a bad or unknown variable stops it at start-up, not at the first job."""
    modules = get_settings().pipelines
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise ConfigError(f"{ENV_PREFIX}PIPELINES: cannot import {module!r} ({error})") from None
    for settings_class in _settings_classes(modules):
        read_settings(settings_class)
    _check_named_stages("STAGES", get_settings().stages)
    _check_named_stages("QUEUES", get_settings().queues)
    return dict(_PIPELINES)


def _settings_classes(modules: list[str]) -> list[type[BaseSettings]]:
    """The settings classes (with a prefix of their own) defined in the pipelines' modules and their packages."""
    found, pending = [], list(BaseSettings.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        inside = any(cls.__module__ == module or cls.__module__.startswith(f"{module}.") for module in modules)
        if inside and cls.model_config.get("env_prefix"):
            found.append(cls)
    return sorted(found, key=lambda cls: cls.__qualname__)


def _check_named_stages(setting: str, named: Mapping[str, Mapping[str, Any]]) -> None:
    """A setting naming a pipeline or stage that does not exist is a mistake, not a no-op."""
    declared = {name: set(pipeline.stage_names()) for name, pipeline in _PIPELINES.items()}
    for task in _STAGES.values():
        declared.setdefault(task.pipeline_name, set()).add(task.stage)
    for pipeline, stages in named.items():
        if pipeline not in declared:
            known = ", ".join(sorted(declared)) or "none"
            raise ConfigError(f"{ENV_PREFIX}{setting}__{pipeline.upper()}: no pipeline {pipeline!r} (known: {known})")
        names = sorted(declared[pipeline])
        for stage in stages:
            if stage not in names:
                raise ConfigError(
                    f"{ENV_PREFIX}{setting}__{pipeline.upper()}__{stage.upper()}: pipeline {pipeline!r} has no "
                    f"stage {stage!r} (its stages: {', '.join(names)})"
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
    declared = {name for pipeline in load_pipelines().values() for name in pipeline.dependencies()}
    return sorted(declared | {name for task in _STAGES.values() for name in getattr(task, "dependencies", ())})


def stall_after() -> float:
    """Seconds without a sign of life after which a job counts as stalled.

    A running step ends within its hard time limit; a message held by a worker that died comes
    back after the visibility timeout; the margin absorbs clock skew and sweep delay.
    """
    return get_settings().visibility_timeout + _longest_time_limit() + STALL_MARGIN_SECONDS


def push_due_within() -> float:
    """How near its due time may be when a step of a job starts, before the step pushes it.

    From a step's claim, the reconciler must not look at the job before its next step has started:
    this step runs (up to the hard time limit, its lease held), then its successor's message may wait
    in a live worker for a free process (up to the limit again). A message held by a worker that died
    may be re-driven before the visibility timeout brings it back; its guard answers the copy.
    """
    return 2 * _longest_time_limit() + STALL_MARGIN_SECONDS


@cache
def _longest_time_limit() -> int:
    """Asked on every claim; the stages' limits change only when a stage or pipeline registers (which clears it)."""
    limits = [task.time_limit for pipeline in _PIPELINES.values() for task in pipeline.tasks()]
    limits += [task.time_limit for task in _STAGES.values()]
    return max(limits, default=StagePolicy().time_limit)
