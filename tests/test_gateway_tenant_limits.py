"""Issue #14, the wire and gateway half, against real hubs: one token must not break, slow or read what
another owns. Out-of-range integers and bad headers are refused by the codec; per-principal caps on
subscriptions and groups; EVENTs queued for a subscription a re-AUTH revoked are not sent; silent and
trickling sockets are closed after the header timeout and connection limits bite with a log line.
(Memory bounds are measured on an ``outboxhub serve`` process: tests/test_gateway_memory.py.)"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import pytest

from outboxhub.app import Hub

BOTH_WS_SERVERS = True  # every test here runs against the aiohttp and the picows WS port


@pytest.mark.parametrize(
    ("op", "fields", "named"),
    [
        ("PUBLISH", {"topic": "t.a", "payload": 1, "opts": {"ts": 2**64 - 1}}, "PUBLISH.opts.ts"),
        ("PUBLISH", {"topic": "t.a", "payload": 1, "opts": {"ts": 2**63}}, "PUBLISH.opts.ts"),
        ("SUBSCRIBE", {"topic": "t.*", "group": "g", "opts": {"ack_timeout_ms": 2**63}}, "ack_timeout_ms"),
        ("SUBSCRIBE", {"topic": "t.*", "group": "g", "opts": {"start": 2**64 - 1}}, "SUBSCRIBE.opts.start"),
        ("SUBSCRIBE", {"topic": "t.*", "group": "g", "opts": {"start": f"seq:{2**70}"}}, "opts.start"),
        ("SUBSCRIBE", {"topic": "t.*", "group": "g", "opts": {"max_in_flight": 2**63}}, "max_in_flight"),
        ("PUBLISH", {"topic": "t.a", "opts": {"headers": {"k\u0000": "v"}}}, "PUBLISH.opts.headers"),
        ("PUBLISH", {"topic": "t.a", "opts": {"headers": {"k": "v\u0000"}}}, "PUBLISH.opts.headers"),
        ("PUBLISH", {"topic": "t.a", "opts": {"headers": {"a.b": "v"}}}, "PUBLISH.opts.headers"),
    ],
)
async def test_values_a_store_cannot_hold_are_bad_requests_and_the_victim_is_unharmed(
    hub: Hub, ws_connect: Any, token: Any, op: str, fields: dict[str, Any], named: str
) -> None:
    """Before: ts 2**64-1 reached SQLite and failed the whole write batch (``internal`` for every
    publish in it); a NUL header key did the same on MongoDB. Now the codec refuses it, naming the field,
    and the victim's publishes in the same moment all succeed."""
    attacker = await ws_connect(hub.ws_url, token=token(sub="attacker"))
    victim = await ws_connect(hub.ws_url, token=token(sub="victim"))
    for i in range(20):
        await attacker.send({"op": op, "rid": f"a{i}", **fields})
        await victim.send({"op": "PUBLISH", "rid": f"v{i}", "topic": "v.t", "payload": i})
    for i in range(20):
        err = await attacker.recv()
        assert err["op"] == "ERR" and err["code"] == "bad_request", err
        assert named in err["msg"] and err["rid"] == f"a{i}", err
        ok = await victim.recv()
        assert ok["op"] == "OK" and ok["rid"] == f"v{i}", ok
    assert await hub.store.count("v.t") == 20


async def test_a_long_rid_is_refused_and_never_echoed(hub: Hub, ws_connect: Any, token: Any) -> None:
    c = await ws_connect(hub.ws_url, token=token())
    await c.send({"op": "PUBLISH", "topic": "a.b", "payload": 1, "rid": "r" * 100_000})
    err = await c.recv()
    assert err["code"] == "bad_request" and err["msg"].startswith("PUBLISH.rid"), err["msg"][:200]
    assert "rid" not in err and len(str(err)) < 1000


