"""The gateway's pure parts: the token bucket (property tests) and the ordered, bounded send queue."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from outboxhub.gateway.ratelimit import TokenBucket
from outboxhub.gateway.sendqueue import SendQueue

# ---------------------------------------------------------------- token bucket


@given(
    rate=st.floats(min_value=0.1, max_value=1e5),
    burst=st.integers(min_value=1, max_value=1000),
    steps=st.lists(st.floats(min_value=0, max_value=5), max_size=200),
)
def test_bucket_never_allows_more_than_burst_plus_rate_times_elapsed(
    rate: float, burst: int, steps: list[float]
) -> None:
    bucket = TokenBucket(rate, burst, now=0.0)
    now = 0.0
    allowed = 0
    for dt in steps:
        now += dt
        allowed += bucket.take(now)
    assert allowed <= burst + rate * now + 1e-6


@given(burst=st.integers(min_value=1, max_value=500))
def test_a_full_bucket_allows_exactly_burst_at_one_instant(burst: int) -> None:
    bucket = TokenBucket(1.0, burst, now=10.0)
    assert [bucket.take(10.0) for _ in range(burst + 3)] == [True] * burst + [False] * 3


def test_bucket_refills_at_rate_up_to_burst() -> None:
    bucket = TokenBucket(10.0, 5, now=0.0)
    assert sum(bucket.take(0.0) for _ in range(10)) == 5
    assert bucket.take(0.05) is False  # half a token
    assert bucket.take(0.1) is True  # one token after 0.1 s
    assert sum(bucket.take(100.0) for _ in range(10)) == 5  # capped at burst


def test_rate_zero_means_unlimited_and_bad_arguments_are_refused() -> None:
    bucket = TokenBucket(0, 1, now=0.0)
    assert all(bucket.take(0.0) for _ in range(1000))
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(-1, 1, now=0)
    with pytest.raises(ValueError, match="burst"):
        TokenBucket(1, 0, now=0)


# ---------------------------------------------------------------- send queue


class Sink:
    """Collects sent frames; ``gate`` (when cleared) holds every send like a full socket buffer."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def send(self, data: bytes) -> None:
        await self.gate.wait()
        self.sent.append(data)


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_replies_leave_in_request_order_whatever_order_they_complete_in() -> None:
    sink = Sink()
    q = SendQueue(sink.send, max_events=10, max_replies=10, on_drain=lambda: None)
    a, b = q.reserve(), q.reserve()
    q.reply(b"c")
    assert q.put_event(b"ev")
    q.fill(b, b"b")
    await _settle()
    assert sink.sent == []  # a is still pending: nothing may overtake it
    q.fill(a, b"a")
    await q.flush()
    assert sink.sent == [b"a", b"b", b"c", b"ev"]
    await q.finish()


async def test_events_are_refused_when_full_and_drain_is_signalled_at_half() -> None:
    sink = Sink()
    drained: list[int] = []
    q = SendQueue(sink.send, max_events=4, max_replies=10, on_drain=lambda: drained.append(q.events))
    sink.gate.clear()
    assert all(q.put_event(b"%d" % i) for i in range(4))
    await _settle()
    assert q.is_full() and q.put_event(b"x") is False
    assert drained == []
    sink.gate.set()
    await q.flush()
    assert drained and drained[0] <= 2
    assert sink.sent == [b"0", b"1", b"2", b"3"]
    await q.finish()


async def test_reply_room_blocks_the_reader_until_half_are_sent() -> None:
    sink = Sink()
    q = SendQueue(sink.send, max_events=1, max_replies=4, on_drain=lambda: None)
    slots = [q.reserve() for _ in range(4)]
    assert not q.has_reply_room()
    waiter = asyncio.create_task(q.wait_reply_room())
    await _settle()
    assert not waiter.done()
    for slot in slots:
        q.fill(slot, b"r")
    await asyncio.wait_for(waiter, 1)
    assert q.has_reply_room()
    await q.finish()


async def test_a_failing_socket_releases_every_waiter() -> None:
    async def broken(data: bytes) -> None:
        raise ConnectionResetError("peer went away")

    q = SendQueue(broken, max_events=2, max_replies=2, on_drain=lambda: None)
    waiting = asyncio.create_task(q.flush())
    q.put_event(b"e")
    await asyncio.wait_for(waiting, 1)
    q.reserve()
    q.reserve()
    assert q.dead and q.has_reply_room()
    await asyncio.wait_for(q.flush(), 1)
    await asyncio.wait_for(q.wait_reply_room(), 1)
    assert q.put_event(b"late") is False


