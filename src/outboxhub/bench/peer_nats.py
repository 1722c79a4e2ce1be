"""The same workloads against NATS JetStream through nats-py: the peer a user would pick instead.

JetStream is set up as the hub is used: a durable stream with file storage per scenario (deleted at the
end), publishes confirmed by the stream's ack (``js.publish`` one at a time, ``js.publish_async`` with a
window when pipelined), durable pull consumers with explicit acks (``fetch`` with an adaptive batch, then
``msg.ack()`` per message, fire-and-forget as the hub's ACK frame is). Replay reads the stream with an
ordered consumer. One nats-py connection per hub connection. Server CPU and RSS are those of the
nats-server process that listens on the URL's port (found with psutil).
:func:`outboxhub.bench.runner.run_nats` makes the stream and runs a scenario of :data:`NATS_SCENARIOS` on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import struct
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, Final

import msgspec
import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from outboxhub.bench.cases import (
    PublishCase,
    nats_payload,
    paced,
    publish_cases,
    scenario_sizes,
)
from outboxhub.bench.measure import (
    consume_row,
    drain_outbox,
    e2e_row,
    fanout_row,
    fill_outbox_phase,
    idle_row,
    outbox_row,
    publish_row,
    replay_row,
    start_watch,
    stop_watch,
    timeout_for,
)
from outboxhub.bench.options import BenchOptions, Scenario
from outboxhub.bench.procstats import ProcessWatch, rss_bytes
from outboxhub.bench.report import Tracker
from outboxhub.bench.results import NATS, Measurement
from outboxhub.bench.stats import LatencyHistogram
from outboxhub.model import NewEvent, PublishResult

__all__ = ["NATS_SCENARIOS", "NatsContext", "NatsSink"]

_STAMP: Final = struct.Struct("<qB")  # send time (perf_counter_ns) and "measured" flag, then padding
_FETCH_BATCH: Final = 100
_MAX_ACK_PENDING: Final = 1_000  # the hub's default max_in_flight per member


@dataclasses.dataclass(kw_only=True)
class NatsContext:
    """What a peer scenario works with: the server URL and pid, and this scenario's stream."""

    options: BenchOptions
    tracker: Tracker
    url: str
    pid: int | None
    stream: str
    subject: str
    workdir: Path
    connections: list[NatsClient] = dataclasses.field(default_factory=list)

    async def connect(self) -> NatsClient:
        nc = await nats.connect(self.url, allow_reconnect=False, max_reconnect_attempts=0)
        self.connections.append(nc)
        return nc

    def watch(self) -> ProcessWatch | None:
        return start_watch(self.pid)


def _padded(size: int, measured: int) -> bytes:
    body = bytearray(nats_payload(max(size, _STAMP.size)))
    _STAMP.pack_into(body, 0, time.perf_counter_ns(), measured)
    return bytes(body)


# -- publish --------------------------------------------------------------------------------------------


async def _pump(
    jss: Sequence[JetStreamContext], subject: str, payload: bytes, window: int, seconds: float
) -> tuple[float, int, LatencyHistogram, list[BaseException]]:
    loop = asyncio.get_running_loop()
    hist = LatencyHistogram()
    errors: list[BaseException] = []
    acked = 0
    start = time.perf_counter()
    stop_at = loop.time() + seconds

    def on_ack(sent_ns: int) -> Callable[[asyncio.Future[Any]], None]:
        def done(future: asyncio.Future[Any]) -> None:
            nonlocal acked
            if future.cancelled() or future.exception() is not None:
                errors.append(future.exception() or asyncio.CancelledError())
                return
            hist.record_ns(time.perf_counter_ns() - sent_ns)
            acked += 1

        return done

    async def serial(js: JetStreamContext) -> None:
        nonlocal acked
        while loop.time() < stop_at:
            t0 = time.perf_counter_ns()
            await js.publish(subject, payload)
            hist.record_ns(time.perf_counter_ns() - t0)
            acked += 1

    async def pipelined(js: JetStreamContext) -> None:
        while loop.time() < stop_at:
            t0 = time.perf_counter_ns()
            future = await js.publish_async(subject, payload)
            future.add_done_callback(on_ack(t0))
        await js.publish_async_completed()

    await asyncio.gather(*((serial if window == 1 else pipelined)(js) for js in jss))
    return time.perf_counter() - start, acked, hist, errors


