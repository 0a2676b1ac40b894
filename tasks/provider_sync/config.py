"""The provider sync's own settings, read from PROVIDER_SYNC_* environment variables (and `.env`)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline import read_settings

DESTINATION = "sync-destination"  # the dependency (breaker, rate limit) every upsert goes through


class ProviderSyncSettings(BaseSettings):
    """Which providers may be synced, where they and the destination are, and how pages are read."""

    model_config = SettingsConfigDict(env_prefix="PROVIDER_SYNC_", env_file=".env", extra="ignore")

    providers: list[str] = Field(
        default_factory=lambda: ["acme", "globex"], description='JSON list, e.g. ["acme","globex"]'
    )
    provider_url: str = Field("http://127.0.0.1:8765", description="base URL of the providers' record APIs")
    destination_url: str = Field("http://127.0.0.1:8765", description="base URL of the destination's upsert API")
    page_size: int = Field(20, ge=1, le=100)
    max_pages: int = Field(1000, ge=1, description="a provider whose cursor never ends is stopped here")
    max_inline_wait: float = Field(
        5.0, ge=0, description="a 429 asking for at most this many seconds is waited out within the fetch"
    )


def sync_settings() -> ProviderSyncSettings:
    return read_settings(ProviderSyncSettings)


def provider_dependency(provider: str) -> str:
    """Each provider has its own breaker and shared rate limit, configured under this name."""
    return f"provider-{provider}"
