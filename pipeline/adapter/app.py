"""The Celery app, configured so that a killed worker, a broker restart or a retry loses no job."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import partial
from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from pipeline.adapter import job_headers, publishing  # noqa: F401 (job_headers: every message's headers)
from pipeline.adapter.internals import BracketingCelery, HookedAMQP, message_headers
from pipeline.adapter.shown import shown
from pipeline.context import JOB_ID
from pipeline.redis_servers import is_sentinel
from settings import ConfigError, Settings, get_settings

# The core's own modules every worker imports; at start-up they load the pipelines and the
# dead-letter store that settings name (VETRO_PIPELINES, VETRO_DEAD_LETTER_STORE).
CORE_MODULES = ["pipeline.jobs.reconciler", "pipeline.worker.startup"]

# redis-py 8 deprecates SETEX, which Celery's Redis result backend calls for every result.
warnings.filterwarnings("ignore", message="Call to deprecated setex", category=DeprecationWarning)


UNACKED_MUTEX_EXPIRE = 10  # seconds


def celery_config(settings: Settings) -> dict:
    """Celery settings derived from vetro's; every safety choice is here, in one place."""
    control = settings.control_queue
    broker_url, broker_tls = settings.broker_tls
    config = {
        "broker_url": broker_url,
        # Every step's result is recorded by its guard in the job ledger; this backend reads it there, so
        # AsyncResult works for any step of a canvas, and a task stores nothing of its own.
        "result_backend": "pipeline.jobs.results:LedgerBackend",
        "task_ignore_result": True,
        # JSON only: pickle from the broker would be remote code execution.
        "accept_content": ["json"],
        "task_serializer": "json",
        # Ack after the stage ran, give the message back if its process died, take one at a time.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # A process killed by its hard time limit gives its message back, like any process that died:
        # the guard counts the run, and VETRO_MAX_DELIVERIES of them make the step a poison job.
        "task_acks_on_timeout": False,
        "worker_prefetch_multiplier": 1,
        # Every message is inspected before Celery takes it; what it cannot take is quarantined.
        "worker_consumer": "pipeline.worker.shield:ShieldedConsumer",
        # A stage keeps running when the broker connection drops, and acks once it is back: killing it
        # mid-call would repeat the call after the visibility timeout. A copy of its message given back
        # meanwhile finds the stage's lease held and waits (pipeline.jobs.guard).
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "task_default_queue": settings.queue,
        # Housekeeping (the reconciler, the dead-letter spool) has its own queue, so it is never stuck
        # behind a backlog of stages; a stage may have its own (VETRO_QUEUES). A worker started without -Q
        # takes them all.
        "task_queues": [bound_queue(settings, name) for name in (*settings.stage_queues, control)],
        # A stage's task is named '<pipeline>.<stage>': VETRO_QUEUES routes it by that name.
        "task_routes": {"vetro.*": {"queue": control}}
        | {
            f"{pipeline}.{stage}": {"queue": queue}
            for pipeline, stages in settings.queues.items()
            for stage, queue in stages.items()
        },
        # SIGTERM is a warm shutdown: running stages finish, held retries go back to the queue at once.
        # A cold shutdown (a second signal, SIGQUIT) first gives running stages this long, then hands
        # them back to the queue instead of dropping them with their process.
        "worker_soft_shutdown_timeout": settings.shutdown_timeout,
        # Keep trying to reach the broker, at start-up and on every publish.
        "broker_connection_retry_on_startup": True,
        "broker_connection_retry": True,
        "broker_connection_max_retries": None,
        # A broker that refuses a command (Redis: NOREPLICAS under min-replicas-to-write, READONLY from a
        # demoted master, MISCONF when it cannot persist) raises a channel error; Celery ends the worker on
        # one unless this is on. With it, the worker reconnects and retries, as for a lost connection.
        "broker_channel_error_retry": True,
        "task_publish_retry": True,
        "task_publish_retry_policy": {
            "max_retries": settings.publish_max_retries,
            "interval_start": 0,
            "interval_step": 0.5,
            "interval_max": 3,
        },
        "worker_send_task_events": settings.task_events,
        "task_send_sent_event": settings.task_events,
        "worker_hijack_root_logger": False,
        # Housekeeping, run by `celery -A pipeline beat`; a run that could not start in time is dropped.
        "beat_schedule": {
            "reconcile": _every("vetro.reconcile", settings.reconcile_interval),
            "flush-dead-letter-spool": _every("vetro.dlq.flush_spool", settings.spool_flush_interval),
            "purge-dead-letters": _every("vetro.dlq.purge", 3600.0),
        },
        "enable_utc": True,
    }
    # Every key below is set whatever the broker, so that reconfiguring from one broker to another leaves
    # nothing of the first behind.
    quorum = settings.amqp_queue_type == "quorum"
    # RabbitMQ's replicated queues (Celery 5.5+): a countdown travels through RabbitMQ's own delay
    # exchanges (native delayed delivery), which route by topic; global QoS is off for them.
    config["task_default_queue_type"] = "quorum" if quorum else "classic"
    config["task_default_exchange_type"] = "topic" if quorum else "direct"
    # Publisher confirms: a publish returns once RabbitMQ has the message, or raises (and is retried).
    config["broker_transport"] = None
    config["broker_transport_options"] = {"confirm_publish": True}
    config["broker_use_ssl"] = broker_tls  # amqps://: the URL's TLS options, as py-amqp takes them
    if settings.broker_is_redis:
        # kombu's Redis transport, kept from ending the worker when Redis restarts (see the module).
        sentinel = is_sentinel(settings.broker_url)
        config["broker_transport"] = f"pipeline.adapter.transport:{'SentinelTransport' if sentinel else 'Transport'}"
        config["broker_transport_options"] = {
            "visibility_timeout": settings.visibility_timeout,
            # Sweep for a dead worker's unacked messages every interval, not every 100 s.
            "unacked_restore_interval": settings.unacked_restore_interval,
            "unacked_restore_throttle": 1,
            # kombu's restore lock is held by whoever restores; a worker killed holding it blocks every
            # redelivery until it expires (300 s by default). A restore sweep takes well under this.
            "unacked_mutex_expire": UNACKED_MUTEX_EXPIRE,
            "socket_timeout": 10,
            "socket_connect_timeout": 5,
            "health_check_interval": 10,
        }
        if sentinel:
            # The Sentinels name the master; after a failover a new connection reaches the promoted one.
            config["broker_transport_options"] |= {
                "master_name": settings.sentinel_master,
                "sentinel_kwargs": {"socket_timeout": 5, "socket_connect_timeout": 5},
            }
    return config


