"""A job's plan: the tree of steps it runs, and what runs next, as plain data and functions.

One engine runs every job. A plan is built either from a Celery canvas, as Celery serializes it
(pipeline.adapter.signatures: a task, `chain`, `group`, `chord`, nested, with `link` callbacks), or
from a declared pipeline (`from_declared`: a sequence, then a fan-out its planner names, then a join).
Nothing here imports Celery: a plan is a tree of `Leaf`, `Chain`, `Group`, `Chord` and `FanOut`.

Each leaf is one guarded step, named by its scope: the stage's name, with '-2', '-3' when a stage
appears more than once; a fan-out part's scope adds its branch ('operate.billing'). Its task id is
Celery's own (frozen by the canvas, so `AsyncResult` finds it) or '<job id>.<scope>'.

Given the recorded results, the plan says:
- what a job still needs (`pending`): the reconciler, replay and the upgrade path use it;
- what the record of one step starts (`route`): the next step of its chain, started with its
  result (sent with the record), or the fan-ins it may complete (a group, a chord's header, a
  fan-out's parts), each a set of terminal scopes that the record script checks atomically, so
  exactly one of a group's last steps starts what follows it;
- what a completed fan-in starts (`after_join`), and the result of any node (`result_of`).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Union

BRANCH_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
PIPELINE_TASK = "vetro.pipeline"  # a declared pipeline as one signature of a canvas (see pipeline.jobs.pipelines)
DELAY_OPTIONS = ("countdown", "eta")
KEPT_OPTIONS = (*DELAY_OPTIONS, "queue", "priority")  # per-signature options a step's message carries


class PlanError(ValueError):
    """A canvas or declaration vetro cannot run as a plan; the message is one line."""


class PlannerError(ValueError):
    """A fan-out planner's result names no valid branches (the step fails as technical)."""


@dataclass(frozen=True, eq=False)
class Leaf:
    """One step: a task called with the input its place in the plan gives it, then its own `args`."""

    scope: str
    task: str
    args: tuple = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    immutable: bool = False  # `.si()`: the previous result is not passed
    task_id: str | None = None  # Celery's frozen id; None: '<job id>.<scope>'
    options: Mapping[str, Any] = field(default_factory=dict)  # KEPT_OPTIONS given on the signature
    links: tuple[Node, ...] = ()  # callbacks started with this step's result (Celery's `link`)
    errbacks: tuple[Node, ...] = ()  # started with this step's task id when it fails for good (`link_error`)


@dataclass(frozen=True, eq=False)
class Chain:
    children: tuple[Node, ...]
    task_id: str | None = None


@dataclass(frozen=True, eq=False)
class Group:
    children: tuple[Node, ...]
    task_id: str | None = None


@dataclass(frozen=True, eq=False)
class Chord:
    header: Group
    body: Node
    task_id: str | None = None


@dataclass(frozen=True, eq=False)
class FanOut:
    """A declared pipeline's fan-out: the planner's result names the branches; `part` runs once per branch
    as `part(input, branch)`, then `join([results in branch order])`."""

    planner: Leaf
    part: Leaf  # a template: scope '<part scope>.<branch>' per branch
    join: Leaf
    task_id: str | None = None


Node = Union[Leaf, Chain, Group, Chord, FanOut]  # noqa: UP007 (a runtime alias the dataclasses name)


@dataclass(frozen=True)
class Step:
    """One message to publish: a task, the step's scope and task id, its arguments and options."""

    task: str
    scope: str
    args: tuple
    kwargs: Mapping[str, Any]
    task_id: str | None  # None: '<job id>.<scope>'
    options: Mapping[str, Any] = field(default_factory=dict)

    def id_in(self, job_id: str) -> str:
        return self.task_id or task_id(job_id, self.scope)