async def _publish_case(ctx: NatsContext, case: PublishCase) -> Measurement:
    o = ctx.options
    payload = nats_payload(case.size)
    jss = [
        (await ctx.connect()).jetstream(publish_async_max_pending=case.window) for _ in range(case.clients)
    ]
    if o.warmup_s:
        async with ctx.tracker.phase(f"warm-up NATS {case.name}", total=o.warmup_s):
            await _pump(jss, ctx.subject, payload, case.window, o.warmup_s)
    watch = ctx.watch()
    async with ctx.tracker.phase(f"NATS {case.name}", total=o.duration_s):
        elapsed, acked, hist, errors = await _pump(jss, ctx.subject, payload, case.window, o.duration_s)
    server = await stop_watch(watch)
    if errors:
        raise RuntimeError(f"JetStream refused {len(errors)} publishes; first: {errors[0]!r}")
    return publish_row(NATS, case, count=acked, elapsed_s=elapsed, latency=hist.summary(), server=server)


async def nats_publish(ctx: NatsContext) -> list[Measurement]:
    """Confirmed publish (stream ack), one at a time and pipelined, per payload size."""
    out = []
    for case in publish_cases(ctx.options):
        out.append(await _publish_case(ctx, case))
        for nc in ctx.connections:
            await nc.close()
        ctx.connections.clear()
    return out


# -- helpers: prefill, consumers ---------------------------------------------------------------------------


async def _prefill(ctx: NatsContext, scenario: Scenario) -> tuple[int, int]:
    """Put the ``scenario``'s events into the stream on a connection of its own; return (events, size)."""
    n, size = ctx.options.events_for(scenario), scenario_sizes(ctx.options, scenario)
    nc = await ctx.connect()
    await _fill_stream(ctx, nc.jetstream(), nc, n, nats_payload(size))
    return n, size


async def _fill_stream(
    ctx: NatsContext, js: JetStreamContext, nc: NatsClient, n: int, payload: bytes
) -> None:
    """Put ``n`` messages into the stream: core publishes (flushed every 5,000), then confirmed ones for
    any the stream did not take."""
    sent = 0
    async with ctx.tracker.phase(f"prefill NATS stream with {n:,}", total=n, done=lambda: sent):
        for _ in range(n):
            await nc.publish(ctx.subject, payload)
            sent += 1
            if sent % 5_000 == 0:
                await nc.flush()
        await nc.flush()
        stored = 0
        for _ in range(100):
            info = await js.stream_info(ctx.stream)
            stored = int(info.state.messages)
            if stored >= n:
                return
            await asyncio.sleep(0.1)
        for _ in range(n - stored):
            await js.publish_async(ctx.subject, payload)
        await js.publish_async_completed()


async def _consume(
    js: JetStreamContext,
    ctx: NatsContext,
    durable: str,
    until: Callable[[], bool],
    on_msg: Callable[[Msg, int], None],
    *,
    batch: int = _FETCH_BATCH,
    deliver: DeliverPolicy = DeliverPolicy.ALL,
) -> Callable[[], Coroutine[Any, Any, None]]:
    """Create a durable pull consumer; return the loop that fetches, hands each message to ``on_msg`` and
    acks it until ``until()``."""
    config = ConsumerConfig(
        durable_name=durable,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=deliver,
        max_ack_pending=_MAX_ACK_PENDING,
    )
    psub = await js.pull_subscribe(ctx.subject, durable=durable, stream=ctx.stream, config=config)

    async def loop() -> None:
        # Adaptive batch: fetch(1) waits for the next message and hands it over as soon as it arrives;
        # when the stream says more are pending, fetch that many (they come back at once). A fixed
        # fetch(n > 1) would hold a lone message until n arrive or the request expires.
        want = 1
        while not until():
            try:
                msgs = await psub.fetch(want, timeout=1.0)
            except TimeoutError:
                want = 1
                continue
            now = time.perf_counter_ns()
            for msg in msgs:
                on_msg(msg, now)
                await msg.ack()
            want = max(1, min(batch, int(msgs[-1].metadata.num_pending))) if msgs else 1

    return loop


