"""The settings object: every knob the pipeline reads, validated once at start-up."""

from __future__ import annotations

from functools import lru_cache

from pydantic import BaseModel, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "VETRO_"
CUSTOMER_SERVICE = "customer-service"
STAGE_NAMES = ("validate", "enrich", "transform", "route", "operate", "finish")


class ConfigError(ValueError):
    """A configuration value is wrong; the message is one line naming the variable."""


class StagePolicy(BaseModel):
    """Retry and time limits of one stage (seconds; Celery's own retry_backoff semantics)."""

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


class StagePolicies(BaseModel):
    """One policy per stage; override one value with e.g. VETRO_STAGES__OPERATE__MAX_RETRIES=12."""

    validate_: StagePolicy = Field(default_factory=StagePolicy, alias="validate")
    enrich: StagePolicy = Field(default_factory=StagePolicy)
    transform: StagePolicy = Field(default_factory=StagePolicy)
    route: StagePolicy = Field(default_factory=StagePolicy)
    operate: StagePolicy = Field(default_factory=StagePolicy)
    finish: StagePolicy = Field(default_factory=StagePolicy)

    model_config = {"populate_by_name": True}

    def for_stage(self, stage: str) -> StagePolicy:
        return getattr(self, "validate_" if stage == "validate" else stage)

    def all(self) -> dict[str, StagePolicy]:
        return {name: self.for_stage(name) for name in STAGE_NAMES}


class RouteRule(BaseModel):
    """Send an order to `destination` when its type and region match (an empty list matches all)."""

    destination: str
    order_types: list[str] = Field(default_factory=list)
    regions: list[str] = Field(default_factory=list)


class BreakerPolicy(BaseModel):
    """When a dependency's circuit breaker opens (consecutive failures) and when it tries again (seconds)."""

    fail_max: int = Field(5, ge=1)
    reset_timeout: int = Field(30, ge=1)


class RateLimit(BaseModel):
    """Calls per second to one dependency, shared by every worker; `burst` calls may go at once."""

    rate: float = Field(gt=0)
    burst: int = Field(1, ge=1)


DEFAULT_ROUTES = [
    RouteRule(destination="warehouse", order_types=["purchase", "exchange"]),
    RouteRule(destination="billing", order_types=["purchase", "refund", "subscription"]),
    RouteRule(destination="notifications", regions=["eu", "us"]),
]


