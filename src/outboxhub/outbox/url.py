"""``open_outbox(url)``: an ``OutboxStore`` for an outbox database named by a URL.

==========================================  =============================================================
URL                                         outbox
==========================================  =============================================================
``sqlite:///app.db``                        SQLite file ``app.db`` (relative); ``sqlite:////abs/app.db``
``postgresql://user@host:5432/db``          PostgreSQL (``postgres://`` and ``postgresql+psycopg://`` too)
``mongodb://host:27017/appdb``              MongoDB database ``appdb`` (``mongodb+srv://`` too), via
                                            ``outboxhub.outbox.mongo``
``mysql://user:pw@host:3306/appdb``         MySQL/MariaDB database ``appdb`` (``mariadb://`` and
                                            ``mysql+asyncmy/pymysql/aiomysql/mysqldb://`` too)
==========================================  =============================================================

Query parameters: ``table`` (default ``outbox``; ``schema.table`` on PostgreSQL, the collection on
MongoDB) on every URL, and ``poll_interval_ms`` on SQLite, MySQL and MongoDB. Other PostgreSQL parameters
go to libpq unchanged, other MongoDB parameters (``replicaSet``, …) to pymongo.

The PostgreSQL and MongoDB outboxes are imported when their URL is opened: without their driver the error
names the extra, ``StoreURLError: the PostgreSQL outbox needs the 'postgres' extra: pip install
'outboxhub[postgres]'`` (``mongo`` for MongoDB, ``mysql`` for MySQL/MariaDB).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from outboxhub._extras import missing_extra, needs_extra
from outboxhub.errors import StoreURLError
from outboxhub.outbox.base import OutboxStore
from outboxhub.outbox.sqlite import DEFAULT_POLL_INTERVAL_MS, SqliteOutbox
from outboxhub.store.base import mask_url
from outboxhub.urls import join_url

__all__ = ["OutboxURL", "import_mysql_outbox", "import_postgres_outbox", "open_outbox", "parse_outbox_url"]

_PG_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")
_MONGO_SCHEMES = ("mongodb", "mongodb+srv")
_MYSQL_SCHEMES = ("mysql", "mariadb", "mysql+asyncmy", "mysql+pymysql", "mysql+aiomysql", "mysql+mysqldb")


def import_postgres_outbox(
    what: str = "the PostgreSQL outbox", error: type[Exception] = StoreURLError, url: str | None = None
) -> ModuleType:
    """``outboxhub.outbox.postgres``; without psycopg, ``error`` saying that ``what`` needs the extra."""
    try:
        return importlib.import_module("outboxhub.outbox.postgres")
    except ModuleNotFoundError as exc:
        if missing_extra(exc) != "postgres":
            raise
        raise error(needs_extra(what, "postgres") + _for(url)) from exc


def import_mysql_outbox(
    what: str = "the MySQL outbox", error: type[Exception] = StoreURLError, url: str | None = None
) -> ModuleType:
    """``outboxhub.outbox.mysql``; without asyncmy, ``error`` saying that ``what`` needs the extra."""
    try:
        return importlib.import_module("outboxhub.outbox.mysql")
    except ModuleNotFoundError as exc:
        if missing_extra(exc) != "mysql":
            raise
        raise error(needs_extra(what, "mysql") + _for(url)) from exc


def _poll_interval(url: str, options: dict[str, str], *, default: int) -> int:
    raw = options.get("poll_interval_ms", str(default))
    if not raw.isdigit() or int(raw) <= 0:
        raise StoreURLError(
            f"outbox URL {mask_url(url)!r}: poll_interval_ms must be a positive integer, got {raw!r}"
        )
    return int(raw)


def _for(url: str | None) -> str:
    return "" if url is None else f" (for {mask_url(url)})"


class OutboxURL:
    """A parsed outbox URL: ``kind`` (sqlite, postgresql, mysql, mongodb), where to connect, the table."""

    __slots__ = ("kind", "options", "table", "target")

    def __init__(self, kind: str, target: str, table: str, options: dict[str, str]) -> None:
        self.kind = kind
        self.target = target
        self.table = table
        self.options = options

    def __repr__(self) -> str:
        return f"OutboxURL(kind={self.kind!r}, target={mask_url(self.target)!r}, table={self.table!r})"


def parse_outbox_url(url: str, *, table: str | None = None) -> OutboxURL:
    """Split ``url`` into backend, connection target and table; ``StoreURLError`` names the problem."""
    if not isinstance(url, str) or "://" not in url:
        raise StoreURLError(
            f"outbox URL {mask_url(str(url))!r} must look like sqlite:///app.db or postgresql://…"
        )
    try:
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
    except ValueError as exc:
        raise StoreURLError(f"outbox URL {mask_url(url)!r} cannot be parsed: {exc}") from exc
    scheme = parts.scheme.lower()
    url_table = query.pop("table", None)
    if table is not None and url_table is not None and table != url_table:
        raise StoreURLError(
            f"outbox URL {mask_url(url)!r} names table {url_table!r} but table={table!r} was given"
        )
    chosen = table or url_table or "outbox"
    if scheme == "sqlite":
        if parts.netloc:
            raise StoreURLError(
                f"outbox URL {url!r}: a SQLite URL has no host; use sqlite:///relative.db or sqlite:////abs.db"
            )
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        if not path or path == ":memory:":
            raise StoreURLError(
                f"outbox URL {url!r} must name a database file (an in-memory database is private to one "
                "connection, so the application and the drainer cannot share it)"
            )
        unknown = set(query) - {"poll_interval_ms"}
        if unknown:
            raise StoreURLError(
                f"outbox URL {mask_url(url)!r}: unknown SQLite option(s) {', '.join(sorted(unknown))}"
            )
        return OutboxURL("sqlite", path, chosen, query)
    if scheme in _PG_SCHEMES:
        rest = join_url(parts._replace(scheme="postgresql", query=urlencode(query)))
        return OutboxURL("postgresql", rest, chosen, {})
    if scheme in _MONGO_SCHEMES:
        rest = join_url(parts._replace(query=urlencode(query)))
        return OutboxURL("mongodb", rest, chosen, {})
    if scheme in _MYSQL_SCHEMES:
        unknown = set(query) - {"poll_interval_ms"}
        if unknown:
            raise StoreURLError(
                f"outbox URL {mask_url(url)!r}: unknown MySQL option(s) {', '.join(sorted(unknown))}"
            )
        return OutboxURL("mysql", join_url(parts._replace(scheme="mysql", query="")), chosen, query)
    raise StoreURLError(
        f"outbox URL {mask_url(url)!r} has unknown scheme {parts.scheme!r} "
        "(sqlite, postgresql, mysql, mongodb)"
    )


async def open_outbox(url: str, *, table: str | None = None) -> OutboxStore:
    """Open the outbox named by ``url`` (see the module docstring). The table is not created: call
    ``await store.ensure_schema()`` (``run_drainers`` does) or apply the DDL of docs/outbox.md."""
    parsed = parse_outbox_url(url, table=table)
    if parsed.kind == "sqlite":
        interval = _poll_interval(url, parsed.options, default=DEFAULT_POLL_INTERVAL_MS)
        return await SqliteOutbox.open(parsed.target, table=parsed.table, poll_interval_ms=interval)
    if parsed.kind == "postgresql":
        pg: Any = import_postgres_outbox(url=url)
        postgres_store: OutboxStore = await pg.PostgresOutbox.open(parsed.target, table=parsed.table)
        return postgres_store
    if parsed.kind == "mysql":
        interval = _poll_interval(url, parsed.options, default=10)
        mysql_store: OutboxStore = await import_mysql_outbox(url=url).MysqlOutbox.open(
            parsed.target, table=parsed.table, poll_interval_ms=interval
        )
        return mysql_store
    try:
        mongo: Any = importlib.import_module("outboxhub.outbox.mongo")
    except ModuleNotFoundError as exc:
        if missing_extra(exc) == "mongo":
            raise StoreURLError(needs_extra("the MongoDB outbox", "mongo") + _for(url)) from exc
        if exc.name != "outboxhub.outbox.mongo":
            raise
        raise StoreURLError(
            f"outbox URL {mask_url(url)!r}: MongoDB outbox support is not installed yet "
            "(outboxhub.outbox.mongo)"
        ) from exc
    store: OutboxStore = await mongo.open_mongo_outbox(parsed.target, table=parsed.table)
    return store