# -- consume ---------------------------------------------------------------------------------------------


async def nats_consume(ctx: NatsContext) -> list[Measurement]:
    """``--clients`` pull subscribers (default 1, one connection each) on one durable consumer read the
    prefilled stream from the start and ack each message."""
    n, size = await _prefill(ctx, "consume")
    members = ctx.options.clients_for("consume")
    received = 0
    per_member = [0] * members

    def handler(member: int) -> Callable[[Msg, int], None]:
        def on_msg(msg: Msg, now_ns: int) -> None:
            nonlocal received
            received += 1
            per_member[member] += 1

        return on_msg

    connections = [await ctx.connect() for _ in range(members)]
    watch = ctx.watch()
    start = time.perf_counter()
    tasks: list[asyncio.Task[None]] = []
    try:
        async with ctx.tracker.phase("NATS consume", total=n, done=lambda: received):
            # As the hub's SUBSCRIBE, creating the consumer is in the window: the first pull_subscribe
            # creates the durable consumer, the others bind to it.
            for i, nc in enumerate(connections):
                loop = await _consume(nc.jetstream(), ctx, "bench-consume", lambda: received >= n, handler(i))
                tasks.append(asyncio.get_running_loop().create_task(loop()))
            # A loop returns once every message has arrived; the others may still wait in a fetch.
            finished, _ = await asyncio.wait(
                tasks, timeout=timeout_for(n), return_when=asyncio.FIRST_COMPLETED
            )
            if not finished:
                raise TimeoutError(f"NATS consume: {received:,} of {n:,} messages in {timeout_for(n):.0f} s")
            for task in finished:
                task.result()
        elapsed = time.perf_counter() - start
        server = await stop_watch(watch)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return [
        consume_row(
            NATS,
            n,
            size,
            count=received,
            elapsed_s=elapsed,
            server=server,
            per_member=per_member,
            fetch_batch=f"adaptive, up to {_FETCH_BATCH}",
            max_ack_pending=_MAX_ACK_PENDING,
        )
    ]


# -- end-to-end ------------------------------------------------------------------------------------------


async def _e2e_case(ctx: NatsContext, rate: float, size: int) -> Measurement:
    o = ctx.options
    count = max(1, int(rate * o.duration_s))
    publishers = o.clients_for("e2e")
    pub_ncs = [await ctx.connect() for _ in range(publishers)]
    sub_nc = await ctx.connect()
    jss = [nc.jetstream(publish_async_max_pending=1_000_000) for nc in pub_ncs]
    hist, ok_hist = LatencyHistogram(), LatencyHistogram()
    received = 0
    last_ns = 0
    recording = False

    def on_msg(msg: Msg, now_ns: int) -> None:
        nonlocal received, last_ns
        sent_ns, measured = _STAMP.unpack_from(msg.data)
        if measured:
            hist.record_ns(now_ns - sent_ns)
            received += 1
            last_ns = now_ns

    def on_ack(sent_ns: int) -> Callable[[asyncio.Future[Any]], None]:
        def done(future: asyncio.Future[Any]) -> None:
            if recording and not future.cancelled() and future.exception() is None:
                ok_hist.record_ns(time.perf_counter_ns() - sent_ns)

        return done

    async def send(i: int, measured: int) -> None:
        payload = _padded(size, measured)
        future = await jss[i % publishers].publish_async(ctx.subject, payload)
        future.add_done_callback(on_ack(time.perf_counter_ns()))

    async def completed() -> None:
        await asyncio.gather(*(js.publish_async_completed() for js in jss))

    loop = await _consume(
        sub_nc.jetstream(),
        ctx,
        f"bench-e2e{int(rate)}",
        lambda: received >= count,
        on_msg,
        deliver=DeliverPolicy.NEW,
    )
    consumer = asyncio.get_running_loop().create_task(loop())
    try:
        if o.warmup_s:
            async with ctx.tracker.phase(f"warm-up NATS e2e @ {rate:,.0f}/s", total=o.warmup_s):
                await paced(rate, int(rate * o.warmup_s), lambda i: send(i, 0))
            await completed()
        recording = True
        watch = ctx.watch()
        start_ns = time.perf_counter_ns()
        async with ctx.tracker.phase(f"NATS e2e @ {rate:,.0f}/s", total=count, done=lambda: received):
            lag = await paced(rate, count, lambda i: send(i, 1))
            send_s = (time.perf_counter_ns() - start_ns) / 1e9
            await asyncio.wait_for(asyncio.shield(consumer), timeout_for(count))
        await completed()
        server = await stop_watch(watch)
    finally:
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer
    summary = hist.summary()
    assert summary is not None
    return e2e_row(
        NATS,
        rate=rate,
        size=size,
        count=count,
        received=received,
        latency=summary,
        span_ns=last_ns - start_ns,
        send_s=send_s,
        lag_s=lag,
        ok_latency=ok_hist.summary(),
        server=server,
        publishers=publishers,
        fetch_batch=f"adaptive, up to {_FETCH_BATCH}",
    )


