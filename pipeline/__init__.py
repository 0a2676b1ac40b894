"""vetro's core, and the public API a pipeline author uses; `celery -A pipeline worker` finds the app here.

    from pipeline import FanOut, Pipeline, Stage, register, stage, submit
    from pipeline import PermanentError, BusinessRuleError, TransientError, TechnicalError
    from pipeline import DependencyWaitError  # wait (an open breaker, a 429) without spending retries
    from pipeline import read_settings         # a pipeline's own settings class, read once
    from pipeline.dependencies import http_request

See the tutorial (docs/tutorial.md).
"""

from pipeline.adapter.app import app
from pipeline.failures import (
    BusinessRuleError,
    DependencyWaitError,
    FailureClass,
    PermanentError,
    TechnicalError,
    TransientError,
    default_classifier,
)
from pipeline.jobs import revoke  # noqa: F401 (a revoke of any step cancels its job)
from pipeline.jobs.pipelines import FanOut, Pipeline, register
from pipeline.jobs.producer import InvalidJobError, NotReplicatedError, submit, submit_many
from pipeline.jobs.stages import Stage, stage
from pipeline.watching import instruments  # noqa: F401 (metrics, logs and traces of every task)
from pipeline.worker import heartbeat  # noqa: F401 (the consumer step health reads)
from settings import read_settings

__all__ = [
    "BusinessRuleError",
    "DependencyWaitError",
    "FailureClass",
    "FanOut",
    "InvalidJobError",
    "NotReplicatedError",
    "PermanentError",
    "Pipeline",
    "Stage",
    "TechnicalError",
    "TransientError",
    "app",
    "default_classifier",
    "read_settings",
    "register",
    "stage",
    "submit",
    "submit_many",
]
