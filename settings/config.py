"""The settings object: every knob the pipeline reads, validated once at start-up."""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from cryptography.fernet import Fernet
from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from settings.amqp_tls import amqp_tls
from settings.environment import check_environment

ENV_PREFIX = "VETRO_"
MIN_HOLD_SECONDS = 3  # the shortest countdown a retry may be held for below the visibility timeout
STALL_MARGIN_SECONDS = 10  # added to the stall bound for clock skew between hosts and sweep delay
REFERENCE_PIPELINES = ["tasks.orders", "tasks.provider_sync", "tasks.payments"]
PERSONAL_FIELDS = ("name", "email", "phone", "address")
SECRET_FIELDS = ("encryption_keys", "sentry_dsn", "serve_auth", "console_secret")  # never echoed in an error


REDIS_SCHEMES = ("redis", "rediss", "unix", "sentinel")  # sentinel://: Redis behind Sentinels
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")  # a Redis Cluster: the result and breaker stores only
STORE_SCHEMES = (*REDIS_SCHEMES, *CLUSTER_SCHEMES)
BROKER_SCHEMES = (*REDIS_SCHEMES, "amqp", "amqps", "pyamqp")
SQL_SCHEMES = ("sqlite", "postgresql", "postgres", "postgresql+psycopg")
# Celery reads these from the environment ahead of the app's own configuration (celery/app/utils.py):
# left set, the broker would silently be another server than the one vetro's ledger and guards use.
CELERY_OVERRIDES = ("CELERY_BROKER_URL", "CELERY_BROKER_READ_URL", "CELERY_BROKER_WRITE_URL", "CELERY_RESULT_BACKEND")


