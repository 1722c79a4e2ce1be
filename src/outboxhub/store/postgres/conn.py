"""PostgreSQL store URLs, connection settings and the translation of psycopg errors.

``postgresql://user:password@host:port/db?schema=NAME`` (``postgres://`` too). ``schema`` picks the
schema holding outboxhub's tables (created on first use, default ``outboxhub``); ``pool_max`` sizes the
connection pool. Every other query parameter is handed to libpq unchanged (``sslmode``, ...).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import psycopg
import psycopg_pool
from psycopg.adapt import Loader
from psycopg.pq import TransactionStatus

from outboxhub.errors import StoreError, StoreUnavailable, StoreURLError
from outboxhub.store.base import mask_url
from outboxhub.store.postgres.schema import DEFAULT_SCHEMA
from outboxhub.urls import join_url

__all__ = [
    "OPTION_NAMES",
    "PLANNER_SETTINGS",
    "Failures",
    "PgSettings",
    "RawJsonLoader",
    "configure_connection",
    "connection_lost",
    "is_retryable",
    "parse_url",
    "pipelined_transaction",
    "translate",
]

_SCHEMA_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_SCHEMES = ("postgresql", "postgres")


@dataclass(frozen=True, slots=True, kw_only=True)
class PgSettings:
    """A parsed store URL: the libpq DSN (outboxhub's own parameters removed), the schema and the tuning."""

    url: str
    """The URL as given, password masked."""
    dsn: str
    schema: str = DEFAULT_SCHEMA
    pool_max: int = 8
    """Most pooled connections (the LISTEN connection comes on top)."""
    pool_timeout_s: float = 5.0
    """How long an operation waits for a pooled connection before ``StoreUnavailable``."""
    connect_timeout_s: float = 5.0
    poll_interval_s: float = 1.0
    """How often the listener polls the counter when no notification arrives."""
    max_batch: int = 2000
    """Most events per group commit."""


_INT_OPTIONS: dict[str, tuple[int, int]] = {"pool_max": (1, 1000), "max_batch": (1, 100_000)}
_FLOAT_OPTIONS: dict[str, tuple[float, float]] = {
    "pool_timeout_s": (0.01, 3600.0),
    "connect_timeout_s": (0.5, 3600.0),
    "poll_interval_s": (0.01, 3600.0),
}
OPTION_NAMES: tuple[str, ...] = ("schema", *_INT_OPTIONS, *_FLOAT_OPTIONS)
"""outboxhub's own URL query parameters / ``open_store`` keywords; any other query parameter goes to libpq."""


def _number(shown: str, name: str, raw: object) -> int | float:
    if name in _INT_OPTIONS:
        low, high = _INT_OPTIONS[name]
        number: int | float | None = None
        if isinstance(raw, int) and not isinstance(raw, bool):
            number = raw
        elif isinstance(raw, str) and raw.strip().isdigit():
            number = int(raw)
        if number is None or not low <= number <= high:
            raise StoreURLError(
                f"store URL {shown}: {name} must be an integer from {low} to {high}, not {raw!r}"
            )
        return number
    flow, fhigh = _FLOAT_OPTIONS[name]
    try:
        value = None if isinstance(raw, bool) else float(str(raw))
    except ValueError:
        value = None
    if value is None or not flow <= value <= fhigh:
        raise StoreURLError(f"store URL {shown}: {name} must be a number from {flow} to {fhigh}, not {raw!r}")
    return value


def parse_url(url: str, options: Mapping[str, object] | None = None) -> PgSettings:
    """Read a ``postgresql://`` store URL plus keyword ``options`` (which win over the URL's query);
    raise ``StoreURLError`` (password masked) naming the problem."""
    shown = mask_url(url)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
        query = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError as exc:
        raise StoreURLError(f"malformed store URL {shown}: {exc}") from None
    if parts.scheme.lower() not in _SCHEMES:
        raise StoreURLError(f"store URL {shown}: scheme must be postgresql:// or postgres://")
    ours: dict[str, object] = {}
    rest: list[tuple[str, str]] = []
    for name, value in query:
        if name in OPTION_NAMES:
            ours[name] = value
        else:
            rest.append((name, value))
    ours.update(options or {})
    values: dict[str, Any] = {}
    for name, raw in ours.items():
        if name == "schema":
            if not isinstance(raw, str) or not _SCHEMA_RE.fullmatch(raw):
                raise StoreURLError(
                    f"store URL {shown}: schema {raw!r} must be 1-63 letters, digits or underscores, "
                    "not starting with a digit"
                )
            values[name] = raw
        elif name in _INT_OPTIONS or name in _FLOAT_OPTIONS:
            values[name] = _number(shown, name, raw)
        else:
            raise StoreURLError(
                f"store URL {shown}: unknown option {name!r} (known: {', '.join(OPTION_NAMES)})"
            )
    dsn = join_url(parts._replace(scheme="postgresql", query=urlencode(rest)))
    return PgSettings(url=shown, dsn=dsn, **values)


class RawJsonLoader(Loader):
    """Load ``json`` columns as raw bytes: the store decodes them with msgspec, not ``json.loads``."""

    def load(self, data: Any) -> bytes:
        return bytes(data)


PLANNER_SETTINGS = (
    "SELECT set_config('enable_bitmapscan', 'off', false), set_config('enable_seqscan', 'off', false),"
    " set_config('jit', 'off', false)"
)
"""Session settings of every store connection. Every statement of the store is meant to be an index
range read that stops at its limit; these leave the planner no other plan when its statistics mislead
it (missing or stale after a burst of publishes, or a topic's events bunched in one stretch of the log),
where it would otherwise fetch and sort every remaining row of a topic for each page (``events.py``).
JIT is off too: the store's statements are all small, and a plan that did carry a disabled node's cost
would start a compile of 100 ms or more."""


async def configure_connection(conn: psycopg.AsyncConnection[Any]) -> None:
    """Per-connection set-up (the pool's ``configure`` hook and the LISTEN connection)."""
    conn.adapters.register_loader("json", RawJsonLoader)
    await conn.execute(PLANNER_SETTINGS)


@asynccontextmanager
async def pipelined_transaction(conn: psycopg.AsyncConnection[Any]) -> AsyncIterator[None]:
    """A transaction whose BEGIN, COMMIT and statements without a fetch travel together in pipeline mode.

    ``conn`` must be in autocommit mode with no transaction open. Statements are sent in order; each fetch
    waits for the replies so far, and the block's end sends COMMIT and waits for everything. Plain
    ``conn.transaction()`` costs a round trip of its own for BEGIN and for COMMIT; here a claim is two.
    On an error the transaction is rolled back (when the connection still works) and the error re-raised.
    """
    try:
        async with conn.pipeline():
            await conn.execute("BEGIN")
            yield
            await conn.execute("COMMIT")
    except BaseException:
        if conn.info.transaction_status in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
            with contextlib.suppress(psycopg.Error):
                await conn.rollback()
        raise


def is_retryable(exc: BaseException) -> bool:
    """A deadlock or serialization failure: the transaction had no effect and may simply be re-run."""
    return isinstance(exc, psycopg.errors.TransactionRollback)


def connection_lost(exc: BaseException) -> bool:
    """The connection broke (server restarted or went away), as opposed to no connection being available."""
    return (
        isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
        and not isinstance(exc, psycopg_pool.PoolTimeout | psycopg_pool.PoolClosed)
        and not is_retryable(exc)
    )


@dataclass(slots=True)
class Failures:
    """The failed tries of one store operation so far (``PostgresStore._again`` counts them)."""

    tries: int = 0
    stale: int = 0


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def translate(exc: BaseException, url: str, *, what: str = "PostgreSQL store") -> BaseException:
    """``StoreUnavailable`` for a server that cannot be reached (refused, restarting, connection dropped,
    no pooled connection in time), ``StoreError`` for any other psycopg error, anything else unchanged.

    The one translation of psycopg errors, for the store and for the PostgreSQL outbox (``what`` names the
    one speaking in messages). A deadlock or serialization failure (``is_retryable``) is a ``StoreError``,
    not unavailability: the server answered, and the caller may re-run the transaction. ``url`` must already
    be masked. The message is one line: callers log it, not a traceback."""
    error: StoreError
    if isinstance(exc, psycopg_pool.PoolTimeout):
        error = StoreUnavailable(
            f"PostgreSQL at {url} is unavailable: no connection could be obtained in time"
        )
    elif isinstance(exc, psycopg_pool.PoolClosed):
        error = StoreError(f"{what} {url} is closed")
    elif isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError) and not is_retryable(exc):
        error = StoreUnavailable(f"PostgreSQL at {url} is unavailable: {_first_line(exc)}")
    elif isinstance(exc, psycopg.Error):
        error = StoreError(f"{what} {url}: {_first_line(exc)}")
    else:
        return exc
    error.__cause__ = exc
    return error
