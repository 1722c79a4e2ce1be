"""Every group of the stream at once, for the ops API's overview (``/groups``, ``/metrics``, the dashboard's
series, ``/cursors``): ``groups()`` and ``groups_with_lag``, in JetStream requests that grow with what the
answer needs, not with one round of lookups per group.

* The groups and their consumers' state: one paged ``CONSUMER.LIST`` (256 per page), the newest
  incarnation of each group (a reset elsewhere may briefly leave two). Each group's lag comes from that
  entry, which is the same consumer info that ``lag`` asks for by name, taken during the same request.
* Dead-letter counts: one stream info over ``<prefix>.dlq.>`` (paged per 100,000 subjects), summed per
  group: a group name is one topic segment (``validate_group``), so the token after ``dlq`` is the group.
* Tails: one read per distinct pattern, shared by the groups on it.
* The event at each ack floor (the cursor's ``last_id``/``last_ts``): one direct get per distinct floor
  that is below its pattern's tail (at or above it, the cursor is the tail), none for a seq already read.

What stays per group is the event at its floor when groups on different patterns stand at different
floors: nats-server 2.9 has no batch get (2.11's ``multi_last``/``up_to_seq`` could answer every cursor of
a pattern in one request). At most ``IN_FLIGHT`` of these reads are in flight at once (the per-group
``lag`` calls of before were all sent together).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TypeVar

from nats.js.api import ConsumerInfo

from outboxhub.model import Cursor, Event, GroupInfo, Lag
from outboxhub.store.nats.conn import NatsConn
from outboxhub.store.nats.incarnations import Incarnations, ack_floor, generation_of
from outboxhub.store.nats.listing import consumer_listing
from outboxhub.store.nats.log import EventLog
from outboxhub.store.nats.subjects import consumer_name, pattern_filter
from outboxhub.topics import match_topic

__all__ = ["IN_FLIGHT", "Overview", "cursor_at", "group_state", "lag_of", "reads_floor"]

IN_FLIGHT = 32
"""At most this many of an overview's reads in flight at once: thousands of groups make a queue here, not a
burst of thousands of requests at the JetStream cluster."""

_T = TypeVar("_T")


async def _bounded(calls: list[Callable[[], Awaitable[_T]]]) -> list[_T]:
    """The answers of ``calls``, at most ``IN_FLIGHT`` running at once, in order."""
    slots = asyncio.Semaphore(IN_FLIGHT)

    async def run(call: Callable[[], Awaitable[_T]]) -> _T:
        async with slots:
            return await call()

    return list(await asyncio.gather(*(run(call) for call in calls)))


def group_state(pattern: str, group: str, info: ConsumerInfo, dead_letters: int) -> GroupInfo:
    """The group's summary from its consumer's info and its dead-letter count."""
    return GroupInfo(
        pattern=pattern,
        group=group,
        ack_floor=ack_floor(info),
        frontier=int(info.delivered.stream_seq if info.delivered else 0),
        in_flight=int(info.num_ack_pending or 0),
        dead_letters=dead_letters,
    )


def reads_floor(floor: int, tail: Event | None) -> bool:
    """Whether the cursor at ``floor`` needs the event stored at ``floor`` (below the pattern's tail, or no
    tail); else the cursor is the tail."""
    return tail is None or tail.seq > floor


def cursor_at(pattern: str, group: str, floor: int, tail: Event | None, at_floor: Event | None) -> Cursor:
    """The cursor at ``floor`` given the pattern's ``tail`` and the event stored at ``floor`` (read when
    ``reads_floor``): the newest matching event at or below the floor, i.e. the tail when the group is
    caught up, else the event at the floor when it matches (JetStream cannot read backwards from a seq by
    subject; otherwise last_id/last_ts stay None, see docs/jetstream.md)."""
    at = at_floor if reads_floor(floor, tail) else tail
    if at is not None and ((at.seq == floor and match_topic(pattern, at.topic)) or at is tail):
        return Cursor(pattern=pattern, group=group, seq=floor, last_id=at.id, last_ts=at.ts)
    return Cursor(pattern=pattern, group=group, seq=floor)


def lag_of(info: ConsumerInfo, cursor: Cursor, tail: Event | None) -> Lag:
    """The group's lag from its consumer's info, its cursor and its pattern's tail."""
    return Lag.behind(cursor, tail, int(info.num_pending or 0) + int(info.num_ack_pending or 0))


