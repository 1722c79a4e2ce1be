"""Bad input and limits over real sockets: the malformed-frame corpus, frame sizes, binary frames, the
publish rate, subscriptions per connection, allowed origins, slow consumers."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from outboxhub.app import Hub

BOTH_WS_SERVERS = True  # every test here runs against the aiohttp and the picows WS port

CORPUS = json.loads((Path(__file__).parent / "corpus" / "frames.json").read_text())
BAD_FRAMES = [entry for entry in CORPUS if entry["expect"] != "ok"]
CLOSING_CODES = {"no_token": 4001, "jwt_invalid": 4001, "token_expired": 4003}


async def test_malformed_frame_corpus_over_a_real_socket(hub: Hub, ws_connect: Any, token: Any) -> None:
    """Every bad frame gets ERR with the corpus's code (and its rid when readable); the connection and the
    hub keep serving."""
    assert BAD_FRAMES, "tests/corpus/frames.json has no bad frames"
    c = await ws_connect(hub.ws_url, token=token())
    bystander = await ws_connect(hub.ws_url, token=token())
    for entry in BAD_FRAMES:
        if entry["expect"] in CLOSING_CODES:
            continue
        await c.send(entry["frame"])
        err = await c.recv()
        assert err["op"] == "ERR", (entry["name"], err)
        assert err["code"] == entry["expect"], (entry["name"], err)
        assert err["msg"], entry["name"]
        if "rid" in entry:
            assert err.get("rid") == entry["rid"], (entry["name"], err)
        else:
            assert "rid" not in err, (entry["name"], err)
    assert (await c.request("PUBLISH", topic="after.corpus", payload=1))["op"] == "OK"
    assert (await bystander.request("PUBLISH", topic="after.corpus", payload=2))["op"] == "OK"


async def test_corpus_frames_that_fail_auth_close_the_connection(hub: Hub, ws_connect: Any) -> None:
    closing = [e for e in BAD_FRAMES if e["expect"] in CLOSING_CODES]
    assert closing, "expected AUTH-without-token frames in the corpus"
    for entry in closing:
        c = await ws_connect(hub.ws_url)
        await c.send(entry["frame"])
        err = await c.recv()
        assert err["code"] == entry["expect"], (entry["name"], err)
        assert await c.wait_closed() == CLOSING_CODES[entry["expect"]], entry["name"]


async def test_malformed_frames_before_auth_are_bad_requests(hub: Hub, ws_connect: Any) -> None:
    c = await ws_connect(hub.ws_url)
    await c.send("{not json")
    assert (await c.recv())["code"] == "bad_request"
    await c.send({"op": "PUBLISH", "topic": "a.b", "payload": 1})
    assert (await c.recv())["code"] == "not_authenticated"


async def test_binary_frames_are_bad_requests(hub: Hub, ws_connect: Any, token: Any) -> None:
    c = await ws_connect(hub.ws_url, token=token())
    await c.send(b'{"op":"PUBLISH","topic":"a.b","payload":1}')
    err = await c.recv()
    assert err["code"] == "bad_request" and "binary" in err["msg"]
    assert (await c.request("PUBLISH", topic="a.b", payload=1))["op"] == "OK"


def _publish_of(size: int) -> str:
    """A PUBLISH frame of exactly ``size`` bytes."""
    head, tail = '{"op":"PUBLISH","topic":"a.b","payload":"', '"}'
    frame = head + "x" * (size - len(head) - len(tail)) + tail
    assert len(frame.encode()) == size
    return frame


async def test_oversize_frames(hub_factory: Any, ws_connect: Any, token: Any) -> None:
    """README, --max-frame-bytes: above the limit ERR too_large and the connection stays; from twice the
    limit the frame is refused unread and the connection closes with 1009, without an ERR."""
    hub = await hub_factory(max_frame_bytes=4096)
    c = await ws_connect(hub.ws_url, token=token())
    other = await ws_connect(hub.ws_url, token=token())
    big = json.dumps({"op": "PUBLISH", "topic": "a.b", "payload": "x" * 5000, "rid": 1})
    await c.send(big)
    err = await c.recv()
    assert err["code"] == "too_large" and "4096" in err["msg"], err
    assert (await c.request("PUBLISH", topic="a.b", payload="x" * 3000))["op"] == "OK"
    for size in (4096, 4097, 2 * 4096 - 1):  # the limit itself is accepted; up to 2x - 1: ERR, stays open
        await c.send(_publish_of(size))
        reply = await c.recv()
        assert reply["op"] == ("OK" if size <= 4096 else "ERR"), (size, reply)
        assert size <= 4096 or (reply["code"] == "too_large" and f"{size} bytes" in reply["msg"]), reply
    # from twice the limit the hub does not buffer the frame at all: close 1009 (message too big), no ERR
    await c.send(_publish_of(2 * 4096))
    assert await c.wait_closed() == 1009
    assert not c.others and not c.events
    assert (await other.request("PUBLISH", topic="a.b", payload=1))["op"] == "OK"


async def test_publish_rate_limit(hub_factory: Any, ws_connect: Any, token: Any) -> None:
    hub = await hub_factory(publish_rate=0.001, publish_burst=3)
    c = await ws_connect(hub.ws_url, token=token())
    for i in range(5):
        await c.send({"op": "PUBLISH", "topic": "r.t", "payload": i, "rid": i})
    replies = [await c.recv() for _ in range(5)]
    assert [r["rid"] for r in replies] == [0, 1, 2, 3, 4]
    assert [r["op"] for r in replies[:3]] == ["OK", "OK", "OK"]
    assert [r.get("code") for r in replies[3:]] == ["rate_limited", "rate_limited"]
    # the limit is per connection
    other = await ws_connect(hub.ws_url, token=token())
    assert (await other.request("PUBLISH", topic="r.t", payload=9))["op"] == "OK"
    assert await hub.store.count("r.t") == 4


async def test_max_subscriptions(hub_factory: Any, ws_connect: Any, token: Any) -> None:
    hub = await hub_factory(max_subscriptions=2)
    c = await ws_connect(hub.ws_url, token=token())
    assert (await c.request("SUBSCRIBE", topic="a.*", group="g"))["op"] == "OK"
    assert (await c.request("SUBSCRIBE", topic="b.*"))["op"] == "OK"
    assert (await c.request("SUBSCRIBE", topic="a.*", group="g"))["op"] == "OK"  # same one again
    err = await c.request("SUBSCRIBE", topic="c.*", group="g")
    assert err["code"] == "rate_limited" and "max_subscriptions" in err["msg"], err
    assert (await c.request("UNSUBSCRIBE", topic="b.*"))["op"] == "OK"
    assert (await c.request("SUBSCRIBE", topic="c.*", group="g"))["op"] == "OK"


async def test_allowed_origins(hub_factory: Any, ws_connect: Any, token: Any) -> None:
    hub = await hub_factory(allowed_origins=["https://app.example"])
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await ws_connect(hub.ws_url, headers={"Origin": "https://evil.example"})
    assert refused.value.status == 403
    assert await ws_connect(hub.ws_url, token=token(), headers={"Origin": "https://app.example"})
    assert await ws_connect(hub.ws_url, token=token())  # no Origin: not a browser
    # the dashboard's own origin may use /ws on the ops port
    same = f"http://127.0.0.1:{hub.ops_port}"
    assert await ws_connect(f"{hub.ops_url}ws", token=token(), headers={"Origin": same})


async def test_ops_port_serves_the_gateway_and_healthz(hub: Hub, ws_connect: Any, token: Any) -> None:
    c = await ws_connect(f"{hub.ops_url}ws", token=token())
    assert (await c.request("PUBLISH", topic="via.ops", payload=1))["op"] == "OK"
    async with aiohttp.ClientSession() as http, http.get(f"{hub.ops_url}healthz") as resp:
        assert resp.status == 200
        assert await resp.json() == {"status": "ok"}


async def test_healthz_is_503_when_the_store_is_down(hub: Hub) -> None:
    await hub.store.close()
    async with aiohttp.ClientSession() as http, http.get(f"{hub.ops_url}healthz") as resp:
        assert resp.status == 503
        assert (await resp.json())["status"] == "unavailable"


async def test_a_slow_consumer_does_not_hold_back_others(
    hub_factory: Any, ws_connect: Any, token: Any
) -> None:
    """A subscriber that stops reading fills its bounded send queue: the hub stops delivering to it
    (instead of buffering) while a fast subscriber gets everything; once it reads again it gets the rest."""
    hub = await hub_factory(send_queue_max=4)
    slow = await ws_connect(hub.ws_url, token=token())
    fast = await ws_connect(hub.ws_url, token=token())
    assert (await slow.request("SUBSCRIBE", topic="big.*", group="slow"))["op"] == "OK"
    assert (await fast.request("SUBSCRIBE", topic="big.*", group="fast"))["op"] == "OK"
    pub = await ws_connect(hub.ws_url, token=token())
    n = 48
    payload = "p" * 300_000  # 48 x 300 kB = 14 MB: far more than the socket buffers hold
    for i in range(n):
        await pub.send({"op": "PUBLISH", "topic": "big.x", "payload": payload, "rid": i})
    for _ in range(n):
        assert (await pub.recv())["op"] == "OK"

    for _ in range(n):
        ev = await fast.next_event()
        await fast.send({"op": "ACK", "topic": "big.*", "group": "fast", "id": ev["event"]["id"]})
    assert hub.gateway.stats.events_refused > 0, "the slow consumer's queue never filled"

    seen = set()
    while len(seen) < n:  # now the slow one reads: paused deliveries resume
        ev = await slow.next_event(wait_s=15)
        seen.add(ev["event"]["id"])
        await slow.send({"op": "ACK", "topic": "big.*", "group": "slow", "id": ev["event"]["id"]})
    assert len(seen) == n


async def test_a_paused_member_s_claims_time_out_to_another_member_of_its_group(
    hub_factory: Any, ws_connect: Any, token: Any
) -> None:
    """A group member that stops reading fills its send queue and is paused; the claims it holds (in its
    queue, its socket, or claimed but not yet sent) time out after its ack_timeout_ms and go to another
    member of the same group, which ends up with every event."""
    hub = await hub_factory(send_queue_max=4)
    stalled = await ws_connect(hub.ws_url, token=token())
    sub = {"topic": "work.*", "group": "workers"}
    short = {"ack_timeout_ms": 1000}
    assert (await stalled.request("SUBSCRIBE", **sub, opts=short))["op"] == "OK"
    pub = await ws_connect(hub.ws_url, token=token())
    n = 48
    payload = "p" * 300_000  # 48 x 300 kB = 14 MB: far more than the socket buffers hold
    for i in range(n):
        await pub.send({"op": "PUBLISH", "topic": "work.item", "payload": payload, "rid": i})
    ids = [(await pub.recv())["id"] for _ in range(n)]

    async def stalled_is_paused() -> bool:
        return hub.gateway.stats.events_refused > 0  # only the stalled member is subscribed so far

    await _until(stalled_is_paused, "the stalled member's send queue to fill")

    # The second member keeps the default 30 s ack timeout and acks at once, so any redelivery it gets
    # comes from the stalled member's expired claims, not its own.
    worker = await ws_connect(hub.ws_url, token=token())
    assert (await worker.request("SUBSCRIBE", **sub, opts={"max_in_flight": 2}))["op"] == "OK"
    attempts: dict[str, int] = {}
    while len(attempts) < n:
        ev = await worker.next_event(wait_s=30)
        attempts.setdefault(ev["event"]["id"], ev["ctx"]["attempt"])
        await worker.send({"op": "ACK", **sub, "id": ev["event"]["id"]})
    assert sorted(attempts) == sorted(ids)
    assert any(attempt > 1 for attempt in attempts.values()), (
        "nothing was redelivered from the stalled member"
    )

    # Now the stalled member reads what the hub had sent it: each of those deliveries reached the worker
    # again, as a later attempt. (The reply to this request follows every EVENT queued before it.)
    assert (await stalled.request("UNSUBSCRIBE", **sub))["op"] == "OK"
    held = [(ev["event"]["id"], ev["ctx"]["attempt"]) for ev in stalled.events]
    assert held, "the stalled member was sent nothing"
    for event_id, attempt in held:
        assert attempts[event_id] > attempt, (event_id, attempt, attempts[event_id])
    assert await hub.store.count("work.*") == n


async def _until(cond: Any, what: str, wait_s: float = 20.0) -> None:
    """Wait (bounded) until ``await cond()`` is true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while not await cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def test_store_down_is_answered_with_unavailable(hub: Hub, ws_connect: Any, token: Any) -> None:
    c = await ws_connect(hub.ws_url, token=token())
    assert (await c.request("SUBSCRIBE", topic="a.*", group="g"))["op"] == "OK"
    await hub.store.close()  # the store refuses everything from now on (StoreUnavailable)
    for _ in range(2):  # the connection stays up and keeps answering
        err = await c.request("PUBLISH", topic="a.b", payload=1)
        assert err["op"] == "ERR" and err["code"] == "unavailable" and "store" in err["msg"], err
    err = await c.request("SUBSCRIBE", topic="b.*", group="g")
    assert err["code"] == "unavailable", err
    err = await c.request("ACK", topic="a.*", group="g", id="e1")
    assert err["code"] == "unavailable", err
    await asyncio.sleep(0)
    assert not c.ws.closed


