"""Settling group deliveries on a connection: the ACK, NACK (plain or terminal) and EXTEND handlers.

A mixin of :class:`~outboxhub.gateway.connection.Connection` (cut out of it by concept: everything here
acts on a delivery the connection holds, nothing changes the connection's own state). Each frame runs in
the background, pipelined like a PUBLISH: its place in the reply order is reserved when a ``rid`` came
with it (clients of the legacy PromClient protocol send none and get no OK). An ACK gets no task of its
own: its reply is filled by a callback on the ack batcher's future, which resolves after the store commit.

* ``ACK``: the event is done (a no-op for an ephemeral subscription).
* ``NACK``: redeliver after ``delay_ms`` or the group's backoff; with ``"terminal": true`` dead-letter it
  at once with ``reason`` (the ``nack_terminal`` transition of ``store/lifecycle.py``).
* ``EXTEND``: push the delivery's ack deadline to now + the subscription's ``ack_timeout_ms`` (the
  ``extend`` transition). Only the member holding the delivery may; the bus also tells the member so it
  does not expire the delivery locally.

A NACK or EXTEND of an event this connection does not hold (never delivered here, already settled, or
past its ack timeout and possibly redelivered elsewhere) is answered ``ERR bad_request`` naming the event.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable
from typing import Any

from outboxhub.bus.core import AmbiguousSettle
from outboxhub.errors import StoreUnavailable
from outboxhub.gateway.context import GatewayContext, not_subscribed
from outboxhub.gateway.delivery import SocketSub
from outboxhub.gateway.sendqueue import ReplySlot, SendQueue
from outboxhub.protocol.codec import Ack, Extend, Nack, Rid, encode_ok
from outboxhub.protocol.codes import BAD_REQUEST, INTERNAL, NOT_SUBSCRIBED, UNAVAILABLE, ErrorCode

__all__ = ["Settlement"]

log = logging.getLogger("outboxhub.gateway.connection")


def not_held(op: str, event_id: str, topic: str, group: str) -> str:
    return (
        f"{op}: event {event_id!r} is not held by this connection in group {group!r} of {topic!r} "
        "(never delivered here, already settled, or past its ack timeout)"
    )


async def _awaited(coro: Awaitable[bool]) -> bool:
    return await coro


class Settlement:
    """ACK / NACK / EXTEND of :class:`~outboxhub.gateway.connection.Connection` (its attributes and
    reply helpers are set and defined there)."""

    gateway: GatewayContext
    out: SendQueue
    member: str
    subs: dict[tuple[str, str | None], SocketSub]
    _loop: asyncio.AbstractEventLoop
    _tasks: dict[asyncio.Future[Any], None]  # an ordered set

    def _err_bytes(self, rid: Rid, code: ErrorCode, msg: str) -> bytes:
        raise NotImplementedError

    def _err(self, rid: Rid, code: ErrorCode, msg: str) -> None:
        raise NotImplementedError

    def _ack(self, frame: Ack) -> None:
        if self._check_subscribed("ACK", frame.topic, frame.group, frame.rid):
            if frame.group is None:  # ephemeral deliveries need no ack
                self._ok_if_asked(frame.rid)
                return
            self.gateway.stats.acks += 1
            # No task per ACK: the ack batcher's future is answered after the store commit that settles it.
            done = self.gateway.bus.ack_soon(
                frame.topic, frame.group, frame.id, seq=frame.seq, member=self.member
            )
            self._follow(frame.rid, done, None, None)

    def _nack(self, frame: Nack) -> None:
        if self._check_subscribed("NACK", frame.topic, frame.group, frame.rid):
            if frame.group is None:
                self._ok_if_asked(frame.rid)
                return
            self.gateway.stats.nacks += 1
            op = "NACK (terminal)" if frame.terminal else "NACK"
            self._settle(
                frame.rid,
                self.gateway.bus.nack(
                    frame.topic,
                    frame.group,
                    frame.id,
                    seq=frame.seq,
                    member=self.member,
                    reason=frame.reason,
                    delay_ms=frame.delay_ms,
                    terminal=frame.terminal,
                ),
                refusal=not_held(op, frame.id, frame.topic, frame.group),
            )

    def _extend(self, frame: Extend) -> None:
        if self._check_subscribed("EXTEND", frame.topic, frame.group, frame.rid):
            self._settle(
                frame.rid,
                self.gateway.bus.extend(
                    frame.topic, frame.group, frame.id, seq=frame.seq, member=self.member
                ),
                refusal=not_held("EXTEND", frame.id, frame.topic, frame.group),
                on_done=self._extended,
            )

    def _extended(self) -> None:
        self.gateway.stats.extends += 1

    def _check_subscribed(self, op: str, topic: str, group: str | None, rid: Rid) -> bool:
        if (topic, group) in self.subs:
            return True
        self._err(rid, NOT_SUBSCRIBED, not_subscribed(op, topic, group))
        return False

    def _ok_if_asked(self, rid: Rid) -> None:
        if rid is not None:
            self.out.reply(encode_ok(rid))

    def _settle(
        self,
        rid: Rid,
        coro: Awaitable[bool],
        *,
        refusal: str | None = None,
        on_done: Any = None,
    ) -> None:
        """Run an ACK/NACK/EXTEND; reply OK only when the frame carried a rid. With ``refusal``, a False
        result (the event was not held) is answered ``ERR bad_request`` with that message."""
        self._follow(rid, self._loop.create_task(_awaited(coro)), refusal, on_done)

    def _follow(self, rid: Rid, done: asyncio.Future[bool], refusal: str | None, on_done: Any) -> None:
        """Reserve the reply's place now and fill it when ``done`` resolves (tracked in ``_tasks`` so a
        shutdown waits for it)."""
        slot = self.out.reserve() if rid is not None else None
        self._tasks[done] = None
        done.add_done_callback(functools.partial(self._settled, slot, rid, refusal, on_done))

    def _settled(
        self, slot: ReplySlot | None, rid: Rid, refusal: str | None, on_done: Any, task: asyncio.Future[Any]
    ) -> None:
        self._tasks.pop(task, None)
        exc = None if task.cancelled() else task.exception()
        if exc is None and not task.cancelled():
            if refusal is None or task.result():
                if on_done is not None:
                    on_done()
                if slot is not None:
                    self.out.fill(slot, encode_ok(rid))
                return
            data = self._err_bytes(rid, BAD_REQUEST, refusal)
        elif isinstance(exc, StoreUnavailable):
            data = self._err_bytes(rid, UNAVAILABLE, f"store unavailable: {exc}")
        elif isinstance(exc, AmbiguousSettle):
            data = self._err_bytes(rid, BAD_REQUEST, str(exc))
        else:
            log.error("connection %s: ack/nack/extend failed", self.member, exc_info=exc)
            data = self._err_bytes(rid, INTERNAL, "internal error; the ack/nack may not have been recorded")
        if slot is not None:
            self.out.fill(slot, data)
        else:
            self.out.reply(data)
