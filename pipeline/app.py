"""The Celery app, configured so that a killed worker, a broker restart or a retry loses no job."""

from __future__ import annotations

import warnings

from celery import Celery

from settings import ConfigError, Settings, get_settings

# Modules whose tasks every worker registers (the reference pipeline's stages).
TASK_MODULES = ["tasks.orders", "dlq.tasks"]

# redis-py 8 deprecates SETEX, which Celery's result backend calls for every result.
warnings.filterwarnings("ignore", message="Call to deprecated setex", category=DeprecationWarning)


def _is_redis(url: str) -> bool:
    return url.startswith(("redis://", "rediss://", "unix://"))


def celery_config(settings: Settings) -> dict:
    """Celery settings derived from vetro's; every safety choice is here, in one place."""
    config = {
        "broker_url": settings.broker_url,
        "result_backend": settings.results_url,
        # JSON only: pickle from the broker would be remote code execution.
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_serializer": "json",
        "result_serializer": "json",
        # Ack after the stage ran, give the message back if its process died, take one at a time.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "task_default_queue": settings.queue,
        # Keep trying to reach the broker, at start-up and on every publish.
        "broker_connection_retry_on_startup": True,
        "broker_connection_retry": True,
        "broker_connection_max_retries": None,
        "task_publish_retry": True,
        "task_publish_retry_policy": {
            "max_retries": settings.publish_max_retries,
            "interval_start": 0,
            "interval_step": 0.5,
            "interval_max": 3,
        },
        "result_backend_always_retry": True,
        "result_backend_max_retries": 20,
        "result_expires": settings.result_ttl,
        "redis_socket_timeout": 10,
        "redis_socket_connect_timeout": 5,
        "redis_retry_on_timeout": True,
        "worker_send_task_events": settings.task_events,
        "task_send_sent_event": settings.task_events,
        "worker_hijack_root_logger": False,
        # Housekeeping of the dead-letter store, run by `celery -A pipeline beat`.
        "beat_schedule": {
            "flush-dead-letter-spool": {"task": "vetro.dlq.flush_spool", "schedule": settings.spool_flush_interval},
            "purge-dead-letters": {"task": "vetro.dlq.purge", "schedule": 3600.0},
        },
        "enable_utc": True,
    }
    if _is_redis(settings.broker_url):
        config["broker_transport_options"] = {
            "visibility_timeout": settings.visibility_timeout,
            # Sweep for a dead worker's unacked messages every interval, not every 100 s.
            "unacked_restore_interval": settings.unacked_restore_interval,
            "unacked_restore_throttle": 1,
            "socket_timeout": 10,
            "socket_connect_timeout": 5,
            "health_check_interval": 10,
        }
    return config


def _configuration() -> dict:
    try:
        return celery_config(get_settings())
    except ConfigError as error:
        raise SystemExit(f"vetro: bad configuration: {error}") from None


def create_app() -> Celery:
    """The app; its configuration is read from settings when first used, not at import."""
    app = Celery("vetro", include=TASK_MODULES)
    app.add_defaults(_configuration)
    return app


app = create_app()
