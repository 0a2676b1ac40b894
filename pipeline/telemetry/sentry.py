"""Sentry, on when VETRO_SENTRY_DSN is set: one event per dead letter, none for a retry, personal fields scrubbed.

Sentry's Celery integration already leaves out Celery's control flow (a retry) and a task's
expected errors (`Task.throws`: the DeadLettered a stage fails with once its step is in the
dead-letter store), and log lines become breadcrumbs only. So the one event of a failure is the
dead letter itself, sent when the hand-off tells its observers (pipeline.watching.instruments) and
tagged with what an operator filters by: pipeline, job id, correlation id, stage, destination and
failure class.
"""

from __future__ import annotations

from typing import Any

from celery.signals import worker_init

from settings import get_settings

ENVIRONMENT_DEFAULT = "production"
_state = {"on": False}


def setup() -> bool:
    """Start Sentry in this process if a DSN is set; whether it is on.

    Sentry is imported only then: its Celery integration alone weighs about 15 MiB per process.
    """
    settings = get_settings()
    if not settings.sentry_dsn:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.logging import LoggingIntegration
    from sentry_sdk.scrubber import DEFAULT_DENYLIST, EventScrubber

    sentry_sdk.init(
        dsn=settings.sentry_dsn,
        environment=settings.sentry_environment or ENVIRONMENT_DEFAULT,
        send_default_pii=False,
        # A frame's locals hold payloads as plain strings too (a request's repr), which no key-based scrubber
        # sees: they stay out. The job's data is in its dead-letter row, behind the operator's access.
        include_local_variables=False,
        event_scrubber=EventScrubber(denylist=[*DEFAULT_DENYLIST, *settings.redact_fields], recursive=True),
        integrations=[CeleryIntegration(), LoggingIntegration(event_level=None)],
        traces_sample_rate=0.0,
    )
    _state["on"] = True
    return True


@worker_init.connect
def _start_in_worker(**_: Any) -> None:
    setup()


def dead_lettered(tags: dict[str, str | None], error: BaseException) -> None:
    """One event for a step that failed for good (nothing is sent when Sentry is off)."""
    if not _state["on"]:
        return
    import sentry_sdk

    with sentry_sdk.new_scope() as scope:
        for name, value in tags.items():
            if value is not None:
                scope.set_tag(name, value)
        sentry_sdk.capture_exception(error)
