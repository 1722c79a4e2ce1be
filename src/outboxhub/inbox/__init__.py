"""The consumer inbox: run an event's handler exactly once, in the consumer's own database.

The hub delivers at least once: a consumer that commits its work and dies before its ACK gets the event
again. The inbox records ``(group, topic, event id)`` in the same transaction as the handler's writes, so
the redelivered event finds its record and is ACKed without running the handler a second time. Event ids
are unique per topic, so the topic is part of the key.

With the SDK, pass an inbox to ``subscribe``; the handler gets the transaction's connection or session::

    from outboxhub.inbox import SqliteInbox

    def apply(order: Order, ctx: SubscribeContext, conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE stock SET n = n - ? WHERE sku = ?", (order.qty, order.sku))

    await hub.subscribe(ORDERS, "stock", apply, inbox=SqliteInbox("stock.db"))

By hand (any client, any transaction), :func:`claim` in the transaction, then commit, then ACK::

    with conn:                                             # one transaction
        if inbox.claim(conn, "stock", msg.event.topic, msg.event.id):
            apply(conn, msg.payload)                       # only the first time
    await msg.ack()                                        # after the commit, in both cases

Tables: :func:`ensure_schema` (or the DDL of :func:`sqlite_ddl` / :func:`postgres_ddl`, printed in
docs/client.md); :func:`cleanup` deletes records older than a retention period.
"""

from __future__ import annotations

from outboxhub.inbox.claim import (
    claim,
    claim_async,
    cleanup,
    cleanup_async,
    ensure_schema,
    ensure_schema_async,
)
from outboxhub.inbox.runner import (
    AsyncPsycopgInbox,
    AsyncSqlAlchemyInbox,
    Inbox,
    PsycopgInbox,
    SqlAlchemyInbox,
    SqliteInbox,
)
from outboxhub.inbox.sql import DEFAULT_TABLE, postgres_ddl, sqlite_ddl

__all__ = [
    "DEFAULT_TABLE",
    "AsyncPsycopgInbox",
    "AsyncSqlAlchemyInbox",
    "Inbox",
    "PsycopgInbox",
    "SqlAlchemyInbox",
    "SqliteInbox",
    "claim",
    "claim_async",
    "cleanup",
    "cleanup_async",
    "ensure_schema",
    "ensure_schema_async",
    "postgres_ddl",
    "sqlite_ddl",
]