async def nats_e2e(ctx: NatsContext) -> list[Measurement]:
    """Publish at fixed rates (``publish_async``; ``--clients`` publisher connections take turns, default
    1); a pull consumer fetches one at a time and acks."""
    size = scenario_sizes(ctx.options, "e2e")
    return [await _e2e_case(ctx, rate, size) for rate in ctx.options.rates]


# -- fan-out ---------------------------------------------------------------------------------------------


async def nats_fanout(ctx: NatsContext) -> list[Measurement]:
    """One pipelined publisher, ``--groups`` durable pull consumers on one connection each."""
    o = ctx.options
    n, groups, size = o.events_for("fanout"), o.groups, scenario_sizes(o, "fanout")
    hist = LatencyHistogram()
    received = 0

    def on_msg(msg: Msg, now_ns: int) -> None:
        nonlocal received
        hist.record_ns(now_ns - _STAMP.unpack_from(msg.data)[0])
        received += 1

    loops = []
    for i in range(groups):
        nc = await ctx.connect()
        loops.append(
            await _consume(
                nc.jetstream(),
                ctx,
                f"bench-fan{i}",
                lambda: received >= n * groups,
                on_msg,
                deliver=DeliverPolicy.NEW,
            )
        )
    js = (await ctx.connect()).jetstream(publish_async_max_pending=o.window)
    watch = ctx.watch()
    start = time.perf_counter()
    consumers = [asyncio.get_running_loop().create_task(loop()) for loop in loops]
    try:
        async with ctx.tracker.phase(f"NATS fan-out → {groups}", total=n * groups, done=lambda: received):
            for _ in range(n):
                await js.publish_async(ctx.subject, _padded(size, 1))
            await js.publish_async_completed()
            publish_s = time.perf_counter() - start
            await asyncio.wait_for(asyncio.gather(*consumers), timeout_for(n * groups))
        elapsed = time.perf_counter() - start
        server = await stop_watch(watch)
    finally:
        for task in consumers:
            task.cancel()
        await asyncio.gather(*consumers, return_exceptions=True)
    return [
        fanout_row(
            NATS,
            n,
            groups,
            size,
            count=received,
            elapsed_s=elapsed,
            latency=hist.summary(),
            server=server,
            publish_s=publish_s,
            measured="publish sent → fetched",
        )
    ]


# -- outbox ----------------------------------------------------------------------------------------------


