"""The consumer process of tests/test_inbox_crash.py: subscribes with the SDK and applies each event to its
own table ``applied`` (no unique key: applying an event twice leaves two rows).

``python inbox_child.py WS_URL TOKEN DB MODE PAUSE_S EXPECTED``

* ``DB``: ``sqlite:<path>`` (``SqliteInbox``) or ``postgresql:<conninfo>`` (``AsyncPsycopgInbox``);
* ``MODE``: ``inbox`` (the handler runs in the inbox's transaction) or ``plain`` (the handler commits its
  write itself, as a consumer without an inbox does);
* after each commit the child prints ``committed <event id> <1 if the handler ran, 0 if skipped>`` and
  waits ``PAUSE_S`` before the SDK ACKs: the parent's SIGKILL lands in that window;
* with ``EXPECTED`` > 0 the child drains and exits once ``applied`` holds that many distinct events.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from typing import Any

from outboxhub.client import Event, HubClient, SubscribeContext
from outboxhub.inbox import AsyncPsycopgInbox, SqliteInbox

TOPIC = "crash.inbox"
GROUP = "applier"


def _announce(event_id: str, ran: bool) -> None:
    print(f"committed {event_id} {int(ran)}", flush=True)


class AnnouncingSqliteInbox(SqliteInbox):
    pause_s = 0.0

    async def run(self, group: str, topic: str, event_id: str, work: Any) -> bool:
        ran = await super().run(group, topic, event_id, work)
        _announce(event_id, ran)
        await asyncio.sleep(self.pause_s)
        return ran


class AnnouncingPostgresInbox(AsyncPsycopgInbox):
    pause_s = 0.0

    async def run(self, group: str, topic: str, event_id: str, work: Any) -> bool:
        ran = await super().run(group, topic, event_id, work)
        _announce(event_id, ran)
        await asyncio.sleep(self.pause_s)
        return ran


async def _distinct(db: str) -> int:
    kind, _, target = db.partition(":")
    if kind == "sqlite":
        with sqlite3.connect(target) as conn:
            return int(conn.execute("SELECT count(DISTINCT event_id) FROM applied").fetchone()[0])
    import psycopg

    async with await psycopg.AsyncConnection.connect(target) as conn:
        cur = await conn.execute("SELECT count(DISTINCT event_id) FROM applied")
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])


async def main(ws_url: str, token: str, db: str, mode: str, pause_s: float, expected: int) -> None:
    kind, _, target = db.partition(":")
    async with HubClient(ws_url, token, reconnect=False) as hub:
        if mode == "inbox" and kind == "sqlite":
            AnnouncingSqliteInbox.pause_s = pause_s
            inbox = AnnouncingSqliteInbox(target)

            def apply(event: Event, ctx: SubscribeContext, conn: sqlite3.Connection) -> None:
                conn.execute("INSERT INTO applied (event_id, n) VALUES (?, ?)", (ctx.id, event.payload["n"]))

            await hub.subscribe(
                TOPIC, GROUP, apply, inbox=inbox, ack_timeout_ms=5000, start="earliest", max_deliver=1000
            )
        elif mode == "inbox":
            AnnouncingPostgresInbox.pause_s = pause_s
            pg_inbox = AnnouncingPostgresInbox(target)

            async def apply_pg(event: Event, ctx: SubscribeContext, conn: Any) -> None:
                await conn.execute(
                    "INSERT INTO applied (event_id, n) VALUES (%s, %s)", (ctx.id, event.payload["n"])
                )

            await hub.subscribe(
                TOPIC,
                GROUP,
                apply_pg,
                inbox=pg_inbox,
                ack_timeout_ms=5000,
                start="earliest",
                max_deliver=1000,
            )
        else:
            assert kind == "sqlite", "the plain mode is only used on SQLite"

            async def apply_plain(event: Event, ctx: SubscribeContext) -> None:
                with sqlite3.connect(target, timeout=30) as conn:  # commits on exit
                    conn.execute(
                        "INSERT INTO applied (event_id, n) VALUES (?, ?)", (ctx.id, event.payload["n"])
                    )
                conn.close()
                _announce(ctx.id, True)
                await asyncio.sleep(pause_s)

            await hub.subscribe(
                TOPIC, GROUP, apply_plain, ack_timeout_ms=5000, start="earliest", max_deliver=1000
            )
        if expected <= 0:
            await asyncio.Event().wait()  # until killed
        while await _distinct(db) < expected:  # noqa: ASYNC110 - polls the database, not this process
            await asyncio.sleep(0.05)
        await hub.drain()


if __name__ == "__main__":
    url, tok, database, run_mode, pause, want = sys.argv[1:7]
    asyncio.run(main(url, tok, database, run_mode, float(pause), int(want)))