class Settings(BaseSettings):
    """Everything configurable, with the environment variable named VETRO_<FIELD>."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", env_file=".env", extra="ignore")

    # Where messages, results and dead letters live.
    broker_url: str = "redis://127.0.0.1:6379/0"
    result_store_url: str | None = Field(
        None, description="Redis for results and guards; defaults to the broker when it is Redis"
    )
    database_url: str = "sqlite:///vetro.db"
    queue: str = "vetro"

    # Delivery safety: a killed worker's unacked message comes back after visibility_timeout.
    visibility_timeout: int = Field(60, ge=2)
    unacked_restore_interval: int = Field(1, ge=1)
    publish_max_retries: int = Field(10, ge=0)
    task_events: bool = Field(True, description="send task events for Flower")
    stages: StagePolicies = Field(default_factory=StagePolicies)

    # Producers.
    max_payload_bytes: int = Field(256 * 1024, ge=64)
    submit_dedup_ttl: int = Field(24 * 3600, ge=1, description="seconds an idempotency key maps to its job id")
    idempotency_ttl: int = Field(7 * 24 * 3600, ge=60, description="seconds a stage's recorded result is kept")
    job_record_ttl: int = Field(7 * 24 * 3600, ge=60, description="seconds a job's outcome is kept")
    result_ttl: int = Field(24 * 3600, ge=60, description="seconds Celery keeps task results")

    # External services.
    partner_url: str = "http://127.0.0.1:8765"
    customer_service_url: str | None = None
    destination_urls: dict[str, str] = Field(default_factory=dict)
    http_connect_timeout: float = Field(2.0, gt=0)
    http_read_timeout: float = Field(5.0, gt=0)
    routes: list[RouteRule] = Field(default_factory=lambda: list(DEFAULT_ROUTES))

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
    demo_transform_bug: bool = Field(False, description="make transform fail, to show dead letters and replay")

    sentry_dsn: str | None = None

    @model_validator(mode="after")
    def _visibility_outlasts_every_task(self) -> Settings:
        # A message still unacked after visibility_timeout is delivered again, so it
        # must outlast the longest a task can run and the longest it can wait for a retry.
        for name, policy in self.stages.all().items():
            longest = max(policy.time_limit, policy.backoff_max)
            if self.visibility_timeout <= longest:
                raise ValueError(
                    f"{ENV_PREFIX}VISIBILITY_TIMEOUT ({self.visibility_timeout}) must exceed the {name} stage's "
                    f"time_limit and backoff_max ({longest}), or a running task is delivered twice"
                )
        return self

    @model_validator(mode="after")
    def _breakers_reset_within_visibility(self) -> Settings:
        # A stage waits for an open breaker with a countdown; it must come back before Redis redelivers it.
        overrides = {
            f"{ENV_PREFIX}BREAKER_OVERRIDES[{name!r}].reset_timeout": policy
            for name, policy in self.breaker_overrides.items()
        }
        for variable, policy in {f"{ENV_PREFIX}BREAKER__RESET_TIMEOUT": self.breaker, **overrides}.items():
            if policy.reset_timeout >= self.visibility_timeout:
                raise ValueError(
                    f"{variable} ({policy.reset_timeout}) must be below "
                    f"{ENV_PREFIX}VISIBILITY_TIMEOUT ({self.visibility_timeout})"
                )
        return self

    def breaker_policy(self, dependency: str) -> BreakerPolicy:
        return self.breaker_overrides.get(dependency, self.breaker)

    @property
    def breaker_url(self) -> str:
        return self.breaker_store_url or self.results_url

    @property
    def dependencies(self) -> list[str]:
        """Every external dependency the pipeline calls, by the name breakers and limits use."""
        return [CUSTOMER_SERVICE, *(webhook_dependency(name) for name in self.destinations)]

    @property
    def results_url(self) -> str:
        if self.result_store_url:
            return self.result_store_url
        if self.broker_url.startswith(("redis://", "rediss://")):
            return self.broker_url
        return "redis://127.0.0.1:6379/0"

    @property
    def sql_url(self) -> str:
        return with_sql_driver(self.database_url)

    @property
    def customer_url(self) -> str:
        return (self.customer_service_url or self.partner_url).rstrip("/")

    def destination_url(self, destination: str) -> str:
        return self.destination_urls.get(destination) or f"{self.partner_url.rstrip('/')}/webhooks/{destination}"

    @property
    def destinations(self) -> list[str]:
        return sorted({rule.destination for rule in self.routes})


def with_sql_driver(url: str) -> str:
    """The database URL naming the installed driver (psycopg 3) when it is a plain postgresql:// URL."""
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url.removeprefix(plain)
    return url


def webhook_dependency(destination: str) -> str:
    return f"webhook-{destination}"


def _one_line(error: ValidationError) -> str:
    first = error.errors()[0]
    path = [str(part) for part in first["loc"]]
    message = first["msg"].removeprefix("Value error, ")
    extra = f"; {len(error.errors()) - 1} more problem(s)" if len(error.errors()) > 1 else ""
    if not path:
        return message + extra
    got = f" (got {first['input']!r})" if not isinstance(first["input"], dict) else ""
    return f"{ENV_PREFIX}{'__'.join(path).upper()}: {message}{got}{extra}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once; a bad value raises ConfigError with one clear line."""
    try:
        return Settings()
    except ValidationError as error:
        raise ConfigError(_one_line(error)) from None


def reset_settings() -> None:
    """Forget the cached settings so the next call re-reads the environment (tests, the demo)."""
    get_settings.cache_clear()
