"""What a connection sees of the gateway that owns it, and small helpers of the connection handler."""

from __future__ import annotations

from typing import Protocol

from outboxhub.auth.decide import SharedDeciders
from outboxhub.auth.jwt import TokenVerifier
from outboxhub.bus.core import Bus
from outboxhub.config import Settings
from outboxhub.gateway.publishquota import PublishQuotas
from outboxhub.gateway.quota import PrincipalQuota
from outboxhub.gateway.stats import GatewayStats

__all__ = ["GatewayContext", "not_subscribed", "utf8_size"]


class GatewayContext(Protocol):
    """What a connection reads from the gateway that owns it (``outboxhub.gateway.server.Gateway``)."""

    settings: Settings
    stats: GatewayStats
    bus: Bus
    verifier: TokenVerifier
    deciders: SharedDeciders
    close_timeout_s: float
    quota: PrincipalQuota
    publish_quotas: PublishQuotas


def utf8_size(data: str | bytes) -> int:
    """Bytes of a frame as sent (a text frame's UTF-8 size); cheap for ASCII text."""
    if isinstance(data, bytes) or data.isascii():
        return len(data)
    return len(data.encode("utf-8", "surrogatepass"))


def not_subscribed(op: str, topic: str, group: str | None) -> str:
    where = f"group {group!r}" if group is not None else "no group"
    return f"{op}: this connection has no subscription to {topic!r} with {where}"
