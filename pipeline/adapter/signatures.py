"""A canvas, as Celery serializes it (a signature's dictionary), read into a job's plan (pipeline.plan).

A task, `chain`, `group`, `chord`, nested, with `link` and `link_error` callbacks and a chain's rest
folded into its first task's options, as Celery's canvas sends it; a declared pipeline's signature
(`Pipeline.s()`) is read into its declared steps.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.adapter.internals import chain_rest
from pipeline.plan import (
    KEPT_OPTIONS,
    PIPELINE_TASK,
    Chain,
    Chord,
    Declarations,
    Group,
    Leaf,
    Namer,
    Node,
    Plan,
    PlanError,
    declared_node,
    short_name,
)


def from_signature(signature: Mapping[str, Any], declarations: Declarations) -> Plan:
    """The plan of a canvas, from the dictionary Celery serializes a signature to."""
    return Plan(_node(signature, Namer(), declarations))


def _node(signature: Any, namer: Namer, declarations: Declarations) -> Node:
    if not isinstance(signature, Mapping) or not isinstance(signature.get("task"), str):
        raise PlanError(f"not a Celery signature: {signature!r:.100}")
    kind = signature.get("subtask_type")
    options = signature.get("options") or {}
    kwargs = signature.get("kwargs") or {}
    task_id = options.get("task_id")
    if kind == "chain":
        node: Node = Chain(tuple(_node(task, namer, declarations) for task in kwargs.get("tasks") or ()), task_id)
        if not node.children:
            raise PlanError("an empty chain")
    elif kind == "group":
        node = _group(kwargs.get("tasks"), namer, declarations, task_id)
    elif kind == "chord":
        header = kwargs.get("header")
        tasks = (header.get("kwargs") or {}).get("tasks") if isinstance(header, Mapping) else header
        group = _group(tasks, namer, declarations, None)
        node = Chord(group, _node(kwargs.get("body"), namer, declarations), task_id)
    elif kind is not None:
        raise PlanError(f"a canvas of kind {kind!r} cannot run as a vetro job")
    elif signature["task"] == PIPELINE_TASK:
        name = kwargs.get("name")
        declared = declarations(name)
        if declared.compensations:
            raise PlanError(f"pipeline {name!r} declares compensations: submit it on its own, not inside a canvas")
        node = declared_node(declared, namer, tuple(signature.get("args") or ()), task_id)
    else:
        kept = {name: options[name] for name in KEPT_OPTIONS if options.get(name) is not None}
        links = tuple(_node(link, namer, declarations) for link in _as_list(options.get("link")))
        scope = namer(short_name(signature["task"]))
        node = Leaf(
            scope,
            signature["task"],
            tuple(signature.get("args") or ()),
            dict(kwargs),
            bool(signature.get("immutable")),
            task_id,
            kept,
            links,
        )
    errbacks = _as_list(options.get("link_error"))
    if errbacks:
        node = _with_errbacks(node, tuple(_node(errback, namer, declarations) for errback in errbacks))
    if kind is not None and _as_list(options.get("link")):
        node = _linked_at_end(node, _as_list(options.get("link")), namer, declarations)
    continuation = chain_rest(options)  # the rest of a chain Celery folded into this signature
    if continuation:
        node = Chain((node, *(_node(task, namer, declarations) for task in continuation)))
    return node


def _with_errbacks(node: Node, errbacks: tuple[Node, ...]) -> Node:
    """An errback given to a chain, group or chord is called when any of its steps fails (as Celery links it
    to each); a step keeps one copy of each errback however many levels name it."""
    if isinstance(node, Leaf):
        kept = node.errbacks + tuple(e for e in errbacks if all(e is not mine for mine in node.errbacks))
        return Leaf(node.scope, node.task, node.args, node.kwargs, node.immutable, node.task_id, node.options,
                    node.links, kept)  # fmt: skip
    if isinstance(node, Chain):
        return Chain(tuple(_with_errbacks(child, errbacks) for child in node.children), node.task_id)
    if isinstance(node, Group):
        return Group(tuple(_with_errbacks(child, errbacks) for child in node.children), node.task_id)
    if isinstance(node, Chord):
        header = _with_errbacks(node.header, errbacks)
        return Chord(header, _with_errbacks(node.body, errbacks), node.task_id)
    return node


def _group(tasks: Any, namer: Namer, declarations: Declarations, task_id: str | None) -> Group:
    if not tasks:
        raise PlanError("an empty group")
    return Group(tuple(_node(task, namer, declarations) for task in tasks), task_id)


def _linked_at_end(node: Node, links: list, namer: Namer, declarations: Declarations) -> Node:
    """A callback linked to a chain or chord runs after its last step (Celery links it there)."""
    if isinstance(node, Chain):
        return Chain((*node.children[:-1], _linked_at_end(node.children[-1], links, namer, declarations)), node.task_id)
    if isinstance(node, Chord):
        return Chord(node.header, _linked_at_end(node.body, links, namer, declarations), node.task_id)
    if isinstance(node, Leaf):
        added = tuple(_node(link, namer, declarations) for link in links)
        return Leaf(node.scope, node.task, node.args, node.kwargs, node.immutable, node.task_id, node.options,
                    node.links + added, node.errbacks)  # fmt: skip
    raise PlanError("a callback linked to a group: use a chord")


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]
