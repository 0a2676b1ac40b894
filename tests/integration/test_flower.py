"""Flower on real workers: task events are off by default, and Flower turns them on, so it shows jobs live."""

from __future__ import annotations

import pytest

from pipeline import submit
from tasks.orders.samples import sample_order
from tests.conftest import worker_env
from tests.helpers import wait_for_completion, workers
from vetro.testing.processes import FlowerProcess, free_port, wait_until

pytestmark = pytest.mark.integration


def test_flower_shows_a_jobs_steps_live_though_workers_start_with_events_off(partner):
    env = worker_env()
    assert "VETRO_TASK_EVENTS" not in env  # the default: off
    flower = FlowerProcess(env, free_port())
    with workers(env) as (worker,):
        flower.start()
        try:
            wait_until(lambda: "enabled by remote" in worker.log(), 60, "Flower to turn the worker's events on")
            order = sample_order(1, prefix="flower") | {"order_type": "purchase", "region": "eu"}
            job_id = submit(order, correlation_id="corr-flower")
            wait_for_completion([job_id], timeout=90)

            def steps_shown(search: str | None = None) -> set[str]:
                return {task["name"] for task in flower.tasks(search).values() if task["uuid"].startswith(job_id)}

            wait_until(lambda: {"orders.validate", "orders.finish"} <= steps_shown(), 60, "Flower to list the steps")
            # The job is what Flower shows as each step's kwargs, and what its search finds.
            validate = next(task for task in flower.tasks().values() if task["uuid"] == f"{job_id}.validate")
            assert (
                f"'job_id': '{job_id}'" in validate["kwargs"]
                and "'correlation_id': 'corr-flower'" in validate["kwargs"]
            )
            assert "'pipeline': 'orders'" in validate["kwargs"]
            shown = [task for task in flower.tasks().values() if task["uuid"].startswith(job_id)]
            assert not any("@" in (task["args"] or "") for task in shown)  # customers' emails are redacted
            assert {"orders.validate", "orders.finish"} <= steps_shown("kwargs:correlation_id=corr-flower")
            assert not steps_shown("kwargs:correlation_id=someone-else")
            # A step's result, as Flower's task view and its result API read it: from the ledger (the backend).
            finish = next(task for task in flower.tasks().values() if task["uuid"] == f"{job_id}.finish")
            assert "billing" in (finish["result"] or "")
            answer = flower.api(f"task/result/{job_id}.finish")
            assert answer["state"] == "SUCCESS" and "billing" in answer["result"]
            # The broker view: queue lengths, read from the broker's URL (its scheme says which broker it is).
            queues = {queue["name"]: queue["messages"] for queue in flower.api("queues/length")["active_queues"]}
            assert queues.get("vetro") == 0
        finally:
            flower.stop()
