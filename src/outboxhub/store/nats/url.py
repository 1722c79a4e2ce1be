"""The ``nats://`` store URL: servers, credentials, TLS and the stream's settings, each checked with an
error that names the problem (docs/jetstream.md has the table).

``nats://[user:password@]host:port[,host:port…]?stream=NAME&replicas=N&…``
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from outboxhub.errors import StoreURLError
from outboxhub.urls import mask_url

__all__ = ["NatsOptions", "parse_url"]

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?$")
_KNOWN = (
    "stream",
    "replicas",
    "prefix",
    "dedup_window_s",
    "max_ack_pending",
    "timeout_s",
    "token",
    "creds",
    "tls",
    "tls_ca",
    "tls_cert",
    "tls_key",
)


@dataclass(frozen=True, slots=True)
class NatsOptions:
    """What a ``nats://`` URL says (defaults in the docstring of each field's parser)."""

    servers: tuple[str, ...]
    stream: str = "OUTBOXHUB"
    replicas: int = 1
    prefix: str = "OUTBOXHUB"
    dedup_window_s: float = 3600.0
    max_ack_pending: int = 20_000
    timeout_s: float = 5.0
    user: str | None = None
    password: str | None = None
    token: str | None = None
    creds: str | None = None
    tls: bool = False
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None


def _int(shown: str, name: str, raw: str, low: int, high: int) -> int:
    if not re.fullmatch(r"-?[0-9]+", raw) or not low <= int(raw) <= high:
        raise StoreURLError(f"{shown}: {name}={raw!r} must be an integer from {low} to {high}")
    return int(raw)


def _seconds(shown: str, name: str, raw: str, low: float, high: float) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not low <= value <= high:
        raise StoreURLError(f"{shown}: {name}={raw!r} must be a number of seconds from {low:g} to {high:g}")
    return value


def _file(shown: str, name: str, raw: str) -> str:
    if not Path(raw).is_file():
        raise StoreURLError(f"{shown}: {name}={raw!r} is not a readable file")
    return raw


def parse_url(url: str) -> NatsOptions:
    """Read a ``nats://`` store URL; ``StoreURLError`` naming the bad part (password masked)."""
    shown = mask_url(url)
    parts = urlsplit(url)
    if parts.scheme.lower() != "nats":
        raise StoreURLError(f"{shown}: expected a nats:// URL")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    if not hosts:
        raise StoreURLError(f"{shown}: no server; expected nats://host:port[,host:port…]")
    servers: list[str] = []
    for host in hosts.split(","):
        match = _HOST.match(host)
        if match is None:
            raise StoreURLError(f"{shown}: server {host!r} is not host[:port]")
        servers.append(f"nats://{host}" if match.group(2) else f"nats://{host}:4222")
    user = password = None
    if userinfo:
        raw_user, has_password, raw_password = userinfo.partition(":")
        user = unquote(raw_user) or None
        password = unquote(raw_password) if has_password else None
    values: dict[str, str] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name not in _KNOWN:
            raise StoreURLError(f"{shown}: unknown option {name!r}; known: {', '.join(_KNOWN)}")
        if name in values:
            raise StoreURLError(f"{shown}: option {name!r} is given twice")
        values[name] = value
    stream = values.get("stream", "OUTBOXHUB")
    if not _NAME.match(stream):
        raise StoreURLError(f"{shown}: stream={stream!r} must be 1-64 of A-Z a-z 0-9 _ -")
    prefix = values.get("prefix", stream)
    if not all(_NAME.match(token) for token in prefix.split(".")):
        raise StoreURLError(f"{shown}: prefix={prefix!r} must be dot-separated tokens of A-Z a-z 0-9 _ -")
    tls = values.get("tls", "false").lower()
    if tls not in ("true", "false", "1", "0"):
        raise StoreURLError(f"{shown}: tls={values['tls']!r} must be true or false")
    tls_on = tls in ("true", "1") or any(name in values for name in ("tls_ca", "tls_cert", "tls_key"))
    if ("tls_cert" in values) != ("tls_key" in values):
        raise StoreURLError(f"{shown}: tls_cert and tls_key go together")
    return NatsOptions(
        servers=tuple(servers),
        stream=stream,
        replicas=_int(shown, "replicas", values.get("replicas", "1"), 1, 5),
        prefix=prefix,
        dedup_window_s=_seconds(shown, "dedup_window_s", values.get("dedup_window_s", "3600"), 1, 7 * 86400),
        max_ack_pending=_int(shown, "max_ack_pending", values.get("max_ack_pending", "20000"), 1, 10_000_000),
        timeout_s=_seconds(shown, "timeout_s", values.get("timeout_s", "5"), 0.1, 300),
        user=user,
        password=password,
        token=values.get("token") or None,
        creds=_file(shown, "creds", values["creds"]) if "creds" in values else None,
        tls=tls_on,
        tls_ca=_file(shown, "tls_ca", values["tls_ca"]) if "tls_ca" in values else None,
        tls_cert=_file(shown, "tls_cert", values["tls_cert"]) if "tls_cert" in values else None,
        tls_key=_file(shown, "tls_key", values["tls_key"]) if "tls_key" in values else None,
    )
