"""`vetro demo` on a machine with no Redis listening where the settings point."""

from __future__ import annotations

import pytest

from tests.conftest import worker_env
from tests.helpers import celery_worker, vetro
from vetro.testing.processes import free_port

pytestmark = pytest.mark.integration


def test_the_demo_runs_on_a_bare_machine_and_exits_zero():
    closed = f"redis://127.0.0.1:{free_port()}/0"
    env = worker_env(VETRO_BROKER_URL=closed, VETRO_RESULT_STORE_URL=closed, COLUMNS="200")
    result = vetro("demo", "--jobs", "80", env=env, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "started an embedded redis-server" in result.stdout
    assert "completed" in result.stdout and "delivered to billing" in result.stdout
    assert "permanent at validate" in result.stdout
    assert "celery -A pipeline flower" in result.stdout


def test_a_worker_with_a_bad_setting_refuses_to_start_with_one_clear_line():
    result = celery_worker(worker_env(VETRO_STAGES__ORDERS__OPERATE__TIME_LIMIT="soon"))
    assert result.returncode != 0
    assert "VETRO_STAGES__ORDERS__OPERATE__TIME_LIMIT: Input should be a valid integer" in result.stderr
