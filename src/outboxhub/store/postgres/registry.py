"""Which hub processes listen on a schema, so a publish NOTIFYs only when another one does.

Every store names itself with a node id (``outboxhub.node``, a session setting of each pooled connection)
and its LISTEN connection registers that node in ``listeners`` (schema version 6). ``publish_events``
sends its NOTIFY only when a node other than the publishing connection's is registered: a lone hub no
longer wakes its own LISTEN connection (and a PostgreSQL backend to feed it) on every commit; it calls its
commit listeners directly, as before. A connection that names no node (another program calling
``publish_events``) notifies whenever any node is registered.

No notification can be missed: registering takes the counter row's lock (``FOR UPDATE``), as a publish
does, after ``LISTEN`` has taken effect. A publish that committed before the registration is read by the
listener's poll that follows it; one that takes the counter after the registration committed sees the row
and notifies. A node's row stays when its listener's connection drops (others keep notifying it; the
listener registers again when it reconnects) and is removed when its store closes. A process that died
without closing leaves its row until another node registers: rows whose server process is gone are
deleted then, and until that happens the others notify as they always did.
"""

from __future__ import annotations

from typing import Any

import psycopg

__all__ = ["LISTENERS_TABLE", "NODE_SETTING", "NOTIFY_CONDITION", "register", "unregister"]

NODE_SETTING = "outboxhub.node"
"""The session setting naming the node of a store's connection (read by ``publish_events``)."""

LISTENERS_TABLE = """CREATE TABLE listeners (
    node text COLLATE "C" PRIMARY KEY,
    pid integer NOT NULL,
    since bigint NOT NULL
)"""

NOTIFY_CONDITION = (
    "IF v_new > v_last AND EXISTS (SELECT 1 FROM listeners l"
    f" WHERE l.node <> coalesce(current_setting('{NODE_SETTING}', true), '')) THEN"
)
"""``publish_events``' test before its NOTIFY from version 6 on (it read ``IF v_new > v_last THEN``)."""


async def register(conn: psycopg.AsyncConnection[Any], schema: str, node: str, now: int) -> None:
    """Register ``node`` as listening through ``conn`` (in autocommit mode, already LISTENing) in ``schema``
    (a quoted identifier); drop the rows of other nodes whose server process is gone. One statement, so
    the counter lock is held only for it and its commit. Publishes that committed before this returned
    must be read by a poll after it (``listen.py``)."""
    # The insert reads the locked row, so it runs once the lock is held, and commits before releasing it.
    await conn.execute(
        f"WITH locked AS (SELECT c.id FROM {schema}.counter c WHERE c.id = 1 FOR UPDATE),"
        f" gone AS (DELETE FROM {schema}.listeners l WHERE l.node <> %(node)s"
        " AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = l.pid))"
        f" INSERT INTO {schema}.listeners (node, pid, since) SELECT %(node)s, pg_backend_pid(), %(now)s"
        " FROM locked ON CONFLICT (node) DO UPDATE SET pid = excluded.pid, since = excluded.since",
        {"node": node, "now": now},
    )


async def unregister(conn: psycopg.AsyncConnection[Any], schema: str, node: str) -> None:
    """Remove ``node``'s row from ``schema`` (a quoted identifier): other nodes stop notifying it."""
    await conn.execute(f"DELETE FROM {schema}.listeners WHERE node = %s", (node,))
