"""A worker plugin for the tracing test: spans go to OpenTelemetry's in-memory exporter, and each pool
process appends the spans that ended to the file VETRO_TEST_SPANS names (one JSON object a line)."""

from __future__ import annotations

import json
import os
from typing import Any

from celery.signals import task_postrun, worker_process_init
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from pipeline.telemetry import tracing

EXPORTER = InMemorySpanExporter()


@worker_process_init.connect
def _trace_in_memory(**_: Any) -> None:
    tracing.setup(exporter=EXPORTER)


@task_postrun.connect
def _write_spans(**_: Any) -> None:
    spans = EXPORTER.get_finished_spans()
    EXPORTER.clear()
    with open(os.environ["VETRO_TEST_SPANS"], "a") as out:
        for span in spans:
            out.write(
                json.dumps({"trace_id": span.context.trace_id, "name": span.name, **dict(span.attributes)}) + "\n"
            )
