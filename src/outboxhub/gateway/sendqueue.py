"""The outbound side of one gateway connection: an ordered queue of frames drained by one writer task.

Idle connections are most connections, so an idle queue holds nothing (issue #16: ≈ 1.5 KB of task,
coroutine frame, future and deque block per idle connection): the writer task is started when there is
something to send, and the frames' deque is allocated on first use. A writer that drains the queue ends at
once, unless the previous writer of this queue ended less than :data:`WRITER_LINGER_S` ago: a busy
connection then keeps its writer parked on a future, woken by the next frame exactly as a permanent writer
would be (starting a task per frame costs measurably more on the hot path), and one sweeper per event loop
ends the writers that stayed parked from one sweep to the next. When the socket offers ``send_now``
(picows) and no writer is busy, frames that can leave without waiting are written at once by the call
that queued or filled them (a one-at-a-time publish's reply leaves in the iteration of its commit); the
writer takes over at the first frame that would wait, which stays counted until it has left.

Replies must leave in request order even though requests complete out of order (a PUBLISH is answered
when its batch commits, an ERR at once). Each request therefore takes a :class:`ReplySlot` when it is
read; the writer sends the head of the queue only once its slot is filled. EVENT frames are appended as
ready bytes, so an EVENT never overtakes the reply to a request that was read before it was queued (the OK
to a SUBSCRIBE always precedes that subscription's first EVENT).

Both kinds are bounded, by count and by bytes (``max_bytes``, the ``send_queue_max_bytes`` setting), so
memory per connection is bounded whatever the frame sizes:

* events by ``max_events`` and by the queued bytes: :meth:`SendQueue.put_event` refuses (returns False)
  when that many events, or ``max_bytes`` of frames, are queued (one event is always accepted into an
  empty queue, however large); the bus then pauses the member and the queue calls ``on_drain`` once both
  are down to half, so a slow consumer stops receiving instead of buffering without limit;
* replies by ``max_replies`` and by their bytes: replies are never dropped; the reader instead awaits
  :meth:`SendQueue.wait_reply_room` and stops reading frames until the writer has caught up.

Each queued EVENT carries a tag (its subscription), so :meth:`SendQueue.drop_events` can take back the
events of a subscription that may no longer receive them (a re-AUTH narrowed the rights).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final

__all__ = ["WRITER_LINGER_S", "ReplySlot", "SendQueue"]

log = logging.getLogger("outboxhub.gateway.connection")

WRITER_LINGER_S: Final = 1.0
"""A queue whose previous writer ended less than this ago keeps its next writer parked when drained; the
sweeper ends a writer parked for one to two of these intervals."""


_RUN_MAX: Final = 256
"""Most frames offered to one ``send_all_now`` (it writes those that fit below the high-water mark)."""


class _Sweeper:
    """One per event loop: ends the writers that stayed parked from one sweep to the next.

    A writer woken in between parks again under a fresh mark (or has ended: retiring it is a no-op)."""

    __slots__ = ("_loop", "handle", "parked")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.parked: dict[SendQueue, bool] = {}  # queue -> parked at the previous sweep already
        self.handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Sweep in :data:`WRITER_LINGER_S` (and on, while anything is parked)."""
        self.handle = self._loop.call_later(WRITER_LINGER_S, self._sweep)

    def _sweep(self) -> None:
        self.handle = None
        parked = self.parked
        for queue, seen in list(parked.items()):
            if seen:
                del parked[queue]
                queue._retire()
            else:
                parked[queue] = True
        if parked:
            self.start()


_sweepers: dict[int, _Sweeper] = {}  # by id(loop); an entry is checked against its loop before use


def _sweeper(loop: asyncio.AbstractEventLoop) -> _Sweeper:
    found = _sweepers.get(id(loop))
    if found is None or found._loop is not loop:
        if loop.is_closed():  # pragma: no cover - a writer runs on a live loop
            raise RuntimeError("event loop is closed")
        found = _sweepers[id(loop)] = _Sweeper(loop)
        for key in [k for k, v in _sweepers.items() if v._loop.is_closed()]:
            del _sweepers[key]
    return found


class ReplySlot:
    """A reserved place for one reply; :meth:`SendQueue.fill` puts the reply bytes in."""

    __slots__ = ("data",)

    def __init__(self, data: bytes | None = None) -> None:
        self.data = data


