"""Settings, read once at start-up from CLI flags and the environment (pydantic-settings).

Every setting has an ``OUTBOXHUB_`` environment variable; the legacy names of the PromClient-era hub
(``MONGO_URL``, ``WS_PORT``, ``OPS_PORT``, ``JWT_SECRET``, ``JWT_JWKS_URL``, ``JWT_AUD``, ``JWT_ISS``) are
accepted too, the ``OUTBOXHUB_`` name winning when both are set. A bad value raises ``ConfigError`` with
one line naming the setting and its environment variable, or its ``serve`` flag when the value came from
one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from outboxhub.errors import ConfigError
from outboxhub.quotas import parse_quotas

__all__ = ["DEFAULT_STORE_URL", "Settings", "load_settings"]

DEFAULT_STORE_URL = "sqlite:///outboxhub.db"


def _env(name: str, *legacy_names: str) -> Any:
    return AliasChoices(f"OUTBOXHUB_{name.upper()}", *legacy_names)


class Settings(BaseSettings):
    """All of outboxhub's settings. See the configuration table in README.md."""

    model_config = SettingsConfigDict(
        env_prefix="OUTBOXHUB_",
        case_sensitive=False,
        populate_by_name=True,
        extra="ignore",
        frozen=True,
    )

    store: str = Field(DEFAULT_STORE_URL, validation_alias=_env("store", "MONGO_URL"))
    host: str = Field("127.0.0.1", validation_alias=_env("host"))
    ws_port: int = Field(8090, ge=0, le=65535, validation_alias=_env("ws_port", "WS_PORT"))
    ops_port: int = Field(8082, ge=0, le=65535, validation_alias=_env("ops_port", "OPS_PORT"))

    jwt_secret: str | None = Field(None, validation_alias=_env("jwt_secret", "JWT_SECRET"))
    jwt_jwks_url: str | None = Field(None, validation_alias=_env("jwt_jwks_url", "JWT_JWKS_URL"))
    jwt_aud: str | None = Field(None, validation_alias=_env("jwt_aud", "JWT_AUD"))
    jwt_iss: str | None = Field(None, validation_alias=_env("jwt_iss", "JWT_ISS"))
    jwt_leeway_s: float = Field(5.0, ge=0, le=300, validation_alias=_env("jwt_leeway_s"))
    jwks_cooldown_s: float = Field(30.0, ge=0, validation_alias=_env("jwks_cooldown_s"))
    auth_timeout_s: float = Field(10.0, ge=0, validation_alias=_env("auth_timeout_s"))

    max_frame_bytes: int = Field(1_048_576, ge=256, validation_alias=_env("max_frame_bytes"))
    publish_rate: float = Field(20_000.0, ge=0, validation_alias=_env("publish_rate"))
    publish_burst: int = Field(40_000, ge=1, validation_alias=_env("publish_burst"))
    max_subscriptions: int = Field(100, ge=1, validation_alias=_env("max_subscriptions"))
    send_queue_max: int = Field(10_000, ge=1, validation_alias=_env("send_queue_max"))
    send_queue_max_bytes: int = Field(8_388_608, ge=65_536, validation_alias=_env("send_queue_max_bytes"))
    max_auth_frame_bytes: int = Field(32_768, ge=1024, validation_alias=_env("max_auth_frame_bytes"))
    max_subscriptions_per_principal: int = Field(
        1000, ge=1, validation_alias=_env("max_subscriptions_per_principal")
    )
    max_groups_per_principal: int = Field(100, ge=1, validation_alias=_env("max_groups_per_principal"))
    ws_server: Literal["aiohttp", "picows"] = Field("picows", validation_alias=_env("ws_server"))
    header_timeout_s: float = Field(10.0, gt=0, validation_alias=_env("header_timeout_s"))
    ops_body_timeout_s: float = Field(10.0, gt=0, validation_alias=_env("ops_body_timeout_s"))
    max_connections: int = Field(4096, ge=1, validation_alias=_env("max_connections"))
    max_connections_per_ip: int = Field(256, ge=1, validation_alias=_env("max_connections_per_ip"))
    allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=_env("allowed_origins")
    )
    ops_open_metrics: bool = Field(True, validation_alias=_env("ops_open_metrics"))
    # publish quotas (issue #18): PATTERN=RATE/s[:BURST], per principal / per topic (outboxhub/quotas.py)
    quotas: Annotated[list[str], NoDecode] = Field(default_factory=list, validation_alias=_env("quotas"))
    topic_quotas: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=_env("topic_quotas")
    )
    quota_max_buckets: int = Field(100_000, ge=64, validation_alias=_env("quota_max_buckets"))

    poll_interval_s: float = Field(1.0, gt=0, validation_alias=_env("poll_interval_s"))

    outbox: Annotated[list[str], NoDecode] = Field(default_factory=list, validation_alias=_env("outbox"))
    outbox_drain: bool = Field(True, validation_alias=_env("outbox_drain"))
    outbox_batch_size: int = Field(500, ge=1, le=10_000, validation_alias=_env("outbox_batch_size"))
    outbox_max_attempts: int = Field(10, ge=1, validation_alias=_env("outbox_max_attempts"))
    outbox_ordered_by_key: bool = Field(False, validation_alias=_env("outbox_ordered_by_key"))

    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", validation_alias=_env("log_level")
    )

    # tenant isolation (issue #14): token policies and the JWKS cache (docs/security.md)
    max_policy_rules: int = Field(256, ge=1, le=100_000, validation_alias=_env("max_policy_rules"))
    jwks_ttl_s: float = Field(600.0, gt=0, validation_alias=_env("jwks_ttl_s"))

    @field_validator("allowed_origins", "outbox", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("quotas", "topic_quotas", mode="before")
    @classmethod
    def _split_quotas(cls, value: object) -> object:
        if isinstance(value, str):  # the environment: ';'-separated (a pattern never holds one)
            value = [part.strip() for part in value.split(";") if part.strip()]
        return value

    @field_validator("quotas", "topic_quotas")
    @classmethod
    def _check_quotas(cls, value: list[str]) -> list[str]:
        parse_quotas(value)  # QuotaError (a ValueError) names the bad quota
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @property
    def dev_mode(self) -> bool:
        """True when no JWT secret or JWKS URL is configured: ``serve`` then mints a dev token."""
        return not self.jwt_secret and not self.jwt_jwks_url


def _env_name(field: str) -> str:
    info = Settings.model_fields.get(field)
    alias = info.validation_alias if info else None
    names = alias.choices if isinstance(alias, AliasChoices) else []
    env_names = [str(n) for n in names if isinstance(n, str) and n.isupper()]
    return " / ".join(env_names) if env_names else f"OUTBOXHUB_{field.upper()}"


_FLAGS: Final[Mapping[str, str]] = {  # the rest: --field-name
    "allowed_origins": "--allowed-origin",
    "quotas": "--quota",
    "topic_quotas": "--topic-quota",
}


def _flag_name(field: str) -> str:
    return _FLAGS.get(field, f"--{field.replace('_', '-')}")


def load_settings(**overrides: Any) -> Settings:
    """Read the settings from the environment, with ``overrides`` (CLI flags; None means "not given")
    taking precedence. Raises ``ConfigError`` naming the first bad setting and where its value came from:
    the ``serve`` flag for an override, else the environment variable."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = err.get("loc", ())
        field = str(loc[0]) if loc else "?"
        matching = [name for name in Settings.model_fields if field.lower().endswith(name)]
        field = max(matching, key=len) if matching else field  # topic_quotas, not quotas
        value = err.get("input")
        source = f"{_flag_name(field)} {value!r}" if field in given else f"{_env_name(field)}={value!r}"
        raise ConfigError(f"invalid setting {field} ({source}): {err.get('msg', 'invalid value')}") from None
