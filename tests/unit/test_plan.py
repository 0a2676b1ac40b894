"""The plan executor, as plain data: what a job runs next, from a canvas or a declaration and its results."""

from __future__ import annotations

import pytest

from pipeline.adapter.signatures import from_signature
from pipeline.plan import (
    PIPELINE_TASK,
    Declared,
    PlanError,
    from_declared,
    result_of,
)


def task(name: str, *args, task_id: str | None = None, immutable: bool = False, **options) -> dict:
    return {
        "task": name,
        "args": list(args),
        "kwargs": {},
        "options": {"task_id": task_id or f"id-{name}", **options},
        "subtask_type": None,
        "immutable": immutable,
    }


def chain(*tasks: dict, task_id: str | None = None) -> dict:
    return {"task": "celery.chain", "args": [], "kwargs": {"tasks": list(tasks)}, "subtask_type": "chain",
            "options": {"task_id": task_id} if task_id else {}}  # fmt: skip


def group(*tasks: dict, task_id: str = "gid") -> dict:
    return {"task": "celery.group", "args": [], "kwargs": {"tasks": list(tasks)}, "subtask_type": "group",
            "options": {"task_id": task_id}}  # fmt: skip


def chord(header: list[dict], body: dict) -> dict:
    return {"task": "celery.chord", "args": [], "kwargs": {"header": group(*header), "body": body},
            "subtask_type": "chord", "options": {}}  # fmt: skip


ORDERS = Declared("orders", ("o.validate", "o.route"), fan_out=("o.operate", "o.finish"))
SAGA = Declared(
    "pay", ("p.reserve", "p.charge", "p.ship"), compensations={"p.reserve": "p.release", "p.charge": "p.refund"}
)


def declarations(name: str) -> Declared:
    return {"orders": ORDERS, "pay": SAGA}[name]


def scopes(steps) -> list[str]:
    return [step.scope for step in steps]


def run_to_end(plan, body=lambda step: [step.task, *step.args]) -> dict:
    """Run every pending step until none is left, as workers would; returns the results."""
    results: dict = {}
    for _ in range(50):
        pending = plan.pending(results)
        if not pending:
            return results
        for step in pending:
            results[step.scope] = body(step)
    raise AssertionError("the plan never ended")


def test_a_chain_passes_each_result_to_the_next_step_and_si_ignores_it():
    plan = from_signature(
        chain(task("s.parse", 1), task("s.price", 2), task("s.ship", 3, immutable=True)), declarations
    )
    assert [(s.scope, s.args) for s in plan.pending({})] == [("parse", (1,))]
    assert [(s.scope, s.args) for s in plan.pending({"parse": "P"})] == [("price", ("P", 2))]
    assert [(s.scope, s.args) for s in plan.pending({"parse": "P", "price": "Q"})] == [("ship", (3,))]
    assert plan.pending({"parse": "P", "price": "Q", "ship": "S"}) == []


def test_route_of_a_chain_step_starts_the_next_with_its_result():
    plan = from_signature(chain(task("s.parse", 1), task("s.price")), declarations)
    route = plan.route("parse", (1,), "P")
    assert [(s.scope, s.args, s.task_id) for s in route.next] == [("price", ("P",), "id-s.price")]
    assert route.levels == []
    last = plan.route("price", ("P",), "Q")
    assert last.next == [] and [level.node for level in last.levels] == [None]
    assert last.levels[0].terminals == ("price",)


def test_a_chord_joins_its_parts_results_in_order_into_its_body():
    canvas = chain(
        task("s.parse", "order"),
        task("s.price"),
        chord([task("s.ship"), task("s.bill"), task("s.email")], task("s.summarize")),
    )
    plan = from_signature(canvas, declarations)
    results = run_to_end(plan, body=lambda step: step.scope if step.scope != "summarize" else step.args)
    assert results["summarize"] == (["ship", "bill", "email"],)
    route = plan.route("bill", ("P",), "bill")
    assert route.next == [] and [level.terminals for level in route.levels] == [("ship", "bill", "email")]
    assert route.then.scope == "summarize" and plan.needed(route) == ["ship", "bill", "email"]
    after = plan.after_join(route, {"ship": 1, "bill": 2, "email": 3})
    assert [(s.scope, s.args) for s in after] == [("summarize", ([1, 2, 3],))]
    assert result_of(plan.root, {**results}) == results["summarize"]


def test_a_group_chained_to_a_task_is_a_chord_and_a_group_ending_a_chain_completes_the_job():
    plan = from_signature(chain(task("s.a", 1), group(task("s.b"), task("s.c"))), declarations)
    assert scopes(plan.pending({"a": "A"})) == ["b", "c"]
    route = plan.route("c", ("A",), "C")
    assert [level.node for level in route.levels] == [None] and set(route.levels[0].terminals) == {"b", "c"}
    assert result_of(plan.root, {"a": "A", "b": "B", "c": "C"}) == ["B", "C"]


def test_nesting_a_chain_inside_a_group_and_a_chord_inside_a_chain():
    canvas = group(
        chain(task("s.a", 1), task("s.b")), chain(task("s.c", 2), chord([task("s.d"), task("s.e")], task("s.f")))
    )
    plan = from_signature(canvas, declarations)
    assert scopes(plan.pending({})) == ["a", "c"]
    results = run_to_end(plan, body=lambda step: step.scope.upper())
    assert result_of(plan.root, results) == ["B", "F"]
    route = plan.route("e", ("C",), "E")
    assert [level.terminals for level in route.levels] == [("d", "e")] and route.then.scope == "f"
    route = plan.route("f", (["D", "E"],), "F")
    assert [level.node for level in route.levels][-1] is None and set(route.levels[-1].terminals) == {"b", "f"}