async def test_large_frames_before_auth_close_the_connection(hub_factory: Any, ws_connect: Any) -> None:
    """300 frames with a 1 MB rid before AUTH: the first is answered too_large and the connection is
    closed with 1009; nothing of the rest is read (before: each was answered with its 1 MB rid echoed)."""
    hub = await hub_factory(max_auth_frame_bytes=16_384)
    c = await ws_connect(hub.ws_url)
    frame = '{"op":"AUTH","token":"x","rid":"' + "r" * 1_000_000 + '"}'
    for _ in range(300):
        try:
            await c.send(frame)
        except (ConnectionError, RuntimeError):
            break
        if c.ws.closed:
            break
    code = await c.wait_closed(wait_s=30)
    assert code == 1009
    errs = list(c.others)
    assert len(errs) <= 1 and all(e["code"] == "too_large" and "rid" not in e for e in errs), errs
    assert hub.gateway.stats.errors["too_large"] == 1
    # an AUTH of ordinary size still works
    ok = await ws_connect(hub.ws_url)
    await ok.send({"op": "AUTH", "token": "not-a-jwt", "rid": 1})
    assert (await ok.recv())["code"] == "jwt_invalid"


async def test_subscriptions_and_groups_are_capped_per_principal(
    hub_factory: Any, ws_connect: Any, token: Any
) -> None:
    hub = await hub_factory(max_subscriptions_per_principal=3, max_groups_per_principal=2)
    a = await ws_connect(hub.ws_url, token=token(sub="greedy"))
    b = await ws_connect(hub.ws_url, token=token(sub="greedy"))
    assert (await a.request("SUBSCRIBE", topic="idle.1", group="g1"))["op"] == "OK"
    assert (await a.request("SUBSCRIBE", topic="idle.2", group="g2"))["op"] == "OK"
    err = await b.request("SUBSCRIBE", topic="idle.3", group="g3")  # a third group, on another connection
    assert err["code"] == "rate_limited" and "max_groups_per_principal" in err["msg"], err
    assert (await b.request("SUBSCRIBE", topic="idle.1", group="g1"))["op"] == "OK"  # a group it is in
    err = await b.request("SUBSCRIBE", topic="idle.4")  # a fourth subscription
    assert err["code"] == "rate_limited" and "max_subscriptions_per_principal" in err["msg"], err
    # another principal is not affected
    other = await ws_connect(hub.ws_url, token=token(sub="victim"))
    for n in range(2):
        assert (await other.request("SUBSCRIBE", topic=f"v.{n}", group=f"v{n}"))["op"] == "OK"
    assert (await other.request("SUBSCRIBE", topic="v.2"))["op"] == "OK"
    # what a connection held is released when it closes, or unsubscribes
    await a.close()
    for _ in range(100):
        if hub.gateway.quota.subscriptions("greedy") == 1:
            break
        await asyncio.sleep(0.05)
    assert (await b.request("SUBSCRIBE", topic="idle.3", group="g3"))["op"] == "OK"
    assert (await b.request("UNSUBSCRIBE", topic="idle.3", group="g3"))["op"] == "OK"
    assert hub.gateway.quota.groups("greedy") == 1


async def test_events_queued_when_a_re_auth_revokes_the_subscription_are_not_sent(
    hub_factory: Any, ws_connect: Any, token: Any
) -> None:
    hub = await hub_factory(send_queue_max_bytes=256 * 1024 * 1024, max_frame_bytes=1_048_576)
    sub = await ws_connect(hub.ws_url, token=token(sub="s", scopes=["subscribe:**"]))
    assert (await sub.request("SUBSCRIBE", topic="sec.*"))["op"] == "OK"
    pub = await ws_connect(hub.ws_url, token=token(sub="p"))
    n = 64
    payload = "p" * 300_000  # 64 x 300 kB = 19 MB: more than the socket buffers hold
    for i in range(n):
        await pub.send({"op": "PUBLISH", "topic": "sec.x", "payload": payload, "rid": i})
    for _ in range(n):
        assert (await pub.recv())["op"] == "OK"

    async def queued() -> int:
        conn = next(c for c in hub.gateway.connections if c.principal and c.principal.sub == "s")
        return conn.out.events

    for _ in range(400):  # wait (bounded) until the hub has queued what the socket could not take
        if await queued() > 0 and hub.gateway.stats.events_out == n:
            break
        await asyncio.sleep(0.05)
    assert await queued() > 0, "nothing was queued: the test cannot tell"
    narrowed = token(sub="s", scopes=["subscribe:pub.*"])
    await sub.send({"op": "AUTH", "token": narrowed, "rid": "reauth"})
    received = 0
    while True:
        frame = await sub.recv_any(wait_s=30)
        if frame.get("op") == "EVENT":
            received += 1
            continue
        assert frame["op"] == "OK" and frame["rid"] == "reauth", frame
        break
    assert received < n, "every queued EVENT was still sent after the re-AUTH revoked the subscription"
    assert not sub.events


