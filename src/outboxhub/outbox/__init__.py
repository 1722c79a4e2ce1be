"""The transactional outbox: write records in the application's transaction, drain them to the hub.

Writing::

    with conn:                                   # the application's own transaction
        conn.execute("UPDATE orders SET state = 'paid' WHERE id = ?", (order_id,))
        outbox.add(conn, "orders.paid", {"order": order_id}, key=order_id)

Draining::

    store = await outbox.open_outbox("sqlite:///app.db")
    await store.ensure_schema()
    drainer = outbox.Drainer(store, bus_or_store, outbox.DrainerSettings(ordered_by_key=True))
    await drainer.run()                          # or run_until_idle() in tests; stop() to end

See docs/outbox.md for the DDL, semantics and operations. ``PostgresOutbox`` and ``postgres_ddl`` are
imported on first use (they need the ``postgres`` extra, psycopg), so SQLite-only applications do not
need psycopg; ``MysqlOutbox`` likewise (the ``mysql`` extra, asyncmy), while ``mysql_ddl`` needs no driver;
``outboxhub.outbox.mongo`` (the ``mongo`` extra) is imported by the calls that need it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from outboxhub.outbox.add import MAX_ID_LENGTH, add, add_async, prepare_record
from outboxhub.outbox.backoff import RetryPolicy, backoff_ms, retry_verdict
from outboxhub.outbox.base import OutboxStore
from outboxhub.outbox.drainer import (
    TRANSIENT_ERRORS,
    Drainer,
    DrainerMetrics,
    DrainerSettings,
    PublishOneSink,
    Sink,
    run_drainers,
)
from outboxhub.outbox.model import (
    CLAIMED,
    DEAD,
    PENDING,
    SENT,
    STATUSES,
    Failure,
    OutboxRecord,
    OutboxStats,
    PreparedRecord,
    Status,
    Verdict,
)
from outboxhub.outbox.mysql_sql import mysql_ddl
from outboxhub.outbox.schema import ensure_schema, ensure_schema_async
from outboxhub.outbox.sqlite import SqliteOutbox, sqlite_ddl
from outboxhub.outbox.url import open_outbox, parse_outbox_url

if TYPE_CHECKING:
    from outboxhub.outbox.mysql import MysqlOutbox
    from outboxhub.outbox.postgres import PostgresOutbox, postgres_ddl

__all__ = [
    "CLAIMED",
    "DEAD",
    "MAX_ID_LENGTH",
    "PENDING",
    "SENT",
    "STATUSES",
    "TRANSIENT_ERRORS",
    "Drainer",
    "DrainerMetrics",
    "DrainerSettings",
    "Failure",
    "MysqlOutbox",
    "OutboxRecord",
    "OutboxStats",
    "OutboxStore",
    "PostgresOutbox",
    "PreparedRecord",
    "PublishOneSink",
    "RetryPolicy",
    "Sink",
    "SqliteOutbox",
    "Status",
    "Verdict",
    "add",
    "add_async",
    "backoff_ms",
    "ensure_schema",
    "ensure_schema_async",
    "mysql_ddl",
    "open_outbox",
    "parse_outbox_url",
    "postgres_ddl",
    "prepare_record",
    "retry_verdict",
    "run_drainers",
    "sqlite_ddl",
]


def __getattr__(name: str) -> Any:
    """``PostgresOutbox``, ``postgres_ddl``, ``MysqlOutbox`` and the ``postgres``, ``mysql`` and ``mongo``
    submodules, imported on first use (they need the 'postgres', 'mysql' and 'mongo' extras)."""
    if name in ("postgres", "mongo", "mysql"):
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    if name in ("PostgresOutbox", "postgres_ddl"):
        from outboxhub.outbox.url import import_postgres_outbox

        return getattr(import_postgres_outbox("the PostgreSQL outbox"), name)
    if name == "MysqlOutbox":
        from outboxhub.outbox.url import import_mysql_outbox

        return import_mysql_outbox("the MySQL outbox").MysqlOutbox
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