async def test_events_are_bounded_by_bytes_and_one_always_fits_an_empty_queue() -> None:
    sink = Sink()
    drained: list[int] = []
    q = SendQueue(
        sink.send,
        max_events=1000,
        max_replies=10,
        max_bytes=100,
        on_drain=lambda: drained.append(q.queued_bytes),
    )
    sink.gate.clear()
    assert q.put_event(b"x" * 500)  # larger than the budget, but the queue is empty
    await _settle()  # the writer holds it (blocked in send): its bytes still count
    assert q.is_full() and q.put_event(b"y") is False
    sink.gate.set()
    await q.flush()
    assert drained == [0]
    sink.gate.clear()
    assert q.put_event(b"y" * 60) and q.put_event(b"z" * 60)  # 60 < 100: room for one more
    assert q.queued_bytes == 120 and q.is_full() and q.put_event(b"w") is False
    sink.gate.set()
    await q.flush()
    assert q.queued_bytes == 0 and not q.is_full()
    await q.finish()


async def test_reply_bytes_stop_the_reader_until_half_is_sent() -> None:
    sink = Sink()
    q = SendQueue(sink.send, max_events=10, max_replies=1000, max_bytes=100, on_drain=lambda: None)
    sink.gate.clear()
    for _ in range(3):
        q.reply(b"r" * 40)
    assert not q.has_reply_room()
    waiter = asyncio.create_task(q.wait_reply_room())
    await _settle()
    assert not waiter.done()
    sink.gate.set()
    await asyncio.wait_for(waiter, 5)
    assert q.has_reply_room()
    await q.finish()


async def test_drop_events_takes_back_the_queued_events_of_a_tag() -> None:
    sink = Sink()
    q = SendQueue(sink.send, max_events=10, max_replies=10, on_drain=lambda: None)
    sink.gate.clear()
    q.put_event(b"a1", "a")
    await _settle()  # a1 is in the writer's hands already
    q.put_event(b"b1", "b")
    slot = q.reserve()
    q.put_event(b"a2", "a")
    q.put_event(b"b2", "b")
    assert q.drop_events(lambda tag: tag == "a") == 1
    assert q.events == 3 and q.queued_bytes == len(b"a1b1b2")
    q.fill(slot, b"ok")
    sink.gate.set()
    await q.flush()
    assert sink.sent == [b"a1", b"b1", b"ok", b"b2"]
    await q.finish()


async def test_an_idle_queue_holds_no_writer_task_and_no_deque() -> None:
    """Issue #16: most connections are idle; their send queue allocates nothing until there is a frame."""
    sink = Sink()
    q = SendQueue(sink.send, max_events=10, max_replies=10, on_drain=lambda: None)
    assert not q.writing and q._items is None
    slot = q.reserve()
    q.reply(b"later")
    await _settle()
    assert not q.writing and sink.sent == []  # the head waits for its reply: no writer spins meanwhile
    q.fill(slot, b"first")
    assert q.writing
    await q.flush()
    await _settle()
    assert sink.sent == [b"first", b"later"]
    assert not q.writing and q._items is None  # drained: the task ended and the deque was dropped
    for n in range(3):  # and order holds across writers started one after another
        q.put_event(b"e%d" % n)
        q.reply(b"r%d" % n)
    await q.flush()
    assert sink.sent[2:] == [b"e0", b"r0", b"e1", b"r1", b"e2", b"r2"]
    await q.finish()
    assert q.dead and q.put_event(b"late") is False


async def test_a_frame_queued_by_on_drain_is_still_sent() -> None:
    """on_drain runs inside the writer (it resumes paused subscriptions, which queue events again): a
    frame it queues after the writer's last look must not wait for the next frame to be sent."""
    sink = Sink()
    q: SendQueue

    def drained() -> None:
        q.put_event(b"resumed")

    # an event, then a large reply: the next event is refused on bytes, and only sending the reply (the
    # last frame) brings the bytes below half, so on_drain runs after the writer's last look at the queue
    q = SendQueue(sink.send, max_events=10, max_replies=10, max_bytes=100, on_drain=drained)
    sink.gate.clear()
    assert q.put_event(b"e" * 20)
    q.reply(b"r" * 90)
    assert q.put_event(b"refused") is False
    sink.gate.set()
    for _ in range(50):
        if sink.sent[-1:] == [b"resumed"]:
            break
        await asyncio.sleep(0)
    assert sink.sent == [b"e" * 20, b"r" * 90, b"resumed"]
    await q.finish()


