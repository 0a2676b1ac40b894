"""Flower on real workers: task events are off by default, and Flower turns them on, so it shows jobs live."""

from __future__ import annotations

import httpx
import pytest

from pipeline import submit
from pipeline.local import CeleryProcess, free_port, wait_until
from tasks.orders.samples import sample_order
from tests.conftest import worker_env
from tests.helpers import wait_for_completion, workers

pytestmark = pytest.mark.integration

AUTH = ("ops", "flower-test-password")


class FlowerProcess(CeleryProcess):
    ready_line = "Visit me at"

    def __init__(self, env: dict[str, str], port: int) -> None:
        super().__init__(env, "flower")
        self.port = port
        self.command = ["flower", "--address=127.0.0.1", f"--port={port}", f"--basic-auth={':'.join(AUTH)}"]

    def tasks(self) -> dict[str, dict]:
        answer = httpx.get(f"http://127.0.0.1:{self.port}/api/tasks", auth=AUTH, timeout=10)
        answer.raise_for_status()
        return answer.json()


def test_flower_shows_a_jobs_steps_live_though_workers_start_with_events_off(partner):
    env = worker_env()
    assert "VETRO_TASK_EVENTS" not in env  # the default: off
    flower = FlowerProcess(env, free_port())
    with workers(env) as (worker,):
        flower.start()
        try:
            wait_until(lambda: "enabled by remote" in worker.log(), 60, "Flower to turn the worker's events on")
            job_id = submit(sample_order(1, prefix="flower") | {"order_type": "purchase", "region": "eu"})
            wait_for_completion([job_id], timeout=90)

            def steps_shown() -> set[str]:
                return {task["name"] for task in flower.tasks().values() if task["uuid"].startswith(job_id)}

            wait_until(lambda: {"orders.validate", "orders.finish"} <= steps_shown(), 60, "Flower to list the steps")
        finally:
            flower.stop()
