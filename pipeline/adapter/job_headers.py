"""A job's headers, carried onto whatever a running step publishes (a retry), and every message stamped.

Connected to Celery's `before_task_publish`, so it sees every message vetro's app sends.
"""

from __future__ import annotations

import time
from typing import Any

from celery import current_task
from celery.signals import before_task_publish

from pipeline.adapter.internals import header
from pipeline.context import HEADER_NAMES, JOB_ID, SCOPE, SENT_AT, JobContext, shown_job


def job_of(request: Any) -> JobContext | None:
    """The job a running task's message belongs to; None outside a job."""
    return JobContext.from_headers({name: header(request, name) for name in HEADER_NAMES})


@before_task_publish.connect
def _carry_job_headers(headers: dict | None = None, **_: Any) -> None:
    if headers is None:
        return
    if not headers.get(JOB_ID):
        task = current_task
        job = job_of(task.request) if task else None
        if job is None:
            return
        headers.update(job.headers())
        scope = header(task.request, SCOPE)
        if headers.get("id") == task.request.id and scope:  # a step's retry: the same step
            headers[SCOPE] = scope
    headers[SENT_AT] = time.time()
    # A stage takes no keyword arguments: what Flower shows as its kwargs is the job, searchable there as
    # `kwargs:correlation_id=<id>`, `kwargs:job_id=<id>` or `kwargs:pipeline=<name>`.
    headers["kwargsrepr"] = shown_job(headers)
