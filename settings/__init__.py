"""vetro's own typed configuration, read from VETRO_* environment variables and `.env`.

Each pipeline keeps its domain settings (partner URLs, routes) in a class of its own, with its
own prefix, read with `read_settings`.
"""

from settings.config import (
    BreakerPolicy,
    ConfigError,
    RateLimit,
    Settings,
    StageOverride,
    StagePolicy,
    get_settings,
    read_settings,
    reset_settings,
)

__all__ = [
    "BreakerPolicy",
    "ConfigError",
    "RateLimit",
    "Settings",
    "StageOverride",
    "StagePolicy",
    "get_settings",
    "read_settings",
    "reset_settings",
]
