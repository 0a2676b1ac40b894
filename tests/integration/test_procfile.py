"""`honcho start` on the repository's Procfile runs the stack, as a newcomer would start it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from tasks.orders.samples import sample_order
from tests.conftest import worker_env
from tests.helpers import vetro, wait_for_completion
from vetro.testing.processes import free_port, http_answers, reaped, spawn, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.long]

ROOT = Path(__file__).parents[2]
RUN_FOR = 30  # seconds the stack must stay up with jobs going through


def test_honcho_start_runs_the_stack_for_30_seconds_with_jobs_going_through(tmp_path):
    stub_port, flower_port, ops_port = free_port(), free_port(), free_port()
    stub = f"http://127.0.0.1:{stub_port}"
    env = {
        **os.environ,
        **worker_env(),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "ORDERS_PARTNER_URL": stub,
        "STUB_PORT": str(stub_port),
        "FLOWER_PORT": str(flower_port),
        "OPS_PORT": str(ops_port),
        "FLOWER_PASSWORD": "test-only",
        "WORKER_CONCURRENCY": "1",
        "VETRO_DATABASE_URL": f"sqlite:///{tmp_path}/dlq.db",
    }
    migrated = vetro("db", "upgrade", env=env)
    assert migrated.returncode == 0, migrated.stderr
    log = Path(tempfile.mkstemp(prefix="vetro-honcho-", suffix=".log")[1])
    with log.open("wb") as output:
        honcho = spawn(
            [sys.executable, "-m", "honcho", "start", "-f", str(ROOT / "Procfile")],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: http_answers(f"{stub}/health"), 60, "the stub under honcho")
        started = time.monotonic()
        job_ids = []
        while time.monotonic() - started < RUN_FOR:
            order = sample_order(len(job_ids), prefix=f"honcho-{stub_port}")
            submitted = vetro("submit", "--json", json.dumps(order), env=env)
            assert submitted.returncode == 0, submitted.stderr
            job_ids.append(submitted.stdout.strip())
            assert honcho.poll() is None, log.read_text()[-3000:]
            time.sleep(3)  # pacing the submissions over the run
        records = wait_for_completion(job_ids, timeout=120)
        assert honcho.poll() is None, log.read_text()[-3000:]
        assert http_answers(f"http://127.0.0.1:{flower_port}/healthcheck")
        ready = httpx.get(f"http://127.0.0.1:{ops_port}/health/ready", timeout=30)  # vetro serve
        assert ready.status_code == 200, ready.text
    finally:
        os.killpg(honcho.pid, signal.SIGTERM)
        honcho.wait(60)
        reaped(honcho)
    assert {record["status"] for record in records} == {"completed"}
    assert len(records) >= 5