def _scheme(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def is_cluster(url: str) -> bool:
    """The URL names a Redis Cluster (`redis+cluster://`, `rediss+cluster://`)."""
    return _scheme(url) in CLUSTER_SCHEMES


def _hide_password(url: str) -> str:
    return re.sub(r"//([^:/@]*):[^@/]*@", r"//\1:***@", url)


# A queue's name travels in Redis keys, AMQP declarations and `celery worker -Q a,b`: no commas or spaces.
QueueName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$")]


class ConfigError(ValueError):
    """A configuration value is wrong; the message is one line naming the variable."""


class StagePolicy(BaseModel):
    """Retry and time limits of one stage (seconds; Celery's own retry_backoff semantics).

    The values here are the named defaults; a stage's decorator may set others, and settings
    override both (`VETRO_ALL_STAGES__<KNOB>`, then `VETRO_STAGES__<PIPELINE>__<STAGE>__<KNOB>`).
    """

    max_retries: int = Field(8, ge=0, description="retries for transient failures")
    technical_retries: int = Field(2, ge=0, description="retries for unclassified errors (our bugs)")
    backoff_base: int = Field(1, ge=0, description="first retry delay; doubles each retry")
    backoff_max: int = Field(30, ge=1, description="cap on one retry delay")
    jitter: bool = Field(True, description="full jitter on retry delays")
    soft_time_limit: int = Field(20, ge=1, description="SoftTimeLimitExceeded raised in the task")
    time_limit: int = Field(30, ge=1, description="the task's process is killed")

    @model_validator(mode="after")
    def _soft_below_hard(self) -> StagePolicy:
        if self.soft_time_limit >= self.time_limit:
            raise ValueError(f"soft_time_limit ({self.soft_time_limit}) must be below time_limit ({self.time_limit})")
        return self


class StageOverride(BaseModel):
    """Some of a stage policy's values, set in the environment."""

    model_config = {"extra": "forbid"}

    max_retries: int | None = Field(None, ge=0)
    technical_retries: int | None = Field(None, ge=0)
    backoff_base: int | None = Field(None, ge=0)
    backoff_max: int | None = Field(None, ge=1)
    jitter: bool | None = None
    soft_time_limit: int | None = Field(None, ge=1)
    time_limit: int | None = Field(None, ge=1)

    def values(self) -> dict[str, object]:
        return self.model_dump(exclude_none=True)


class BreakerPolicy(BaseModel):
    """When a dependency's circuit breaker opens (consecutive failures) and when it tries again (seconds)."""

    fail_max: int = Field(5, ge=1)
    reset_timeout: int = Field(30, ge=1)


class RateLimit(BaseModel):
    """Calls per second to one dependency, shared by every worker; `burst` calls may go at once."""

    rate: float = Field(gt=0)
    burst: int = Field(1, ge=1)


class Settings(BaseSettings):
    """Everything configurable, with the environment variable named VETRO_<FIELD>."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", env_file=".env", extra="ignore")

    # Where messages, results and dead letters live.
    broker_url: str = "redis://127.0.0.1:6379/0"
    result_store_url: str | None = Field(
        None, description="Redis for results and guards; defaults to the broker when it is Redis"
    )
    database_url: str = "sqlite:///vetro.db"
    queue: QueueName = Field("vetro", description="the queue every stage's messages go to unless QUEUES names another")
    amqp_queue_type: Literal["classic", "quorum"] = Field(
        "classic", description="RabbitMQ only: quorum queues are replicated (new queue names: see the RabbitMQ guide)"
    )
    queues: dict[str, dict[str, QueueName]] = Field(
        default_factory=dict, description="per pipeline and stage, a queue of its own (workers take it with -Q)"
    )

    # Delivery safety: a killed worker's unacked message comes back after visibility_timeout.
    visibility_timeout: int = Field(60, ge=4)
    unacked_restore_interval: int = Field(1, ge=1)
    publish_max_retries: int = Field(10, ge=0)
    task_events: bool = Field(
        False, description="send task events from the start; Flower turns them on in every worker while it runs"
    )
    shutdown_timeout: float = Field(
        20, ge=0, description="seconds a cold shutdown (second signal, SIGQUIT) lets running stages finish"
    )
    sentinel_master: str | None = Field(
        None, description="with sentinel:// URLs: the name the Sentinels know the master by (required then)"
    )
    submit_replicas: int = Field(
        0, ge=0, description="replicas that must hold a new job before submit returns (Redis WAIT); 0: none asked"
    )
    submit_replica_timeout: float = Field(
        1.0, gt=0, le=60, description="seconds submit waits for SUBMIT_REPLICAS before raising NotReplicatedError"
    )
    require_durable_redis: bool = Field(
        False, description="refuse to start a worker on a Redis without persistence or with eviction"
    )
    # Which pipelines exist: importable modules that declare them (every entry point loads these).
    pipelines: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(REFERENCE_PIPELINES), description="comma-separated module names"
    )
    dead_letter_store: str = Field("dlq.tasks", description="module that takes failed jobs from the core")
    all_stages: StageOverride = Field(default_factory=StageOverride, description="over every stage's own values")
    stages: dict[str, dict[str, StageOverride]] = Field(default_factory=dict, description="per pipeline and stage")

    # What a producer may submit: anything larger, deeper or stranger is refused before publishing.
    max_payload_bytes: int = Field(256 * 1024, ge=64)
    max_payload_depth: int = Field(32, ge=1, le=200, description="nesting of objects and lists")
    max_payload_elements: int = Field(50_000, ge=1, description="values in a payload, containers included")
    max_key_length: int = Field(200, ge=8, le=256, description="characters of an idempotency key")

    # Lifetimes of what vetro keeps in Redis, aligned so that each outlives what depends on it.
    submit_dedup_ttl: int = Field(8 * 24 * 3600, ge=60, description="seconds an idempotency key maps to its job id")
    job_ttl: int = Field(
        7 * 24 * 3600,
        ge=60,
        description="seconds a job's ledger and step results live after it is submitted, retried or ends",
    )
    replay_window: int = Field(
        30 * 24 * 3600, ge=60, description="seconds a dead-lettered job stays replayable (its ledger is kept)"
    )
    ledger_format: int = Field(
        3,
        ge=2,
        le=3,
        description="how a new job's record keeps its steps' results and leases: 3, on the record; 2, as releases "
        "before it did (their workers do not read 3: set 2 while any of them runs, see CHANGELOG.md)",
    )

    # The reconciler: finds jobs that stopped moving and drives them on.
    reconcile_interval: float = Field(15, gt=0, description="seconds between two sweeps (run by celery beat)")
    reconcile_max_redrives: int = Field(
        3, ge=1, description="re-drives without progress before a job is dead-lettered as stalled"
    )

    # Calls to external dependencies (the breakers' trial lock outlives the longest call).
    http_connect_timeout: float = Field(2.0, gt=0)
    http_read_timeout: float = Field(5.0, gt=0)
    slow_call_seconds: float = Field(2.0, gt=0, description="a dependency call this slow is counted and logged")

    # Circuit breakers and rate limits, per dependency ("customer-service", "webhook-<destination>").
    breakers_enabled: bool = True
    breaker: BreakerPolicy = Field(default_factory=BreakerPolicy)
    breaker_overrides: dict[str, BreakerPolicy] = Field(default_factory=dict)
    breaker_store_url: str | None = Field(None, description="Redis for breaker state; defaults to the result store")
    rate_limits: dict[str, RateLimit] = Field(default_factory=dict)
    rate_limit_max_inline_wait: float = Field(1.0, ge=0, description="wait this long in the task, else retry later")
    max_dependency_waits: int = Field(
        500, ge=1, description="retries a stage may spend waiting on open breakers and rate limits"
    )

    # The dead-letter store.
    dlq_retention_days: int = Field(30, ge=1, description="resolved and discarded rows older than this are purged")
    dlq_max_rows: int = Field(100_000, ge=100, description="cap on resolved and discarded rows kept")
    quarantine_after: int = Field(3, ge=1, description="failed replays before a row is quarantined")
    max_deliveries: int = Field(10, ge=2, description="runs of one step (crashes included) before it is a poison job")
    spool_flush_interval: int = Field(10, ge=1, description="seconds between flushes of rows spooled in Redis")

    sentry_dsn: str | None = Field(None, description="Sentry: one event per dead letter (pipeline.telemetry.sentry)")
    sentry_environment: str | None = Field(None, description="Sentry's environment tag (default: production)")

    tracing: Literal["off", "console", "otlp"] = Field(
        "off", description="OpenTelemetry traces, one per job (otlp: OTEL_EXPORTER_OTLP_ENDPOINT says where)"
    )

    # Logs (pipeline.telemetry.logs): JSON lines for a log pipeline, or lines for people.
    log_format: Literal["console", "json"] = Field("console", description="json in production")
    log_payloads: bool = Field(False, description="show a task's (redacted) result in Celery's success line")

    # Operations: `vetro serve` (metrics and health) and `vetro health`.
    serve_host: str = Field("127.0.0.1", description="interface `vetro serve` listens on")
    serve_port: int = Field(9808, ge=1, le=65535, description="its port (the Celery exporter's)")
    serve_auth: SecretStr | None = Field(
        None, description="user:password (HTTP basic auth) for /metrics and /health/*; unset, open to all who reach it"
    )
    console_users_file: Path | None = Field(
        None, description="the console's users, roles and password hashes (`vetro user add` writes it)"
    )
    console_proxy_user_header: str | None = Field(
        None, description="a reverse proxy's header naming the signed-in user (oauth2-proxy: X-Forwarded-User)"
    )
    console_trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="comma-separated addresses or networks whose user header is believed"
    )
    console_secret: SecretStr | None = Field(
        None, description="signs the console's session cookies (32+ characters); unset, a new one each start"
    )
    health_stall_seconds: float = Field(
        60, gt=0, description="a queue whose messages wait this long while no worker takes one is stalled (not ready)"
    )
    health_dead_letter_window: float = Field(
        900, gt=0, description="dead letters added within this many seconds make the service degraded"
    )
    metrics_top_fingerprints: int = Field(20, ge=1, le=200, description="open dead-letter groups shown in metrics")

    # Personal data: redacted where Celery shows a job's data, sealed where vetro keeps it (pipeline.sealing).
    redact_fields: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(PERSONAL_FIELDS),
        description="comma-separated field names (also matching '<anything>_<name>') shown as [redacted]",
    )
    encryption_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description="comma-separated Fernet keys: the first seals, every one opens (rotation)"
    )

    @field_validator("pipelines", "redact_fields", "encryption_keys", "console_trusted_proxies", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value

    @field_validator("serve_auth")
    @classmethod
    def _user_and_password(cls, secret: SecretStr | None) -> SecretStr | None:
        if secret is not None:
            user, _, password = secret.get_secret_value().partition(":")
            if not user or not password:
                raise ValueError("give user:password")
        return secret

    @field_validator("console_users_file")
    @classmethod
    def _users_file_exists(cls, path: Path | None) -> Path | None:
        if path is not None and not path.is_file():
            raise ValueError(f"no such file: {str(path)[:200]} (make it with `vetro user add`)")
        return path

    @field_validator("console_trusted_proxies")
    @classmethod
    def _networks(cls, proxies: list[str]) -> list[str]:
        for proxy in proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(f"{proxy[:60]!r} is not an address or a network (10.0.0.5, 10.0.0.0/24)") from None
        return proxies

    @model_validator(mode="after")
    def _proxy_named_whole(self) -> Settings:
        """A user header without proxies to believe it from, or proxies without a header, names nothing."""
        if bool(self.console_proxy_user_header) != bool(self.console_trusted_proxies):
            given, missing = (
                ("CONSOLE_PROXY_USER_HEADER", "CONSOLE_TRUSTED_PROXIES")
                if self.console_proxy_user_header
                else ("CONSOLE_TRUSTED_PROXIES", "CONSOLE_PROXY_USER_HEADER")
            )
            raise ValueError(f"{ENV_PREFIX}{given} is set without {ENV_PREFIX}{missing}: set both, or neither")
        return self

    @field_validator("console_secret")
    @classmethod
    def _long_secret(cls, secret: SecretStr | None) -> SecretStr | None:
        if secret is not None and len(secret.get_secret_value()) < 32:
            raise ValueError("at least 32 characters (make one with `vetro keygen`)")
        return secret

    @field_validator("encryption_keys")
    @classmethod
    def _fernet_keys(cls, keys: list[SecretStr]) -> list[SecretStr]:
        for number, key in enumerate(keys, 1):
            try:
                Fernet(key.get_secret_value())
            except ValueError:
                raise ValueError(
                    f"key {number} is not a Fernet key (32 url-safe base64-encoded bytes; make one with `vetro keygen`)"
                ) from None
        return keys

    @model_validator(mode="after")
    def _servers_given(self) -> Settings:
        """Every server named explicitly and of a kind vetro speaks: none is ever guessed."""
        checks = [
            ("BROKER_URL", self.broker_url, BROKER_SCHEMES),
            ("DATABASE_URL", self.database_url, SQL_SCHEMES),
            ("RESULT_STORE_URL", self.result_store_url, STORE_SCHEMES),
            ("BREAKER_STORE_URL", self.breaker_store_url, STORE_SCHEMES),
        ]
        if is_cluster(self.broker_url):
            raise ValueError(
                f"{ENV_PREFIX}BROKER_URL: a Redis Cluster cannot be the broker (kombu has no cluster transport); "
                f"name it as {ENV_PREFIX}RESULT_STORE_URL and give a Redis or RabbitMQ broker"
            )
        for name, url, schemes in checks:
            if url is not None and _scheme(url) not in schemes:
                shown = _hide_password(url)[:80]
                raise ValueError(f"{ENV_PREFIX}{name}: {shown!r} is not a {' / '.join(schemes)}:// URL")
        if self.broker_is_redis and self.amqp_queue_type != "classic":
            raise ValueError(
                f"{ENV_PREFIX}AMQP_QUEUE_TYPE: {self.amqp_queue_type} queues are RabbitMQ's, and the broker is Redis"
            )
        if not self.broker_is_redis:
            try:
                amqp_tls(self.broker_url)
            except ValueError as refused:
                raise ValueError(f"{ENV_PREFIX}BROKER_URL: {refused}") from None
        if not self.broker_is_redis and not self.result_store_url:
            raise ValueError(
                f"{ENV_PREFIX}RESULT_STORE_URL: required with a broker that is not Redis "
                f"({_hide_password(self.broker_url)}): the ledger, guards and breakers live in Redis"
            )
        sentinels = [name for name, url, _ in checks if url is not None and _scheme(url) == "sentinel"]
        if sentinels and not self.sentinel_master:
            raise ValueError(
                f"{ENV_PREFIX}SENTINEL_MASTER: required with a sentinel:// URL ({ENV_PREFIX}{sentinels[0]}): "
                "the name the Sentinels know the master by"
            )
        if self.sentinel_master and not sentinels:
            raise ValueError(
                f"{ENV_PREFIX}SENTINEL_MASTER is set ({self.sentinel_master!r}) but no URL is sentinel://: "
                "it names nothing"
            )
        self._cluster_fits()
        for variable in CELERY_OVERRIDES:
            value = os.environ.get(variable)
            if value and (variable == "CELERY_RESULT_BACKEND" or value != self.broker_url):
                raise ValueError(
                    f"{variable} is set ({_hide_password(value)[:80]}): Celery would use it instead of vetro's "
                    f"{ENV_PREFIX}BROKER_URL; unset it (vetro keeps results in its own Redis)"
                )
        return self

    def _cluster_fits(self) -> None:
        """A Redis Cluster store names its nodes, has one database, and no WAIT that covers a job's writes (they
        span nodes)."""
        for name, url in (("RESULT_STORE_URL", self.result_store_url), ("BREAKER_STORE_URL", self.breaker_store_url)):
            if url is None or not is_cluster(url):
                continue
            hosts, _, database = url.split("?", 1)[0].split("://", 1)[1].partition("/")
            if not hosts.rpartition("@")[2].strip(", "):
                raise ValueError(f"{ENV_PREFIX}{name}: the redis+cluster:// URL lists no node (host:port,host:port)")
            if database.strip("/") not in ("", "0"):
                raise ValueError(
                    f"{ENV_PREFIX}{name}: a Redis Cluster has only database 0, not {database.strip('/')!r}"
                )
        if self.submit_replicas and is_cluster(self.results_url):
            raise ValueError(
                f"{ENV_PREFIX}SUBMIT_REPLICAS: not with a Redis Cluster result store: a job's writes span several "
                "masters and WAIT covers one (set 0; each master's replicas and min-replicas-to-write still apply)"
            )

    @model_validator(mode="after")
    def _control_queue_apart(self) -> Settings:
        for pipeline, stages in self.queues.items():
            for stage, queue in stages.items():
                if queue == self.control_queue:
                    raise ValueError(
                        f"{ENV_PREFIX}QUEUES__{pipeline.upper()}__{stage.upper()}: {queue!r} is housekeeping's "
                        f"queue; give the stage a queue of its own"
                    )
        return self

    @model_validator(mode="after")
    def _lifetimes_aligned(self) -> Settings:
        # A resubmission must find the job while its ledger lives; a dead letter must find its ledger.
        for longer, shorter in (("submit_dedup_ttl", "job_ttl"), ("replay_window", "job_ttl")):
            if getattr(self, longer) < getattr(self, shorter):
                raise ValueError(
                    f"{ENV_PREFIX}{longer.upper()} ({getattr(self, longer)}) must be at least "
                    f"{ENV_PREFIX}{shorter.upper()} ({getattr(self, shorter)})"
                )
        return self

    def stage_policy(self, pipeline: str, stage: str, declared: dict[str, object]) -> StagePolicy:
        """A stage's policy: the named defaults, then its decorator's values, then the settings' overrides."""
        override = self.stages.get(pipeline, {}).get(stage, StageOverride())
        variable = f"{ENV_PREFIX}STAGES__{pipeline.upper()}__{stage.upper()}"
        try:
            policy = StagePolicy(**{**declared, **self.all_stages.values(), **override.values()})
        except ValidationError as error:
            raise ConfigError(_one_line(error, prefix=f"{variable}__", subject=variable)) from None
        # A message still unacked after visibility_timeout is delivered again, so it must outlast the
        # longest the stage can run, with room left for a retry's countdown (see pipeline.jobs.retry).
        needed = policy.time_limit + MIN_HOLD_SECONDS
        if self.visibility_timeout < needed:
            raise ConfigError(
                f"{ENV_PREFIX}VISIBILITY_TIMEOUT ({self.visibility_timeout}) must be at least the time limit of "
                f"{pipeline}.{stage} + {MIN_HOLD_SECONDS} ({needed}), or a running task is delivered twice"
            )
        return policy

    def queue_for(self, pipeline: str, stage: str) -> str | None:
        """The queue a stage's own setting names (VETRO_QUEUES__<PIPELINE>__<STAGE>); None: the default queue."""
        return self.queues.get(pipeline, {}).get(stage)

    @property
    def stage_queues(self) -> list[str]:
        """Every queue stages are sent to: the default one first, then those QUEUES names."""
        named = {queue for stages in self.queues.values() for queue in stages.values()}
        return [self.queue, *sorted(named - {self.queue})]

    @property
    def control_queue(self) -> str:
        """Housekeeping's queue (the reconciler, the dead-letter spool): never behind a backlog of stages."""
        return f"{self.queue}.control"

    def breaker_policy(self, dependency: str) -> BreakerPolicy:
        return self.breaker_overrides.get(dependency, self.breaker)

    @property
    def breaker_url(self) -> str:
        return self.breaker_store_url or self.results_url

    @property
    def broker_is_redis(self) -> bool:
        """The broker is Redis, direct or through Sentinels (else RabbitMQ)."""
        return _scheme(self.broker_url) in REDIS_SCHEMES

    @property
    def broker_tls(self) -> tuple[str, dict[str, Any] | None]:
        """The broker's URL as Celery is given it, and the TLS options of an amqps:// one (settings.amqp_tls)."""
        return (self.broker_url, None) if self.broker_is_redis else amqp_tls(self.broker_url)

    @property
    def results_url(self) -> str:
        return self.result_store_url or self.broker_url  # the broker is Redis unless a store is named

    @property
    def sql_url(self) -> str:
        return with_sql_driver(self.database_url)