async def test_silent_and_trickling_sockets_are_closed_and_do_not_block_others(
    hub_factory: Any, ws_connect: Any, token: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """150 sockets that never finish their headers (silent, or trickling a byte at a time) on both
    ports: /healthz and a new WebSocket still work, and every one of them is closed after
    ``header_timeout_s`` (before: they stayed open for an hour, aiohttp's default)."""
    hub = await hub_factory(header_timeout_s=1.0)
    caplog.set_level(logging.WARNING, logger="outboxhub.gateway.listener")
    ports = [hub.ws_port, hub.ops_port]
    socks: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    for i in range(150):
        socks.append(await asyncio.open_connection("127.0.0.1", ports[i % 2]))
    stop = asyncio.Event()

    async def trickle(writer: asyncio.StreamWriter) -> None:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        while not stop.is_set() and not writer.is_closing():
            try:
                writer.write(b"X")
                await writer.drain()
            except ConnectionError:
                return
            await asyncio.sleep(0.1)

    tricklers = [asyncio.create_task(trickle(w)) for _, w in socks[::2]]
    try:
        async with aiohttp.ClientSession() as http, http.get(f"{hub.ops_url}healthz") as resp:
            assert resp.status == 200
        c = await ws_connect(hub.ws_url, token=token())
        assert (await c.request("PUBLISH", topic="still.up", payload=1))["op"] == "OK"

        async def closed(reader: asyncio.StreamReader) -> bool:
            try:
                while await reader.read(65536):  # a 408 or nothing, then EOF
                    pass
            except ConnectionError:
                pass
            return True

        results = await asyncio.wait_for(asyncio.gather(*(closed(r) for r, _ in socks)), 60)
        assert all(results)
    finally:
        stop.set()
        for t in tricklers:
            t.cancel()
        for _, w in socks:
            w.close()
    assert (await c.request("PUBLISH", topic="still.up", payload=2))["op"] == "OK"
    for _ in range(100):  # connection_lost runs just after the peer saw EOF
        if hub.limiters["ws"].timed_out + hub.limiters["ops"].timed_out >= 150:
            break
        await asyncio.sleep(0.05)
    assert hub.limiters["ws"].timed_out + hub.limiters["ops"].timed_out == 150
    assert any("header_timeout_s" in r.getMessage() for r in caplog.records), caplog.text


async def test_connection_limits_refuse_with_a_log_line(
    hub_factory: Any, ws_connect: Any, token: Any, caplog: pytest.LogCaptureFixture
) -> None:
    hub = await hub_factory(max_connections_per_ip=5, max_connections=8)
    caplog.set_level(logging.WARNING, logger="outboxhub.gateway.listener")
    held = [await asyncio.open_connection("127.0.0.1", hub.ws_port) for _ in range(5)]
    reader, writer = await asyncio.open_connection("127.0.0.1", hub.ws_port)
    assert await asyncio.wait_for(reader.read(100), 10) == b""  # the sixth from this IP: closed at once
    writer.close()
    assert any("max_connections_per_ip 5" in r.getMessage() for r in caplog.records), caplog.text
    assert hub.limiters["ws"].refused >= 1
    # the ops port has its own count: /healthz works while the WS port is full for this IP
    async with aiohttp.ClientSession() as http, http.get(f"{hub.ops_url}healthz") as resp:
        assert resp.status == 200
    for _, w in held:
        w.close()
    for _ in range(200):
        if hub.limiters["ws"].open == 0:
            break
        await asyncio.sleep(0.05)
    assert hub.limiters["ws"].open == 0
    assert await ws_connect(hub.ws_url, token=token())  # room again
