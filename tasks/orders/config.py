"""The order pipeline's own settings, read from ORDERS_* environment variables (and `.env`)."""

from __future__ import annotations

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline import read_settings

CUSTOMER_SERVICE = "customer-service"


class RouteRule(BaseModel):
    """Send an order to `destination` when its type and region match (an empty list matches all)."""

    destination: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    order_types: list[str] = Field(default_factory=list)
    regions: list[str] = Field(default_factory=list)


DEFAULT_ROUTES = [
    RouteRule(destination="warehouse", order_types=["purchase", "exchange"]),
    RouteRule(destination="billing", order_types=["purchase", "refund", "subscription"]),
    RouteRule(destination="notifications", regions=["eu", "us"]),
]


class OrdersSettings(BaseSettings):
    """Where the order pipeline's partners are, and where orders go."""

    model_config = SettingsConfigDict(env_prefix="ORDERS_", env_nested_delimiter="__", env_file=".env", extra="ignore")

    partner_url: str = Field("http://127.0.0.1:8765", description="base URL of the customer service and webhooks")
    customer_service_url: str | None = None
    destination_urls: dict[str, str] = Field(default_factory=dict, description="per destination, its webhook URL")
    routes: list[RouteRule] = Field(default_factory=lambda: list(DEFAULT_ROUTES))
    transform_bug: bool = Field(False, description="make transform fail, to show dead letters and replay")

    @property
    def customer_url(self) -> str:
        return (self.customer_service_url or self.partner_url).rstrip("/")

    def destination_url(self, destination: str) -> str:
        return self.destination_urls.get(destination) or f"{self.partner_url.rstrip('/')}/webhooks/{destination}"

    @property
    def destinations(self) -> list[str]:
        return sorted({rule.destination for rule in self.routes})


def orders_settings() -> OrdersSettings:
    return read_settings(OrdersSettings)


def webhook_dependency(destination: str) -> str:
    return f"webhook-{destination}"