def records_carry_publishes() -> bool:
    """Whether a step's record can push the next step's message itself: the broker is the result store's
    Redis, reached through vetro's transport, which can hand a publish's LPUSH to the caller."""
    settings = get_settings()
    return settings.broker_is_redis and settings.broker_url == settings.results_url


def bound_queue(settings: Settings, name: str, declare: bool = True) -> Queue:
    """A queue bound to vetro's exchange by its own name, so a message routed to one queue reaches no other
    (the control queue was once bound by the default queue's key: pipeline.worker.startup unbinds that).

    On RabbitMQ with VETRO_AMQP_QUEUE_TYPE=quorum the queue is a quorum queue and the exchange a topic one
    (native delayed delivery routes by topic). `declare=False`: a queue only read from, whatever its type
    (RabbitMQ refuses to declare a classic queue again as a quorum one)."""
    quorum = settings.amqp_queue_type == "quorum"
    exchange = Exchange(settings.queue, "topic" if quorum else "direct")
    arguments = {"x-queue-type": "quorum"} if quorum else None
    return Queue(name, exchange, routing_key=name, queue_arguments=arguments, no_declare=not declare)


def _every(task: str, seconds: float) -> dict:
    return {"task": task, "schedule": seconds, "options": {"expires": seconds}}


def _configuration() -> dict:
    try:
        return celery_config(get_settings())
    except ConfigError as error:
        raise SystemExit(f"vetro: bad configuration: {error}") from None


class VetroCelery(BracketingCelery):
    """Celery's app, with every publish made inside a bracket that holds one call's sends
    (pipeline.adapter.publishing): a group's or chord's parts are captured together and open one job."""

    def bracket(self, acquire: Callable[[], Any]) -> Any:
        return publishing.producer(acquire)


class VetroAMQP(HookedAMQP):
    """Celery's message builder and sender: the arguments a message shows are redacted (pipeline.privacy), and
    inside a bracket a plain task's message waits for it to close, so a canvas that turns out to mix it with
    stages sends nothing at all."""

    def shown(self, value: Any, maxsize: int, levels: int) -> str:
        return shown(value, maxsize, levels)

    def on_send(self, send: Callable[..., Any], producer: Any, name: str, message: Any, options: dict) -> Any:
        # vetro's own messages carry their job in the `headers` option, which Celery merges into the
        # message only inside the send: never held, so a caller collecting them (captured()) gets them.
        own = message_headers(message).get(JOB_ID) or (options.get("headers") or {}).get(JOB_ID)
        if own or not publishing.hold(name, message, partial(send, producer, name, message, **options)):
            return send(producer, name, message, **options)
        return None


def create_app() -> Celery:
    """The app; its configuration is read from settings when first used, not at import."""
    # Its message builder redacts personal fields from the arguments Flower and the logs show.
    app = VetroCelery("vetro", include=CORE_MODULES, amqp=VetroAMQP)
    app.add_defaults(_configuration)
    return app


app = create_app()


def reconfigure() -> None:
    """Apply the current settings to the app, which may have read its configuration already.

    For the processes that change settings at run time (the demo, the chaos run): importing a
    pipeline finalizes the app with the settings of that moment.
    """
    app.forget_connections()  # built from the old settings
    app.conf.update(_configuration())
