"""The ACK of deliveries named by seq, the settle statement that runs once per delivered event.

One ``DELETE`` of the group's ``pending`` rows, its own transaction, committed without waiting for the WAL
flush (``groups.py`` explains why an ACK may be lost in a crash); with a settling member, only rows that
member may settle (``SETTLE_SQL``). It runs through ``wire``: ``ack_by_seq`` from a coroutine (the store's
``_run``), ``start_ack_by_seq`` without one (``PostgresStore._ack_now``: no task per ACK). While publishes
come often a small ACK rides on the next publish statement instead (``ackride.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from psycopg import pq

from outboxhub.store.base import EventRef
from outboxhub.store.lifecycle import SETTLE_SQL
from outboxhub.store.postgres import wire
from outboxhub.store.postgres.events import PgConn

__all__ = ["ASYNC_STATEMENT", "ack_by_seq", "start_ack_by_seq"]

ASYNC_STATEMENT = " AND (SELECT set_config('synchronous_commit', 'off', true)) IS NOT NULL"
"""Appended to a single-statement transaction: evaluated once, before any row, it makes its COMMIT
asynchronous."""

_ACK_BY_SEQ = {
    settler: wire.Statement(
        f"ack_by_seq_{int(settler)}",
        "DELETE FROM pending p USING groups g, unnest($1::bigint[], $2::text[]) AS r (seq, id)"
        " WHERE g.pattern = $3 AND g.name = $4 AND p.gid = g.gid AND p.seq = r.seq AND p.event_id = r.id"
        + (SETTLE_SQL.format(p="p.", param="$5") if settler else "")
        + ASYNC_STATEMENT,
        [wire.INT8_ARRAY, wire.TEXT_ARRAY, wire.TEXT, wire.TEXT] + ([wire.TEXT] if settler else []),
    )
    for settler in (False, True)
}
"""Without and with a settling member."""


def _params(pattern: str, name: str, refs: Sequence[EventRef], member: str | None) -> list[bytes | None]:
    params: list[bytes | None] = [
        wire.int8_array([ref.seq or 0 for ref in refs]),
        wire.text_array([ref.id for ref in refs]),
        pattern.encode(),
        name.encode(),
    ]
    if member is not None:
        params.append(member.encode())
    return params


async def ack_by_seq(
    conn: PgConn, pattern: str, name: str, refs: Sequence[EventRef], member: str | None
) -> int:
    """Settle ``refs`` (each with a seq) on ``conn`` (autocommit mode, no transaction open); the count."""
    result = await wire.execute(conn, _ACK_BY_SEQ[member is not None], _params(pattern, name, refs, member))
    return result.command_tuples or 0


def start_ack_by_seq(
    conn: PgConn, pattern: str, name: str, refs: Sequence[EventRef], member: str | None
) -> asyncio.Future[pq.abc.PGresult] | None:
    """``ack_by_seq`` sent at once without a coroutine (``wire.start``): the future of its result (the count
    is its ``command_tuples``), or None when the statement is not prepared on ``conn`` yet."""
    return wire.start(conn, _ACK_BY_SEQ[member is not None], _params(pattern, name, refs, member))
