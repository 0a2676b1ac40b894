"""Settings: read from the environment; a bad value is one line naming the variable."""

import pytest

from settings import ConfigError, Settings, get_settings, reset_settings


@pytest.fixture(autouse=True)
def _fresh_settings():
    reset_settings()
    yield
    reset_settings()


def test_a_stage_value_can_be_overridden_alone(monkeypatch):
    monkeypatch.setenv("VETRO_STAGES__OPERATE__MAX_RETRIES", "12")
    settings = get_settings()
    assert settings.stages.for_stage("operate").max_retries == 12
    assert settings.stages.for_stage("operate").time_limit == Settings().stages.for_stage("operate").time_limit


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        (
            "VETRO_STAGES__OPERATE__TIME_LIMIT",
            "soon",
            "VETRO_STAGES__OPERATE__TIME_LIMIT: Input should be a valid integer",
        ),
        ("VETRO_MAX_PAYLOAD_BYTES", "-1", "VETRO_MAX_PAYLOAD_BYTES: Input should be greater than or equal to 64"),
        ("VETRO_VISIBILITY_TIMEOUT", "10", "VETRO_VISIBILITY_TIMEOUT (10) must exceed"),
        ("VETRO_STAGES__ROUTE__SOFT_TIME_LIMIT", "99", "VETRO_STAGES__ROUTE: soft_time_limit (99) must be below"),
    ],
)
def test_a_bad_value_names_the_variable_in_one_line(monkeypatch, variable, value, expected):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as raised:
        get_settings()
    assert str(raised.value).startswith(expected)
    assert "\n" not in str(raised.value)


def test_result_store_defaults_to_a_redis_broker(monkeypatch):
    monkeypatch.setenv("VETRO_BROKER_URL", "redis://127.0.0.1:6390/3")
    monkeypatch.delenv("VETRO_RESULT_STORE_URL", raising=False)
    assert get_settings().results_url == "redis://127.0.0.1:6390/3"


def test_destination_urls_default_to_the_partner(monkeypatch):
    monkeypatch.setenv("VETRO_PARTNER_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("VETRO_DESTINATION_URLS", '{"billing": "http://127.0.0.1:9100/hook"}')
    settings = get_settings()
    assert settings.destination_url("warehouse") == "http://127.0.0.1:9000/webhooks/warehouse"
    assert settings.destination_url("billing") == "http://127.0.0.1:9100/hook"


def test_a_breaker_must_reset_before_the_visibility_timeout(monkeypatch):
    monkeypatch.setenv("VETRO_BREAKER__RESET_TIMEOUT", "90")
    with pytest.raises(ConfigError, match=r"^VETRO_BREAKER__RESET_TIMEOUT \(90\) must be below"):
        get_settings()
