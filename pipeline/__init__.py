"""vetro's core, and the public API a pipeline author uses; `celery -A pipeline worker` finds the app here.

    from pipeline import FanOut, Pipeline, Stage, register, stage, submit
    from pipeline import PermanentError, BusinessRuleError, TransientError, TechnicalError
    from pipeline import DependencyWaitError  # wait (an open breaker, a 429) without spending retries
    from pipeline import read_settings         # a pipeline's own settings class, read once
    from pipeline.dependencies import http_request

See the README's "Writing a pipeline".
"""

from pipeline import instruments, logs, tracing  # noqa: F401 (metrics, logs and traces of every task)
from pipeline.app import app
from pipeline.failures import (
    BusinessRuleError,
    DependencyWaitError,
    FailureClass,
    PermanentError,
    TechnicalError,
    TransientError,
    default_classifier,
)
from pipeline.pipelines import FanOut, Pipeline, register
from pipeline.producer import InvalidJobError, submit, submit_many
from pipeline.stages import Stage, stage
from settings import read_settings

__all__ = [
    "BusinessRuleError",
    "DependencyWaitError",
    "FailureClass",
    "FanOut",
    "InvalidJobError",
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
