"""MongoDB store URLs, client settings, deployment detection and the translation of pymongo errors.

``mongodb://user:password@host:port/dbname?replicaSet=rs0&prefix=hub_`` (``mongodb+srv://`` too). The
database is the URL path (default ``outboxhub``; ``mongodb://127.0.0.1:27017/prom`` uses the database
``prom``). outboxhub's own options are taken out of the query before the rest
goes to pymongo unchanged, so pymongo never sees (or warns about) an option it does not know.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from pymongo import AsyncMongoClient
from pymongo.errors import (
    AutoReconnect,
    ConfigurationError,
    ConnectionFailure,
    ExecutionTimeout,
    InvalidURI,
    NetworkTimeout,
    PyMongoError,
    ServerSelectionTimeoutError,
    WaitQueueTimeoutError,
)

from outboxhub.errors import StoreError, StoreUnavailable, StoreURLError
from outboxhub.store.base import mask_url
from outboxhub.urls import join_url

__all__ = [
    "DEFAULT_DATABASE",
    "OPTION_NAMES",
    "MongoSettings",
    "make_client",
    "parse_url",
    "supports_transactions",
    "translate",
    "validate_collection_name",
]

DEFAULT_DATABASE = "outboxhub"
_SCHEMES = ("mongodb", "mongodb+srv")
_PREFIX_RE = re.compile(r"[A-Za-z0-9_]{0,32}")
_DB_FORBIDDEN = set('/\\. "$*<>:|?') | {"\x00"}


@dataclass(frozen=True, slots=True, kw_only=True)
class MongoSettings:
    """A parsed store URL: what pymongo gets, the database, and outboxhub's own tuning."""

    url: str
    """The URL as given, password masked."""
    client_url: str
    """The URL for pymongo: outboxhub's options removed."""
    database: str
    prefix: str = "outboxhub_"
    """Prefix of every collection name (``outboxhub_events``, ...), so the store can share a database."""
    poll_interval_s: float = 1.0
    """How often the store re-reads the seq counter (safety net under change streams, the only wake-up
    without them) and finishes abandoned allocations."""
    connect_timeout_s: float = 5.0
    """Server selection and connect timeout, unless the URL sets pymongo's own."""
    max_batch: int = 2000
    """Most events per group commit."""
    lease_ms: int = 15_000
    """How long a seq allocation or a group's claim lock may stay open before others take it over."""


_INT_OPTIONS: dict[str, tuple[int, int]] = {"max_batch": (1, 100_000), "lease_ms": (1_000, 3_600_000)}
_FLOAT_OPTIONS: dict[str, tuple[float, float]] = {
    "poll_interval_s": (0.01, 3600.0),
    "connect_timeout_s": (0.1, 3600.0),
}
OPTION_NAMES = frozenset({"prefix", *_INT_OPTIONS, *_FLOAT_OPTIONS})


def _number(name: str, raw: Any, shown: str) -> int | float:
    low: float
    high: float
    if name in _INT_OPTIONS:
        low, high = _INT_OPTIONS[name]
        try:
            value: int | float = int(raw)
        except (TypeError, ValueError):
            raise StoreURLError(f"store option {name}={raw!r} in {shown} must be an integer") from None
    else:
        low, high = _FLOAT_OPTIONS[name]
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise StoreURLError(f"store option {name}={raw!r} in {shown} must be a number") from None
    if not low <= value <= high:
        raise StoreURLError(f"store option {name}={raw!r} in {shown} must be between {low} and {high}")
    return value


