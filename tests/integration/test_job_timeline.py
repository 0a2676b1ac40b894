"""`vetro job show` and `vetro job list` as an operator reads them, for jobs that ran on a real worker."""

from __future__ import annotations

import json

import pytest

from pipeline import submit
from tests.helpers import fast_env, vetro, wait_for_jobs, workers

pytestmark = pytest.mark.integration


def test_the_timeline_lists_every_step_with_its_retry_wait_and_fan_out():
    reading = {"id": "t1", "outcome": "flaky", "to": ["north", "south"], "wait_on": "south"}
    with workers(fast_env(10, 5)):
        job_id = submit(reading, pipeline="metered", correlation_id="corr-timeline")
        failed_id = submit({"id": "t2", "outcome": "permanent"}, pipeline="metered", correlation_id="corr-timeline")
        wait_for_jobs([job_id, failed_id], timeout=120)

    shown = vetro("job", "show", job_id)
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert "completed" in text and "corr-timeline" in text and "north, south" in text
    header = next(line for line in text.splitlines() if "┃ step" in line)
    column = {name.strip(): index for index, name in enumerate(header.split("┃")[1:-1])}
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in text.splitlines() if line.count("│") > 5]
    cells = {row[0]: row for row in rows}
    assert set(cells) == {"check", "route", "deliver.north", "deliver.south", "store"}
    assert cells["check"][column["attempts"]] == "2"  # the retry
    assert cells["deliver.south"][column["waits"]] == "1"  # the wait
    assert all(row[column["outcome"]] == "done" for row in cells.values())
    assert all(row[column["worker"]].startswith("w0-") for row in cells.values())

    described = json.loads(vetro("job", "show", job_id, "--json").stdout)
    steps = described["steps"]
    assert list(steps)[:2] == ["check", "route"] and list(steps)[-1] == "store"  # in the order they began
    assert steps["check"]["failed"] == 1 and steps["deliver.south"]["waits"] == 1
    assert described["submitted_at"].endswith("+00:00") and steps["store"]["ended_at"].endswith("+00:00")
    assert described["retries"] == 1 and described["waits"] == 1 and "error" not in described

    failed = vetro("job", "show", failed_id)
    assert "dead-lettered" in failed.stdout and "PermanentError" in failed.stdout

    listed = json.loads(
        vetro("job", "list", "--pipeline", "metered", "--correlation-id", "corr-timeline", "--json").stdout
    )
    assert {job["job_id"]: job["status"] for job in listed} == {job_id: "completed", failed_id: "failed"}
    only_failed = vetro("job", "list", "--pipeline", "metered", "--status", "failed", "--since", "10m")
    assert failed_id in only_failed.stdout and job_id not in only_failed.stdout
    bad = vetro("job", "list", "--since", "yesterday")
    assert bad.returncode == 2 and "'yesterday' is not a duration like 30d, 12h or 15m" in bad.stderr  # as dlq's
