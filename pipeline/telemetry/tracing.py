"""OpenTelemetry traces when VETRO_TRACING is set: one trace per job, a span per step run, a span per HTTP call.

A job's steps run in many processes, are retried, re-driven by the reconciler and replayed by
an operator, so a trace carried in message headers would split wherever vetro publishes from
outside the job (a re-drive, a replay). The job id is a UUID, 128 bits like a trace id: every
step's span takes the job id as its trace id, so every run of every step, wherever it happens,
is in the job's one trace. HTTP calls a stage makes (httpx's instrumentation) are its children.
Spans carry the job id, correlation id, pipeline, stage, destination, attempt and task id.
"""

from __future__ import annotations

import contextvars
import uuid
from typing import Any

from celery.signals import worker_process_init, worker_process_shutdown

from settings import get_settings

_job_trace: contextvars.ContextVar[int | None] = contextvars.ContextVar("vetro_job_trace", default=None)
_running: dict[str, tuple[Any, Any]] = {}  # task id -> (span, context token)
_state = {"on": False}


def trace_id_of(job_id: str) -> int | None:
    """The job's trace id: its UUID's 128 bits (None for an id that is not a UUID)."""
    try:
        return uuid.UUID(job_id).int or None
    except ValueError:
        return None


def setup(exporter: Any = None) -> bool:
    """Install a tracer provider exporting as VETRO_TRACING says (or to `exporter`); whether tracing is on."""
    mode = get_settings().tracing
    if mode == "off" and exporter is None:
        return False
    from opentelemetry import trace
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class JobTraceIds(RandomIdGenerator):
        """Inside a job's step, the job's trace id; elsewhere a random one."""

        def generate_trace_id(self) -> int:
            return _job_trace.get() or super().generate_trace_id()

    provider = TracerProvider(resource=Resource.create({"service.name": "vetro"}), id_generator=JobTraceIds())
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    elif mode == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))  # OTEL_EXPORTER_OTLP_* say where
    trace.set_tracer_provider(provider)
    HTTPXClientInstrumentor().instrument()
    _state["on"] = True
    return True


@worker_process_init.connect
def _start_in_pool_process(**_: Any) -> None:
    """Each pool process exports on its own (an exporter's thread does not survive a fork)."""
    setup()


@worker_process_shutdown.connect
def _flush(**_: Any) -> None:
    if _state["on"]:
        from opentelemetry import trace

        trace.get_tracer_provider().force_flush()


def on() -> bool:
    return _state["on"]


def start(task_id: str, name: str, fields: dict[str, Any]) -> None:
    """A span for this run of a step, in its job's trace (pipeline.watching.instruments calls it when tracing is on)."""
    from opentelemetry import context, trace

    token = _job_trace.set(trace_id_of(fields.get("job_id", "")))
    try:
        span = trace.get_tracer("vetro").start_span(name, context=context.Context(), kind=trace.SpanKind.CONSUMER)
    finally:
        _job_trace.reset(token)
    for field, value in fields.items():
        span.set_attribute(f"vetro.{field}", value)
    _running[task_id] = (span, context.attach(trace.set_span_in_context(span)))


def end(task_id: str, state: str | None) -> None:
    found = _running.pop(task_id, None)
    if found is None:
        return
    from opentelemetry import context

    span, token = found
    span.set_attribute("celery.state", state or "")
    context.detach(token)
    span.end()
