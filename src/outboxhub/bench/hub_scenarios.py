"""The scenarios against the hub (:data:`HUB_SCENARIOS`); :mod:`outboxhub.bench.runner` runs them.

Every workload talks raw WebSocket through :class:`~outboxhub.bench.wsclient.RawClient` (``--sdk`` adds
publish rows through :class:`~outboxhub.client.HubClient`). Server CPU and RSS are those of the hub
subprocess over the measured window. Events a scenario reads back (consume, replay) are written before
the hub starts, straight through the store (or over WebSocket when the hub is a ``--url``), so the
measured window holds only the workload itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

import aiohttp

from outboxhub.bench.cases import (
    PublishCase,
    paced,
    publish_cases,
    scenario_sizes,
    text_payload,
)
from outboxhub.bench.hubproc import HubTarget
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
from outboxhub.bench.results import HUB, SDK, Measurement
from outboxhub.bench.stats import LatencyHistogram
from outboxhub.bench.wsclient import RawClient, connect_many
from outboxhub.ids import new_id, now_ms
from outboxhub.model import NewEvent, PublishResult
from outboxhub.protocol.codec import (
    EventFrame,
    Publish,
    PublishOpts,
    Subscribe,
    SubscribeOpts,
    encode_client_frame,
)
from outboxhub.store import open_store

__all__ = ["HUB_SCENARIOS", "PREFILLED", "HubContext", "WsSink", "prefill_store", "prefill_ws"]

_PREFILL_BATCH: Final = 5_000
_E2E_PAD_OVERHEAD: Final = 36  # {"t":<19 digits>,"m":1,"p":""} around the padding


@dataclasses.dataclass(kw_only=True)
class HubContext:
    """What a hub scenario works with."""

    options: BenchOptions
    target: HubTarget
    tracker: Tracker
    session: aiohttp.ClientSession
    run_id: str
    workdir: Path

    def topic(self, name: str) -> str:
        """A topic of this run (runs never see each other's events, even on a shared store)."""
        return f"bench.{self.run_id}.{name}"

    def watch(self) -> ProcessWatch | None:
        """A started watch on the hub process, or None when its pid is unknown."""
        return start_watch(self.target.pid)

    async def connect(self, n: int = 1, *, window: int = 1) -> list[RawClient]:
        return await connect_many(self.target.ws_url, self.target.token, n, window=window)


async def _close(clients: list[RawClient]) -> None:
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


def _check_errors(clients: list[RawClient]) -> None:
    errors = [e for c in clients for e in c.errors]
    if errors:
        raise RuntimeError(f"the hub refused {len(errors)} requests; first: {errors[0]}")


def _merged(clients: list[RawClient]) -> LatencyHistogram:
    hist = LatencyHistogram()
    for c in clients:
        hist.merge(c.latency)
    return hist


# -- prefill --------------------------------------------------------------------------------------------


async def prefill_store(store_url: str, topic: str, count: int, size: int, tracker: Tracker) -> None:
    """Write ``count`` events to ``topic`` straight through the store, in batches (before the hub starts)."""
    store = await open_store(store_url)
    done = 0
    payload = text_payload(size)
    try:
        async with tracker.phase(f"prefill {count:,} events (store)", total=count, done=lambda: done):
            for start in range(0, count, _PREFILL_BATCH):
                n = min(_PREFILL_BATCH, count - start)
                ts = now_ms()
                await store.publish_batch(
                    [NewEvent(topic=topic, payload=payload, id=new_id(), ts=ts) for _ in range(n)]
                )
                done += n
    finally:
        await store.close()


async def prefill_ws(ctx: HubContext, topic: str, count: int, size: int) -> None:
    """Write ``count`` events to ``topic`` over WebSocket (pipelined), for a hub given by ``--url``."""
    frame = encode_client_frame(Publish(topic=topic, payload=text_payload(size)))
    clients = await ctx.connect(4, window=256)
    sent = 0

    async def one(client: RawClient, share: int) -> None:
        nonlocal sent
        for _ in range(share):
            if client.in_flight >= client.window:
                await client.wait_room()
            await client.send(frame)
            sent += 1
        await client.drain()

    try:
        async with ctx.tracker.phase(f"prefill {count:,} events (WebSocket)", total=count, done=lambda: sent):
            shares = [count // 4 + (1 if i < count % 4 else 0) for i in range(4)]
            await asyncio.gather(*(one(c, s) for c, s in zip(clients, shares, strict=True)))
        _check_errors(clients)
    finally:
        await _close(clients)


# -- publish --------------------------------------------------------------------------------------------


async def _pump(clients: list[RawClient], frame: bytes, seconds: float) -> float:
    """Every client keeps up to its window of ``frame`` publishes in flight for ``seconds``; return the
    time until the last reply."""
    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    stop_at = loop.time() + seconds

    async def one(client: RawClient) -> None:
        while loop.time() < stop_at:
            if client.in_flight >= client.window:
                await client.wait_room()
            await client.send(frame)
        await client.drain()

    await asyncio.gather(*(one(c) for c in clients))
    return time.perf_counter() - start


async def _publish_raw(ctx: HubContext, case: PublishCase) -> Measurement:
    o = ctx.options
    frame = encode_client_frame(Publish(topic=ctx.topic("publish"), payload=text_payload(case.size)))
    clients = await ctx.connect(case.clients, window=case.window)
    try:
        if o.warmup_s:
            async with ctx.tracker.phase(f"warm-up {case.name}", total=o.warmup_s):
                await _pump(clients, frame, o.warmup_s)
        for c in clients:
            c.latency = LatencyHistogram()
            c.ok = 0
        watch = ctx.watch()
        async with ctx.tracker.phase(f"outboxhub {case.name}", total=o.duration_s):
            elapsed = await _pump(clients, frame, o.duration_s)
        server = await stop_watch(watch)
        _check_errors(clients)
    finally:
        await _close(clients)
    return publish_row(
        HUB,
        case,
        count=sum(c.ok for c in clients),
        elapsed_s=elapsed,
        latency=_merged(clients).summary(),
        server=server,
        client="raw WebSocket",
    )


async def _publish_sdk(ctx: HubContext, case: PublishCase) -> Measurement:
    from outboxhub.client import HubClient

    o = ctx.options
    topic = ctx.topic("publish")
    payload = text_payload(case.size)
    hubs = [
        HubClient(ctx.target.ws_url, ctx.target.token, reconnect=False, max_in_flight=case.window)
        for _ in range(case.clients)
    ]
    hist = LatencyHistogram()
    count = 0
    loop = asyncio.get_running_loop()

    async def worker(hub: HubClient, stop_at: float, record: bool) -> None:
        nonlocal count
        while loop.time() < stop_at:
            t0 = time.perf_counter_ns()
            await hub.publish(topic, payload)
            if record:
                hist.record_ns(time.perf_counter_ns() - t0)
                count += 1

    async def pump(seconds: float, record: bool) -> float:
        start = time.perf_counter()
        stop_at = loop.time() + seconds
        await asyncio.gather(*(worker(h, stop_at, record) for h in hubs for _ in range(case.window)))
        return time.perf_counter() - start

    try:
        for hub in hubs:
            await hub.connect()
        if o.warmup_s:
            async with ctx.tracker.phase(f"warm-up {case.name} (SDK)", total=o.warmup_s):
                await pump(o.warmup_s, False)
        watch = ctx.watch()
        async with ctx.tracker.phase(f"outboxhub SDK {case.name}", total=o.duration_s):
            elapsed = await pump(o.duration_s, True)
        server = await stop_watch(watch)
    finally:
        await asyncio.gather(*(h.close() for h in hubs), return_exceptions=True)
    return publish_row(
        SDK, case, count=count, elapsed_s=elapsed, latency=hist.summary(), server=server, client="HubClient"
    )


async def hub_publish(ctx: HubContext) -> list[Measurement]:
    """Confirmed publish, one at a time and pipelined, per payload size: OKs/s and publish → OK latency."""
    out: list[Measurement] = []
    for case in publish_cases(ctx.options):
        out.append(await _publish_raw(ctx, case))
        if ctx.options.sdk:
            out.append(await _publish_sdk(ctx, case))
    return out


# -- consume ---------------------------------------------------------------------------------------------


async def hub_consume(ctx: HubContext) -> list[Measurement]:
    """``--clients`` members (default 1) of one group read the prefilled events from the earliest and ACK
    each one; the members compete, so the events are split between them."""
    o = ctx.options
    n, size, members = o.events_for("consume"), scenario_sizes(o, "consume"), o.clients_for("consume")
    clients = await ctx.connect(members)
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    received = 0
    per_member = [0] * members

    def handler(member: int) -> Callable[[EventFrame, int], None]:
        def on_event(frame: EventFrame, now_ns: int) -> None:
            nonlocal received
            received += 1
            per_member[member] += 1
            if received >= n and not done.done():
                done.set_result(None)

        return on_event

    for i, client in enumerate(clients):
        client.on_event = handler(i)
    try:
        watch = ctx.watch()
        start = time.perf_counter()
        subscribe = Subscribe(
            topic=ctx.topic("consume"), group="bench-consume", opts=SubscribeOpts(start="earliest")
        )
        async with ctx.tracker.phase("outboxhub consume", total=n, done=lambda: received):
            await asyncio.gather(*(c.request(subscribe) for c in clients))
            await asyncio.wait_for(done, timeout_for(n))
        elapsed = time.perf_counter() - start
        server = await stop_watch(watch)
    finally:
        await _close(clients)
    return [
        consume_row(HUB, n, size, count=received, elapsed_s=elapsed, server=server, per_member=per_member)
    ]


# -- end-to-end ------------------------------------------------------------------------------------------


async def _e2e_case(ctx: HubContext, rate: float, size: int) -> Measurement:
    o = ctx.options
    topic = ctx.topic(f"e2e{int(rate)}")
    pad = text_payload(max(size - _E2E_PAD_OVERHEAD, 2))
    count = max(1, int(rate * o.duration_s))
    publishers = o.clients_for("e2e")
    sub, *pubs = await ctx.connect(1 + publishers, window=1)
    hist = LatencyHistogram()
    received = 0
    last_ns = 0
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_event(frame: EventFrame, now_ns: int) -> None:
        nonlocal received, last_ns
        payload = frame.event.payload
        if payload["m"]:
            hist.record_ns(now_ns - payload["t"])
            received += 1
            last_ns = now_ns
            if received >= count and not done.done():
                done.set_result(None)

    async def send(i: int, measured: int) -> None:
        body = {"t": time.perf_counter_ns(), "m": measured, "p": pad}
        await pubs[i % publishers].send(encode_client_frame(Publish(topic=topic, payload=body)))

    async def drain() -> None:
        await asyncio.gather(*(p.drain() for p in pubs))

    sub.on_event = on_event
    try:
        await sub.request(Subscribe(topic=topic, group="bench-e2e"))
        if o.warmup_s:
            async with ctx.tracker.phase(f"warm-up e2e @ {rate:,.0f}/s", total=o.warmup_s):
                await paced(rate, int(rate * o.warmup_s), lambda i: send(i, 0))
            await drain()
        for pub in pubs:
            pub.latency = LatencyHistogram()
        watch = ctx.watch()
        start_ns = time.perf_counter_ns()
        async with ctx.tracker.phase(f"outboxhub e2e @ {rate:,.0f}/s", total=count, done=lambda: received):
            lag = await paced(rate, count, lambda i: send(i, 1))
            send_s = (time.perf_counter_ns() - start_ns) / 1e9
            await asyncio.wait_for(done, timeout_for(count))
        await drain()
        server = await stop_watch(watch)
        _check_errors(pubs)
    finally:
        await _close([sub, *pubs])
    summary = hist.summary()
    assert summary is not None
    return e2e_row(
        HUB,
        rate=rate,
        size=size,
        count=count,
        received=received,
        latency=summary,
        span_ns=last_ns - start_ns,
        send_s=send_s,
        lag_s=lag,
        ok_latency=_merged(pubs).summary(),
        server=server,
        publishers=publishers,
    )


async def hub_e2e(ctx: HubContext) -> list[Measurement]:
    """Publish at fixed rates (``--clients`` publishers take turns, default 1); a group member ACKs each
    EVENT; latency is publish sent → EVENT received."""
    size = scenario_sizes(ctx.options, "e2e")
    return [await _e2e_case(ctx, rate, size) for rate in ctx.options.rates]


# -- fan-out ---------------------------------------------------------------------------------------------


async def hub_fanout(ctx: HubContext) -> list[Measurement]:
    """One pipelined publisher, ``--groups`` groups of one member each; every group gets every event."""
    o = ctx.options
    n, groups, size = o.events_for("fanout"), o.groups, scenario_sizes(o, "fanout")
    topic = ctx.topic("fanout")
    pad = text_payload(max(size - _E2E_PAD_OVERHEAD, 2))
    subs = await ctx.connect(groups)
    [pub] = await ctx.connect(window=o.window)
    hist = LatencyHistogram()
    received = 0
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_event(frame: EventFrame, now_ns: int) -> None:
        nonlocal received
        hist.record_ns(now_ns - frame.event.payload["t"])
        received += 1
        if received >= n * groups and not done.done():
            done.set_result(None)

    try:
        for i, sub in enumerate(subs):
            sub.on_event = on_event
            await sub.request(Subscribe(topic=topic, group=f"bench-fan{i}"))
        watch = ctx.watch()
        start = time.perf_counter()
        async with ctx.tracker.phase(
            f"outboxhub fan-out → {groups}", total=n * groups, done=lambda: received
        ):
            for _ in range(n):
                if pub.in_flight >= pub.window:
                    await pub.wait_room()
                body = {"t": time.perf_counter_ns(), "m": 1, "p": pad}
                await pub.send(encode_client_frame(Publish(topic=topic, payload=body)))
            await pub.drain()
            publish_s = time.perf_counter() - start
            await asyncio.wait_for(done, timeout_for(n * groups))
        elapsed = time.perf_counter() - start
        server = await stop_watch(watch)
        _check_errors([pub])
    finally:
        await _close([*subs, pub])
    return [
        fanout_row(
            HUB,
            n,
            groups,
            size,
            count=received,
            elapsed_s=elapsed,
            latency=hist.summary(),
            server=server,
            publish_s=publish_s,
            measured="publish sent → EVENT received",
        )
    ]


# -- outbox ----------------------------------------------------------------------------------------------


class WsSink:
    """A drainer sink that publishes each batch over one WebSocket, pipelined, with the record id as the
    event id (what a remote drainer does)."""

    def __init__(self, client: RawClient) -> None:
        self.client = client

    async def publish_batch(self, events: list[NewEvent]) -> list[PublishResult]:
        futures = []
        for e in events:
            opts = PublishOpts(id=e.id, key=e.key, headers=e.headers, ts=e.ts)
            futures.append(
                await self.client.submit(
                    encode_client_frame(Publish(topic=e.topic, payload=e.payload, opts=opts))
                )
            )
        oks = await asyncio.gather(*futures)
        return [
            PublishResult(
                id=ok.fields["id"], seq=ok.fields["seq"], duplicate=bool(ok.fields.get("duplicate"))
            )
            for ok in oks
        ]


async def hub_outbox(ctx: HubContext) -> list[Measurement]:
    """Records added to an SQLite outbox by the application are drained into the hub over WebSocket."""
    o = ctx.options
    n, size = o.events_for("outbox"), scenario_sizes(o, "outbox")
    url = f"sqlite:///{ctx.workdir / 'outbox.db'}"
    await fill_outbox_phase(ctx.tracker, url, table="outbox_hub", topic=ctx.topic("outbox"), n=n, size=size)
    [client] = await ctx.connect(window=1)
    try:
        watch = ctx.watch()
        published, elapsed = await drain_outbox(
            ctx.tracker, "outboxhub outbox drain", url, "outbox_hub", WsSink(client), n
        )
        server = await stop_watch(watch)
    finally:
        await _close([client])
    return [outbox_row(HUB, n, published=published, elapsed_s=elapsed, server=server, sink="WebSocket")]


# -- idle connections --------------------------------------------------------------------------------------


async def hub_idle(ctx: HubContext) -> list[Measurement]:
    """Open N authenticated, idle connections; memory per connection is the hub's RSS growth / N."""
    n = ctx.options.clients_for("idle")
    pid = ctx.target.pid
    if pid is None:
        raise RuntimeError(
            "the idle scenario reads the hub's RSS: run it on a hub it starts, or a local --url"
        )
    warm = await ctx.connect(10)
    clients: list[RawClient] = []
    try:
        await asyncio.sleep(0.5)
        before = rss_bytes(pid)
        watch = ctx.watch()
        start = time.perf_counter()
        async with ctx.tracker.phase(
            f"outboxhub: open {n:,} connections", total=n, done=lambda: len(clients)
        ):
            await connect_many(ctx.target.ws_url, ctx.target.token, n, into=clients)
        elapsed = time.perf_counter() - start
        await asyncio.sleep(1.0)
        after = rss_bytes(pid)
        server = await stop_watch(watch)
    finally:
        await _close([*clients, *warm])
    return [idle_row(HUB, n, before=before, after=after, elapsed_s=elapsed, server=server)]


# -- replay ----------------------------------------------------------------------------------------------


async def hub_replay(ctx: HubContext) -> list[Measurement]:
    """``GET /replay`` of the prefilled topic, read to the end as NDJSON (lines counted, not parsed)."""
    o = ctx.options
    n, size = o.events_for("replay"), scenario_sizes(o, "replay")
    if ctx.target.ops_url is None:
        raise RuntimeError("the replay scenario needs the ops URL of the hub: pass --ops-url with --url")
    url = ctx.target.ops_url.rstrip("/") + "/replay"
    headers = {"Authorization": f"Bearer {ctx.target.token}"}
    lines = 0
    watch = ctx.watch()
    start = time.perf_counter()
    params = {"pattern": ctx.topic("replay")}
    async with (
        ctx.tracker.phase("outboxhub replay (GET /replay)", total=n, done=lambda: lines),
        ctx.session.get(url, params=params, headers=headers) as resp,
    ):
        if resp.status != 200:
            raise RuntimeError(f"GET /replay answered {resp.status}: {(await resp.text())[:300]}")
        async for chunk in resp.content.iter_chunked(1 << 16):
            lines += chunk.count(b"\n")
    elapsed = time.perf_counter() - start
    server = await stop_watch(watch)
    if lines != n:
        raise RuntimeError(f"GET /replay returned {lines:,} events, expected {n:,}")
    return [
        replay_row(
            HUB, n, size, count=lines, elapsed_s=elapsed, server=server, via="ops API GET /replay (NDJSON)"
        )
    ]


HUB_SCENARIOS: Final[dict[Scenario, Callable[[HubContext], Awaitable[list[Measurement]]]]] = {
    "publish": hub_publish,
    "consume": hub_consume,
    "e2e": hub_e2e,
    "fanout": hub_fanout,
    "outbox": hub_outbox,
    "idle": hub_idle,
    "replay": hub_replay,
}

PREFILLED: Final[tuple[Scenario, ...]] = ("consume", "replay")
"""Scenarios whose events are written before the hub starts (:func:`prefill_store`)."""
