"""Faults a test can ask a worker for, loaded with `celery worker --include tests.worker_plugins`.

VETRO_TEST_DUPLICATE_STEP=operate.billing: after that step succeeds, publish its message
again, as a broker redelivery would (same task id, same chord membership, same headers).
"""

from __future__ import annotations

import os

from celery.signals import task_success

DUPLICATED_HEADER = "vetro_test_duplicate"


@task_success.connect
def _duplicate_step(sender=None, **_: object) -> None:
    wanted = os.environ.get("VETRO_TEST_DUPLICATE_STEP")
    request = sender.request
    if not wanted or request.get(DUPLICATED_HEADER) or not hasattr(sender, "scope"):
        return
    if sender.scope(tuple(request.args or ()), dict(request.kwargs or {})) != wanted:
        return
    job_headers = {
        name: request.get(name)
        for name in ("vetro_job_id", "vetro_idempotency_key", "vetro_correlation_id", "vetro_pipeline")
    }
    sender.signature_from_request(headers={**job_headers, DUPLICATED_HEADER: True}).apply_async()
