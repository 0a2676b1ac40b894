"""Traces on a real worker (OpenTelemetry's in-memory exporter, tests/tracing_plugin.py): one trace per job."""

from __future__ import annotations

import json
import tempfile
import uuid
from pathlib import Path

import pytest

from pipeline import submit
from pipeline.telemetry.tracing import trace_id_of
from tasks.orders.samples import sample_order
from tests.helpers import fast_env, wait_for_completion
from vetro.testing.processes import WorkerProcess, wait_until

pytestmark = pytest.mark.integration


def test_every_step_and_http_call_of_a_job_is_in_one_trace(partner):
    spans_file = Path(tempfile.mkdtemp(prefix="vetro-spans-")) / "spans.jsonl"
    env = fast_env(10, 5, VETRO_TEST_SPANS=str(spans_file))
    worker = WorkerProcess(env, name=f"traced-{uuid.uuid4().hex[:4]}", extra_args=["--include", "tests.tracing_plugin"])
    worker.start()
    try:
        order = sample_order(1, prefix=f"traced-{uuid.uuid4().hex[:8]}") | {"order_type": "purchase", "region": "eu"}
        jobs = [submit(order, correlation_id="corr-traced"), submit(sample_order(2, prefix=order["order_id"]))]
        [record, _] = wait_for_completion(jobs, timeout=120)

        def spans() -> list[dict]:
            lines = spans_file.read_text().splitlines() if spans_file.exists() else []
            return [json.loads(line) for line in lines]

        wait_until(lambda: any(span["name"] == "orders.finish" for span in spans()), 30, "the finish step's span")
    finally:
        worker.stop()
    job_id = jobs[0]
    mine = [span for span in spans() if span["trace_id"] == trace_id_of(job_id)]
    steps = {span["vetro.stage"] for span in mine if "vetro.stage" in span}
    assert steps == {"validate", "enrich", "transform", "route", "operate", "finish"}
    destinations = {span.get("vetro.destination") for span in mine if span.get("vetro.stage") == "operate"}
    assert destinations == set(json.loads(record["branches"]))  # the fan-out, each part in the job's trace
    assert all(span["vetro.correlation_id"] == "corr-traced" for span in mine if "vetro.stage" in span)
    calls = [span for span in mine if "vetro.stage" not in span]
    assert calls and all(span["name"] in ("GET", "POST") for span in calls)  # the partner calls, as httpx's spans
    others = [span for span in spans() if span.get("vetro.job_id") == jobs[1]]
    assert others and {span["trace_id"] for span in others} == {trace_id_of(jobs[1])}  # another job, another trace
