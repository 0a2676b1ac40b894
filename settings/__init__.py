"""vetro's one typed configuration, read from VETRO_* environment variables and `.env`."""

from settings.config import (
    CUSTOMER_SERVICE,
    BreakerPolicy,
    ConfigError,
    RateLimit,
    RouteRule,
    Settings,
    StagePolicy,
    get_settings,
    reset_settings,
    webhook_dependency,
)

__all__ = [
    "CUSTOMER_SERVICE",
    "BreakerPolicy",
    "ConfigError",
    "RateLimit",
    "RouteRule",
    "Settings",
    "StagePolicy",
    "get_settings",
    "reset_settings",
    "webhook_dependency",
]
