"""Competing members of a consumer group: one claim loop (an asyncio task) per member.

A member claims from the store only as much as it may hold (``max_in_flight`` minus what it holds), hands
each delivery to its ``DeliverFn``, and sleeps when there is nothing to claim until the first of: a commit
notification, the group's next redelivery deadline, an ack of one of its deliveries while it is saturated
(any ack in a group with key ordering: it may free a key), a nack or a local member's release in its group,
``resume()``/``close()``, or the safety poll interval. Once saturated it claims again only when a quarter of
``min(max_in_flight, claim_batch)`` is free, so a busy member costs one claim per batch, not per ack.

On a store that can park claims (``ClaimParking``: SQLite, PostgreSQL) a sleeping member parks its next claim
with the store's writer, which runs it inside the write batch that appends a matching event; the member wakes
with the deliveries and skips the commit notification that batch sends (a commit it missed: a claim of at
most ``_CATCH_UP_LIMIT``). The group's next deadline is read from the store only when ``GroupState`` does
not know it: the cached value (a lower bound: acks only move it later, local claims fold their deadlines in,
nacks and releases drop it) is trusted for at most the poll interval, so other processes' are seen that often.

Bookkeeping lives in ``GroupState`` (``groupstate.py``, one per ``(pattern, group)`` with members here): which
local member holds which delivery (by seq: two topics under one pattern may carry the same event id), and
the ack batcher. Each member also maps the ids it holds to their seqs, so an ACK without a seq (the legacy
PromClient protocol) names its delivery when the id is held once, and is refused as ambiguous otherwise.
Deliveries whose ack deadline passed stop counting against the member's ``max_in_flight`` (the store may
already have handed them to someone else)."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

from outboxhub.bus.groupstate import GroupState
from outboxhub.bus.interest import BusStats
from outboxhub.bus.parking import ClaimParking, ParkedClaimHandle
from outboxhub.bus.subscription import DeliverFn, HoldFn, Subscription
from outboxhub.bus.wakeup import Backoff, Wakeup
from outboxhub.errors import StoreUnavailable
from outboxhub.ids import now_ms
from outboxhub.model import Delivery, GroupOptions
from outboxhub.store.base import Store

__all__ = ["AmbiguousSettle", "ClaimParking", "GroupMember", "GroupState", "ParkedClaimHandle"]

_log = logging.getLogger("outboxhub.bus.core")

_NEVER = 2**63
_TWICE = -1  # ``GroupMember._by_id`` value of an id this member holds more than once (from different topics)

_CATCH_UP_LIMIT = 16
"""Claim limit after a parked claim that missed a commit: a few events (SQLite claims so few on the loop)."""

_PAST_DUE_FIRST_WAIT_S = 0.01
"""First wait when the next deadline is already due but nothing could be claimed (the event is held back by
key ordering, or another member took it): doubles per empty round, up to the poll interval."""


_TIMER_SLACK_S = 0.002
"""How much later than the group's next deadline + 1 ms a running wait's timer may fire for ``_park_again``
to keep it rather than re-arm it: ``now_ms`` and the loop's timers round to the ms, so the timer the task set
for the same deadline may read up to 2 ms later."""


class AmbiguousSettle(ValueError):
    """An ACK/NACK without seq whose event id names more than one delivery held by its member."""


class GroupMember(Subscription):
    """A member of a consumer group, with its claim loop."""

    __slots__ = (
        "_backlog", "_by_id", "_claim_batch", "_close_timeout_s", "_closed", "_closing", "_covered",
        "_deliver", "_drained_at", "_earliest", "_early", "_hold", "_in_flight", "_notified", "_park_limit",
        "_park_waiting", "_parked", "_parking", "_past_due_wait", "_paused", "_poll_interval_s", "_refill",
        "_starved", "_state", "_stats", "_store", "_task", "_wakeup", "options",
    )  # fmt: skip

    def __init__(
        self,
        store: Store,
        state: GroupState[GroupMember],
        member: str,
        deliver: DeliverFn,
        options: GroupOptions,
        *,
        claim_batch: int,
        poll_interval_s: float,
        close_timeout_s: float,
        stats: BusStats | None = None,
        hold: HoldFn | None = None,
    ) -> None:
        super().__init__(state.pattern, state.group, member)
        self._stats = stats if stats is not None else BusStats()
        self.options = options
        self._store = store
        self._state = state
        self._deliver = deliver
        self._hold = hold
        self._claim_batch = claim_batch
        self._poll_interval_s = poll_interval_s
        self._close_timeout_s = close_timeout_s
        # Claim again only once this much capacity is free: one claim per ack would cost a write
        # transaction per event once the member is saturated.
        self._refill = max(1, min(options.max_in_flight, claim_batch) // 4)
        self._in_flight: dict[int, Delivery] = {}  # seq -> the delivery (its deadline in ms)
        self._by_id: dict[str, int] = {}  # event id -> seq, or _TWICE
        self._earliest = _NEVER  # at most the earliest deadline in _in_flight (a lower bound)
        self._backlog: deque[Delivery] = deque()  # claimed but refused by deliver; offered again on resume
        self._paused = False
        self._closed = False
        self._closing: asyncio.Future[None] | None = None
        self._wakeup = Wakeup()
        self._task: asyncio.Task[None] | None = None
        self._parked: ParkedClaimHandle | None = None
        self._park_limit = 0  # the limit of the claim parked last
        self._park_waiting = False  # in the wait of _sleep with a claim parked (its result wakes the wait)
        self._early = False  # wake_for_commit has handed out the parked claim's result already
        self._parking = store if isinstance(store, ClaimParking) else None  # checked once: isinstance is slow
        self._starved = False  # sleeping because it holds too much to claim: an ack of its own wakes it
        # The highest commit seq announced to it: a parked claim that saw less did not see everything (two
        # announcements between a wake-up and the task resuming coalesce into one latched flag).
        self._notified = 0
        # The last seq a parked claim it took the result of had seen: announcing a commit up to it again (the
        # NOTIFY of PostgreSQL commits already announced locally) brings nothing.
        self._covered = -1
        # A parked claim that ran short drained what was claimable up to this seq (-1: none did): nothing
        # more to claim until a later commit is announced (perhaps while the member waited for room).
        self._drained_at = -1
        self._past_due_wait = _PAST_DUE_FIRST_WAIT_S

    # -- Subscription -------------------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def closed(self) -> bool:
        return self._closed

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        if self._paused:
            self._paused = False
            self._wakeup.set()

    async def close(self) -> None:
        if self._closing is not None:
            await asyncio.shield(self._closing)
            return
        self._closing = asyncio.get_running_loop().create_future()
        try:
            await self._shutdown()
        finally:
            self._closing.set_result(None)

    # -- used by the bus ----------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"outboxhub-member-{self.pattern}::{self.group}::{self.member}"
        )

    def wake(self) -> None:
        self._wakeup.set()

    def released(self) -> None:
        """One of its deliveries was settled: wake it when that is what it waits for."""
        if self._starved:
            self._wakeup.set()

    def wake_for_commit(self, seq: int) -> None:
        """A commit up to ``seq``: wake it unless its parked claim ran in that commit or a later one. When it
        did, hand its deliveries out now, in the commit's callback: the EVENT leaves in this loop iteration,
        not after the future's callback and the task's wake-up (two iterations); then park the next claim
        here too when that is all the task would do (``_park_again``), else wake the task."""
        if seq > self._notified:
            self._notified = seq
        parked = self._parked
        if parked is None or not parked.covers(seq):
            if seq > self._covered:
                self._wakeup.set()
        elif self._park_waiting and not self._early and not self._closed:
            self._early = True
            deliveries, seen = parked.future.result()
            self._hand_out(deliveries)
            if not self._park_again(len(deliveries), int(seen)):
                self._wakeup.set()

    def _park_again(self, handed: int, seen: int) -> bool:
        """Park the next claim from the commit's callback while the task sleeps on (no task step, future,
        shield or timer per event), when the task would do just that: the claim came back short having
        seen every commit announced (drained), the member has room, nothing else woke it, and the group's
        next deadline is known (the wait's timer is brought forward to it when it would fire later, as the
        task would set it). False: wake the task."""
        if (
            handed >= self._park_limit
            or self._notified > seen
            or self._paused
            or self._backlog
            or self._wakeup.pending
        ):
            return False
        limit = min(self.options.max_in_flight - len(self._in_flight), self._claim_batch)
        if limit < self._refill:
            return False
        now = now_ms()
        known, deadline = self._state.known_deadline(now)
        if not known or (
            deadline is not None
            and not self._wakeup.wake_within((deadline - now) / 1000 + 0.001, slack_s=_TIMER_SLACK_S)
        ):
            return False
        self._covered = max(self._covered, seen)
        self._drained_at = seen
        if handed:
            self._past_due_wait = _PAST_DUE_FIRST_WAIT_S
        self._stats.reparks += 1
        self._park(limit)
        return True

    def extended(self, seq: int, deadline: int) -> None:
        """The store moved the deadline of the delivery ``seq`` (held by this member) to ``deadline``
        (EXTEND): it stays in flight until then. (A later deadline leaves the known lower bounds valid.)"""
        delivery = self._in_flight.get(seq)
        if delivery is not None:
            self._in_flight[seq] = Delivery(event=delivery.event, attempt=delivery.attempt, deadline=deadline)

    def forget(self, seq: int) -> None:
        """The delivery is no longer this member's (acked, nacked, or claimed by another local member)."""
        delivery = self._in_flight.pop(seq, None)
        if delivery is not None:
            self._unindex(delivery)

    def held_seq(self, event_id: str) -> int | None:
        """The seq of the delivery with ``event_id`` this member holds (None: none); ``AmbiguousSettle``
        when it holds two (two topics under its pattern carry that id)."""
        seq = self._by_id.get(event_id)
        if seq == _TWICE:
            raise AmbiguousSettle(
                f"event id {event_id!r} names {self._count_id(event_id)} deliveries held by this member "
                f"(on different topics of {self.pattern!r}); send the EVENT's seq with the ACK/NACK"
            )
        return seq

    def _index(self, delivery: Delivery) -> None:
        event_id, seq = delivery.event.id, delivery.event.seq
        known = self._by_id.setdefault(event_id, seq)
        if known != seq:
            self._by_id[event_id] = _TWICE

    def _unindex(self, delivery: Delivery) -> None:
        event_id = delivery.event.id
        known = self._by_id.get(event_id)
        if known == delivery.event.seq:
            del self._by_id[event_id]
        elif known == _TWICE:  # rare: recount what is left
            left = [seq for seq, held in self._in_flight.items() if held.event.id == event_id]
            if len(left) == 1:
                self._by_id[event_id] = left[0]
            elif not left:
                del self._by_id[event_id]

    def _count_id(self, event_id: str) -> int:
        return sum(1 for held in self._in_flight.values() if held.event.id == event_id)

    # -- the loop -----------------------------------------------------------------------------------------

    async def _run(self) -> None:
        errors = Backoff()
        catch_up = False  # one ran short but missed a commit: claim what came after it, a small claim
        while not self._closed:
            if self._paused:
                await self._wakeup.wait(None)
                continue
            if self._backlog:
                self._offer_backlog()
                continue
            capacity = self.options.max_in_flight - len(self._in_flight)
            if capacity < self._refill:
                capacity = self.options.max_in_flight - self._expire(now_ms())
                if capacity < self._refill:
                    self._starved = True
                    await self._wakeup.wait(self._until_first_deadline())
                    self._starved = False
                    continue
            limit = min(capacity, self._claim_batch)
            ask, catch_up = min(limit, _CATCH_UP_LIMIT) if catch_up else limit, False
            if self._notified <= self._drained_at:
                deliveries, self._drained_at = [], -1
            else:
                self._drained_at = -1
                self._stats.claims += 1
                try:
                    deliveries = await self._store.claim(
                        self.pattern,
                        self._state.group,
                        self.member,
                        limit=ask,
                        ack_timeout_ms=self.options.ack_timeout_ms,
                        max_deliver=self.options.max_deliver,
                        ordered_by_key=self.options.ordered_by_key,
                    )
                except Exception as exc:
                    await self._failed("claim", exc, errors)
                    continue
                errors.reset()
            if self._closed:
                break  # close() releases what was just claimed
            if deliveries:
                self._past_due_wait = _PAST_DUE_FIRST_WAIT_S
                self._hand_out(deliveries)
                if len(deliveries) >= ask or self._paused or self._backlog:
                    continue
                # A short batch drained what was claimable (a commit since has set the wake-up flag).
            self._stats.deadline_checks += 1
            try:
                deadline = await self._next_deadline()
            except Exception as exc:
                await self._failed("next_deadline", exc, errors)
                continue
            timeout = self._poll_interval_s
            if deadline is not None:
                due_in_s = (deadline - now_ms()) / 1000
                if due_in_s > 0:
                    timeout = min(timeout, due_in_s + 0.001)
                    self._past_due_wait = _PAST_DUE_FIRST_WAIT_S
                else:
                    timeout = min(timeout, self._past_due_wait)
                    self._past_due_wait = min(self._past_due_wait * 2, self._poll_interval_s)
            # What a parked claim may take is the room left now: the claim above may have filled some.
            limit = min(self.options.max_in_flight - len(self._in_flight), self._claim_batch)
            if limit < self._refill:
                continue  # full: the loop's top waits for room
            try:
                parked = await self._sleep(timeout, limit)
            except Exception as exc:
                await self._failed("claim", exc, errors)
                continue
            if parked is not None and not self._closed:
                ready, seen = parked
                if ready:
                    self._past_due_wait = _PAST_DUE_FIRST_WAIT_S
                    if not self._early:
                        self._hand_out(ready)
                # Drained only when the claim saw every commit announced so far: one announced after it
                # ran may have been coalesced into the wake-up that returned this result. (The claim that
                # ran may be a later one than _sleep parked: _park_again renews it; _park_limit is its.)
                short = len(ready) < self._park_limit and not self._paused and not self._backlog
                self._drained_at = seen if short and self._notified <= seen else -1
                catch_up = short and self._notified > seen
            elif self._drained_at >= 0:
                # Its claim was withdrawn after one that drained (perhaps renewed by _park_again): what the
                # wake-up brings is a commit or a few since, as when a parked claim missed one.
                catch_up = True

    async def _next_deadline(self) -> int | None:
        """The group's next redelivery deadline: known by ``GroupState`` or read from the store."""
        now = now_ms()
        known, deadline = self._state.known_deadline(now)
        if known:
            return deadline
        epoch = self._state.deadline_epoch
        deadline = await self._store.next_deadline(self.pattern, self._state.group)
        self._state.learn_deadline(deadline, now + int(self._poll_interval_s * 1000), epoch)
        return deadline

    async def _sleep(self, timeout_s: float, limit: int) -> tuple[list[Delivery], int] | None:
        """Sleep until woken or ``timeout_s``; with a store that parks claims, park one for ``limit`` events
        meanwhile and return what it claimed with the last seq it saw (None when it was withdrawn before it
        ran)."""
        store = self._parking
        if self._wakeup.pending or store is None:
            await self._wakeup.wait(timeout_s)
            return None
        self._park(limit)
        self._park_waiting = True
        try:
            await self._wakeup.wait(timeout_s)
        finally:
            self._park_waiting = False
            parked = self._parked  # the one parked last: _park_again may have renewed it meanwhile
            assert parked is not None
            withdrawn = parked.withdraw()
        if withdrawn:
            self._parked = None
            return None
        # Taken: still ``_parked`` until its result is in, so the commit it ran in latches no wake-up.
        try:
            deliveries, seen = await asyncio.shield(parked.future)
        finally:
            self._parked = None
        self._covered = max(self._covered, int(seen))
        return deliveries, int(seen)

    def _park(self, limit: int) -> None:
        store = self._parking
        assert store is not None
        self._early = False
        parked = store.park_claim(
            self.pattern,
            self._state.group,
            self.member,
            limit=limit,
            ack_timeout_ms=self.options.ack_timeout_ms,
            max_deliver=self.options.max_deliver,
            ordered_by_key=self.options.ordered_by_key,
        )
        self._parked = parked
        self._park_limit = limit
        parked.future.add_done_callback(self._parked_ran)

    def _parked_ran(self, future: asyncio.Future[Any]) -> None:
        if self._park_waiting and self._parked is not None and self._parked.future is future:
            self._wakeup.set()

    async def _failed(self, what: str, exc: Exception, errors: Backoff) -> None:
        delay = errors.next()
        _log.warning(
            "member %s of %s::%s: %s failed (%s: %s); retrying in %.2fs",
            self.member,
            self.pattern,
            self.group,
            what,
            type(exc).__name__,
            exc,
            delay,
            exc_info=not isinstance(exc, StoreUnavailable),
        )
        await self._wakeup.wait(delay)

    def _hand_out(self, deliveries: list[Delivery]) -> None:
        holders = self._state.holders
        earliest = _NEVER
        for delivery in deliveries:
            seq = delivery.event.seq
            previous = holders.get(seq)
            if previous is not None and previous is not self:
                previous.forget(seq)
            holders[seq] = self
            old = self._in_flight.get(seq)
            if old is not None:
                self._unindex(old)
            self._in_flight[seq] = delivery
            self._index(delivery)
            if delivery.deadline < earliest:
                earliest = delivery.deadline
        if earliest < self._earliest:
            self._earliest = earliest
        if deliveries:
            self._state.claimed(earliest)
        hold = self._hold if len(deliveries) > 1 else None
        if hold is not None:
            hold(True)
        try:
            for index, delivery in enumerate(deliveries):
                if not self._offer(delivery):
                    self._backlog.extend(deliveries[index:])
                    return
                if self._paused:
                    self._backlog.extend(deliveries[index + 1 :])
                    return
        finally:
            if hold is not None:
                hold(False)

    def _offer_backlog(self) -> None:
        now = now_ms()
        while self._backlog and not self._paused and not self._closed:
            delivery = self._backlog[0]
            held = self._in_flight.get(delivery.event.seq) is delivery
            if not held or delivery.deadline <= now:
                # Expired or taken over: the store redelivers it, possibly to another member.
                self._backlog.popleft()
                if held:
                    self._drop(delivery.event.seq)
                continue
            if not self._offer(delivery):
                return
            self._backlog.popleft()

    def _offer(self, delivery: Delivery) -> bool:
        """Call deliver; on refusal (or a raising callback) pause the member and report False."""
        try:
            accepted = self._deliver(delivery)
        except Exception:
            _log.exception(
                "deliver callback of member %s of %s::%s raised; pausing it",
                self.member,
                self.pattern,
                self.group,
            )
            accepted = False
        if not accepted:
            self._paused = True
        return accepted

    def _drop(self, seq: int) -> None:
        delivery = self._in_flight.pop(seq, None)
        if delivery is not None:
            self._unindex(delivery)
            if self._state.holders.get(seq) is self:
                del self._state.holders[seq]

    def _expire(self, now: int) -> int:
        """Stop counting deliveries whose deadline passed; return how many are still in flight.

        Scans only once the earliest deadline may have passed, so a saturated member woken by every
        commit does not walk its whole in-flight table each time.
        """
        if now >= self._earliest:
            expired = [seq for seq, delivery in self._in_flight.items() if delivery.deadline <= now]
            for seq in expired:
                self._drop(seq)
            self._earliest = min((d.deadline for d in self._in_flight.values()), default=_NEVER)
        return len(self._in_flight)

    def _until_first_deadline(self) -> float:
        if not self._in_flight:
            return self._poll_interval_s
        return max(0.0, min(self._poll_interval_s, (self._earliest - now_ms()) / 1000 + 0.001))

    async def _shutdown(self) -> None:
        self._closed = True
        self._wakeup.set()
        task = self._task
        if task is not None:
            done, _ = await asyncio.wait({task}, timeout=self._close_timeout_s)
            if not done:
                _log.warning(
                    "member %s of %s::%s did not stop in time; cancelling",
                    self.member,
                    self.pattern,
                    self.group,
                )
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        state = self._state
        try:
            await state.acks.drain()  # acks already sent by the client count before the release
        finally:
            state.members.pop(self.member, None)
            for seq in list(self._in_flight):
                self._drop(seq)
            self._backlog.clear()
        try:
            released = await self._store.release(self.pattern, state.group, self.member)
        except Exception as exc:
            _log.warning(
                "member %s of %s::%s: release failed (%s); its claims go to others after their ack timeout",
                self.member,
                self.pattern,
                self.group,
                exc,
            )
        else:
            if released:
                state.forget_deadline()
                state.wake_all()
