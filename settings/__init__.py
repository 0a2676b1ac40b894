"""vetro's one typed configuration, read from VETRO_* environment variables and `.env`."""

from settings.config import ConfigError, RouteRule, Settings, StagePolicy, get_settings, reset_settings

__all__ = ["ConfigError", "RouteRule", "Settings", "StagePolicy", "get_settings", "reset_settings"]
