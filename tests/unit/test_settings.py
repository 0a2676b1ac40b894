"""Settings: read from the environment; a bad value is one line naming the variable."""

import pytest

from settings import ConfigError, StagePolicy, get_settings, reset_settings


@pytest.fixture(autouse=True)
def _fresh_settings():
    reset_settings()
    yield
    reset_settings()


def test_a_stages_policy_is_the_defaults_then_its_decorator_then_the_settings(monkeypatch):
    monkeypatch.setenv("VETRO_ALL_STAGES__BACKOFF_MAX", "9")
    monkeypatch.setenv("VETRO_STAGES__REFUNDS__CHARGE_CARD__MAX_RETRIES", "12")
    policy = get_settings().stage_policy("refunds", "charge_card", {"time_limit": 45, "max_retries": 3})
    assert (policy.max_retries, policy.time_limit, policy.backoff_max) == (12, 45, 9)
    assert policy.technical_retries == StagePolicy().technical_retries
    other = get_settings().stage_policy("refunds", "notify", {})
    assert (other.max_retries, other.backoff_max) == (StagePolicy().max_retries, 9)


def test_a_stage_policy_that_does_not_hold_together_names_its_variable(monkeypatch):
    monkeypatch.setenv("VETRO_STAGES__REFUNDS__NOTIFY__SOFT_TIME_LIMIT", "99")
    with pytest.raises(ConfigError, match=r"^VETRO_STAGES__REFUNDS__NOTIFY: soft_time_limit \(99\) must be below"):
        get_settings().stage_policy("refunds", "notify", {})
    with pytest.raises(ConfigError, match=r"^VETRO_VISIBILITY_TIMEOUT \(60\) must be at least the time limit of"):
        get_settings().stage_policy("refunds", "charge_card", {"time_limit": 90, "soft_time_limit": 80})


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        (
            "VETRO_STAGES__ORDERS__OPERATE__TIME_LIMIT",
            "soon",
            "VETRO_STAGES__ORDERS__OPERATE__TIME_LIMIT: Input should be a valid integer",
        ),
        (
            "VETRO_STAGES__ORDERS__OPERATE__TIMELIMIT",
            "5",
            "VETRO_STAGES__ORDERS__OPERATE__TIMELIMIT names no setting; did you mean "
            "VETRO_STAGES__ORDERS__OPERATE__TIME_LIMIT?",
        ),
        ("VETRO_MAX_PAYLOAD_BYTES", "-1", "VETRO_MAX_PAYLOAD_BYTES: Input should be greater than or equal to 64"),
        # Lifetimes are aligned, so that nothing outlives what it points to.
        ("VETRO_SUBMIT_DEDUP_TTL", "3600", "VETRO_SUBMIT_DEDUP_TTL (3600) must be at least VETRO_JOB_TTL (604800)"),
        ("VETRO_REPLAY_WINDOW", "3600", "VETRO_REPLAY_WINDOW (3600) must be at least VETRO_JOB_TTL (604800)"),
        ("VETRO_SERVE_AUTH", "just-a-password", "VETRO_SERVE_AUTH: give user:password"),
        ("VETRO_LOG_FORMAT", "xml", "VETRO_LOG_FORMAT: Input should be 'console' or 'json'"),
        ("VETRO_TRACING", "jaeger", "VETRO_TRACING: Input should be 'off', 'console' or 'otlp'"),
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


def test_the_stall_bound_covers_a_redelivery_and_the_longest_stage(monkeypatch):
    from pipeline.jobs.pipelines import load_pipelines, stall_after

    monkeypatch.setenv("VETRO_VISIBILITY_TIMEOUT", "40")
    load_pipelines()  # the reference pipelines' stages: 30 s each by default
    assert stall_after() == 40 + 30 + 10  # visibility + the longest time limit + margin


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        (
            {"VETRO_BROKER_URL": "foo://x"},
            "VETRO_BROKER_URL: 'foo://x' is not a redis / rediss / unix / sentinel / amqp",
        ),
        ({"VETRO_BROKER_URL": "not-a-url"}, "VETRO_BROKER_URL: 'not-a-url' is not a"),
        (
            {"VETRO_BROKER_URL": "amqp://guest:secret@127.0.0.1//", "VETRO_RESULT_STORE_URL": None},
            "VETRO_RESULT_STORE_URL: required with a broker",
        ),
        ({"VETRO_DATABASE_URL": "nosuchdb://x"}, "VETRO_DATABASE_URL: 'nosuchdb://x' is not a sqlite"),
        ({"VETRO_RESULT_STORE_URL": "http://x"}, "VETRO_RESULT_STORE_URL: 'http://x' is not a redis"),
        ({"CELERY_BROKER_URL": "redis://elsewhere:6379/0"}, "CELERY_BROKER_URL is set (redis://elsewhere:6379/0)"),
        ({"CELERY_RESULT_BACKEND": "redis://x/1"}, "CELERY_RESULT_BACKEND is set"),
    ],
)
def test_a_server_that_is_not_given_or_not_usable_stops_start_up_in_one_line(monkeypatch, variables, expected):
    for name, value in variables.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as refused:
        get_settings()
    assert str(refused.value).startswith(expected) and "\n" not in str(refused.value)
    assert "secret" not in str(refused.value)


def test_a_celery_broker_variable_equal_to_vetros_is_accepted(monkeypatch):
    monkeypatch.setenv("VETRO_BROKER_URL", "redis://127.0.0.1:6399/0")
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://127.0.0.1:6399/0")
    assert get_settings().broker_url == "redis://127.0.0.1:6399/0"


def test_malformed_json_in_a_pipelines_setting_names_the_variable(monkeypatch):
    from settings import read_settings
    from tasks.orders.config import OrdersSettings

    monkeypatch.setenv("ORDERS_ROUTES", "[nope")
    reset_settings()  # importing the orders pipeline read its settings: read them again
    with pytest.raises(ConfigError, match=r"^ORDERS_ROUTES: not valid JSON: Expecting value"):
        read_settings(OrdersSettings)