def test_a_stage_used_twice_gets_two_scopes():
    plan = from_signature(chain(task("s.step", 1, task_id="x"), task("s.step", task_id="y")), declarations)
    assert [leaf.scope for leaf in plan.leaves()] == ["step", "step-2"]
    assert plan.node_by_task_id("y").scope == "step-2"


def test_links_run_with_the_result_and_the_job_waits_for_them():
    plan = from_signature(task("s.a", 1, link=[task("s.notify")]), declarations)
    route = plan.route("a", (1,), "A")
    assert [(s.scope, s.args) for s in route.next] == [("notify", ("A",))]
    assert set(route.levels[-1].terminals) == {"a", "notify"}
    assert scopes(plan.pending({"a": "A"})) == ["notify"] and plan.pending({"a": "A", "notify": 1}) == []


def test_per_signature_options_travel_with_the_step():
    plan = from_signature(chain(task("s.a", 1), task("s.b", countdown=30, queue="slow", priority=7)), declarations)
    (step,) = plan.route("a", (1,), "A").next
    assert step.options == {"countdown": 30, "queue": "slow", "priority": 7}


def test_a_declared_pipeline_fans_out_over_its_planners_branches_then_joins():
    plan = from_declared(ORDERS, {"order": 1})
    assert [(s.scope, s.args, s.task_id) for s in plan.pending({})] == [("validate", ({"order": 1},), None)]
    results = {"validate": "V", "route": ["billing", "notify"]}
    assert [(s.scope, s.args) for s in plan.pending(results)] == [
        ("operate.billing", ("V", "billing")),
        ("operate.notify", ("V", "notify")),
    ]
    route = plan.route("operate.notify", ("V", "notify"), "n", branches=["billing", "notify"])
    assert [level.terminals for level in route.levels] == [("operate.billing", "operate.notify")]
    after = plan.after_join(route, {"operate.billing": "b", "operate.notify": "n"})
    assert [(s.scope, s.args) for s in after] == [("finish", (["b", "n"],))]
    assert [(s.scope, s.args) for s in plan.route("route", ("V",), {"p1": 1}).next] == [("operate.p1", (1, "p1"))]
    assert [(s.scope, s.args) for s in plan.route("route", ("V",), []).next] == [("finish", ([],))]
    assert plan.pending({"validate": "V", "route": [], "finish": "F"}) == []


def test_a_declared_pipeline_is_a_signature_inside_a_canvas():
    pipeline = {"task": PIPELINE_TASK, "args": [], "kwargs": {"name": "orders"}, "options": {"task_id": "pipe"},
                "subtask_type": None, "immutable": False}  # fmt: skip
    plan = from_signature(chain(task("s.fetch", 1), pipeline, task("s.notify")), declarations)
    results = run_to_end(plan, body=lambda s: ["billing"] if s.scope == "route" else s.scope)
    assert result_of(plan.node_by_task_id("pipe"), results) == "finish"
    assert scopes(plan.route("finish", (["operate.billing"],), "finish").next) == ["notify"]


def test_compensations_undo_the_recorded_steps_last_first():
    plan = from_declared(SAGA, {"p": 1})
    assert plan.compensation_plan({"reserve": "r", "charge": "c"}) == ["refund", "release"]
    assert [
        (s.scope, s.args) for s in plan.pending_compensation(["refund", "release"], {"reserve": "r", "charge": "c"})
    ] == [("refund", ("c",))]


def test_errbacks_run_with_the_failed_steps_task_id_and_a_chains_errback_is_each_steps():
    canvas = chain(task("s.a", 1, link_error=[task("s.alert")]), task("s.b", link_error=[task("s.alert")]))
    plan = from_signature(canvas, declarations)
    assert [(s.scope, s.args) for s in plan.errbacks("b", "id-s.b")] == [("alert-2", ("id-s.b",))]
    assert plan.is_errback("alert-2") and not plan.is_errback("b")
    assert scopes(plan.pending({})) == ["a"]  # errbacks run only after a failure
    assert plan.pending_errbacks("b", "id-s.b", {"alert-2": None}) == []
    assert plan.route("alert-2", ("id-s.b",), None).levels == []


@pytest.mark.parametrize(
    "canvas",
    [
        {"task": "celery.chain", "kwargs": {"tasks": []}, "subtask_type": "chain"},
        {"task": "x", "subtask_type": "weird"},
        "not a signature",
    ],
)
def test_a_canvas_vetro_cannot_run_is_refused_in_one_line(canvas):
    with pytest.raises(PlanError) as refused:
        from_signature(canvas, declarations)
    assert "\n" not in str(refused.value)


def test_a_steps_delay_is_its_countdown_or_its_eta_from_now():
    from datetime import UTC, datetime

    from pipeline.jobs.driver import delay_of
    from pipeline.plan import Step

    def step(**options) -> Step:
        return Step("s.a", "a", (), {}, None, options)

    now = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    assert delay_of(step(countdown=30), now) == 30
    assert delay_of(step(eta=datetime(2026, 1, 1, 0, 1, tzinfo=UTC)), now) == 60
    assert delay_of(step(eta="2026-01-01T00:00:10+00:00"), now) == 10
    assert delay_of(step(eta="2025-12-31T00:00:00+00:00"), now) == 0  # a time already past: at once
    assert delay_of(step(), now) == 0
