"""The outbound side of one gateway connection: an ordered queue of frames drained by one writer task.

Replies must leave in request order even though requests complete out of order (a PUBLISH is answered
when its batch commits, an ERR at once). Each request therefore takes a :class:`ReplySlot` when it is
read; the writer sends the head of the queue only once its slot is filled. EVENT frames are appended as
ready bytes, so an EVENT never overtakes the reply to a request that was read before it was queued (the OK
to a SUBSCRIBE always precedes that subscription's first EVENT).

Both kinds are bounded, differently:

* events by ``max_events``: :meth:`SendQueue.put_event` refuses (returns False) when that many are queued;
  the bus then pauses the member and the queue calls ``on_drain`` once it is down to half, so a slow
  consumer stops receiving instead of buffering without limit;
* replies by ``max_replies``: replies are never dropped; the reader instead awaits
  :meth:`SendQueue.wait_reply_room` and stops reading frames until the writer has caught up.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

__all__ = ["ReplySlot", "SendQueue"]

log = logging.getLogger("outboxhub.gateway.connection")


class ReplySlot:
    """A reserved place for one reply; :meth:`SendQueue.fill` puts the reply bytes in."""

    __slots__ = ("data",)

    def __init__(self, data: bytes | None = None) -> None:
        self.data = data


class SendQueue:
    """Ordered outbound frames of one connection, written by :meth:`run` (one task per connection).

    ``send`` writes one frame to the socket and may suspend while the socket's buffer is full.
    """

    def __init__(
        self,
        send: Callable[[bytes], Awaitable[None]],
        *,
        max_events: int,
        max_replies: int,
        on_drain: Callable[[], None],
    ) -> None:
        if max_events < 1 or max_replies < 1:
            raise ValueError("max_events and max_replies must be >= 1")
        self._send = send
        self._max_events = max_events
        self._max_replies = max_replies
        self._on_drain = on_drain
        self._items: deque[bytes | ReplySlot] = deque()
        self._events = 0
        self._replies = 0
        self._queued = 0  # frames ever queued
        self._sent = 0  # frames ever sent (or discarded once the socket died)
        self.events_total = 0  # EVENT frames ever queued (the ops API's per-connection deliver rate)
        self._blocked = False  # an event was refused: call on_drain once below half
        self._closing = False
        self._dead = False
        self._wakeup: asyncio.Future[None] | None = None
        self._room: asyncio.Future[None] | None = None
        self._flushes: list[tuple[int, asyncio.Future[None]]] = []

    # -- producers --------------------------------------------------------------------------------------

    @property
    def events(self) -> int:
        """EVENT frames queued and not yet sent."""
        return self._events

    @property
    def replies(self) -> int:
        """Replies queued (filled or reserved) and not yet sent."""
        return self._replies

    @property
    def dead(self) -> bool:
        """True once the socket failed or the queue was closed: nothing more will be sent."""
        return self._dead

    def put_event(self, data: bytes) -> bool:
        """Queue an EVENT frame; False (nothing queued) when ``max_events`` are already waiting."""
        if self._events >= self._max_events or self._dead or self._closing:
            self._blocked = True
            return False
        self._items.append(data)
        self._events += 1
        self._queued += 1
        self.events_total += 1
        self._wake()
        return True

    def is_full(self) -> bool:
        """Whether :meth:`put_event` would refuse now (lets the caller skip encoding the frame)."""
        return self._events >= self._max_events or self._dead or self._closing

    def refuse_event(self) -> None:
        """Record a refused event without offering it (after :meth:`is_full`): ``on_drain`` will follow."""
        self._blocked = True

    def reserve(self) -> ReplySlot:
        """Take the next place in the reply order; fill it later with :meth:`fill`."""
        slot = ReplySlot()
        self._items.append(slot)
        self._replies += 1
        self._queued += 1
        return slot

    def reply(self, data: bytes) -> None:
        """Queue a reply that is ready now."""
        self._items.append(ReplySlot(data))
        self._replies += 1
        self._queued += 1
        self._wake()

    def fill(self, slot: ReplySlot, data: bytes) -> None:
        """Put the reply into its reserved slot; it leaves once every earlier frame has left."""
        slot.data = data
        if self._items and self._items[0] is slot:
            self._wake()

    def has_reply_room(self) -> bool:
        """Whether the reader may read another request without waiting."""
        return self._replies < self._max_replies or self._dead

    async def wait_reply_room(self) -> None:
        """Wait until the writer has sent replies down to half of ``max_replies`` (or the socket died)."""
        while self._replies > self._max_replies // 2 and not self._dead:
            if self._room is None or self._room.done():
                self._room = asyncio.get_running_loop().create_future()
            await self._room

    async def flush(self) -> None:
        """Wait until every frame queued so far has been sent (or the socket died)."""
        if self._sent >= self._queued or self._dead:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._flushes.append((self._queued, waiter))
        self._wake()
        await waiter

    def close(self) -> None:
        """Let the writer finish what is queued, then stop; later events are refused."""
        self._closing = True
        self._wake()

    # -- the writer -------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Write frames in order until :meth:`close` and an empty queue, or until the socket fails."""
        loop = asyncio.get_running_loop()
        items = self._items
        try:
            while True:
                while items:
                    head = items[0]
                    if type(head) is bytes:
                        items.popleft()
                        await self._send(head)
                        self._events -= 1
                        if self._blocked and self._events <= self._max_events // 2:
                            self._drained()
                    else:
                        assert isinstance(head, ReplySlot)
                        data = head.data
                        if data is None:
                            break
                        items.popleft()
                        await self._send(data)
                        self._replies -= 1
                    self._sent += 1
                self._after_send()
                if self._closing and not items:
                    return
                self._wakeup = loop.create_future()
                try:
                    await self._wakeup
                finally:
                    self._wakeup = None
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the socket died under us: nothing more can be sent
            log.debug("send failed, dropping %d queued frames: %r", len(items), exc)
        finally:
            self._die()

    def _after_send(self) -> None:
        if self._room is not None and self._replies <= self._max_replies // 2:
            room, self._room = self._room, None
            if not room.done():
                room.set_result(None)
        if self._flushes:
            keep: list[tuple[int, asyncio.Future[None]]] = []
            for target, waiter in self._flushes:
                if self._sent >= target:
                    if not waiter.done():
                        waiter.set_result(None)
                else:
                    keep.append((target, waiter))
            self._flushes = keep
        if self._blocked and self._events <= self._max_events // 2:
            self._drained()

    def _drained(self) -> None:
        self._blocked = False
        if self._closing:
            return
        try:
            self._on_drain()
        except Exception:
            log.exception("on_drain callback failed")

    def _die(self) -> None:
        self._dead = True
        self._items.clear()
        self._sent = self._queued
        self._events = self._replies = 0
        for _, waiter in self._flushes:
            if not waiter.done():
                waiter.set_result(None)
        self._flushes = []
        if self._room is not None and not self._room.done():
            self._room.set_result(None)
        self._room = None

    def _wake(self) -> None:
        w = self._wakeup
        if w is not None and not w.done():
            w.set_result(None)