@dataclass(frozen=True)
class Declared:
    """A declared pipeline, as plain names (pipeline.jobs.pipelines.Pipeline.declared builds it)."""

    name: str
    stages: tuple[str, ...]  # task names, in order
    fan_out: tuple[str, str] | None = None  # (part, join) task names
    compensations: Mapping[str, str] = field(default_factory=dict)  # task name -> the task that undoes it


Declarations = Callable[[str], Declared]


def task_id(job_id: str, scope: str) -> str:
    """A step's task id when Celery did not freeze one: '<job id>.<scope>' (a retry, a redelivery, a replay
    of the step has the same)."""
    return f"{job_id}.{scope}"


def short_name(task: str) -> str:
    """A stage's name within its pipeline: 'orders.validate' -> 'validate'."""
    return task.rsplit(".", 1)[-1]


class Namer:
    """Scopes unique within a plan: a stage's name, then '-2', '-3' for its later uses."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def __call__(self, base: str) -> str:
        scope, n = base, 1
        while scope in self.used:
            n += 1
            scope = f"{base}-{n}"
        self.used.add(scope)
        return scope


@dataclass(frozen=True)
class Level:
    """A fan-in a step may complete: done when every one of `terminals` is recorded.

    The record script counts recorded terminals in the job record's field `counter`.
    """

    node: Node | None  # None: the whole job (its last steps, and every callback's)
    terminals: tuple[str, ...]
    counter: str = ""

    @property
    def size(self) -> int:
        return len(self.terminals)


@dataclass(frozen=True)
class Route:
    """What recording one step starts.

    `next`: steps started at once with its result (sent with the record). `levels`: the fan-ins it
    may complete, inner first; when the record completes all of them, `then` starts (a node, given
    the completed fan-in's result), or, when `then` is None and the last level is the job's, the job
    is complete.
    """

    next: list[Step]
    levels: list[Level]
    then: Node | None = None
    then_input: Node | None = None  # the node whose result is `then`'s input


class Plan:
    """A job's plan: its root node, the job's input, and a saga's compensations (declared pipelines only)."""

    def __init__(
        self,
        root: Node,
        root_input: tuple = (),
        compensations: Mapping[str, Leaf] | None = None,
        declared: bool = False,
    ) -> None:
        self.root = root
        self.declared = declared  # a declared pipeline's own plan (its job records have the first format's fields)
        self.root_input = root_input
        self.compensations = dict(compensations or {})  # scope of a step -> the leaf that undoes it
        self._parents: dict[int, tuple[Node | None, int]] = {}
        self._leaves: dict[str, Leaf] = {}
        self._by_id: dict[str, Node] = {}
        self._in_errback: set[str] = set()  # scopes of the steps of errbacks
        self._index(root, None, 0)
        for undo in self.compensations.values():
            self._leaves[undo.scope] = undo

    def given(self, payload: Any) -> Plan:
        """This declared plan, for a job whose first stage's input is `payload` (the tree is shared)."""
        plan = copy.copy(self)
        plan.root_input = (payload,)
        return plan

    def _index(self, node: Node, parent: Node | None, position: int) -> None:
        self._parents[id(node)] = (parent, position)
        if node.task_id:
            self._by_id[node.task_id] = node
        if isinstance(node, Leaf):
            self._leaves[node.scope] = node
            for n, link in enumerate(node.links):
                self._index(link, node, n)
            for errback in node.errbacks:
                self._index(errback, None, 0)
                self._in_errback.update(leaf.scope for leaf in _leaves_of(errback))
        else:
            for n, child in enumerate(_children(node)):
                self._index(child, node, n)

    # -- looking things up

    def leaf(self, scope: str) -> Leaf | None:
        """The leaf a scope names ('operate.billing' names the fan-out's part 'operate')."""
        found = self._leaves.get(scope)
        if found is None and "." in scope:
            found = self._leaves.get(scope.split(".", 1)[0])
            return found if found is not None and self._fan_out_of_part(found) is not None else None
        return found

    def node_by_task_id(self, frozen: str) -> Node | None:
        return self._by_id.get(frozen)

    def task_id_of(self, job_id: str, scope: str) -> str:
        """The task id a step of this plan runs under: Celery's own for a canvas's step, else '<job id>.<scope>'."""
        leaf = self.leaf(scope)
        own = leaf.task_id if leaf is not None and leaf.scope == scope else None
        return own or task_id(job_id, scope)

    def task_ids(self) -> tuple[str, ...]:
        """The Celery task ids its nodes answer to (frozen by the canvas)."""
        return tuple(self._by_id)

    def leaves(self) -> list[Leaf]:
        return list(self._leaves.values())

    def tasks(self) -> set[str]:
        return {leaf.task for leaf in self._leaves.values()}

    @cached_property
    def first_scopes(self) -> frozenset[str]:
        """The steps a job starts with (the first record of any of them starts its results' lifetime)."""
        return frozenset(step.scope for step in start(self.root, (), {}))

    def scope_for(self, task: str, args: tuple) -> str | None:
        """The scope of a task's step in a declared plan (a part's adds its branch, its last argument)."""
        for leaf in self._leaves.values():
            if leaf.task == task:
                return f"{leaf.scope}.{args[-1]}" if self._fan_out_of_part(leaf) is not None and args else leaf.scope
        return None

    def _fan_out_of_part(self, leaf: Leaf) -> FanOut | None:
        parent, _ = self._parents.get(id(leaf), (None, 0))
        return parent if isinstance(parent, FanOut) and parent.part is leaf else None

    def fan_out_of_part(self, scope: str) -> FanOut | None:
        leaf = self.leaf(scope)
        return self._fan_out_of_part(leaf) if leaf is not None else None

    def planner_of(self, scope: str) -> Leaf | None:
        """The planner whose result names this part's branch (None for a step that is no part)."""
        fan_out = self.fan_out_of_part(scope) if "." in scope else None
        return fan_out.planner if fan_out else None

    def is_planner(self, scope: str) -> bool:
        leaf = self._leaves.get(scope)
        parent = self._parents.get(id(leaf), (None, 0))[0] if leaf else None
        return isinstance(parent, FanOut) and parent.planner is leaf

    def branches_field(self, planner: str) -> str:
        """The job record's field holding the branches a planner named: a declared pipeline's one fan-out keeps
        them in 'branches' (as jobs of the first format do), a canvas's under each planner's scope."""
        return "branches" if self.declared else f"branches:{planner}"

    def is_errback(self, scope: str) -> bool:
        return scope in self._in_errback

    def errbacks(self, failed: str, failed_task_id: str) -> list[Step]:
        """The first steps of the errbacks of a step that failed for good, given its task id (Celery's calling)."""
        leaf = self.leaf(failed)
        return [step for errback in (leaf.errbacks if leaf else ()) for step in start(errback, (failed_task_id,), {})]

    def pending_errbacks(self, failed: str, failed_task_id: str, results: Mapping[str, Any]) -> list[Step]:
        """What the errbacks of a failed step still need; [] once they have all run."""
        leaf = self.leaf(failed)
        errbacks = leaf.errbacks if leaf else ()
        return [step for errback in errbacks for step in _walk(errback, (failed_task_id,), results, self)[2]]

    def is_compensation(self, scope: str) -> bool:
        return any(undo.scope == scope for undo in self.compensations.values())

    def is_first(self, scope: str) -> bool:
        return scope in self.first_scopes

    # -- the job's completion

    @cached_property
    def job_terminals(self) -> tuple[str, ...]:
        """The steps whose records, all together, complete the job: its last steps, and every callback's."""
        found = list(terminals(self.root))
        for leaf in self._leaves.values():
            for link in leaf.links:
                found += [scope for scope in terminals(link) if scope not in found]
        return tuple(found)

    # -- what a record starts

    def route(self, scope: str, args: tuple, result: Any, branches: list[str] | None = None) -> Route:
        """What recording `scope` (run with `args`, returning `result`) starts; `branches`: a part's planned ones."""
        leaf = self.leaf(scope)
        if leaf is None:
            raise PlanError(f"the job's plan has no step {scope!r}")
        if self.is_compensation(scope):
            return Route([], [])
        if scope in self._in_errback:  # an errback's chain goes on; the job has already failed
            parent, position = self._parents[id(leaf)]
            if isinstance(parent, Chain) and position + 1 < len(parent.children):
                return Route(start(parent.children[position + 1], (result,), {}), [])
            return Route([], [])
        following = [step for link in leaf.links for step in start(link, (result,), {})]
        levels: list[Level] = []
        node: Node = leaf
        if "." in scope:  # a fan-out part: its parts, then the join
            fan_out = self.fan_out_of_part(scope)
            parts = tuple(f"{fan_out.part.scope}.{branch}" for branch in branches or ())
            # A declared pipeline's jobs count their parts in 'parts_done' (jobs of the first format too).
            counter = "parts_done" if self.declared else f"fanin:{fan_out.planner.scope}.parts"
            return Route(following, [Level(fan_out, parts, counter)], fan_out.join, None)
        while True:
            parent, position = self._parents[id(node)]
            if parent is None or isinstance(parent, Leaf):  # the job's end, or a callback's chain ended
                levels.append(Level(None, self.job_terminals, "fanin:job"))
                return Route(following, _merged(levels))
            if isinstance(parent, Chain):
                if position + 1 < len(parent.children):
                    successor = parent.children[position + 1]
                    if not levels:
                        return Route(following + start(successor, (result,), {}), [])
                    return Route(following, _merged(levels), successor, node)
            elif isinstance(parent, Group):
                found = terminals(parent)
                levels.append(Level(parent, found, f"fanin:{found[0]}#{len(found)}"))
            elif isinstance(parent, Chord) and node is parent.header:
                return Route(following, _merged(levels), parent.body, parent.header)
            elif isinstance(parent, FanOut) and node is parent.planner:
                return Route(following + self.parts(parent, args, result), [])
            node = parent

    def parts(self, fan_out: FanOut, planner_args: tuple, planned: Any) -> list[Step]:
        """One step per planned branch, with the part's input: the mapping's value, else the planner's input."""
        names = check_branches(planned)
        if not names:
            return start(fan_out.join, ([],), {})
        given = planner_args[:1] if planner_args else ()
        inputs = planned if isinstance(planned, dict) else dict.fromkeys(names, given[0] if given else None)
        part = fan_out.part
        return [_step(part, (inputs[branch], branch), f"{part.scope}.{branch}") for branch in names]

    def after_join(self, route: Route, results: Mapping[str, Any]) -> list[Step]:
        """What a completed fan-in starts, given the recorded results it needs (see `needed`)."""
        if route.then is None:
            return []
        if isinstance(route.levels[-1].node, FanOut):
            fan_out = route.levels[-1].node
            parts = route.levels[-1].terminals
            return start(fan_out.join, ([results[scope] for scope in parts],), results)
        return start(route.then, (result_of(route.then_input, results),), results)

    def needed(self, route: Route) -> list[str]:
        """The scopes whose results `after_join` reads."""
        if route.then is None:
            return []
        if isinstance(route.levels[-1].node, FanOut):
            return list(route.levels[-1].terminals)
        return list(terminals(route.then_input))

    # -- what a job still needs

    def pending(self, results: Mapping[str, Any]) -> list[Step]:
        """The steps to run next given the recorded results; [] when the job is complete."""
        _, _, steps = _walk(self.root, self.root_input, results, self)
        return steps

    def compensation_plan(self, results: Mapping[str, Any]) -> list[str]:
        """The compensations a failure now calls for: those of the recorded steps, last first."""
        recorded = [scope for scope in _sequence(self.root) if scope in results]
        return [self.compensations[scope].scope for scope in reversed(recorded) if scope in self.compensations]

    def pending_compensation(self, plan: list[str], results: Mapping[str, Any]) -> list[Step]:
        """The next compensation of `plan` not yet recorded, given the result it undoes; [] when all ran."""
        undone = {undo.scope: scope for scope, undo in self.compensations.items()}
        for name in plan:
            if name not in results:
                undo = self._leaves[name]
                return [_step(undo, (results[undone[name]],), name)]
        return []


def _merged(levels: list[Level]) -> list[Level]:
    """Consecutive levels with the same terminals are one check (the outer one: it may be the job's)."""
    merged: list[Level] = []
    for level in levels:
        if merged and set(merged[-1].terminals) == set(level.terminals):
            merged[-1] = level
        else:
            merged.append(level)
    return merged


def _children(node: Node) -> tuple[Node, ...]:
    if isinstance(node, Chain | Group):
        return node.children
    if isinstance(node, Chord):
        return (node.header, node.body)
    if isinstance(node, FanOut):
        return (node.planner, node.part, node.join)
    return ()


def _sequence(node: Node) -> Iterator[str]:
    """The scopes of a declared sequence, in order (compensations are for sequences only)."""
    if isinstance(node, Leaf):
        yield node.scope
    elif isinstance(node, Chain):
        for child in node.children:
            yield from _sequence(child)


def terminals(node: Node) -> tuple[str, ...]:
    """The steps whose records, together, complete the node."""
    if isinstance(node, Leaf):
        return (node.scope,)
    if isinstance(node, Chain):
        return terminals(node.children[-1])
    if isinstance(node, Group):
        return tuple(scope for child in node.children for scope in terminals(child))
    if isinstance(node, Chord):
        return terminals(node.body)
    return (node.join.scope,)


def result_of(node: Node, results: Mapping[str, Any]) -> Any:
    """A completed node's result: a step's own, a chain's last, a group's list, a chord's or fan-out's join."""
    if isinstance(node, Leaf):
        return results[node.scope]
    if isinstance(node, Chain):
        return result_of(node.children[-1], results)
    if isinstance(node, Group):
        return [result_of(child, results) for child in node.children]
    if isinstance(node, Chord):
        return result_of(node.body, results)
    return results[node.join.scope]


def _step(leaf: Leaf, given: tuple, scope: str | None = None) -> Step:
    args = tuple(leaf.args) if leaf.immutable else (*given, *leaf.args)
    task_id = leaf.task_id if scope is None or scope == leaf.scope else None
    return Step(leaf.task, scope or leaf.scope, args, dict(leaf.kwargs), task_id, dict(leaf.options))


def start(node: Node, given: tuple, results: Mapping[str, Any]) -> list[Step]:
    """The first steps of a node started with input `given` (a chain passes it to its first child)."""
    if isinstance(node, Leaf):
        return [_step(node, given)]
    if isinstance(node, Chain):
        return start(node.children[0], given, results)
    if isinstance(node, Group):
        return [step for child in node.children for step in start(child, given, results)]
    if isinstance(node, Chord):
        return start(node.header, given, results)
    return start(node.planner, given, results)


def _walk(node: Node, given: tuple, results: Mapping[str, Any], plan: Plan) -> tuple[bool, Any, list[Step]]:
    """(complete, its result, the steps to run now) for a node started with `given`."""
    if isinstance(node, Leaf):
        if node.scope not in results:
            return False, None, [_step(node, given)]
        result = results[node.scope]
        callbacks = [step for link in node.links for step in _walk(link, (result,), results, plan)[2]]
        return True, result, callbacks
    if isinstance(node, Chain):
        steps: list[Step] = []
        for child in node.children:
            done, result, more = _walk(child, given, results, plan)
            steps += more
            if not done:
                return False, None, steps
            given = (result,)
        return True, given[0], steps
    if isinstance(node, Group):
        walked = [_walk(child, given, results, plan) for child in node.children]
        steps = [step for _, _, more in walked for step in more]
        done = all(done for done, _, _ in walked)
        return done, [result for _, result, _ in walked] if done else None, steps
    if isinstance(node, Chord):
        done, header, steps = _walk(node.header, given, results, plan)
        if not done:
            return False, None, steps
        done, result, more = _walk(node.body, (header,), results, plan)
        return done, result, steps + more
    done, planned, steps = _walk(node.planner, given, results, plan)
    if not done:
        return False, None, steps
    branches = check_branches(planned)
    parts = plan.parts(node, _step(node.planner, given).args, planned) if branches else []
    missing = [step for step in parts if step.scope not in results]
    if missing:
        return False, None, steps + missing
    done, result, more = _walk(node.join, ([results[step.scope] for step in parts],), results, plan)
    return done, result, steps + more


def outline(node: Node, status: Callable[[str], str], branches: Callable[[str], list[str]]) -> dict[str, Any]:
    """The plan's shape, each step with its status, for `vetro job show` (`branches(planner)`: its parts)."""
    if isinstance(node, Leaf):
        shown: dict[str, Any] = {"step": node.scope, "task": node.task, "status": status(node.scope)}
        if node.links:
            shown["then"] = [outline(link, status, branches) for link in node.links]
        return shown
    if isinstance(node, Chain | Group):
        kind = "chain" if isinstance(node, Chain) else "group"
        return {kind: [outline(child, status, branches) for child in node.children]}
    if isinstance(node, Chord):
        return {"chord": outline(node.header, status, branches)["group"], "body": outline(node.body, status, branches)}
    part = node.part
    parts = [
        {"step": f"{part.scope}.{branch}", "task": part.task, "status": status(f"{part.scope}.{branch}")}
        for branch in branches(node.planner.scope)
    ]
    return {
        "fan_out": outline(node.planner, status, branches),
        "parts": parts,
        "join": outline(node.join, status, branches),
    }


def check_branches(planned: Any) -> list[str]:
    """The planner's branch names (a list, or a mapping's keys): distinct short names of letters, digits, '_', '-'."""
    names = list(planned) if isinstance(planned, dict) else planned
    if not isinstance(names, list) or not all(isinstance(b, str) and BRANCH_NAME.match(b) for b in names):
        raise PlannerError(
            f"a fan-out planner must return branch names (a list, or a mapping to each part's input), "
            f"got {planned!r:.200}"
        )
    if len(set(names)) != len(names):
        raise PlannerError(f"a fan-out planner returned a branch twice: {planned!r:.200}")
    return names


# -- building plans


def from_declared(declared: Declared, payload: Any | None = None, namer: Namer | None = None) -> Plan:
    """The plan of a declared pipeline submitted with `payload` (its first stage's input)."""
    namer = namer or Namer()
    node = declared_node(declared, namer, (), None)
    scopes = {leaf.task: leaf.scope for leaf in _leaves_of(node)}
    compensations = {scopes[task]: Leaf(namer(short_name(undo)), undo) for task, undo in declared.compensations.items()}
    return Plan(node, (payload,), compensations, declared=True)


def declared_node(declared: Declared, namer: Namer, args: tuple, task_id: str | None) -> Node:
    stages = [Leaf(namer(short_name(task)), task) for task in declared.stages]
    if args:
        stages[0] = Leaf(stages[0].scope, stages[0].task, tuple(args))
    if declared.fan_out:
        part, join = declared.fan_out
        fan_out = FanOut(stages[-1], Leaf(namer(short_name(part)), part), Leaf(namer(short_name(join)), join))
        stages[-1] = fan_out
    if len(stages) == 1:
        only = stages[0]
        return Chain((only,), task_id) if task_id else only
    return Chain(tuple(stages), task_id)


def _leaves_of(node: Node) -> Iterator[Leaf]:
    if isinstance(node, Leaf):
        yield node
    for child in _children(node):
        yield from _leaves_of(child)
