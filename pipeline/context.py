"""A job's identity (job id, idempotency key, correlation id), carried in message headers.

Every message of a job carries the same headers: vetro sets them on each step it publishes,
and copies them from the running task to anything else it publishes (a retry: see
pipeline.adapter.job_headers), so no stage passes them along by hand. Every message is also
stamped with the time it was sent, which moves the queue frontier the reconciler reads. The
ledger, not these headers, is the authority on a job: a stage reads its job from there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

JOB_ID = "vetro_job_id"
IDEMPOTENCY_KEY = "vetro_idempotency_key"
CORRELATION_ID = "vetro_correlation_id"
PIPELINE = "vetro_pipeline"
REPLAY = "vetro_replay"  # 0 for the first run, n for the n-th replay from the dead-letter store
HEADER_NAMES = (JOB_ID, IDEMPOTENCY_KEY, CORRELATION_ID, PIPELINE, REPLAY)
SENT_AT = "vetro_sent_at"  # when the message was published (epoch seconds): moves the queue frontier
NOT_BEFORE = "vetro_not_before"  # a wait longer than a worker may hold a message: run no earlier than this
SCOPE = "vetro_scope"  # the step of the job's plan a message runs (absent on the first format's messages)


@dataclass(frozen=True)
class JobContext:
    job_id: str
    idempotency_key: str
    correlation_id: str
    pipeline: str
    replay: int = 0

    def headers(self) -> dict[str, Any]:
        return {
            JOB_ID: self.job_id,
            IDEMPOTENCY_KEY: self.idempotency_key,
            CORRELATION_ID: self.correlation_id,
            PIPELINE: self.pipeline,
            REPLAY: self.replay,
        }

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))  # its fields: plain values, so no deep copy (dataclasses.asdict) is needed

    @classmethod
    def from_headers(cls, headers: Mapping[str, Any]) -> JobContext | None:
        """Read the context from a message's headers; None outside a job."""
        values = [headers.get(name) for name in HEADER_NAMES]
        if not values[0]:
            return None
        job_id, key, correlation_id, pipeline, replay = values
        return cls(job_id, key or job_id, correlation_id or job_id, pipeline or "", int(replay or 0))


def shown_job(headers: dict) -> str:
    return repr(
        {"job_id": headers[JOB_ID], "correlation_id": headers.get(CORRELATION_ID), "pipeline": headers.get(PIPELINE)}
    )
