"""The async ``Store`` protocol every backend implements, and the helpers they share.

A store owns three things: the event log (append-only, ``seq`` strictly increasing in commit order,
idempotent by ``(topic, id)``: an id is unique within its topic only, so one topic's ids never reveal nor
block another topic's events), consumer-group state (ack floor, delivery frontier, pending deliveries), and
the commit notifications that wake waiting consumers. The bus and the gateway only talk to this protocol;
``tests/contract/`` runs one suite against every backend.

Group semantics (the delivery lifecycle itself is ``store/lifecycle.py``):

* A group is identified by ``(pattern, group)``. ``ensure_group`` creates it at its start position, or
  returns the existing state unchanged (the start position only matters once).
* ``frontier`` is the highest seq the group has taken from the log into its pending set; ``ack_floor`` is
  the highest seq at or below which every matching event is acked. ``ack_floor <= frontier``.
* ``claim`` hands a member up to ``limit`` deliverable events, oldest seq first: first pending events
  whose deadline has passed (a timed-out claim, a NACK whose backoff expired, a released member's claims),
  then new events from the log above the frontier. Each delivery bumps ``attempts`` and sets
  ``deadline = now + ack_timeout_ms``. A pending event whose deadline passed with ``attempts >=
  max_deliver`` is dead-lettered instead: published to ``dlq.<group>.<topic>`` with headers
  ``x-original-topic``, ``x-original-id``, ``x-group``, ``x-attempts``, ``x-reason``, then acked.
  With ``ordered_by_key``, an event is not handed out while an earlier event with the same key is pending
  in that group (it stays pending until the key is free).
* ``ack`` removes pending events and advances the ack floor to just below the oldest still-pending seq
  (or to the frontier when nothing is pending). Acking an unknown or already-acked id is a no-op.
* ``nack`` makes a pending event deliverable again after ``delay_ms`` (default: 500 ms doubling per
  attempt, capped at 30 s); if its attempts already reached ``max_deliver`` it is dead-lettered now.
* Settling (``ack``/``nack``) names a delivery by an ``EventRef``: its id and, when known, its seq. With a
  seq the row is ``(group, seq)`` and must carry that id; without one the id must match exactly one pending
  row the caller may settle (two topics under one pattern may carry the same id: then nothing is settled).
  With ``member`` given, only a row that was delivered (``attempts > 0``) and is held by that member or by
  nobody (NACKed, released, never re-claimed after its deadline) may be settled: a member cannot settle
  another member's delivery (``may_settle`` in ``store/lifecycle.py``). ``member=None`` is the trusted,
  in-process caller (tests, tools).
* Every mutation is atomic in the database, so several hub processes may share one store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol, runtime_checkable

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
from outboxhub.urls import mask_url  # the one masking function, re-exported here for the stores

__all__ = [
    "CommitListener",
    "EventRef",
    "GroupsWithLag",
    "Store",
    "TopicListener",
    "dlq_topic",
    "every_group",
    "groups_with_lag",
    "mask_url",
    "refs_of",
]

CommitListener = Callable[[int], None]
"""Called with the newest committed seq after events are committed (from the event loop thread)."""

TopicListener = Callable[[int, "frozenset[str] | None"], None]
"""Called like a ``CommitListener``, plus the concrete topics that commit wrote to; None when the store does
not know them (another process's commit, a backend that cannot tell): then anything may have changed."""


class EventRef(NamedTuple):
    """One delivery to settle: the event id and, when known, its seq (which makes it unambiguous when two
    topics under one pattern carry the same id)."""

    id: str
    seq: int | None = None


def refs_of(event_ids: Sequence[str | EventRef]) -> list[EventRef]:
    """``event_ids`` as ``EventRef`` values (a plain string is an id without seq)."""
    return [ref if isinstance(ref, EventRef) else EventRef(ref) for ref in event_ids]


def dlq_topic(group: str, topic: str) -> str:
    """The dead-letter topic of ``topic`` for ``group``: ``dlq.<group>.<topic>``."""
    return f"dlq.{group}.{topic}"


@runtime_checkable
class Store(Protocol):
    """An event log with consumer-group state. All methods are coroutine-safe."""

    @property
    def url(self) -> str:
        """The store URL with the password masked."""
        ...

    async def close(self) -> None:
        """Flush pending writes and release connections. Idempotent."""
        ...

    async def ping(self) -> None:
        """Raise ``StoreUnavailable`` unless the database answers."""
        ...

    def add_commit_listener(self, listener: CommitListener) -> None:
        """Register ``listener`` to be called with the newest seq whenever events commit.

        Backends that can hear other processes' commits (PostgreSQL NOTIFY, Mongo change streams) call it
        for those too; otherwise only for commits made through this store object.
        """
        ...

    def remove_commit_listener(self, listener: CommitListener) -> None: ...

    def add_topic_listener(self, listener: TopicListener) -> None:
        """Like ``add_commit_listener``, but ``listener`` also gets the committed topics (or None) so that
        only consumers whose pattern matches one of them need to look (the bus's wake-ups)."""
        ...

    def remove_topic_listener(self, listener: TopicListener) -> None: ...

    # -- events -------------------------------------------------------------------------------------------

    async def publish(self, event: NewEvent) -> PublishResult:
        """Append one event; return only after it is durably committed. Idempotent by ``(event.topic,
        event.id)``: the same id on another topic is another event."""
        ...

    async def publish_batch(self, events: Sequence[NewEvent]) -> list[PublishResult]:
        """Append events in order in one transaction; results in the same order.

        An ``(topic, id)`` repeated within the batch is stored once; later copies report ``duplicate=True``.
        """
        ...

    async def get_event(self, event_id: str, topic: str | None = None) -> Event | None:
        """The event ``event_id`` of ``topic``; without a topic, the oldest event carrying that id (ids are
        unique per topic only)."""
        ...

    async def scan(
        self,
        pattern: str,
        *,
        after_seq: int = 0,
        since_ts: int | None = None,
        until_ts: int | None = None,
        limit: int = 1000,
    ) -> list[Event]:
        """Events matching ``pattern`` with ``seq > after_seq`` (and ``since_ts <= ts <= until_ts`` when
        given), in seq order, at most ``limit``."""
        ...

    async def latest_by_key(self, topic: str, keys: Sequence[str]) -> dict[str, Event]:
        """The newest event of ``topic`` for each key that has one."""
        ...

    async def tail(self, pattern: str) -> Event | None:
        """The newest event matching ``pattern``."""
        ...

    async def count(self, pattern: str, *, after_seq: int = 0) -> int:
        """How many events match ``pattern`` with ``seq > after_seq``."""
        ...

    async def last_seq(self) -> int:
        """The highest committed seq (0 for an empty log)."""
        ...

    async def topics(self) -> list[TopicInfo]:
        """Every concrete topic with its event count, last seq and last ts, sorted by topic."""
        ...

    # -- consumer groups ----------------------------------------------------------------------------------

    def check_group_options(self, group: str, *, ordered_by_key: bool) -> None:
        """Raise ``StoreUnsupported`` (naming the option) when this store cannot run ``group`` with these
        options; the bus calls it at SUBSCRIBE, before ``ensure_group``, so the SUBSCRIBE fails once
        instead of its claims failing forever."""
        ...

    async def ensure_group(self, pattern: str, group: str, start: StartPosition) -> GroupInfo:
        """Create the group at ``start`` if it does not exist; return its state."""
        ...

    async def groups(self) -> list[GroupInfo]:
        """Every group's state, sorted by (pattern, group)."""
        ...

    async def claim(
        self,
        pattern: str,
        group: str,
        member: str,
        *,
        limit: int,
        ack_timeout_ms: int,
        max_deliver: int,
        ordered_by_key: bool = False,
        now: int | None = None,
    ) -> list[Delivery]:
        """Hand ``member`` up to ``limit`` deliverable events (see the module docstring)."""
        ...

    async def ack(
        self, pattern: str, group: str, event_ids: Sequence[str | EventRef], *, member: str | None = None
    ) -> int:
        """Acknowledge pending deliveries (see the module docstring for ``EventRef`` and ``member``); return
        how many were settled."""
        ...

    async def nack(
        self,
        pattern: str,
        group: str,
        event_id: str | EventRef,
        *,
        max_deliver: int,
        member: str | None = None,
        delay_ms: int | None = None,
        reason: str | None = None,
        now: int | None = None,
        terminal: bool = False,
    ) -> bool:
        """Schedule a redelivery (or dead-letter; at once with ``terminal``); return whether the event was
        pending."""
        ...

    async def extend(
        self,
        pattern: str,
        group: str,
        event_id: str | EventRef,
        *,
        ack_timeout_ms: int,
        now: int | None = None,
        member: str | None = None,
    ) -> bool:
        """Push a delivered event's deadline to ``now + ack_timeout_ms`` (the member is still working);
        with ``member``, only when that member holds it. The row is found as a settle finds it (see the
        module docstring for ``EventRef``). False when the event is not delivered (to it) or its deadline
        already passed (it may be redelivered: the ``extend`` rule of ``store/lifecycle.py``)."""
        ...

    async def release(self, pattern: str, group: str, member: str) -> int:
        """Make every event claimed by ``member`` deliverable now (it disconnected); return how many."""
        ...

    async def reset_group(self, pattern: str, group: str, to: StartPosition) -> GroupInfo | None:
        """Move an existing group's cursor to ``to`` (``earliest``, ``latest``, after a seq, or at a ts, as
        ``ensure_group`` would start it) and drop its pending set: in-flight deliveries are released (late
        ACKs are no-ops) and the group reads the log again from there. The dead-letter count is kept.
        Returns the new state, or None when the group does not exist."""
        ...

    async def next_deadline(self, pattern: str, group: str) -> int | None:
        """The earliest deadline among pending events (when the next redelivery may be due)."""
        ...

    async def cursor(self, pattern: str, group: str) -> Cursor | None:
        """The group's ack floor, or None when the group does not exist."""
        ...

    async def lag(self, pattern: str, group: str) -> Lag | None:
        """How far the group is behind, or None when the group does not exist."""
        ...


def every_group(group: GroupInfo) -> bool:
    """The default filter of ``groups_with_lag``: every group."""
    del group
    return True


@runtime_checkable
class GroupsWithLag(Protocol):
    """A store that answers every group's lag at once in fewer round trips than ``groups`` + one ``lag``
    each (the JetStream store: ``store/nats/overview.py``)."""

    async def groups_with_lag(
        self, keep: Callable[[GroupInfo], bool] = every_group
    ) -> list[tuple[GroupInfo, Lag | None]]: ...


async def groups_with_lag(
    store: Store, keep: Callable[[GroupInfo], bool] = every_group
) -> list[tuple[GroupInfo, Lag | None]]:
    """Every group of ``store`` that ``keep`` accepts, sorted by (pattern, group), with its lag (None when
    the group went away meanwhile): the ops API's overview. Each lag equals the group's ``lag``."""
    if isinstance(store, GroupsWithLag):
        return await store.groups_with_lag(keep)
    groups = [g for g in await store.groups() if keep(g)]
    lags = await asyncio.gather(*(store.lag(g.pattern, g.group) for g in groups))
    return list(zip(groups, lags, strict=True))
