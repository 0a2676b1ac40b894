"""A real worker's JSON logs: every line of a job carries its context, a failure is logged once, no payload shows."""

from __future__ import annotations

import json

import pytest

from pipeline import submit
from tests.helpers import fast_env, wait_for_jobs, workers

pytestmark = pytest.mark.integration

SECRET = "jane.doe@example.com"  # in every payload; no log line may show it


def _lines(log: str) -> list[dict]:
    return [json.loads(line) for line in log.splitlines() if line.startswith("{")]


def test_each_jobs_lines_carry_its_context_and_failures_are_logged_once():
    outcomes = ("ok", "flaky", "permanent", "technical")
    with workers(fast_env(10, 5, VETRO_LOG_FORMAT="json")) as (worker,):
        jobs = {
            outcome: submit(
                {"id": outcome, "outcome": outcome, "email": SECRET, "note": f"payload-{outcome}"},
                pipeline="metered",
                correlation_id=f"corr-{outcome}",
            )
            for outcome in outcomes
        }
        wait_for_jobs(list(jobs.values()), timeout=120)
    lines = _lines(worker.log())
    assert lines, worker.log()[-2000:]
    for outcome, job_id in jobs.items():
        mine = [line for line in lines if line.get("job_id") == job_id]
        assert mine, f"no line carries job {job_id}"
        for line in mine:
            assert line["correlation_id"] == f"corr-{outcome}", line
            assert line["pipeline"] == "metered" and line["task_id"], line
            assert line["attempt"] >= 1
        stages = {line["stage"] for line in mine}
        assert stages == ({"check", "route", "deliver", "store"} if outcome in ("ok", "flaky") else {"check"})
        if outcome in ("ok", "flaky"):
            assert {line.get("destination") for line in mine if line["stage"] == "deliver"} == {"main"}
    failures = {outcome: [line for line in lines if line.get("job_id") == jobs[outcome]] for outcome in outcomes}
    permanent = [line for line in failures["permanent"] if line["level"] in ("warning", "error")]
    assert [line["level"] for line in permanent] == ["warning"]  # one line, a warning, no traceback
    assert "exception" not in permanent[0] and "PermanentError" in permanent[0]["event"]
    technical = [line for line in failures["technical"] if line["level"] in ("warning", "error")]
    assert [line["level"] for line in technical] == ["error"]
    assert "Traceback" in technical[0]["exception"]
    retried = [line for line in failures["flaky"] if "retry" in line["event"]]
    assert len(retried) == 1 and retried[0]["level"] == "info" and retried[0]["attempt"] == 1
    text = worker.log()
    assert SECRET not in text
    assert not any(f"payload-{outcome}" in text for outcome in outcomes)  # no payload field, no result
