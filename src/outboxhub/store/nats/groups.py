"""Consumer groups on JetStream durable pull consumers: one consumer per group ``(pattern, group)``, shared by
the group's members on every hub.

The mapping (docs/jetstream.md):

* ``ensure_group`` creates the durable consumer unless the group has one (explicit ack, the start
  position as its deliver policy, ``MaxDeliver`` unlimited, ``MaxAckPending`` from the URL, the stream's
  replicas). Its description holds the pattern, the group and the generation (``incarnations.py``), so
  ``groups()`` lists them from the stream's consumers.
* ``claim`` is one no-wait pull of up to ``limit`` messages. JetStream picks them: new ones, ones whose
  ``AckWait`` passed, NAKed ones whose delay passed. ``AckWait`` is the claim's ``ack_timeout_ms`` (the
  consumer is updated when a claim asks for another one). A message JetStream delivers for the
  ``max_deliver + 1``-th time is dead-lettered instead (``dlq.<group>.<topic>``, reason ``ack timeout``)
  and acked: that is the lifecycle's ``due --claim_final--> dead``, triggered by JetStream's delivery count.
  Its reason is the last NACK reason this hub saw for the event, else ``ack timeout``.
* The message of a delivery stays with the hub that pulled it, keyed by its seq, with the member it was
  handed to. A settle names it as on every store (``EventRef``: by seq carrying the id, or by an id that
  exactly one held delivery the settler may settle carries) and only the member holding it may settle it
  (``may_settle``): ``ack`` acks the message through its own ack subject and waits for JetStream's
  confirmation, ``nack`` NAKs it with the backoff as its delay (confirmed too) or dead-letters it
  (``nack_final``, ``nack_terminal``), ``extend`` sends in-progress (JetStream restarts the full
  ``AckWait``) while the delivery is *delivered* to that member (``ExtendRequest.applies`` on the real
  clock), ``release`` NAKs a closing member's messages with no delay, confirmed (the next pull sees them).
  A settle of a delivery another hub holds is a no-op here.
* ``reset`` creates the group's next incarnation (a consumer under a new name, ``incarnations.py``) at the
  new start and deletes the old one: JetStream forgets its pending acks, so in-flight deliveries are
  released; this hub drops the messages it held. Another hub notices at its next pull or ACK (the old
  consumer does not answer, and is gone), drops its held messages too and moves to the new incarnation;
  ACKs sent to the old consumer reach nobody, so they cannot settle the new one's deliveries.
* ``ordered_by_key`` has no JetStream counterpart (a consumer cannot hold back one key): a claim that asks
  for it fails with ``StoreUnsupported`` (and the bus refuses such a SUBSCRIBE before, through
  ``NatsStore.check_group_options``).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from functools import partial

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import ConsumerConfig, ConsumerInfo

from outboxhub.errors import StoreError, StoreUnsupported
from outboxhub.ids import now_ms
from outboxhub.model import Delivery, Event, GroupInfo, NewEvent, StartPosition
from outboxhub.store.base import EventRef
from outboxhub.store.common import ACK_TIMEOUT_REASON, NACK_REASON, dead_letter_event
from outboxhub.store.lifecycle import (
    DEAD_LETTER_TRIGGERS,
    ClaimRequest,
    ExtendRequest,
    NackRequest,
    State,
    Trigger,
    effective_max_deliver,
    may_settle,
    step,
)
from outboxhub.store.nats.acks import ConfirmedAcks, counted
from outboxhub.store.nats.conn import TRANSIENT, NatsConn, unavailable
from outboxhub.store.nats.incarnations import Incarnations
from outboxhub.store.nats.log import EventLog
from outboxhub.store.nats.overview import group_state
from outboxhub.store.nats.subjects import Filter, consumer_name, decode_body, pattern_filter

__all__ = ["Groups", "unsupported_ordered"]

_log = logging.getLogger(__name__)
_NEXT = "$JS.API.CONSUMER.MSG.NEXT"
_MAX_REASONS = 10_000

DeadLetter = Callable[[NewEvent], Awaitable[object]]


@dataclass(slots=True)
class _Held:
    msg: Msg
    event_id: str
    member: str
    attempts: int
    deadline: int


@dataclass(slots=True)
class _Group:
    pattern: str
    group: str
    name: str
    flt: Filter
    config: ConsumerConfig
    created: object
    """The consumer's creation time: an update that answers another one re-created a deleted consumer."""
    inbox: str
    queue: asyncio.Queue[Msg]
    sub: Subscription
    held: dict[int, _Held] = field(default_factory=dict)
    """The deliveries this hub holds, by seq."""
    timers: list[int] = field(default_factory=list)
    reasons: dict[int, str] = field(default_factory=dict)
    """The last NACK reason per seq NAKed here, for a later dead letter (bounded, oldest dropped)."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    suspect: bool = False
    """Another hub announced a reset of this group: check the consumer before the next pull."""


class _Gone(Exception):
    """The consumer this hub pulls from did not answer; gone when its info says so (a reset elsewhere)."""


class Groups:
    """The consumer groups of one store (see the module docstring)."""

    def __init__(self, conn: NatsConn, log: EventLog, dead_letter: DeadLetter) -> None:
        self._conn = conn
        self._log = log
        self._dead_letter = dead_letter
        self._groups: dict[tuple[str, str], _Group] = {}
        self._opening: dict[tuple[str, str], asyncio.Lock] = {}
        self._acks = ConfirmedAcks(conn.nc)
        self._incarnations = Incarnations(conn)

    @property
    def incarnations(self) -> Incarnations:
        """The incarnation lookups this store shares with its ops overview (``overview.py``)."""
        return self._incarnations

    # -- consumers ----------------------------------------------------------------------------------------

    async def _create(
        self,
        pattern: str,
        group: str,
        generation: int,
        start: StartPosition,
        first_at: Callable[[], Awaitable[int | None]],
    ) -> ConsumerInfo:
        """Create generation ``generation`` at ``start`` and settle it (``Incarnations.settle``). A ``ts``
        start becomes the seq of the first matching event with ``ts >= value`` (``first_at``, a scan: event
        ts are the hub's, not JetStream's times)."""
        if start.kind == "ts":
            first = await first_at()
            start = StartPosition() if first is None else StartPosition(kind="seq", value=first - 1)
        info = await self._incarnations.create(pattern, group, generation, start)
        return (await self._incarnations.settle(pattern, group, generation, info))[1]

    async def ensure(
        self, pattern: str, group: str, start: StartPosition, first_at: Callable[[], Awaitable[int | None]]
    ) -> GroupInfo:
        """Create the group's consumer (generation 0) unless the group has one."""
        info = await self._incarnations.current(pattern, group)
        if info is None:
            info = await self._create(pattern, group, 0, start, first_at)
            self._incarnations.remember(pattern, group, info.name)
        return await self._group_info(pattern, group, info)

    async def _info(self, name: str) -> ConsumerInfo | None:
        return await self._incarnations.info(name)

    async def _group_info(self, pattern: str, group: str, info: ConsumerInfo) -> GroupInfo:
        dead = await self._log.subjects(f"{self._conn.prefix}.dlq.{group}.>")
        return group_state(pattern, group, info, sum(dead.values()))

    async def info(self, pattern: str, group: str) -> ConsumerInfo | None:
        """The current incarnation's info: the one this hub pulls from while it exists, else the one it
        knows of (``Incarnations.current``: one info request; a listing only for a group it has not met)."""
        state = self._groups.get((pattern, group))
        if state is not None:
            info = await self._info(state.name)
            if info is not None:
                return info
        return await self._incarnations.current(pattern, group)

    async def _open(self, pattern: str, group: str) -> _Group | None:
        key = (pattern, group)
        state = self._groups.get(key)
        if state is not None:
            return state
        lock = self._opening.setdefault(key, asyncio.Lock())
        async with lock:
            state = self._groups.get(key)
            if state is not None:
                return state
            info = await self._incarnations.current(pattern, group)
            if info is None:
                return None
            conn = self._conn
            queue: asyncio.Queue[Msg] = asyncio.Queue()
            inbox = conn.nc.new_inbox()

            async def on_msg(msg: Msg) -> None:
                queue.put_nowait(msg)

            sub = await conn.nc.subscribe(inbox, cb=on_msg)
            await self._acks.prepare()  # so that ``ack_soon`` sends every ACK of the group in place
            state = _Group(
                pattern,
                group,
                info.name,
                pattern_filter(conn.prefix, pattern),
                info.config,
                info.created,
                inbox,
                queue,
                sub,
            )
            self._groups[key] = state
            return state

    async def _drop(self, state: _Group) -> None:
        """Forget ``state`` (its consumer was reset): its held messages are dropped, late ACKs of them
        settle nothing. The caller holds ``state.lock`` or runs no claim on it."""
        if self._groups.get((state.pattern, state.group)) is state:
            del self._groups[(state.pattern, state.group)]
        self._incarnations.forget(consumer_name(state.pattern, state.group))
        state.held.clear()
        state.reasons.clear()
        state.timers.clear()
        with contextlib.suppress(nats.errors.Error):  # already unsubscribed, or the connection is closing
            await state.sub.unsubscribe()

    async def _set_ack_wait(self, state: _Group, ack_timeout_ms: int) -> None:
        wanted = max(1, ack_timeout_ms) / 1000
        if state.config.ack_wait is not None and abs(state.config.ack_wait - wanted) < 0.0005:
            return
        conn = self._conn
        state.config.ack_wait = wanted
        info = await conn.call("update group", lambda: conn.js.add_consumer(conn.stream, state.config))
        if info.created != state.created:
            # JetStream 2.9 creates what it cannot update: the consumer had been reset by another hub.
            await self._incarnations.delete(info.name)
            raise _Gone("reset elsewhere")
        state.config = info.config

    async def reset(
        self, pattern: str, group: str, to: StartPosition, first_at: Callable[[], Awaitable[int | None]]
    ) -> GroupInfo | None:
        """Create the group's next incarnation at ``to`` and delete the old one (see the module docstring);
        None when the group does not exist. Claims of this hub wait for it (the group is reopened
        afterwards)."""
        key = (pattern, group)
        async with self._opening.setdefault(key, asyncio.Lock()):
            found = await self._incarnations.newest(pattern, group)
            if found is None:
                return None
            state = self._groups.get(key)
            if state is not None:
                async with state.lock:  # a claim running in this hub ends first
                    await self._drop(state)
            info = await self._create(pattern, group, found[0] + 1, to, first_at)
            self._incarnations.remember(pattern, group, info.name)
            self._conn.announce_reset(consumer_name(pattern, group))
            return await self._group_info(pattern, group, info)

    def reset_heard(self, base: str) -> None:
        """Another hub announced a reset of the group whose consumer name is ``base`` (a hint: checked)."""
        self._incarnations.forget(base)
        for state in self._groups.values():
            if consumer_name(state.pattern, state.group) == base:
                state.suspect = True

    # -- claim --------------------------------------------------------------------------------------------

    async def claim(self, request: ClaimRequest) -> list[Delivery]:
        if request.ordered:
            raise unsupported_ordered(self._conn.shown, request.group)
        for retry in (False, True):
            state = await self._open(request.pattern, request.group)
            if state is None:
                raise StoreError(
                    f"NATS store {self._conn.shown}: no group {request.group!r} on {request.pattern!r}"
                    " (ensure_group first)"
                )
            if request.limit <= 0:
                return []
            async with state.lock:
                if self._groups.get((state.pattern, state.group)) is not state:
                    continue  # reset by this hub while the claim waited
                try:
                    return await self._claim_from(state, request)
                except _Gone as exc:
                    if retry or await self._info(state.name) is not None:
                        raise StoreError(
                            f"NATS store {self._conn.shown}: pull from group {state.group!r}: {exc}"
                        ) from None
                    await self._drop(state)  # reset by another hub: claim from the new incarnation
        return []

    async def _claim_from(self, state: _Group, request: ClaimRequest) -> list[Delivery]:
        if state.suspect:
            state.suspect = False
            if await self._info(state.name) is None:
                raise _Gone("reset announced")
        await self._set_ack_wait(state, request.ack_timeout_ms)
        real_now = now_ms()
        for seq in [s for s, h in state.held.items() if h.deadline <= real_now]:
            del state.held[seq]  # its AckWait passed: JetStream redelivers it
        msgs = await self._pull(state, request.limit)
        out: list[Delivery] = []
        ack_wait = int((state.config.ack_wait or 30) * 1000)
        max_deliver = effective_max_deliver(request.max_deliver)
        for msg in msgs:
            delivery = await self._take(state, msg, request, ack_wait, max_deliver, real_now)
            if delivery is not None:
                out.append(delivery)
        return out

    async def _pull(self, state: _Group, limit: int) -> list[Msg]:
        conn = self._conn
        msgs: list[Msg] = []
        while not state.queue.empty():  # late answers to an earlier pull that timed out
            late = state.queue.get_nowait()
            if not _status(late):
                msgs.append(late)  # delivered to this hub all the same: hand it out
        if len(msgs) >= limit:
            for extra in msgs[limit:]:  # beyond the member's capacity: back to JetStream at once
                await extra.nak()
            return msgs[:limit]
        limit -= len(msgs)
        request = json.dumps({"batch": limit, "no_wait": True}).encode()
        try:
            await conn.nc.publish(f"{_NEXT}.{conn.stream}.{state.name}", request, reply=state.inbox)
        except TRANSIENT as exc:
            raise unavailable(conn.shown, exc) from exc
        wanted = len(msgs) + limit
        try:
            async with asyncio.timeout(conn.options.timeout_s):
                while len(msgs) < wanted:
                    msg = await state.queue.get()
                    status = _status(msg)
                    if status is None:
                        msgs.append(msg)
                    elif status in ("404", "408"):
                        break
                    elif status != "100":  # 100: an idle heartbeat
                        description = msg.headers.get("Description", "") if msg.headers else ""
                        if status == "409" and "deleted" not in description.lower():
                            break  # e.g. "Exceeded MaxAckPending": the group is at its cap; nothing more now
                        if status in ("409", "503"):  # deleted, or no responder: reset by another hub?
                            raise _Gone(f"{status} {description}")
                        raise StoreError(
                            f"NATS store {conn.shown}: pull from group {state.group!r}:"
                            f" {status} {description}"
                        )
        except TimeoutError as exc:
            if not msgs:
                if await self._info(state.name) is None:  # reset elsewhere, its announcement lost
                    raise _Gone("no answer") from None
                raise unavailable(conn.shown, exc) from exc
        return msgs

    async def _take(
        self, state: _Group, msg: Msg, request: ClaimRequest, ack_wait: int, max_deliver: int, real_now: int
    ) -> Delivery | None:
        meta = msg.metadata
        seq, attempts = int(meta.sequence.stream), int(meta.num_delivered)
        try:
            event = decode_body(seq, msg.data)
        except ValueError:
            _log.warning("NATS store %s: message %s is no outboxhub event; terminated", self._conn.shown, seq)
            await msg.term()
            return None
        if not state.flt.matches(event.topic):
            await msg.ack()  # the filter is wider than the pattern: not this group's event
            return None
        previous = State.NEW if attempts == 1 else State.DUE
        if attempts > max_deliver:
            step(previous, Trigger.CLAIM_FINAL)
            reason = state.reasons.pop(seq, ACK_TIMEOUT_REASON)
            await self._dead(state, event, attempts - 1, reason, request.now)
            await msg.ack()
            return None
        step(previous, Trigger.CLAIM)
        state.held[seq] = _Held(msg, event.id, request.member, attempts, real_now + ack_wait)
        return Delivery(event=event, attempt=attempts, deadline=request.now + ack_wait)

    async def _dead(self, state: _Group, event: Event, attempts: int, reason: str, now: int) -> None:
        await self._dead_letter(
            dead_letter_event(event, state.pattern, state.group, attempts=attempts, reason=reason, now=now)
        )

    # -- settle -------------------------------------------------------------------------------------------

    @staticmethod
    def _find(state: _Group, ref: EventRef, member: str | None) -> tuple[int, _Held] | None:
        """The held delivery ``ref`` names that ``member`` may settle (``may_settle``): by seq carrying the
        id, or the one delivery with the id (two with it: ambiguous, None)."""
        if ref.seq is not None:
            held = state.held.get(ref.seq)
            if held is None or held.event_id != ref.id:
                return None
            found = [(ref.seq, held)]
        else:
            found = [(seq, h) for seq, h in state.held.items() if h.event_id == ref.id]
        found = [
            (seq, h) for seq, h in found if may_settle(settler=member, holder=h.member, attempts=h.attempts)
        ]
        return found[0] if len(found) == 1 else None

    def _take_acked(self, state: _Group, refs: list[EventRef], member: str | None) -> list[Msg]:
        """The messages of the held deliveries ``refs`` name that ``member`` may settle, no longer held."""
        msgs: list[Msg] = []
        for ref in refs:
            found = self._find(state, ref, member)
            if found is not None:
                seq, held = found
                del state.held[seq]
                state.reasons.pop(seq, None)
                msgs.append(held.msg)
        return msgs

    def ack_soon(
        self, pattern: str, group: str, refs: list[EventRef], member: str | None
    ) -> asyncio.Future[int]:
        """How many of ``refs`` were acked, as a future answered once JetStream has confirmed each ACK (sent
        through each message's own ack subject, pipelined): the group's state (ack floor, lag) already shows
        them when the client's ACK is answered. Without a task (``ConfirmedAcks.start``; a task only when it
        fails), the first ACK too: an open group's reply subscription exists (``_open``)."""
        state = self._groups.get((pattern, group))
        if state is None:  # this hub holds none of the group's deliveries
            none: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            none.set_result(0)
            return none
        msgs = self._take_acked(state, refs, member)
        confirmed = self._acks.start(msgs, self._conn.options.timeout_s)
        return counted(confirmed, len(msgs), TRANSIENT, partial(self._ack_failed, state))

    async def _ack_failed(self, state: _Group, exc: BaseException) -> int:
        if await self._reset_elsewhere(state, exc):
            return 0  # these deliveries were released by the reset
        raise unavailable(self._conn.shown, exc) from exc

    async def _reset_elsewhere(self, state: _Group, exc: BaseException) -> bool:
        """Whether a confirmed ACK's failure ``exc`` means that another hub reset the group (no responder,
        and the consumer is gone); then this hub forgets the old incarnation."""
        if not isinstance(exc, nats.errors.NoRespondersError) or await self._info(state.name) is not None:
            return False
        await self._drop(state)
        return True

    async def nack(self, request: NackRequest, event: Callable[[_Held], Event]) -> bool:
        state = self._groups.get((request.pattern, request.group))
        found = (
            None
            if state is None
            else self._find(state, EventRef(request.event_id, request.seq), request.member)
        )
        if state is None or found is None:
            return False
        seq, held = found
        trigger = request.trigger(
            attempts=held.attempts, held=True, deadline=max(held.deadline, request.now + 1)
        )
        if trigger is None:
            return False
        del state.held[seq]
        if trigger in DEAD_LETTER_TRIGGERS:
            reason = request.reason or NACK_REASON
            await self._dead(state, event(held), held.attempts, reason, request.now)
            try:
                await held.msg.ack_sync(timeout=self._conn.options.timeout_s)
            except TRANSIENT as exc:
                if not await self._reset_elsewhere(state, exc):
                    raise unavailable(self._conn.shown, exc) from exc
            state.reasons.pop(seq, None)
            return True  # also after a reset elsewhere: as if this NACK had come just before it
        due = request.redeliver_at(held.attempts)
        delay_ms = max(0, due - request.now)
        if request.reason is not None:
            state.reasons.pop(seq, None)
            state.reasons[seq] = request.reason
            if len(state.reasons) > _MAX_REASONS:
                del state.reasons[next(iter(state.reasons))]
        heapq.heappush(state.timers, now_ms() + delay_ms)
        # Confirmed, as release's: a NAK sent and flushed is applied by JetStream after a pull sent right
        # behind it may already have been answered, and "deliverable at once" would not hold yet.
        nak = Msg.Ack.Nak + (b" " + json.dumps({"delay": delay_ms * 1_000_000}).encode() if delay_ms else b"")
        try:
            await self._acks.ack([held.msg], self._conn.options.timeout_s, nak)
        except TRANSIENT as exc:
            if not await self._reset_elsewhere(state, exc):  # else the reset released it
                raise unavailable(self._conn.shown, exc) from exc
        return True

    async def extend(self, request: ExtendRequest) -> bool:
        """In-progress for a delivery *delivered* to ``request.member``: on the real clock, since JetStream
        keeps ``AckWait`` on its own (``request.now`` cannot move it)."""
        state = self._groups.get((request.pattern, request.group))
        if state is None:
            return False
        real = replace(request, now=now_ms())
        if request.seq is not None:
            held = state.held.get(request.seq)
            candidates = [held] if held is not None and held.event_id == request.event_id else []
        else:
            candidates = [h for h in state.held.values() if h.event_id == request.event_id]
        fit = [
            h for h in candidates if real.applies(attempts=h.attempts, member=h.member, deadline=h.deadline)
        ]
        if len(fit) != 1:
            return False
        held = fit[0]
        await held.msg.in_progress()
        held.deadline = now_ms() + int((state.config.ack_wait or 30) * 1000)
        return True

    async def release(self, pattern: str, group: str, member: str) -> int:
        state = self._groups.get((pattern, group))
        if state is None:
            return 0
        mine = [state.held.pop(seq).msg for seq, held in list(state.held.items()) if held.member == member]
        if mine:
            # Confirmed NAKs: a plain NAK is applied by JetStream after a pull sent right behind it may
            # already have been answered (seen under load), and "deliverable now" would not hold yet.
            try:
                await self._acks.ack(mine, self._conn.options.timeout_s, Msg.Ack.Nak)
            except TRANSIENT as exc:
                if not await self._reset_elsewhere(state, exc):  # else the reset released them
                    raise unavailable(self._conn.shown, exc) from exc
        return len(mine)

    def next_deadline(self, pattern: str, group: str) -> int | None:
        """The earliest moment something this hub knows of becomes claimable: one of its held deliveries
        times out, or one of its NAKs' delays ends (other hubs' are heard through their polls)."""
        state = self._groups.get((pattern, group))
        if state is None:
            return None
        now = now_ms()
        while state.timers and state.timers[0] <= now - 1000:
            heapq.heappop(state.timers)
        times = [h.deadline for h in state.held.values()]
        if state.timers:
            times.append(state.timers[0])
        return min(times, default=None)

    async def close(self) -> None:
        """NAK every delivery this hub holds in one batch, confirmed as ``release``'s: a NAK buffered while
        reconnecting is sent once reconnected (a closing driver drops its buffer)."""
        msgs = [held.msg for state in self._groups.values() for held in state.held.values()]
        for state in self._groups.values():
            state.held.clear()
        if msgs:
            with contextlib.suppress(*TRANSIENT, nats.errors.Error):  # JetStream redelivers after AckWait
                await self._acks.ack(msgs, self._conn.options.timeout_s, Msg.Ack.Nak)


def unsupported_ordered(shown: str, group: str) -> StoreUnsupported:
    """The refusal of ``ordered_by_key`` (docs/jetstream.md)."""
    return StoreUnsupported(
        f"NATS store {shown}: ordered_by_key is not supported on JetStream (group {group!r}): a consumer"
        " cannot hold one key back while delivering others; subscribe without it (docs/jetstream.md)"
    )


def _status(msg: Msg) -> str | None:
    if msg.headers and not msg.data:
        status = msg.headers.get("Status")
        if status:
            return str(status)
    return None
