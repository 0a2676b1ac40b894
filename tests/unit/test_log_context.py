"""A task's log fields are bound while it runs and put back after, leaving the caller's own as they were."""

from __future__ import annotations

import structlog
from structlog.contextvars import bind_contextvars, clear_contextvars, get_contextvars

from pipeline.telemetry import logs


def test_a_task_run_inside_a_callers_code_leaves_the_callers_log_fields_as_it_found_them():
    """An eager task (task_always_eager, `.apply()`) runs inside, say, a web request that bound its own fields."""
    clear_contextvars()
    bind_contextvars(request_id="r-1", job_id="the caller's")
    bound = logs.bind({"job_id": "j-1", "stage": "validate"})
    assert get_contextvars() == {"request_id": "r-1", "job_id": "j-1", "stage": "validate"}
    logs.unbind(bound)
    assert get_contextvars() == {"request_id": "r-1", "job_id": "the caller's"}
    clear_contextvars()
    assert structlog.contextvars.get_contextvars() == {}