class NatsSink:
    """A drainer sink into JetStream: each batch pipelined with ``publish_async``, the record id as
    ``Nats-Msg-Id`` (JetStream's dedupe, the counterpart of the hub's idempotent event id)."""

    def __init__(self, js: JetStreamContext, subject: str) -> None:
        self.js = js
        self.subject = subject

    async def publish_batch(self, events: Sequence[NewEvent]) -> list[PublishResult]:
        futures = []
        for e in events:
            headers = {"Nats-Msg-Id": e.id or ""}
            payload = msgspec.json.encode(e.payload)
            futures.append(await self.js.publish_async(self.subject, payload, headers=headers))
        acks = await asyncio.gather(*futures)
        return [
            PublishResult(id=e.id or "", seq=int(a.seq), duplicate=bool(a.duplicate))
            for e, a in zip(events, acks, strict=True)
        ]


async def nats_outbox(ctx: NatsContext) -> list[Measurement]:
    """The same outbox drain, into JetStream."""
    o = ctx.options
    n, size = o.events_for("outbox"), scenario_sizes(o, "outbox")
    url = f"sqlite:///{ctx.workdir / 'outbox.db'}"
    await fill_outbox_phase(ctx.tracker, url, table="outbox_nats", topic="bench.nats.outbox", n=n, size=size)
    js = (await ctx.connect()).jetstream()
    watch = ctx.watch()
    published, elapsed = await drain_outbox(
        ctx.tracker, "NATS outbox drain", url, "outbox_nats", NatsSink(js, ctx.subject), n
    )
    server = await stop_watch(watch)
    return [outbox_row(NATS, n, published=published, elapsed_s=elapsed, server=server, sink="JetStream")]


# -- idle ------------------------------------------------------------------------------------------------


async def nats_idle(ctx: NatsContext) -> list[Measurement]:
    """N idle nats-py connections; memory per connection is nats-server's RSS growth / N."""
    n = ctx.options.clients_for("idle")
    if ctx.pid is None:
        raise RuntimeError(f"cannot find the nats-server process listening at {ctx.url} to read its RSS")
    for _ in range(10):
        await ctx.connect()
    await asyncio.sleep(0.5)
    before = rss_bytes(ctx.pid)
    watch = ctx.watch()
    start = time.perf_counter()
    async with ctx.tracker.phase(
        f"NATS: open {n:,} connections", total=n + 10, done=lambda: len(ctx.connections)
    ):
        for first in range(0, n, 50):
            await asyncio.gather(*(ctx.connect() for _ in range(min(50, n - first))))
    elapsed = time.perf_counter() - start
    await asyncio.sleep(1.0)
    after = rss_bytes(ctx.pid)
    server = await stop_watch(watch)
    return [idle_row(NATS, n, before=before, after=after, elapsed_s=elapsed, server=server)]


# -- replay ----------------------------------------------------------------------------------------------


async def nats_replay(ctx: NatsContext) -> list[Measurement]:
    """Read the whole prefilled stream with an ordered consumer (no acks), counting messages."""
    n, size = await _prefill(ctx, "replay")
    reader = (await ctx.connect()).jetstream()
    received = 0
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def on_msg(msg: Msg) -> None:
        nonlocal received
        received += 1
        if received >= n and not done.done():
            done.set_result(None)

    watch = ctx.watch()
    start = time.perf_counter()
    async with ctx.tracker.phase("NATS replay (ordered consumer)", total=n, done=lambda: received):
        sub = await reader.subscribe(ctx.subject, stream=ctx.stream, ordered_consumer=True, cb=on_msg)
        await asyncio.wait_for(done, timeout_for(n))
    elapsed = time.perf_counter() - start
    server = await stop_watch(watch)
    await sub.unsubscribe()
    return [
        replay_row(
            NATS, n, size, count=received, elapsed_s=elapsed, server=server, via="ordered push consumer"
        )
    ]


NATS_SCENARIOS: Final[dict[Scenario, Callable[[NatsContext], Awaitable[list[Measurement]]]]] = {
    "publish": nats_publish,
    "consume": nats_consume,
    "e2e": nats_e2e,
    "fanout": nats_fanout,
    "outbox": nats_outbox,
    "idle": nats_idle,
    "replay": nats_replay,
}