async def test_plain_http_on_the_gateway_gets_426(hub: Hub) -> None:
    async with aiohttp.ClientSession() as http, http.get(hub.ws_url.replace("ws://", "http://")) as resp:
        assert resp.status == 426
        assert "WebSocket" in await resp.text()


async def test_close_does_not_hang_on_a_peer_that_stopped_reading(
    hub_factory: Any, ws_connect: Any, token: Any
) -> None:
    hub = await hub_factory(send_queue_max=4)
    hub.gateway.close_timeout_s = 0.3
    stuck = await ws_connect(hub.ws_url, token=token())
    assert (await stuck.request("SUBSCRIBE", topic="big.*", group="g"))["op"] == "OK"
    pub = await ws_connect(hub.ws_url, token=token())
    for i in range(48):
        await pub.send({"op": "PUBLISH", "topic": "big.x", "payload": "p" * 300_000, "rid": i})
    for _ in range(48):
        assert (await pub.recv())["op"] == "OK"
    await asyncio.wait_for(hub.close(), 20)  # bounded by close_timeout_s per step, not by the peer
    assert not hub.gateway.connections


def _client_frame(text: str) -> bytes:
    """A masked text frame (mask key 0: the payload goes as is)."""
    data = text.encode()
    n = len(data)
    head = bytes([0x81, 0x80 | n]) if n < 126 else bytes([0x81, 0x80 | 126]) + n.to_bytes(2, "big")
    return head + b"\0\0\0\0" + data


