"""vetro's shared machinery; `celery -A pipeline worker` finds the Celery app here."""

from pipeline.app import app
from pipeline.producer import InvalidJobError, submit, submit_many

__all__ = ["InvalidJobError", "app", "submit", "submit_many"]
