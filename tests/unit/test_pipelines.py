"""A declared pipeline's plan: what a job still needs, worked out from its ledger alone; how waits hop."""

from types import SimpleNamespace

import pytest

from pipeline.jobs.pipelines import FanOut, Pipeline
from pipeline.jobs.retry import hop
from pipeline.plan import PlannerError, check_branches, from_declared


class FakeStage:
    """Just what a declaration reads of a stage (hashable, as compensations are keyed by stage)."""

    def __init__(self, stage: str) -> None:
        self.stage, self.name = stage, f"test.{stage}"


def task(name: str) -> FakeStage:
    return FakeStage(name)


ORDERS = Pipeline(
    "orders", [task("validate"), task("route")], fan_out=FanOut(part=task("operate"), join=task("finish"))
)
LINEAR = Pipeline("refunds", [task("validate"), task("charge"), task("notify")])


def plan(pipeline: Pipeline, payload: object, results: dict) -> list[tuple[str, tuple]]:
    return [(step.scope, step.args) for step in from_declared(pipeline.declared(), payload).pending(results)]


def after(pipeline: Pipeline, scope: str, args: tuple, result: object) -> list:
    return from_declared(pipeline.declared()).route(scope, args, result).next


def test_a_new_job_starts_at_its_first_stage_with_its_payload():
    assert plan(LINEAR, {"p": 1}, {}) == [("validate", ({"p": 1},))]


def test_a_linear_job_resumes_at_its_first_unrecorded_step_with_the_previous_result():
    assert plan(LINEAR, {"p": 1}, {"validate": "v", "charge": "c"}) == [("notify", ("c",))]
    assert plan(LINEAR, {"p": 1}, {"validate": "v", "charge": "c", "notify": "n"}) == []


def test_a_fan_out_resumes_with_every_unrecorded_part_given_the_planners_input():
    results = {"validate": "order", "route": ["billing", "warehouse", "mail"], "operate.warehouse": "w"}
    assert plan(ORDERS, "payload", results) == [
        ("operate.billing", ("order", "billing")),
        ("operate.mail", ("order", "mail")),
    ]


def test_a_fan_out_whose_parts_are_all_recorded_needs_its_join_with_results_in_branch_order():
    results = {"validate": "order", "route": ["b", "a"], "operate.a": "ra", "operate.b": "rb"}
    assert plan(ORDERS, "payload", results) == [("finish", (["rb", "ra"],))]
    assert plan(ORDERS, "payload", {**results, "finish": "done"}) == []


def test_a_fan_out_with_no_branches_goes_straight_to_its_join():
    assert plan(ORDERS, "payload", {"validate": "order", "route": []}) == [("finish", ([],))]
    assert [step.scope for step in after(ORDERS, "route", ("order",), [])] == ["finish"]


def test_scopes_follow_the_declaration():
    declared = from_declared(ORDERS.declared())
    assert declared.scope_for("test.operate", ("order", "billing")) == "operate.billing"
    assert declared.scope_for("test.validate", ("order",)) == "validate"
    assert declared.is_planner("route") and not declared.is_planner("validate")
    assert declared.scope_for("test.charge", ("x",)) is None
    assert [level.terminals for level in declared.route("finish", ([],), "done").levels] == [("finish",)]


def test_a_planner_may_give_each_part_its_own_input_with_a_mapping():
    pages = {"page-1": [{"id": 1}], "page-2": [{"id": 2}]}
    results = {"validate": "sync", "route": pages, "operate.page-1": "r1"}
    assert plan(ORDERS, "payload", results) == [("operate.page-2", ([{"id": 2}], "page-2"))]
    assert plan(ORDERS, "payload", {**results, "operate.page-2": "r2"}) == [("finish", (["r1", "r2"],))]
    assert [step.args for step in after(ORDERS, "route", ("sync",), pages)] == [
        ([{"id": 1}], "page-1"),
        ([{"id": 2}], "page-2"),
    ]
    assert [step.scope for step in after(ORDERS, "route", ("sync",), {})] == ["finish"]


@pytest.mark.parametrize(
    "planned", ["billing", [1], ["a b"], ["../x"], ["a", "a"], [""], ["x" * 65], None, {"a b": 1}, {1: "x"}]
)
def test_a_planner_must_name_distinct_safe_branches(planned):
    with pytest.raises(PlannerError):
        check_branches(planned)


def test_a_wait_longer_than_a_worker_may_hold_a_message_is_split_into_hops():
    stage = SimpleNamespace(time_limit=30)  # with the default visibility timeout, 60 s
    assert hop(stage, 10, now=1000.0) == (10, None)
    assert hop(stage, 300, now=1000.0) == (28, 1300.0)  # held at most 60 - 30 - 2 s, then hops on


RESERVE, CHARGE, SHIP = task("reserve"), task("charge"), task("ship")
RELEASE, REFUND = task("release"), task("refund")
SAGA = Pipeline("payments", [task("validate"), RESERVE, CHARGE, SHIP], compensations={RESERVE: RELEASE, CHARGE: REFUND})


def test_a_failure_compensates_the_recorded_steps_last_first():
    saga = from_declared(SAGA.declared())
    assert saga.compensation_plan({"validate": "v", "reserve": "r", "charge": "c"}) == ["refund", "release"]
    assert saga.compensation_plan({"validate": "v", "reserve": "r"}) == ["release"]  # charge never succeeded
    assert saga.compensation_plan({"validate": "v"}) == []
    assert saga.is_compensation("refund") and saga.scope_for("test.refund", ("c",)) == "refund"


def test_a_compensation_is_given_the_result_of_the_step_it_undoes_and_resumes_from_the_ledger():
    saga = from_declared(SAGA.declared())
    results = {"validate": "v", "reserve": "r", "charge": "c"}
    assert [(s.scope, s.args) for s in saga.pending_compensation(["refund", "release"], results)] == [
        ("refund", ("c",))
    ]
    results["refund"] = "refunded"
    assert [(s.scope, s.args) for s in saga.pending_compensation(["refund", "release"], results)] == [
        ("release", ("r",))
    ]
    assert saga.pending_compensation(["refund", "release"], {**results, "release": "released"}) == []


def test_compensations_are_declared_for_stages_of_a_pipeline_without_a_fan_out():
    with pytest.raises(ValueError, match="is compensated but is not one of its stages"):
        Pipeline("p", [task("a")], compensations={task("x"): task("undo")})
    with pytest.raises(ValueError, match="without a fan-out"):
        Pipeline("p", [RESERVE], fan_out=FanOut(part=task("part"), join=task("join")), compensations={RESERVE: RELEASE})