class SendQueue:
    """Ordered outbound frames of one connection, written by a writer task that runs only while there is
    something to send. :meth:`finish` sends what is queued and ends the queue; :meth:`abort` drops it.

    ``send`` writes one frame to the socket and may suspend while the socket's buffer is full.
    """

    __slots__ = (
        "_blocked", "_bytes", "_closing", "_dead", "_draining", "_events", "_flushes", "_held", "_items",
        "_last_exit",
        "_loop", "_max_bytes", "_max_events", "_max_replies", "_on_drain", "_queued", "_replies",
        "_reply_bytes", "_room", "_send", "_send_all_now", "_send_now", "_sent", "_wakeup", "_writer",
        "events_total",
    )  # fmt: skip

    def __init__(
        self,
        send: Callable[[bytes], Awaitable[None]],
        *,
        max_events: int,
        max_replies: int,
        on_drain: Callable[[], None],
        max_bytes: int | None = None,
        send_now: Callable[[bytes], bool] | None = None,
        send_all_now: Callable[[list[bytes]], int] | None = None,
    ) -> None:
        if max_events < 1 or max_replies < 1 or (max_bytes is not None and max_bytes < 1):
            raise ValueError("max_events, max_replies and max_bytes must be >= 1")
        self._send = send
        self._send_now = send_now  # writes a frame at once, False (nothing written) when it would wait
        # writes the frames that can go now in one write (a batch's replies: one send, not one each)
        self._send_all_now = send_all_now if send_now is not None else None
        self._draining = False  # _drain_now is writing: a frame queued meanwhile is taken by its loop
        self._held = False  # ``hold(True)``: events are queued without a write until ``hold(False)``
        self._max_events = max_events
        self._max_replies = max_replies
        self._max_bytes = max_bytes if max_bytes is not None else 1 << 62
        self._on_drain = on_drain
        self._items: deque[tuple[bytes, Any] | ReplySlot] | None = None  # allocated on first use
        self._writer: asyncio.Task[None] | None = None  # runs only while there is something to send
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Future[bool] | None = None  # a parked writer waits on it (True: end)
        self._last_exit = float("-inf")  # loop time the previous writer ended
        self._events = 0
        self._replies = 0
        self._bytes = 0  # bytes of queued frames (events and filled replies)
        self._reply_bytes = 0  # bytes of queued filled replies
        self._queued = 0  # frames ever queued
        self._sent = 0  # frames ever sent (or discarded once the socket died)
        self.events_total = 0  # EVENT frames ever queued (the ops API's per-connection deliver rate)
        self._blocked = False  # an event was refused: call on_drain once below half
        self._closing = False
        self._dead = False
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
    def queued_bytes(self) -> int:
        """Bytes of the frames queued and not yet sent (events and filled replies)."""
        return self._bytes

    @property
    def writing(self) -> bool:
        """Whether a writer task exists now (False on an idle connection)."""
        return self._writer is not None

    @property
    def dead(self) -> bool:
        """True once the socket failed or the queue was closed: nothing more will be sent."""
        return self._dead

    def put_event(self, data: bytes, tag: Any = None) -> bool:
        """Queue an EVENT frame (``tag``: what :meth:`drop_events` selects by); False (nothing queued)
        when ``max_events`` events or ``max_bytes`` bytes are already waiting."""
        if self.is_full():
            self._blocked = True
            return False
        items = self._items
        if items is None:
            items = self._items = deque()
        items.append((data, tag))
        self._events += 1
        self._bytes += len(data)
        self._queued += 1
        self.events_total += 1
        if not self._held:
            self._wake()
        return True

    def hold(self, on: bool) -> None:
        """With True, queue events without writing them; with False, write what was held (one socket write
        for a run of EVENTs: the bus brackets a claim's hand-out with it)."""
        self._held = on
        if not on and self._items:
            self._wake()

    def is_full(self) -> bool:
        """Whether :meth:`put_event` would refuse now (lets the caller skip encoding the frame)."""
        return (
            self._events >= self._max_events or self._bytes >= self._max_bytes or self._dead or self._closing
        )

    def drop_events(self, drop: Callable[[Any], bool]) -> int:
        """Take back every queued EVENT whose tag ``drop`` selects (they are never sent); the count."""
        items = self._items
        if not items:
            return 0
        kept: deque[tuple[bytes, Any] | ReplySlot] = deque()
        dropped = 0
        for item in items:
            if type(item) is tuple and drop(item[1]):
                dropped += 1
                self._events -= 1
                self._bytes -= len(item[0])
            else:
                kept.append(item)
        if dropped:
            items.clear()  # in place: the writer holds this deque
            items.extend(kept)
            self._queued -= dropped
            self._after_send()
        return dropped

    def refuse_event(self) -> None:
        """Record a refused event without offering it (after :meth:`is_full`): ``on_drain`` will follow."""
        self._blocked = True

    def reserve(self) -> ReplySlot:
        """Take the next place in the reply order; fill it later with :meth:`fill`."""
        slot = ReplySlot()
        items = self._items
        if items is None:
            items = self._items = deque()
        items.append(slot)
        self._replies += 1
        self._queued += 1
        return slot

    def reply(self, data: bytes) -> None:
        """Queue a reply that is ready now."""
        items = self._items
        if items is None:
            items = self._items = deque()
        items.append(ReplySlot(data))
        self._replies += 1
        self._queued += 1
        self._count_reply(data)
        self._wake()

    def fill(self, slot: ReplySlot, data: bytes) -> None:
        """Put the reply into its reserved slot; it leaves once every earlier frame has left."""
        slot.data = data
        items = self._items
        if items and items[0] is slot:
            send_now = self._send_now
            if (
                len(items) == 1
                and send_now is not None
                and self._writer is None
                and not self._draining
                and not self._dead
            ):
                # The only frame queued (a reply to one publish at a time): written at once, counted in and
                # out of the budgets in one step; what _wake → _drain_now would do for it.
                try:
                    sent = send_now(data)
                except Exception as exc:  # the socket died under us: nothing more can be sent
                    log.debug("send failed, dropping 1 queued frame: %r", exc)
                    self._die()
                    return
                if sent:
                    self._items = None  # an idle connection keeps no deque
                    self._replies -= 1
                    self._sent += 1
                    if self._room is not None or self._flushes or self._blocked:
                        self._after_send()
                    return
            self._count_reply(data)
            self._wake()
            return
        self._count_reply(data)

    def fill_all(self, replies: Iterable[tuple[ReplySlot, bytes]]) -> None:
        """:meth:`fill` each slot, then write what can leave: the replies of a batch leave together."""
        for slot, data in replies:
            slot.data = data
            self._count_reply(data)
        if self._items:
            self._wake()

    def _count_reply(self, data: bytes) -> None:
        if not self._dead:
            self._bytes += len(data)
            self._reply_bytes += len(data)

    def has_reply_room(self) -> bool:
        """Whether the reader may read another request without waiting."""
        return (self._replies < self._max_replies and self._reply_bytes < self._max_bytes) or self._dead

    def _reply_backlog(self) -> bool:
        return self._replies > self._max_replies // 2 or self._reply_bytes > self._max_bytes // 2

    async def wait_reply_room(self) -> None:
        """Wait until the writer has sent replies down to half of ``max_replies`` and of ``max_bytes``
        (or the socket died)."""
        while self._reply_backlog() and not self._dead:
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

    async def finish(self) -> None:
        """:meth:`close`, wait until every queued frame has been sent (or the socket died), then end the
        queue: nothing more is sent. Bound it with a timeout and :meth:`abort` a peer that does not read."""
        self.close()
        await self.flush()
        writer = self._writer
        self._die()  # (tells a parked writer to end)
        if writer is not None:
            await writer

    def abort(self) -> None:
        """Stop the writer (if one runs) and drop everything queued."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.cancel()
        self._die()

    # -- the writer -------------------------------------------------------------------------------------

    def _wake(self) -> None:
        """Write what can go now (``send_now``) when no writer is busy; else wake the parked writer, or
        start one if none runs and the head of the queue can be sent now."""
        if self._draining:
            return
        waiter = self._wakeup
        if waiter is not None:
            if not waiter.done() and not self._drain_now():
                waiter.set_result(False)
            return  # (a writer told to end starts the next one itself if a frame is waiting)
        if self._writer is not None or self._dead:
            return
        items = self._items
        if not items:
            return
        head = items[0]
        if isinstance(head, ReplySlot) and head.data is None:
            return  # filling it wakes the writer
        if self._drain_now():
            if not self._items:
                self._items = None  # an idle connection keeps no deque
            return
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        self._writer = loop.create_task(self._write())

    def _drain_now(self) -> bool:
        """Send the frames that can leave now through ``send_now``, in order, without a writer task (a
        reply filled while nothing else is queued leaves in the same loop iteration). True when nothing
        sendable is left (or the socket died), False when the socket would make the next frame wait:
        the writer takes over from there."""
        send_now = self._send_now
        items = self._items
        if send_now is None or items is None or self._dead:
            return send_now is not None
        send_all = self._send_all_now
        self._draining = True
        try:
            while items:
                if send_all is not None and len(items) > 1:
                    sent = self._send_run(items, send_all)
                    if sent > 1:
                        continue
                    send_all = None  # one frame or none would fit: one at a time from here
                    if sent:
                        continue
                head = items[0]
                if type(head) is tuple:
                    data = head[0]
                    if not send_now(data):
                        return False
                    items.popleft()
                    self._event_left(len(data))
                else:
                    assert isinstance(head, ReplySlot)
                    reply = head.data
                    if reply is None:
                        break
                    if not send_now(reply):
                        return False
                    items.popleft()
                    self._reply_left(len(reply))
        except Exception as exc:  # the socket died under us: nothing more can be sent
            log.debug("send failed, dropping %d queued frames: %r", len(items), exc)
            self._die()
            return True
        finally:
            self._draining = False
        self._after_send()
        return True

    def _send_run(
        self, items: deque[tuple[bytes, Any] | ReplySlot], send_all: Callable[[list[bytes]], int]
    ) -> int:
        """Write the ready frames at the head of ``items`` (up to the first reply not filled yet) with one
        ``send_all_now``; returns how many left."""
        frames: list[bytes] = []
        for item in items:
            if type(item) is tuple:
                frames.append(item[0])
            else:
                assert isinstance(item, ReplySlot)
                if item.data is None:
                    break
                frames.append(item.data)
            if len(frames) == _RUN_MAX:
                break
        sent = send_all(frames) if frames else 0
        for data in frames[:sent]:
            if type(items.popleft()) is tuple:
                self._event_left(len(data))
            else:
                self._reply_left(len(data))
        return sent

    def _event_left(self, size: int) -> None:
        """An EVENT frame of ``size`` bytes has been written: it no longer counts against the budget."""
        self._events -= 1
        self._bytes -= size
        if self._blocked and self._below_half():
            self._drained()
        self._sent += 1

    def _reply_left(self, size: int) -> None:
        """A reply of ``size`` bytes has been written."""
        self._replies -= 1
        self._bytes -= size
        self._reply_bytes -= size
        self._sent += 1

    def _retire(self) -> None:
        waiter = self._wakeup
        if waiter is not None and not waiter.done():
            waiter.set_result(True)

    async def _write(self) -> None:
        """Write frames in order until the queue is empty or its head is a reply not filled yet; then end,
        or stay parked if this queue is busy (see the module docstring). On a socket failure drop
        everything for good."""
        items = self._items
        assert items is not None
        loop = self._loop
        assert loop is not None
        busy = loop.time() - self._last_exit < WRITER_LINGER_S  # else end at the first drain
        sweeper = _sweeper(loop) if busy else None
        try:
            while True:
                while items:
                    head = items[0]
                    if type(head) is tuple:
                        items.popleft()
                        data = head[0]
                        await self._send(data)
                        self._event_left(len(data))
                    else:
                        assert isinstance(head, ReplySlot)
                        reply = head.data
                        if reply is None:
                            break
                        items.popleft()
                        await self._send(reply)
                        self._reply_left(len(reply))
                self._after_send()
                if (self._closing and not items) or sweeper is None:
                    break
                waiter = self._wakeup = loop.create_future()
                sweeper.parked[self] = False  # (kept when woken: a sweep finds it ended or parked anew)
                if sweeper.handle is None:
                    sweeper.start()
                retire = await waiter
                self._wakeup = None
                if retire or self._dead:
                    break
        except asyncio.CancelledError:
            self._die()
            raise
        except Exception as exc:  # the socket died under us: nothing more can be sent
            log.debug("send failed, dropping %d queued frames: %r", len(items), exc)
            self._die()
        finally:
            self._wakeup = None
            if self._writer is asyncio.current_task():
                self._writer = None
            self._last_exit = loop.time()
        self._wake()  # a frame queued by an on_drain or flush callback above, after the last look
        if not items and self._items is items:
            self._items = None  # an idle connection keeps no deque

    def _below_half(self) -> bool:
        return self._events <= self._max_events // 2 and self._bytes <= self._max_bytes // 2

    def _after_send(self) -> None:
        if self._room is not None and not self._reply_backlog():
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
        if self._blocked and self._below_half():
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
        self._retire()
        self._items = None
        self._sent = self._queued
        self._events = self._replies = self._bytes = self._reply_bytes = 0
        for _, waiter in self._flushes:
            if not waiter.done():
                waiter.set_result(None)
        self._flushes = []
        if self._room is not None and not self._room.done():
            self._room.set_result(None)
        self._room = None
