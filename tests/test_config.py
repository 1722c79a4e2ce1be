"""Settings: OUTBOXHUB_ names, the seed's names, CLI overrides, and one-line errors."""

from __future__ import annotations

import pytest

from outboxhub.config import DEFAULT_STORE_URL, load_settings
from outboxhub.errors import ConfigError

SEED_NAMES = {
    "MONGO_URL": ("store", "mongodb://127.0.0.1:27017/prom"),
    "WS_PORT": ("ws_port", 9001),
    "OPS_PORT": ("ops_port", 9002),
    "JWT_SECRET": ("jwt_secret", "s3cret"),
    "JWT_JWKS_URL": ("jwt_jwks_url", "http://127.0.0.1:1/jwks.json"),
    "JWT_AUD": ("jwt_aud", "hub"),
    "JWT_ISS": ("jwt_iss", "issuer"),
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("OUTBOXHUB_") or name in SEED_NAMES:
            monkeypatch.delenv(name)


def test_defaults() -> None:
    settings = load_settings()
    assert settings.store == DEFAULT_STORE_URL
    assert (settings.host, settings.ws_port, settings.ops_port) == ("127.0.0.1", 8090, 8082)
    assert settings.dev_mode
    assert settings.max_frame_bytes == 1_048_576
    assert (settings.auth_timeout_s, settings.poll_interval_s) == (10.0, 1.0)


def test_auth_timeout_and_poll_interval_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTBOXHUB_AUTH_TIMEOUT_S", "0")  # 0 disables the AUTH timeout
    monkeypatch.setenv("OUTBOXHUB_POLL_INTERVAL_S", "0.25")
    settings = load_settings()
    assert (settings.auth_timeout_s, settings.poll_interval_s) == (0.0, 0.25)
    assert load_settings(auth_timeout_s=2.5, poll_interval_s=0.1).auth_timeout_s == 2.5


@pytest.mark.parametrize("env_name", sorted(SEED_NAMES))
def test_seed_names_are_accepted(monkeypatch: pytest.MonkeyPatch, env_name: str) -> None:
    field, value = SEED_NAMES[env_name]
    monkeypatch.setenv(env_name, str(value))
    assert getattr(load_settings(), field) == value


def test_outboxhub_name_wins_over_seed_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WS_PORT", "9000")
    monkeypatch.setenv("OUTBOXHUB_WS_PORT", "9100")
    assert load_settings().ws_port == 9100


def test_cli_override_wins_and_none_means_not_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTBOXHUB_WS_PORT", "9100")
    assert load_settings(ws_port=1234).ws_port == 1234
    assert load_settings(ws_port=None).ws_port == 9100


def test_lists_from_comma_separated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTBOXHUB_ALLOWED_ORIGINS", "http://a.example, http://b.example")
    monkeypatch.setenv("OUTBOXHUB_OUTBOX", "sqlite:///app.db")
    settings = load_settings()
    assert settings.allowed_origins == ["http://a.example", "http://b.example"]
    assert settings.outbox == ["sqlite:///app.db"]


def test_drainer_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = load_settings()
    assert (defaults.outbox_batch_size, defaults.outbox_max_attempts, defaults.outbox_ordered_by_key) == (
        500,
        10,
        False,
    )
    monkeypatch.setenv("OUTBOXHUB_OUTBOX_BATCH_SIZE", "50")
    monkeypatch.setenv("OUTBOXHUB_OUTBOX_MAX_ATTEMPTS", "3")
    monkeypatch.setenv("OUTBOXHUB_OUTBOX_ORDERED_BY_KEY", "true")
    settings = load_settings()
    assert (settings.outbox_batch_size, settings.outbox_max_attempts, settings.outbox_ordered_by_key) == (
        50,
        3,
        True,
    )
    assert load_settings(outbox_max_attempts=5).outbox_max_attempts == 5


def test_secret_leaves_dev_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JWT_SECRET", "x")
    assert not load_settings().dev_mode


@pytest.mark.parametrize(
    ("env_name", "value", "named"),
    [
        ("OPS_PORT", "abc", "ops_port"),
        ("OUTBOXHUB_WS_PORT", "70000", "ws_port"),
        ("OUTBOXHUB_MAX_FRAME_BYTES", "-1", "max_frame_bytes"),
        ("OUTBOXHUB_LOG_LEVEL", "loud", "log_level"),
        ("OUTBOXHUB_OUTBOX_BATCH_SIZE", "20000", "outbox_batch_size"),
        ("OUTBOXHUB_OUTBOX_MAX_ATTEMPTS", "0", "outbox_max_attempts"),
        ("OUTBOXHUB_OUTBOX_ORDERED_BY_KEY", "sometimes", "outbox_ordered_by_key"),
        ("OUTBOXHUB_AUTH_TIMEOUT_S", "-1", "auth_timeout_s"),
        ("OUTBOXHUB_POLL_INTERVAL_S", "0", "poll_interval_s"),
    ],
)
def test_bad_value_is_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, env_name: str, value: str, named: str
) -> None:
    monkeypatch.setenv(env_name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert "\n" not in message
    assert named in message
    assert value in message


def test_a_bad_override_names_its_flag_not_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTBOXHUB_WS_PORT", "9100")  # valid, and overridden by the flag
    with pytest.raises(ConfigError) as info:
        load_settings(ws_port=70000)
    message = str(info.value)
    assert "--ws-port 70000" in message
    assert "OUTBOXHUB_WS_PORT" not in message


def test_a_bad_env_value_still_names_the_env_var_when_other_flags_are_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OUTBOXHUB_POLL_INTERVAL_S", "-2")
    with pytest.raises(ConfigError) as info:
        load_settings(ws_port=9000, poll_interval_s=None)
    assert "OUTBOXHUB_POLL_INTERVAL_S='-2'" in str(info.value)
    assert "--poll-interval-s" not in str(info.value)


def test_tenant_limit_defaults_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = load_settings()
    assert (defaults.send_queue_max_bytes, defaults.max_auth_frame_bytes) == (8_388_608, 32_768)
    assert (defaults.max_subscriptions_per_principal, defaults.max_groups_per_principal) == (1000, 100)
    assert (defaults.header_timeout_s, defaults.max_connections, defaults.max_connections_per_ip) == (
        10.0,
        4096,
        256,
    )
    monkeypatch.setenv("OUTBOXHUB_SEND_QUEUE_MAX_BYTES", "1048576")
    monkeypatch.setenv("OUTBOXHUB_MAX_AUTH_FRAME_BYTES", "4096")
    monkeypatch.setenv("OUTBOXHUB_MAX_SUBSCRIPTIONS_PER_PRINCIPAL", "7")
    monkeypatch.setenv("OUTBOXHUB_MAX_GROUPS_PER_PRINCIPAL", "3")
    monkeypatch.setenv("OUTBOXHUB_HEADER_TIMEOUT_S", "2.5")
    monkeypatch.setenv("OUTBOXHUB_MAX_CONNECTIONS", "50")
    monkeypatch.setenv("OUTBOXHUB_MAX_CONNECTIONS_PER_IP", "5")
    s = load_settings()
    assert (s.send_queue_max_bytes, s.max_auth_frame_bytes) == (1_048_576, 4096)
    assert (s.max_subscriptions_per_principal, s.max_groups_per_principal) == (7, 3)
    assert (s.header_timeout_s, s.max_connections, s.max_connections_per_ip) == (2.5, 50, 5)


@pytest.mark.parametrize(
    ("env_name", "value", "named"),
    [
        ("OUTBOXHUB_SEND_QUEUE_MAX_BYTES", "100", "send_queue_max_bytes"),
        ("OUTBOXHUB_MAX_AUTH_FRAME_BYTES", "10", "max_auth_frame_bytes"),
        ("OUTBOXHUB_MAX_SUBSCRIPTIONS_PER_PRINCIPAL", "0", "max_subscriptions_per_principal"),
        ("OUTBOXHUB_MAX_GROUPS_PER_PRINCIPAL", "0", "max_groups_per_principal"),
        ("OUTBOXHUB_HEADER_TIMEOUT_S", "0", "header_timeout_s"),
        ("OUTBOXHUB_MAX_CONNECTIONS", "0", "max_connections"),
        ("OUTBOXHUB_MAX_CONNECTIONS_PER_IP", "-1", "max_connections_per_ip"),
    ],
)
def test_bad_tenant_limits_are_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, env_name: str, value: str, named: str
) -> None:
    monkeypatch.setenv(env_name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert named in str(info.value) and "\n" not in str(info.value)