async def test_a_peer_that_does_not_read_is_not_buffered_without_bound(
    hub_factory: Any, ws_connect: Any, token: Any
) -> None:
    """A subscriber whose socket is never read: once the kernel's buffers are full, the hub's writer waits
    for the transport to drain (aiohttp's drain, picows' pause_writing/resume_writing) instead of piling
    every event into the transport's write buffer; the send queue stays bounded and refuses."""
    hub = await hub_factory(send_queue_max=4)
    reader, writer = await asyncio.open_connection("127.0.0.1", hub.ws_port)
    writer.write(
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    assert b" 101 " in await reader.readuntil(b"\r\n\r\n")
    writer.write(_client_frame(json.dumps({"op": "AUTH", "token": token(), "rid": 1})))
    writer.write(_client_frame(json.dumps({"op": "SUBSCRIBE", "topic": "big.*", "rid": 2})))
    await writer.drain()  # and from here on nothing is read from this socket
    pub = await ws_connect(hub.ws_url, token=token())
    for _ in range(200):  # until the subscription is in place
        conns = [c for c in hub.gateway.connections if c.subs]
        if conns:
            break
        await asyncio.sleep(0.02)
    (stalled,) = conns
    n, payload = 64, "p" * 300_000  # 19 MB: far more than the kernel's socket buffers hold
    for i in range(n):
        await pub.send({"op": "PUBLISH", "topic": "big.x", "payload": payload, "rid": i})
    for _ in range(n):
        assert (await pub.recv())["op"] == "OK"
    for _ in range(500):
        if hub.gateway.stats.events_refused > 0:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.5)  # let the writer do what it would do
    assert hub.gateway.stats.events_refused > 0, "the stalled subscriber's queue never filled"
    held = stalled.ws.write_buffer_size() + stalled.out.queued_bytes
    assert held < 3_000_000, f"the hub holds {held} bytes for a peer that does not read"
    writer.close()
