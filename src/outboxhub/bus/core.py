"""The bus: turns the store's log into consumer groups for in-process members (WebSocket connections).

Delivery lifecycle of one event in one group: the store does every transition atomically; the bus decides
when to claim and passes ACK/NACK through. The table and the claim rule that enforces it live in
``outboxhub.store.lifecycle`` (``DELIVERY_LIFECYCLE``, re-exported here), which every store backend runs.

How the bus drives it:

* Each grouped member runs one asyncio task. While it has capacity (``max_in_flight`` minus what it holds)
  and is not paused it claims up to ``min(capacity, claim_batch)`` with its own ``ack_timeout_ms``,
  ``max_deliver`` and ``ordered_by_key`` and calls ``deliver`` for each. A ``deliver`` that returns False
  did not take the delivery: the member pauses, keeps it, and offers it again on ``resume()`` unless its
  deadline passed meanwhile (then the store redelivers it, maybe to another member).
* With nothing to claim a member sleeps until the first of: a commit notification (the store's topic
  listener wakes the members of every group whose pattern matches a committed topic, or every member when
  the store cannot tell which topics a commit wrote, see ``bus/interest.py``; so events published through
  this process arrive without polling, and idle groups on other topics cost a publish nothing), the
  group's next redelivery deadline (``store.next_deadline``), an ack of one of its deliveries (any ack when
  the group orders by key), a nack or a local member's release in its group, ``resume()`` or ``close()``,
  or ``poll_interval_s``. The poll interval is only a safety net for what this process cannot hear:
  commits by other processes on a backend without cross-process notifications (SQLite), and claims
  released by members in other processes. Set it lower for multi-process SQLite, higher otherwise.
* Store errors in a member loop are logged and retried with capped exponential backoff (50 ms → 2 s);
  the loop never dies of them.
* Members of one ``(pattern, group)`` may subscribe with different options: each member's claims use its
  own options; ``nack`` uses the options of the member holding the event, else those of the latest
  subscriber in this process.
* ``group=None`` is an ephemeral subscription: events committed after it starts (at ``store.last_seq()``
  when ``subscribe`` is called), no stored state, no acks. A paused one catches up from the log on
  ``resume()``, so it misses nothing while connected. See ``bus/live.py``.

Everything that must survive a restart (cursors, pending deliveries, attempts) is in the store; the bus only
holds what is in flight in this process, and ``close()`` releases those claims for immediate redelivery.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from outboxhub.bus.groupstate import GroupState
from outboxhub.bus.interest import BusStats, TopicInterest
from outboxhub.bus.live import LiveFanout
from outboxhub.bus.member import AmbiguousSettle, GroupMember
from outboxhub.bus.subscription import DeliverFn, HoldFn, Subscription
from outboxhub.ids import new_id, now_ms
from outboxhub.model import GroupOptions, NewEvent, PublishResult
from outboxhub.store.backend import StoreBackend
from outboxhub.store.base import EventRef, Store
from outboxhub.store.lifecycle import DELIVERY_LIFECYCLE
from outboxhub.topics import validate_group, validate_pattern

__all__ = ["DELIVERY_LIFECYCLE", "AmbiguousSettle", "Bus", "BusStats", "DeliverFn", "Subscription"]


class Bus:
    """Consumer groups and live subscriptions over one ``Store``.

    ``claim_batch`` caps one claim; ``poll_interval_s`` is the safety-net wake-up (see the module
    docstring); ``close_timeout_s`` bounds how long closing waits for a member's store call to return.
    The bus does not own the store: closing the bus leaves the store open.
    """

    def __init__(
        self,
        store: Store,
        *,
        claim_batch: int = 256,
        poll_interval_s: float = 1.0,
        close_timeout_s: float = 5.0,
    ) -> None:
        if claim_batch < 1:
            raise ValueError(f"claim_batch must be >= 1, got {claim_batch}")
        if poll_interval_s <= 0:
            raise ValueError(f"poll_interval_s must be > 0, got {poll_interval_s}")
        self._store = store
        # A backend hands out its commit's future directly; any other store gets a task per batch.
        self._backend = store if isinstance(store, StoreBackend) else None
        self._claim_batch = claim_batch
        self._poll_interval_s = poll_interval_s
        self._close_timeout_s = close_timeout_s
        self._groups: dict[tuple[str, str], GroupState[GroupMember]] = {}
        self.stats = BusStats()
        self._interest: TopicInterest[tuple[str, str]] = TopicInterest(
            self._groups.keys, _pattern_of, stats=self.stats
        )
        self._live = LiveFanout(store, batch=claim_batch, poll_interval_s=poll_interval_s)
        self._started = False
        self._closed = False

    @property
    def store(self) -> Store:
        return self._store

    async def start(self) -> None:
        """Start listening to the store's commits. Idempotent."""
        if self._closed:
            raise RuntimeError("Bus.start() after close(): create a new Bus")
        if not self._started:
            self._store.add_topic_listener(self._on_commit)
            self._started = True

    async def close(self) -> None:
        """Stop every subscription (releasing group members' claims) and stop listening. Idempotent."""
        if self._closed:
            return
        self._closed = True
        members = [member for state in self._groups.values() for member in state.members.values()]
        await asyncio.gather(*(member.close() for member in members), return_exceptions=True)
        await self._live.close()
        if self._started:
            self._store.remove_topic_listener(self._on_commit)

    async def __aenter__(self) -> Bus:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- publishing ---------------------------------------------------------------------------------------

    async def publish(self, event: NewEvent) -> PublishResult:
        """Append one event (its topic already validated); returns once durable. The store fills id/ts."""
        return await self._store.publish(event)

    async def publish_batch(self, events: Sequence[NewEvent]) -> list[PublishResult]:
        """Append events in order in one transaction; results in the same order."""
        return await self._store.publish_batch(events)

    def publish_batch_soon(self, events: Sequence[NewEvent]) -> asyncio.Future[list[PublishResult]]:
        """:meth:`publish_batch` without a coroutine per call: the future of its results, resolved after
        the commit (on SQLite the writer's own future). Must run on the event loop thread."""
        backend = self._backend
        if backend is not None:
            return backend.publish_soon(events)
        return asyncio.ensure_future(self._store.publish_batch(events))

    # -- subscribing --------------------------------------------------------------------------------------

    async def subscribe(
        self,
        pattern: str,
        group: str | None,
        deliver: DeliverFn,
        *,
        options: GroupOptions = GroupOptions(),  # noqa: B008 - frozen, so one shared default is safe
        member: str | None = None,
        hold: HoldFn | None = None,
    ) -> Subscription:
        """Subscribe ``deliver`` to ``pattern``: as a competing member of ``group``, or to live events only
        when ``group`` is None (``options`` then do not apply).

        Creates the group at ``options.start`` if it does not exist. ``member`` names this member in the
        store (one id may serve several ``(pattern, group)`` pairs, but only once per pair); a fresh id is
        generated when omitted. Raises ``TopicError`` for a bad pattern, ``ValueError`` for a bad group name,
        option or a member id already used in this group, ``StoreUnsupported`` for an option the store cannot
        run (``ordered_by_key`` on JetStream), ``StoreUnavailable`` when the store is down. ``hold``
        brackets each run of several deliveries to a group member (``HoldFn``).
        """
        if not self._started or self._closed:
            raise RuntimeError("Bus.subscribe() needs a started, open bus: await bus.start() first")
        validate_pattern(pattern)
        member_id = member if member is not None else f"m-{new_id()}"
        if group is None:
            return await self._live.subscribe(pattern, member_id, deliver)
        validate_group(group)
        _check_options(options)
        self._store.check_group_options(group, ordered_by_key=options.ordered_by_key)
        await self._store.ensure_group(pattern, group, options.start)
        if self._closed:
            raise RuntimeError("the bus was closed while subscribing")
        key = (pattern, group)
        state = self._groups.get(key)
        if state is None:
            self._forget_idle_groups()
            state = self._groups[key] = GroupState(self._store, pattern, group, options)
            self._interest.invalidate()
        if member_id in state.members:
            raise ValueError(f"member {member_id!r} is already subscribed to {pattern!r} in group {group!r}")
        state.options = options
        subscription = GroupMember(
            self._store,
            state,
            member_id,
            deliver,
            options,
            claim_batch=self._claim_batch,
            poll_interval_s=self._poll_interval_s,
            close_timeout_s=self._close_timeout_s,
            stats=self.stats,
            hold=hold,
        )
        state.members[member_id] = subscription
        subscription.start()
        return subscription

    # -- settling deliveries ------------------------------------------------------------------------------

    async def ack(
        self, pattern: str, group: str, event_id: str, *, seq: int | None = None, member: str | None = None
    ) -> bool:
        """Acknowledge the delivery ``(event_id, seq)`` for the group; True when it was pending and settled
        (False: unknown, already acked or dead-lettered, held by another member, ambiguous, or an ephemeral
        subscription). Concurrent acks of a group share one store call.

        ``member``: the member settling; only a delivery it holds, or that nobody holds (a late ACK), is
        settled (None: an in-process caller, unchecked). Without ``seq`` the id names the delivery: the one
        this member holds with that id, else the one pending row with that id; ``AmbiguousSettle`` when the
        member holds two deliveries with that id (two topics under the pattern)."""
        if not group:
            return False
        state = self._groups.get((pattern, group))
        ref = EventRef(event_id, self._seq_of(state, event_id, seq, member))
        if state is None:
            return await self._store.ack(pattern, group, [ref], member=member) > 0
        return await state.acks.ack(ref, member)

    def ack_soon(
        self, pattern: str, group: str, event_id: str, *, seq: int | None = None, member: str | None = None
    ) -> asyncio.Future[bool]:
        """:meth:`ack` without a coroutine per call: the future of its result (an error, such as
        ``AmbiguousSettle``, is set on the future). For a group with members here the future is the ack
        batcher's own, resolved after the store commit that settles it; else the future of a task running
        :meth:`ack`. Must run on the event loop thread."""
        state = self._groups.get((pattern, group)) if group else None
        if state is None:
            return asyncio.ensure_future(self.ack(pattern, group, event_id, seq=seq, member=member))
        try:
            ref = EventRef(event_id, self._seq_of(state, event_id, seq, member))
        except Exception as exc:
            failed: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            failed.set_exception(exc)
            return failed
        return state.acks.submit(ref, member)

    async def nack(
        self,
        pattern: str,
        group: str,
        event_id: str,
        *,
        seq: int | None = None,
        member: str | None = None,
        reason: str | None = None,
        delay_ms: int | None = None,
        terminal: bool = False,
    ) -> bool:
        """Ask for a redelivery after ``delay_ms`` (default: the backoff), or dead-letter the event when it
        has had ``max_deliver`` attempts, or at once when ``terminal``. True when the event was pending.
        ``seq`` and ``member`` as for ``ack``."""
        if not group:
            return False
        if delay_ms is not None and delay_ms < 0:
            raise ValueError(f"delay_ms must be >= 0, got {delay_ms}")
        state = self._groups.get((pattern, group))
        seq = self._seq_of(state, event_id, seq, member)
        options = GroupOptions()
        if state is not None:
            holder = state.holders.get(seq) if seq is not None else None
            options = holder.options if holder is not None else state.options
        pending = await self._store.nack(
            pattern,
            group,
            EventRef(event_id, seq),
            max_deliver=options.max_deliver,
            member=member,
            delay_ms=delay_ms,
            reason=reason,
            terminal=terminal,
        )
        if state is not None:
            state.nacked(seq)
        return pending

    async def extend(
        self, pattern: str, group: str, event_id: str, *, member: str, seq: int | None = None
    ) -> bool:
        """Push the ack deadline of the delivery ``(event_id, seq)``, held by ``member`` of this bus, to now +
        that member's ``ack_timeout_ms`` (the ``extend`` transition of ``store/lifecycle.py``). False when
        ``member`` does not hold it (never delivered to it, settled, or its deadline passed and it may be
        redelivered). Without ``seq`` the id names the delivery as for ``ack``: ``AmbiguousSettle`` when
        the member holds two deliveries with that id."""
        state = self._groups.get((pattern, group))
        held = self._seq_of(state, event_id, seq, member)
        holder = None if state is None or held is None else state.holders.get(held)
        if held is None or holder is None or holder.member != member:
            return False
        now = now_ms()
        timeout = holder.options.ack_timeout_ms
        extended = await self._store.extend(
            pattern, group, EventRef(event_id, held), ack_timeout_ms=timeout, now=now, member=member
        )
        if extended:
            holder.extended(held, now + timeout)
        return extended

    @staticmethod
    def _seq_of(
        state: GroupState[GroupMember] | None, event_id: str, seq: int | None, member: str | None
    ) -> int | None:
        """``seq``, else the seq of the delivery ``member`` (None: any local member) holds with ``event_id``
        (when one is held)."""
        if seq is not None or state is None:
            return seq
        if member is not None:
            holder = state.members.get(member)
            return None if holder is None else holder.held_seq(event_id)
        for local in state.members.values():
            found = local.held_seq(event_id)
            if found is not None:
                return found
        return None

    # -- introspection ------------------------------------------------------------------------------------

    def members(self) -> dict[tuple[str, str], int]:
        """Members connected to this bus per ``(pattern, group)`` (groups without members are left out)."""
        return {key: len(state.members) for key, state in self._groups.items() if state.members}

    def wake_group(self, pattern: str, group: str) -> None:
        """Wake this process's members of a group now (its cursor was reset: there is work to claim)."""
        state = self._groups.get((pattern, group))
        if state is not None:
            state.wake_all()

    def live_subscriptions(self) -> int:
        """How many ephemeral subscriptions are open."""
        return self._live.count

    # -- internals ----------------------------------------------------------------------------------------

    def _on_commit(self, seq: int, topics: frozenset[str] | None) -> None:
        if topics is None:  # the store does not know what was written: anything may be claimable
            self._forget_idle_groups()
            for state in self._groups.values():
                self._wake(state, seq)
        else:
            woken: set[tuple[str, str]] = set()
            for topic in topics:
                for key in self._interest.groups_for(topic):
                    found = self._groups.get(key)
                    if found is not None and key not in woken:
                        woken.add(key)
                        self._wake(found, seq)
        self._live.notify(seq)

    def _wake(self, state: GroupState[GroupMember], seq: int) -> None:
        if state.members:
            self.stats.commit_wakeups += len(state.members)
            state.committed(seq)  # members whose own claim already covered seq stay asleep

    def _forget_idle_groups(self) -> None:
        idle = [key for key, state in self._groups.items() if state.idle]
        for key in idle:
            del self._groups[key]
        if idle:
            self._interest.invalidate()


def _pattern_of(key: tuple[str, str]) -> str:
    return key[0]


def _check_options(options: GroupOptions) -> None:
    for name in ("max_in_flight", "ack_timeout_ms", "max_deliver"):
        value = getattr(options, name)
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
