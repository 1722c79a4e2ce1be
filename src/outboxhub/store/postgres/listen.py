"""Cross-process wake-up: LISTEN on a dedicated connection, with polling as the fallback.

Every publishing transaction NOTIFYs the schema's channel with its last seq and the topics it wrote, one per
line (``publish_events``; the seq alone when the topics do not fit, see ``schema.NOTIFY_TOPICS_MAX_BYTES``),
so a commit made by any hub process reaches every other one within milliseconds and wakes only the groups
whose pattern matches one of those topics. A seq alone reports no topics (wake all). The listener keeps
its own connection (a pooled one could not stay in LISTEN), and when that connection drops it reconnects
with backoff. A notification lost while disconnected is covered by polling: after every (re)connect and
every ``poll_interval_s`` without a notification, the listener reads the counter and reports any seq it has
not reported yet. The poll doubles as the liveness check of the connection.

The poll after a (re)connect reports no topics: anything may have been missed while not listening. A poll
while connected reads, in the same snapshot as the counter, the topics of the events above the last seq
the store announced (``known``): what it finds there is a commit whose announcement is still on its way
(this store's writer answered by the server but not yet back in ``_committed``; under load the poll often
lands in that gap) or one that sent no NOTIFY, and waking every group for it would wake every member on the
hub. More than ``_POLL_ROWS`` events or ``_POLL_TOPICS`` topics there report no topics.

The LISTEN connection registers its store's node (``registry.py``) after LISTEN and before that first
poll; a publish notifies only when some other node is registered, so a lone hub hears no notification
of its own commits (its store calls the commit listeners directly) and relies on the poll for commits of
programs that publish without a node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import psycopg

from outboxhub.ids import now_ms
from outboxhub.retry import BackoffPolicy, Retries
from outboxhub.store.postgres.conn import configure_connection
from outboxhub.store.postgres.registry import register, unregister
from outboxhub.store.postgres.schema import quote_ident

__all__ = ["Listener", "parse_payload"]

_log = logging.getLogger("outboxhub.store.postgres.store")

_BACKOFF = BackoffPolicy(base=0.05, cap=2.0)

_POLL_ROWS = 10_000
"""A poll reads the topics of at most this many unannounced events (a writer's batch is 2,000 at most)."""
_POLL_TOPICS = 1_000
"""... and names at most this many topics (as a NOTIFY names at most 7,900 bytes of them)."""


class Listener:
    """Calls ``on_seq(seq, topics)`` for commits seen through NOTIFY or polling (from the event loop);
    ``topics`` is None when the notification did not name them. ``known()`` is the last seq the store has
    announced (its own commits and what this listener reported)."""

    def __init__(
        self,
        *,
        dsn: str,
        url: str,
        schema: str,
        channel: str,
        on_seq: Callable[[int, frozenset[str] | None], None],
        known: Callable[[], int],
        node: str,
        poll_interval_s: float = 1.0,
        connect_timeout_s: float = 5.0,
    ) -> None:
        self._dsn = dsn
        self._node = node
        self._url = url
        self._schema = schema
        self._channel = channel
        self._on_seq = on_seq
        self._known = known
        self._poll_interval_s = poll_interval_s
        self._connect_timeout_s = connect_timeout_s
        self._task: asyncio.Task[None] | None = None
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self.connected = asyncio.Event()
        """Set while the LISTEN connection is up (tests wait on it)."""
        self.reconnects = 0
        """How many times the connection was re-established after a loss."""
        self.backend_pid: int | None = None
        """The server process id of the current LISTEN connection."""
        self.notifications = 0
        """Notifications received (tests count them)."""

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="outboxhub-pg-listener")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        conn = self._conn
        if conn is not None and self.connected.is_set():
            # Best effort: a row left behind only means other nodes go on notifying (registry.py).
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    unregister(conn, quote_ident(self._schema), self._node), self._connect_timeout_s
                )
        await self._drop()

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        self.connected.clear()
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _run(self) -> None:
        backoff = Retries(_BACKOFF)
        down_since_logged = False
        ever_connected = False
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self._dsn, autocommit=True, connect_timeout=max(1, round(self._connect_timeout_s))
                )
                self._conn = conn
                self.backend_pid = conn.info.backend_pid
                await configure_connection(conn)
                await conn.execute(f"LISTEN {quote_ident(self._channel)}")
                # After LISTEN took effect, before the poll: see registry.py for why nothing is missed.
                await register(conn, quote_ident(self._schema), self._node, now_ms())
                if ever_connected:
                    self.reconnects += 1
                    _log.info("PostgreSQL listener for %s reconnected", self._url)
                ever_connected = True
                down_since_logged = False
                backoff.reset()
                self.connected.set()
                await self._poll(conn, topics=False)  # anything committed while we were not listening
                await self._listen(conn)
            except asyncio.CancelledError:
                raise
            except (psycopg.Error, OSError, ValueError) as exc:
                if not down_since_logged:
                    # One line per outage, not a traceback per retry.
                    _log.warning(
                        "PostgreSQL listener for %s lost its connection (%s); retrying",
                        self._url,
                        str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
                    )
                    down_since_logged = True
            except Exception:
                # A bug, not an outage: say so once with the traceback, and keep the wake-ups coming.
                _log.exception("PostgreSQL listener for %s failed; restarting it", self._url)
            await self._drop()
            await asyncio.sleep(backoff.next())

    async def _listen(self, conn: psycopg.AsyncConnection[Any]) -> None:
        while True:
            got = False
            async for notify in conn.notifies(timeout=self._poll_interval_s):
                got = True
                self.notifications += 1
                parsed = parse_payload(notify.payload)
                if parsed is not None:
                    self._on_seq(*parsed)
            if not got:
                await self._poll(conn, topics=True)

    async def _poll(self, conn: psycopg.AsyncConnection[Any], *, topics: bool) -> None:
        """Report the counter; with ``topics``, name the topics of the events above ``known()`` (none when
        they are too many)."""
        schema = quote_ident(self._schema)
        if not topics:
            cur = await conn.execute(f"SELECT last_seq FROM {schema}.counter WHERE id = 1")
            row = await cur.fetchone()
            if row is not None:
                self._on_seq(int(row[0]), None)
            return
        # One statement, one snapshot: every event up to the counter's seq is visible in it (publishers
        # hold the counter's row lock until they commit).
        cur = await conn.execute(
            f"WITH c AS (SELECT last_seq FROM {schema}.counter WHERE id = 1),"
            f" r AS (SELECT e.topic_id FROM {schema}.events e, c"
            "  WHERE e.seq > %(known)s AND e.seq <= c.last_seq ORDER BY e.seq LIMIT %(rows)s)"
            " SELECT c.last_seq, (SELECT count(*) FROM r),"
            f" ARRAY(SELECT DISTINCT t.topic FROM r JOIN {schema}.topics t ON t.topic_id = r.topic_id"
            "  LIMIT %(topics)s) FROM c",
            {"known": self._known(), "rows": _POLL_ROWS, "topics": _POLL_TOPICS + 1},
        )
        row = await cur.fetchone()
        if row is not None:
            seq, rows, names = int(row[0]), int(row[1]), row[2]
            named = rows < _POLL_ROWS and 0 < len(names) <= _POLL_TOPICS
            self._on_seq(seq, frozenset(names) if named else None)


def parse_payload(payload: str) -> tuple[int, frozenset[str] | None] | None:
    """``(seq, topics)`` of a NOTIFY payload (``<seq>`` or ``<seq>\\n<topic>\\n...``); None when it is not
    one (another writer on the channel): it is ignored, the poll covers anything real."""
    head, _, rest = payload.partition("\n")
    try:
        seq = int(head)
    except ValueError:
        return None
    topics = frozenset(topic for topic in rest.split("\n") if topic) if rest else None
    return seq, topics or None
