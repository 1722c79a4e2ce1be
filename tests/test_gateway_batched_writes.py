"""The frames that can leave together leave in one write: the replies to a burst of publishes committed
together (one ``send`` for a batch's OKs on picows instead of one per reply), in order, each frame intact.
Real hub, real sockets; the picows socket's two write calls are counted, not replaced."""

from __future__ import annotations

import json
from typing import Any

import pytest

from outboxhub.app import Hub
from outboxhub.gateway.picowsserver import PicowsSocket

BOTH_WS_SERVERS = True  # every test here runs against the aiohttp and the picows WS port


def counted(calls: list[int], method: Any, frames_of: Any) -> Any:
    def call(self: Any, arg: Any) -> Any:
        result = method(self, arg)
        calls.append(frames_of(arg, result))
        return result

    return call


def counted_writes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The frames of each write of the picows socket, appended as they happen."""
    writes: list[int] = []
    monkeypatch.setattr(
        PicowsSocket, "send_now", counted(writes, PicowsSocket.send_now, lambda _, ok: int(ok))
    )
    many = getattr(PicowsSocket, "send_all_now", None)
    if many is not None:
        monkeypatch.setattr(PicowsSocket, "send_all_now", counted(writes, many, lambda _, sent: sent))
    return writes


async def test_the_replies_to_a_burst_of_publishes_leave_in_few_writes_and_in_order(
    hub: Hub, ws_connect: Any, token: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes = counted_writes(monkeypatch)
    c = await ws_connect(hub.ws_url, token=token())
    assert (await c.request("PUBLISH", topic="w.warm", payload=0))["op"] == "OK"
    writes.clear()
    n = 200
    for i in range(n):  # nothing awaits between the sends: the hub reads them in a few reads
        await c.send(json.dumps({"op": "PUBLISH", "topic": f"w.t{i % 3}", "payload": i, "rid": i}))
    replies = [await c.recv() for _ in range(n)]
    assert [(r["op"], r["rid"]) for r in replies] == [("OK", i) for i in range(n)]
    assert [r["seq"] for r in replies] == sorted(r["seq"] for r in replies)
    if hub.gateway.settings.ws_server == "picows":
        assert sum(writes) == n
        # about one write per batch committed (a handful of socket reads); one per reply would be 200
        assert len(writes) <= n // 4, writes


async def test_frames_written_together_arrive_whole_and_in_order(
    hub: Hub, ws_connect: Any, token: Any
) -> None:
    if hub.gateway.settings.ws_server != "picows":
        pytest.skip("only the picows socket writes several frames at once")
    c = await ws_connect(hub.ws_url, token=token())
    (conn,) = hub.gateway.connections
    ws = conn.ws
    assert isinstance(ws, PicowsSocket)
    # the frame header takes 2 bytes up to 125 bytes of payload, 4 from 126 to 65,535
    sizes = [2, 125, 126, 127, 4096, 30_000, 65_535 - 40_000]
    frames = [b"{}"] + [
        json.dumps({"op": "X", "i": i, "p": "a" * (n - 30)}).encode() for i, n in enumerate(sizes[1:])
    ]
    frames = [f + b" " * (n - len(f)) for f, n in zip(frames, sizes, strict=True)]  # JSON allows the padding
    assert [len(f) for f in frames] == sizes
    assert ws.send_all_now(frames) == len(frames)
    got = [await c.recv_any() for _ in frames]
    assert got[0] == {} and [g["i"] for g in got[1:]] == list(range(len(frames) - 1))
    assert [len(g["p"]) for g in got[1:]] == [n - 30 for n in sizes[1:]]
    # more than the write buffer's high-water mark: only what fits leaves, the rest is the caller's
    assert 0 < ws.send_all_now([b"{}", b"[" + b" " * 70_000 + b"]"]) == 1
    assert await c.recv_any() == {}


async def test_the_events_of_one_claim_leave_in_few_writes_and_in_order(
    hub: Hub, ws_connect: Any, token: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes = counted_writes(monkeypatch)
    publisher = await ws_connect(hub.ws_url, token=token())
    n = 100
    for i in range(n):
        assert (await publisher.request("PUBLISH", topic="claimed.t", payload=i))["op"] == "OK"
    c = await ws_connect(hub.ws_url, token=token())
    writes.clear()
    ok = await c.request("SUBSCRIBE", topic="claimed.*", group="g", opts={"start": "earliest"})
    assert ok["op"] == "OK"
    events = [await c.next_event() for _ in range(n)]
    assert [(e["op"], e["event"]["payload"]) for e in events] == [("EVENT", i) for i in range(n)]
    if hub.gateway.settings.ws_server == "picows":
        assert sum(writes) == n + 1  # the events and the SUBSCRIBE's OK
        # the claim's events are held while the bus hands them out, then written together (one write
        # per EVENT before): a few writes at most, whatever the socket buffer takes at once
        assert len(writes) <= n // 10, writes
