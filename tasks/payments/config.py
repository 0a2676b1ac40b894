"""The payment saga's own settings, read from PAYMENTS_* environment variables (and `.env`)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline import read_settings

PAYMENT_SERVICE = "payment-service"  # the dependency (breaker, rate limit) every call goes through


class PaymentsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PAYMENTS_", env_file=".env", extra="ignore")

    service_url: str = Field("http://127.0.0.1:8765", description="base URL of the payment service")


def payments_settings() -> PaymentsSettings:
    return read_settings(PaymentsSettings)