async def test_abort_drops_a_queue_whose_peer_does_not_read() -> None:
    sink = Sink()
    q = SendQueue(sink.send, max_events=10, max_replies=10, on_drain=lambda: None)
    sink.gate.clear()
    q.put_event(b"stuck")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(q.finish(), 0.05)
    q.abort()
    await _settle()
    assert q.dead and not q.writing and sink.sent == []


async def test_a_busy_queue_keeps_its_writer_parked_until_the_sweeper_ends_it() -> None:
    """A writer task per frame costs more than waking a parked one: a queue that was written to moments
    ago keeps its writer parked after draining, and the per-loop sweeper ends it once it stays idle."""
    sink = Sink()
    q = SendQueue(sink.send, max_events=10, max_replies=10, on_drain=lambda: None)
    q.put_event(b"a")
    await q.flush()
    await _settle()
    assert not q.writing  # the first writer of a queue ends when drained: an idle connection keeps nothing
    q.put_event(b"b")  # busy now: its writer parks when drained
    await q.flush()
    await _settle()
    assert q.writing and q._items is not None
    writer = q._writer
    for frame in (b"c", b"d"):  # woken, not replaced
        q.put_event(frame)
        await q.flush()
        assert q._writer is writer
    for _ in range(int(10 / 0.05)):  # the sweeper: after one to two WRITER_LINGER_S of idleness
        if not q.writing:
            break
        await asyncio.sleep(0.05)
    assert not q.writing and q._items is None
    assert sink.sent == [b"a", b"b", b"c", b"d"]
    q.put_event(b"e")  # and a frame after that starts a writer again
    await q.flush()
    assert sink.sent[-1] == b"e"
    await q.finish()
    assert q.dead and not q.writing


class DirectSink(Sink):
    """A socket that also writes at once (``send_now``) while its gate is open, like picows below its
    write buffer's high-water mark."""

    def send_now(self, data: bytes) -> bool:
        if not self.gate.is_set():
            return False
        self.sent.append(data)
        return True


async def test_a_filled_reply_leaves_at_once_without_a_writer_task() -> None:
    sink = DirectSink()
    q = SendQueue(sink.send, max_events=10, max_replies=10, on_drain=lambda: None, send_now=sink.send_now)
    a, b = q.reserve(), q.reserve()
    q.fill(b, b"b")
    assert sink.sent == []  # a is still pending: nothing may overtake it
    q.fill(a, b"a")
    assert sink.sent == [b"a", b"b"]  # in this call, not a loop iteration later
    assert not q.writing and q.replies == 0 and q.queued_bytes == 0
    assert q.put_event(b"ev") and sink.sent[-1] == b"ev"
    await q.flush()
    await q.finish()


async def test_frames_that_would_wait_go_through_the_writer_and_keep_their_order() -> None:
    sink = DirectSink()
    drained: list[int] = []
    q = SendQueue(
        sink.send, max_events=4, max_replies=10, on_drain=lambda: drained.append(1), send_now=sink.send_now
    )
    sink.gate.clear()  # the socket's buffer is full
    assert all(q.put_event(b"%d" % i) for i in range(4))
    assert q.writing and sink.sent == []  # the writer waits for the socket; the events stay counted
    assert q.is_full() and q.put_event(b"x") is False
    slot = q.reserve()
    q.fill(slot, b"r")
    sink.gate.set()
    await q.flush()
    assert sink.sent == [b"0", b"1", b"2", b"3", b"r"]
    assert drained == [1]
    assert q.put_event(b"4")  # the writer is parked (busy connection): written at once all the same
    assert sink.sent[-1] == b"4"
    await q.finish()


async def test_a_socket_failing_on_a_direct_write_drops_the_queue() -> None:
    def broken(data: bytes) -> bool:
        raise ConnectionResetError("peer went away")

    sink = Sink()
    q = SendQueue(sink.send, max_events=2, max_replies=2, on_drain=lambda: None, send_now=broken)
    q.reply(b"r")
    assert q.dead and not q.writing
    await asyncio.wait_for(q.flush(), 1)  # nothing waits for frames that will never leave
    await q.finish()