def parse_url(url: str, options: Mapping[str, Any]) -> MongoSettings:
    """Parse a ``mongodb://`` URL; keyword ``options`` win over the URL's query. ``StoreURLError`` names
    any problem (password masked)."""
    shown = mask_url(url)
    try:
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError as exc:
        raise StoreURLError(f"malformed MongoDB URL {shown}: {exc}") from exc
    if parts.scheme.lower() not in _SCHEMES:
        raise StoreURLError(f"{shown} is not a MongoDB URL (mongodb:// or mongodb+srv://)")
    if not parts.netloc or parts.netloc.endswith("@"):
        raise StoreURLError(f"MongoDB URL {shown} names no host (mongodb://host:27017/dbname)")
    ours: dict[str, Any] = {}
    rest: list[tuple[str, str]] = []
    for key, value in query:
        if key in OPTION_NAMES:
            ours[key] = value
        else:
            rest.append((key, value))
    unknown = set(options) - OPTION_NAMES
    if unknown:
        raise StoreURLError(
            f"unknown MongoDB store option(s) {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(OPTION_NAMES))}"
        )
    ours.update(options)
    database = unquote(parts.path.lstrip("/")) or DEFAULT_DATABASE
    if len(database) > 63 or _DB_FORBIDDEN & set(database):
        raise StoreURLError(f"MongoDB URL {shown}: {database!r} is not a valid database name")
    prefix = str(ours.pop("prefix", "outboxhub_"))
    if not _PREFIX_RE.fullmatch(prefix):
        raise StoreURLError(
            f"store option prefix={prefix!r} in {shown} must be at most 32 letters, digits or underscores"
        )
    values: dict[str, Any] = {name: _number(name, raw, shown) for name, raw in ours.items()}
    keys = {k.lower() for k, _ in rest}
    timeout_ms = str(int(1000 * float(values.get("connect_timeout_s", 5.0))))
    for name in ("serverSelectionTimeoutMS", "connectTimeoutMS"):
        if name.lower() not in keys:
            rest.append((name, timeout_ms))
    client_url = join_url(parts._replace(query=urlencode(rest)))
    return MongoSettings(url=shown, client_url=client_url, database=database, prefix=prefix, **values)


def make_client(settings: MongoSettings) -> AsyncMongoClient[dict[str, Any]]:
    """An ``AsyncMongoClient`` for the settings (connects lazily; ``StoreURLError`` for a bad URI)."""
    try:
        return AsyncMongoClient(settings.client_url, tz_aware=False, connect=False)
    except (InvalidURI, ConfigurationError, ValueError, TypeError) as exc:
        raise StoreURLError(f"MongoDB URL {settings.url} is not usable: {exc}") from exc


def validate_collection_name(name: object, *, what: str = "collection") -> str:
    """``name`` if MongoDB accepts it as a collection name, else ``StoreURLError`` saying why."""
    if (
        not isinstance(name, str)
        or not name
        or len(name) > 200
        or "$" in name
        or "\x00" in name
        or name.startswith(("system.", "."))
        or name.endswith(".")
    ):
        raise StoreURLError(
            f"{what} name {name!r} is not a valid MongoDB collection name (1-200 characters, no '$', "
            "no NUL, not starting with 'system.')"
        )
    return name


_UNAVAILABLE = (
    ConnectionFailure,
    AutoReconnect,
    NetworkTimeout,
    ServerSelectionTimeoutError,
    WaitQueueTimeoutError,
    ExecutionTimeout,
)


def translate(exc: PyMongoError, url: str) -> StoreError:
    """A pymongo error as ``StoreUnavailable`` (the server cannot be reached) or ``StoreError``."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    first = first.split(", Timeout:", 1)[0]  # pymongo appends the whole topology description
    if isinstance(exc, _UNAVAILABLE):
        return StoreUnavailable(f"MongoDB {url} is unavailable: {first}")
    return StoreError(f"MongoDB {url}: {first}")


def supports_transactions(hello: Mapping[str, Any]) -> bool:
    """Whether the server that answered ``hello`` can run multi-document transactions.

    MongoDB runs transactions on replica set members (``setName`` in the reply) and through mongos
    (``msg: "isdbgrid"``); a standalone ``mongod`` refuses them (code 20, IllegalOperation).
    """
    return bool(hello.get("setName")) or hello.get("msg") == "isdbgrid"