class Overview:
    """``groups()`` and ``groups_with_lag`` of one store (see the module docstring)."""

    def __init__(self, conn: NatsConn, log: EventLog, incarnations: Incarnations) -> None:
        self._conn = conn
        self._log = log
        self._incarnations = incarnations

    async def groups(self) -> list[GroupInfo]:
        """Every group's summary, sorted by (pattern, group)."""
        return [state for state, _ in await self._listed()]

    async def groups_with_lag(self, keep: Callable[[GroupInfo], bool]) -> list[tuple[GroupInfo, Lag | None]]:
        """Every group ``keep`` accepts with its lag, sorted by (pattern, group)."""
        listed = [(state, info) for state, info in await self._listed() if keep(state)]
        patterns = sorted({state.pattern for state, _ in listed})
        prefix = self._conn.prefix
        found = await _bounded([partial(self._log.tail, pattern_filter(prefix, p)) for p in patterns])
        tails = dict(zip(patterns, found, strict=True))
        events = {tail.seq: tail for tail in found if tail is not None}
        floors = sorted(
            {
                state.ack_floor
                for state, _ in listed
                if reads_floor(state.ack_floor, tails[state.pattern]) and state.ack_floor not in events
            }
        )
        for seq, event in zip(
            floors, await _bounded([partial(self._log.at, seq) for seq in floors]), strict=True
        ):
            if event is not None:
                events[seq] = event
        out: list[tuple[GroupInfo, Lag | None]] = []
        for state, info in listed:
            tail = tails[state.pattern]
            cursor = cursor_at(state.pattern, state.group, state.ack_floor, tail, events.get(state.ack_floor))
            out.append((state, lag_of(info, cursor, tail)))
        return out

    async def _listed(self) -> list[tuple[GroupInfo, ConsumerInfo]]:
        """Each group's summary and its newest incarnation's info (remembered: the ops API asks each one's
        lag or cursor next), sorted by (pattern, group)."""
        listed = await consumer_listing(self._conn, "LIST")
        infos = [ConsumerInfo.from_response(entry) for entry in listed if isinstance(entry, dict)]
        newest: dict[tuple[str, str], tuple[int, ConsumerInfo]] = {}
        for info in infos:
            try:
                described = json.loads(info.config.description or "")
                pattern, group = str(described["pattern"]), str(described["group"])
            except (ValueError, KeyError, TypeError):
                continue  # a scan's throwaway consumer, or not ours
            gen = generation_of(consumer_name(pattern, group), info.name)
            if gen is not None and gen >= newest.get((pattern, group), (-1, info))[0]:
                newest[(pattern, group)] = (gen, info)
        for (pattern, group), (_, info) in newest.items():
            self._incarnations.remember(pattern, group, info.name)
        dead = await self._dead_letters() if newest else {}
        out = [(group_state(p, g, info, dead.get(g, 0)), info) for (p, g), (_, info) in newest.items()]
        return sorted(out, key=lambda row: (row[0].pattern, row[0].group))

    async def _dead_letters(self) -> dict[str, int]:
        """The dead letters per group name: one stream info over every group's dead-letter subjects."""
        head = f"{self._conn.prefix}.dlq."
        counts: dict[str, int] = {}
        for subject, n in (await self._log.subjects(f"{head}>")).items():
            group = subject[len(head) :].split(".", 1)[0]
            counts[group] = counts.get(group, 0) + n
        return counts