def with_sql_driver(url: str) -> str:
    """The database URL naming the installed driver (psycopg 3) when it is a plain postgresql:// URL."""
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url.removeprefix(plain)
    return url


def _one_line(error: ValidationError, prefix: str, subject: str = "") -> str:
    """The first problem, naming its variable (`prefix` + the field's path; `subject` for the whole)."""
    first = error.errors()[0]
    path = [str(part) for part in first["loc"]]
    message = first["msg"].removeprefix("Value error, ")
    extra = f"; {len(error.errors()) - 1} more problem(s)" if len(error.errors()) > 1 else ""
    if not path:
        return f"{subject}: {message}{extra}" if subject else message + extra
    shown = not isinstance(first["input"], dict) and path[0] not in SECRET_FIELDS
    got = f" (got {first['input']!r})" if shown else ""
    return f"{prefix}{'__'.join(path).upper()}: {message}{got}{extra}"


T = TypeVar("T", bound=BaseSettings)
_read: dict[type, BaseSettings] = {}


def read_settings(cls: type[T]) -> T:
    """One settings class (vetro's, or a pipeline's with its own prefix), read once; a bad value
    raises ConfigError with one line naming the variable."""
    if cls not in _read:
        prefix = cls.model_config.get("env_prefix", "")
        unknown = check_environment(cls)
        if unknown:
            raise ConfigError(unknown)
        try:
            _read[cls] = cls()
        except ValidationError as error:
            raise ConfigError(_one_line(error, prefix)) from None
        except SettingsError as error:  # a value pydantic-settings could not even parse (malformed JSON)
            field = re.search(r'field "([^"]+)"', str(error))
            cause = f": {error.__cause__}" if error.__cause__ else ""
            name = f"{prefix}{field.group(1).upper()}" if field else prefix.rstrip("_")
            raise ConfigError(f"{name}: not valid JSON{cause}") from None
    return _read[cls]


def get_settings() -> Settings:
    """vetro's own settings, read once."""
    return read_settings(Settings)


def reset_settings() -> None:
    """Forget every settings class read so far, so the next read sees the environment (tests, the demo)."""
    _read.clear()
