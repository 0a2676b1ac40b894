"""A fleet's configuration that names nothing stops start-up in one line; a renamed setting names its new name.

The tests' own variables (VETRO_TEST_*) are ignored silently; Kubernetes' service links for a Service
named after the prefix are recognised by name and value, and ignored with one warning line.
"""

import logging

import pytest
from pydantic_settings import BaseSettings, SettingsConfigDict

from settings import ConfigError, get_settings, read_settings, reset_settings


@pytest.fixture(autouse=True)
def _fresh_settings():
    reset_settings()
    yield
    reset_settings()


class ShopSettings(BaseSettings):
    """A pipeline's own settings, with its own prefix (as tasks/orders' ORDERS_*)."""

    model_config = SettingsConfigDict(env_prefix="SHOPTEST_", env_nested_delimiter="__", extra="ignore")

    partner_url: str = "http://127.0.0.1:1"
    limits: dict[str, int] = {}


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        (
            "VETRO_BROKER_URLS",
            "redis://127.0.0.1:6379/0",
            "VETRO_BROKER_URLS names no setting; did you mean VETRO_BROKER_URL?",
        ),
        ("VETRO_QUEUE__X", "a", "VETRO_QUEUE__X names no setting"),
        (
            "VETRO_BREAKER__FAILMAX",
            "3",
            "VETRO_BREAKER__FAILMAX names no setting; did you mean VETRO_BREAKER__FAIL_MAX?",
        ),
        ("VETRO_RATE_LIMITS__SHOP__RATEE", "3", "VETRO_RATE_LIMITS__SHOP__RATEE names no setting"),
        ("VETRO_PARTNER_URL", "http://x", "VETRO_PARTNER_URL was renamed ORDERS_PARTNER_URL: set that instead"),
        ("VETRO_ROUTES", "[]", "VETRO_ROUTES was renamed ORDERS_ROUTES"),
        ("VETRO_DESTINATION_URLS", "{}", "VETRO_DESTINATION_URLS was renamed ORDERS_DESTINATION_URLS"),
        ("vetro_brokr_url", "redis://x", "VETRO_BROKR_URL names no setting"),  # read whatever its case
        ("VETRO_SERVER_PORT", "9000", "VETRO_SERVER_PORT names no setting"),  # a port number is no service link
    ],
)
def test_a_variable_that_names_no_setting_stops_start_up_in_one_line(monkeypatch, variable, value, expected):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as raised:
        get_settings()
    assert str(raised.value).startswith(expected) and "\n" not in str(raised.value)


def test_nested_settings_and_mapping_keys_are_known(monkeypatch):
    monkeypatch.setenv("VETRO_BREAKER__FAIL_MAX", "3")
    monkeypatch.setenv("VETRO_RATE_LIMITS__SHOP__RATE", "5")
    monkeypatch.setenv("VETRO_BREAKER_OVERRIDES__SHOP__RESET_TIMEOUT", "9")
    settings = get_settings()
    assert settings.breaker.fail_max == 3 and settings.rate_limits["shop"].rate == 5
    assert settings.breaker_overrides["shop"].reset_timeout == 9


def test_a_pipelines_own_prefix_is_held_to_its_class(monkeypatch):
    monkeypatch.setenv("SHOPTEST_LIMITS__CART", "4")
    assert read_settings(ShopSettings).limits == {"cart": 4}
    reset_settings()
    monkeypatch.setenv("SHOPTEST_PARTNER_ULR", "http://x")
    with pytest.raises(
        ConfigError, match=r"^SHOPTEST_PARTNER_ULR names no setting; did you mean SHOPTEST_PARTNER_URL\?"
    ):
        read_settings(ShopSettings)


def test_a_dotenv_file_is_held_to_the_same_names(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("VETRO_LOG_FORMAT=json\nVETRO_LOG_FROMAT=json\n")
    with pytest.raises(ConfigError, match=r"^VETRO_LOG_FROMAT names no setting"):
        get_settings()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("VETRO_PORT", "tcp://10.0.0.7:9808"),
        ("VETRO_SERVICE_HOST", "10.0.0.7"),
        ("VETRO_SERVICE_PORT", "9808"),
        ("VETRO_SERVICE_PORT_HTTP", "9808"),
        ("VETRO_PORT_9808_TCP", "tcp://10.0.0.7:9808"),
        ("VETRO_PORT_9808_TCP_PROTO", "tcp"),
        ("VETRO_PORT_9808_TCP_PORT", "9808"),
        ("VETRO_PORT_9808_TCP_ADDR", "10.0.0.7"),
        ("VETRO_CONSOLE_SERVICE_HOST", "fd00::7"),  # a Service named vetro-console
        ("VETRO_CONSOLE_PORT", "tcp://[fd00::7]:80"),
    ],
)
def test_kubernetes_service_links_are_ignored_with_a_warning(monkeypatch, caplog, variable, value):
    monkeypatch.setenv(variable, value)
    with caplog.at_level(logging.WARNING, logger="vetro.settings"):
        get_settings()
    warnings = [record.getMessage() for record in caplog.records if record.name == "vetro.settings"]
    assert len(warnings) == 1 and variable in warnings[0]


def test_the_tests_own_variables_are_ignored_without_a_word(monkeypatch, caplog):
    """They are set for a whole run (CI sets VETRO_TEST_REQUIRE_*): a warning would open every CLI's stderr."""
    monkeypatch.setenv("VETRO_TEST_ANYTHING", "1")
    with caplog.at_level(logging.DEBUG, logger="vetro.settings"):
        get_settings()
    assert not [record for record in caplog.records if record.name == "vetro.settings"]
