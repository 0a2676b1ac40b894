"""The step's phases, each on its own, with the guard and the driver replaced by recorders (no Redis, no worker)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from pipeline.adapter.signatures import from_signature
from pipeline.context import JobContext
from pipeline.failures import DependencyWaitError, FailureClass, PermanentError, TransientError, default_classifier
from pipeline.jobs import phases
from pipeline.jobs.guard import Release
from pipeline.plan import Declared, from_declared

CANVAS = {
    "task": "celery.chain",
    "subtask_type": "chain",
    "kwargs": {
        "tasks": [
            {"task": "shop.parse", "args": [1], "kwargs": {}, "options": {"task_id": "t-parse"}},
            {"task": "shop.price", "args": [], "kwargs": {}, "options": {"task_id": "t-price"}},
        ]
    },
}
ORDERS = Declared("orders", ("o.validate", "o.route"), fan_out=("o.operate", "o.finish"))
JOB = JobContext("job-1", "key-1", "corr-1", "shop")


class Request(dict):
    """What a stage's `self.request` offers the phases."""

    def __init__(self, task_id: str, **headers: Any) -> None:
        super().__init__(headers)
        self.id = task_id
        self.hostname = "w@host"
        self.delivery_info = {"routing_key": "vetro"}
        self.retries = 0


class Guard:
    """Records what the phases ask of the guard; `release` answers as a budget of `budget` would."""

    def __init__(self, budget: int = 0, count: int = 1) -> None:
        self.calls: list[tuple[str, tuple]] = []
        self.budget, self.count = budget, count

    def release(self, *args: Any) -> Release:
        self.calls.append(("release", args))
        budget = args[3] if len(args) > 3 else 0
        return Release(self.count, self.count <= budget)

    def record(self, *args: Any) -> Any:
        self.calls.append(("record", args))
        return SimpleNamespace(outcome="recorded", dead_lettered=False, submitted_at=0.0)


def run_of(name: str, scope: str, task_id: str, plan: Any, args: tuple = (), **task: Any) -> phases.StepRun:
    stage = SimpleNamespace(
        name=name,
        stage=name.rsplit(".", 1)[1],
        pipeline_name="shop",
        request=Request(task_id),
        classifier=default_classifier,
        transient_retries=task.get("transient_retries", 3),
        technical_retries=2,
        retry_backoff=1,
        retry_backoff_max=2,
        retry_jitter=False,
        time_limit=10,
    )
    return phases.StepRun(stage, "job-1", args, {}, scope=scope, plan=plan, job=JOB, guard=Guard(), namespace="shop")


def test_a_message_is_checked_against_its_jobs_plan():
    plan = from_signature(CANVAS, lambda name: None)
    assert phases._check_step(run_of("shop.price", "price", "t-price", plan)) is None
    assert "no step" in phases._check_step(run_of("shop.parse", "price", "t-price", plan))
    assert "no step" in phases._check_step(run_of("shop.price", "ship", "t-price", plan))
    assert "is not 't-price'" in phases._check_step(run_of("shop.price", "price", "forged", plan))


def test_a_part_of_a_branch_its_planner_never_named_is_refused(monkeypatch):
    plan = from_declared(ORDERS)
    monkeypatch.setattr(phases.ledger, "planned_branches", lambda *_: ["billing"])
    good = run_of("o.operate", "operate.billing", "job-1.operate.billing", plan, ("order", "billing"))
    assert phases._check_step(good) is None and good.branches == ["billing"]
    forged = run_of("o.operate", "operate.mail", "job-1.operate.mail", plan, ("order", "mail"))
    assert "was not planned" in phases._check_step(forged)


@pytest.fixture
def recorded(monkeypatch) -> dict[str, list]:
    """What the phases hand to the driver and the events, and the waits they ask for."""
    seen: dict[str, list] = {"fail": [], "wait": [], "events": [], "advance": []}
    monkeypatch.setattr(
        phases.driver, "fail", lambda step, cls, exc, attempts, plan: seen["fail"].append((cls, attempts))
    )
    monkeypatch.setattr(phases, "wait", lambda run, seconds, exc=None: seen["wait"].append(seconds))
    monkeypatch.setattr(phases.driver, "advance", lambda *args, **kwargs: seen["advance"].append(args))
    monkeypatch.setattr(phases.events, "emit", lambda name, run, *details: seen["events"].append((name, *details)))
    return seen


def test_a_permanent_failure_is_handed_off_at_once(recorded):
    run = run_of("shop.price", "price", "t-price", from_signature(CANVAS, lambda name: None))
    handed = phases.failed(run, PermanentError("bad input"))
    assert handed.failure_class is FailureClass.PERMANENT
    assert recorded["fail"] == [(FailureClass.PERMANENT, 1)] and recorded["wait"] == []


def test_a_transient_failure_within_its_budget_waits_then_retries(recorded):
    run = run_of("shop.price", "price", "t-price", from_signature(CANVAS, lambda name: None))
    phases.failed(run, TransientError("flaky", retry_after=5))
    assert recorded["wait"] and recorded["wait"][0] >= 5  # Retry-After is a floor
    assert ("retrying", FailureClass.TRANSIENT) in recorded["events"]


def test_a_dependency_wait_spends_no_retry(recorded):
    run = run_of("shop.price", "price", "t-price", from_signature(CANVAS, lambda name: None))
    phases.failed(run, DependencyWaitError("breaker open", retry_after=2))
    (_, released), *_ = run.guard.calls
    assert released[2] == "waits" and ("waiting",) in recorded["events"]


def test_recording_a_chain_step_starts_the_next_with_its_result(recorded, monkeypatch):
    monkeypatch.setattr(phases, "records_carry_publishes", lambda: False)
    run = run_of("shop.parse", "parse", "t-parse", from_signature(CANVAS, lambda name: None), (1,))
    run.result, run.encoded = {"id": 1}, '{"id": 1}'
    phases.record(run)
    (_, (_, _, fan_ins, completes_job, first, pushes, *_)) = run.guard.calls[0]
    assert fan_ins == [] and not completes_job and first and pushes == []
    (_, _, route, _) = recorded["advance"][0]
    assert [(step.scope, step.args) for step in route.next] == [("price", ({"id": 1},))]


def test_recording_the_last_step_counts_it_toward_the_jobs_end(recorded, monkeypatch):
    monkeypatch.setattr(phases, "records_carry_publishes", lambda: False)
    run = run_of("shop.price", "price", "t-price", from_signature(CANVAS, lambda name: None), ({"id": 1},))
    run.result, run.encoded = 42, "42"
    phases.record(run)
    (_, (_, _, fan_ins, completes_job, first, *_)) = run.guard.calls[0]
    assert fan_ins == [("fanin:job", 1)] and completes_job and not first


def test_observers_hear_of_the_phases_events():
    events = phases.Events()
    heard = []
    events.on("done_already")(lambda run: heard.append(run))
    events.emit("done_already", "run")
    events.emit("failed", "run")
    assert heard == ["run"]
