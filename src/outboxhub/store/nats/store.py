"""``NatsStore``: the event log and consumer groups on one NATS JetStream stream (docs/jetstream.md).

The stream's sequence is the store-wide ``seq``; an event id is deduplicated per topic through
``Nats-Msg-Id`` within the stream's duplicate window (``dedup_window_s``, default one hour); consumer groups
are durable pull consumers (``groups.py``); reads are direct gets or throwaway consumers (``log.py``). Every
hub on the same stream shares the log and the groups; a publish returns once JetStream acked it, i.e. once
it is on a quorum of the stream's replicas.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from outboxhub.errors import StoreError, StoreURLError
from outboxhub.model import (
    Cursor,
    Delivery,
    Event,
    GroupInfo,
    Lag,
    NewEvent,
    PublishResult,
    StartPosition,
    TopicInfo,
)
from outboxhub.store.backend import StoreBackend
from outboxhub.store.base import EventRef, Store, every_group, mask_url
from outboxhub.store.codec import Prepared, prepare
from outboxhub.store.lifecycle import ClaimRequest, ExtendRequest, NackRequest
from outboxhub.store.nats.conn import NatsConn, connect
from outboxhub.store.nats.groups import Groups, unsupported_ordered
from outboxhub.store.nats.incarnations import ack_floor
from outboxhub.store.nats.log import EventLog
from outboxhub.store.nats.overview import Overview, cursor_at, lag_of, reads_floor
from outboxhub.store.nats.subjects import decode_body, encode_body, msg_id, pattern_filter, subject_of
from outboxhub.store.nats.url import parse_url

__all__ = ["NatsStore", "open_store"]

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


class NatsStore(StoreBackend):
    """A ``Store`` on a JetStream stream (see the module docstring)."""

    label = "NATS store"

    def __init__(self, conn: NatsConn) -> None:
        super().__init__(conn.shown, newer_only=True)
        self._conn = conn
        self._log = EventLog(conn)
        self._groups = Groups(conn, self._log, self._publish_dead_letter)
        self._overview = Overview(conn, self._log, self._groups.incarnations)

    async def _start(self) -> None:
        await self._conn.listen(self._committed, self._groups.reset_heard)

    async def _shutdown(self) -> None:
        try:
            await self._groups.close()
        finally:
            await self._conn.close()

    async def ping(self) -> None:
        self._check_open()
        await self._log.last_seq()

    # -- events -------------------------------------------------------------------------------------------

    async def _append(self, rows: list[Prepared]) -> list[PublishResult]:
        conn = self._conn
        for row in rows:  # what every other store's 64-bit column refuses, refused before anything is sent
            if not _INT64_MIN <= row[2] <= _INT64_MAX:
                raise StoreError(
                    f"NATS store {conn.shown}: event {row[0]} on {row[1]!r}: ts {row[2]} is outside the"
                    " signed 64-bit range; nothing of this batch was stored"
                )
        publishes = [
            conn.publish(subject_of(conn.prefix, row[1], row[3]), encode_body(row), msg_id(row[1], row[0]))
            for row in rows
        ]
        # One event (the gateway's PUBLISH) is awaited as it is; a batch is pipelined, sent in order.
        acks = [await publishes[0]] if len(publishes) == 1 else await asyncio.gather(*publishes)
        results: list[PublishResult] = []
        seen: set[tuple[str, str]] = set()
        for row, ack in zip(rows, acks, strict=True):
            key = (row[1], row[0])
            duplicate = bool(ack.duplicate) or key in seen
            seen.add(key)
            results.append(PublishResult(id=row[0], seq=int(ack.seq), duplicate=duplicate))
        last = max(r.seq for r in results)
        self._committed(last)
        conn.notify(last)
        return results

    async def _publish_dead_letter(self, event: NewEvent) -> object:
        return await self._append([prepare(event)])

    async def get_event(self, event_id: str, topic: str | None = None) -> Event | None:
        self._check_open()
        return await self._log.get_event(event_id, topic)

    async def _scan(
        self, pattern: str, after_seq: int, since_ts: int | None, until_ts: int | None, limit: int
    ) -> list[Event]:
        out: list[Event] = []
        if limit <= 0:
            return out
        flt = pattern_filter(self._conn.prefix, pattern)
        filtered = since_ts is not None or until_ts is not None
        async for event in self._log.read(flt, after_seq, None if filtered else limit):
            if since_ts is not None and event.ts < since_ts:
                continue
            if until_ts is not None and event.ts > until_ts:
                continue
            out.append(event)
            if len(out) >= limit:
                break
        return out

    async def _latest_by_key(self, topic: str, keys: list[str]) -> dict[str, Event]:
        return await self._log.latest_by_key(topic, keys)

    async def tail(self, pattern: str) -> Event | None:
        self._check_open()
        return await self._log.tail(pattern_filter(self._conn.prefix, pattern))

    async def count(self, pattern: str, *, after_seq: int = 0) -> int:
        self._check_open()
        return await self._log.count(pattern_filter(self._conn.prefix, pattern), after_seq)

    async def last_seq(self) -> int:
        self._check_open()
        return await self._log.last_seq()

    async def topics(self) -> list[TopicInfo]:
        self._check_open()
        return await self._log.topics()

    # -- consumer groups ----------------------------------------------------------------------------------

    def check_group_options(self, group: str, *, ordered_by_key: bool) -> None:
        """``ordered_by_key`` has no JetStream counterpart: refused (``StoreUnsupported``) at SUBSCRIBE."""
        if ordered_by_key:
            raise unsupported_ordered(self._conn.shown, group)

    def _first_at(self, pattern: str, start: StartPosition) -> Callable[[], Awaitable[int | None]]:
        """The seq of the first event matching ``pattern`` with ``ts >= start.value`` (a scan)."""

        async def first_at() -> int | None:
            async for event in self._log.read(pattern_filter(self._conn.prefix, pattern), 0, None):
                if event.ts >= start.value:
                    return event.seq
            return None

        return first_at

    async def ensure_group(self, pattern: str, group: str, start: StartPosition) -> GroupInfo:
        self._check_open()
        return await self._groups.ensure(pattern, group, start, self._first_at(pattern, start))

    async def reset_group(self, pattern: str, group: str, to: StartPosition) -> GroupInfo | None:
        """Delete the group's durable consumer and create it again at ``to`` (all / new / by start sequence
        / the first event at the ts, as ``ensure_group``): JetStream's pending acks go with it, so every
        in-flight delivery is released; the dead letters on ``dlq.<group>.>`` stay."""
        self._check_open()
        return await self._groups.reset(pattern, group, to, self._first_at(pattern, to))

    async def groups(self) -> list[GroupInfo]:
        """One listing of the stream's consumers and one stream info (``overview.py``)."""
        self._check_open()
        return await self._overview.groups()

    async def groups_with_lag(
        self, keep: Callable[[GroupInfo], bool] = every_group
    ) -> list[tuple[GroupInfo, Lag | None]]:
        """Every group ``keep`` accepts with its lag, equal to its ``lag`` (``overview.py``: one listing,
        one stream info, a tail per pattern, an event per ack floor below its tail)."""
        self._check_open()
        return await self._overview.groups_with_lag(keep)

    async def _claim(self, request: ClaimRequest) -> list[Delivery]:
        return await self._groups.claim(request)

    async def _ack(self, pattern: str, group: str, refs: list[EventRef], member: str | None) -> int:
        return await self._groups.ack_soon(pattern, group, refs, member)

    def _ack_soon(
        self, pattern: str, group: str, refs: list[EventRef], member: str | None
    ) -> asyncio.Future[int]:
        """Without a task (``Groups.ack_soon``)."""
        return self._groups.ack_soon(pattern, group, refs, member)

    async def _nack(self, request: NackRequest) -> bool:
        return await self._groups.nack(request, lambda held: self._held_event(held.msg))

    def _held_event(self, msg: Any) -> Event:
        return decode_body(int(msg.metadata.sequence.stream), msg.data)

    async def _extend(self, request: ExtendRequest) -> bool:
        return await self._groups.extend(request)

    async def release(self, pattern: str, group: str, member: str) -> int:
        self._check_open()
        return await self._groups.release(pattern, group, member)

    async def next_deadline(self, pattern: str, group: str) -> int | None:
        self._check_open()
        return self._groups.next_deadline(pattern, group)

    async def cursor(self, pattern: str, group: str) -> Cursor | None:
        self._check_open()
        info = await self._groups.info(pattern, group)
        if info is None:
            return None
        return await self._cursor_at(pattern, group, ack_floor(info), await self.tail(pattern))

    async def _cursor_at(self, pattern: str, group: str, floor: int, tail: Event | None) -> Cursor:
        """The cursor at ``floor`` given the pattern's ``tail`` (``overview.cursor_at``)."""
        at_floor = await self._log.at(floor) if reads_floor(floor, tail) else None
        return cursor_at(pattern, group, floor, tail, at_floor)

    async def lag(self, pattern: str, group: str) -> Lag | None:
        """From one consumer info and one tail read (the cursor's own)."""
        self._check_open()
        info = await self._groups.info(pattern, group)
        if info is None:
            return None
        tail = await self.tail(pattern)
        return lag_of(info, await self._cursor_at(pattern, group, ack_floor(info), tail), tail)


async def open_store(url: str, **options: Any) -> Store:
    """Open the JetStream store at ``url`` (``nats://host:port[,…]?stream=…``; docs/jetstream.md).

    No keyword options: everything is in the URL. Raises ``StoreURLError`` for a bad URL and
    ``StoreUnavailable`` when no server answers.
    """
    if options:
        raise StoreURLError(f"the NATS store takes its settings from the URL; unexpected {sorted(options)}")
    parsed = parse_url(url)
    conn = await connect(parsed, mask_url(url))
    store = NatsStore(conn)
    await store._start()
    return store
