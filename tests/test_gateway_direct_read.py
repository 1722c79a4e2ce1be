"""picows hands a text frame that arrives while the connection's reader waits (nothing queued before it)
to the connection in its own frame callback: PUBLISH, ACK, NACK and EXTEND are handled there, as the
reader would in its next step, without waking the reader's task (gateway/connection.py ``take_now``).
Frames that need an await (AUTH, SUBSCRIBE, UNSUBSCRIBE) and bad frames still go to the reader, in order; a
bad frame with the error ``take_now`` found (it is decoded once)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from outboxhub.app import Hub
from outboxhub.gateway import connection
from outboxhub.gateway.picowsserver import PicowsSocket
from outboxhub.protocol.codes import CLOSE_AUTH_FAILED


async def _reader_waiter(hub: Hub) -> tuple[PicowsSocket, Any]:
    (conn,) = hub.gateway.connections
    sock = conn.ws
    assert isinstance(sock, PicowsSocket)
    waiter = sock._waiter
    assert waiter is not None and not waiter.done(), "the reader should be waiting for a frame"
    return sock, waiter


async def test_lone_publishes_and_acks_are_handled_without_waking_the_reader(
    hub: Hub, ws_connect: Any, token: Any
) -> None:
    c = await ws_connect(hub.ws_url, token=token())
    sub = await c.request("SUBSCRIBE", topic="direct.t", group="g")
    assert sub["op"] == "OK"
    sock, waiter = await _reader_waiter(hub)
    frames_in = hub.gateway.stats.frames_in
    for i in range(10):
        reply = await c.request("PUBLISH", topic="direct.t", payload=i)
        assert reply["op"] == "OK" and reply["seq"] == i + 1
        event = (await c.next_event())["event"]
        assert event["payload"] == i
        ack = await c.request("ACK", topic="direct.t", group="g", id=event["id"], seq=event["seq"])
        assert ack["op"] == "OK"
    # The reader never woke: it still waits on the future it made before the first of these frames.
    assert sock._waiter is waiter and not waiter.done()
    assert hub.gateway.stats.frames_in == frames_in + 20
    assert hub.gateway.stats.publishes >= 10 and hub.gateway.stats.acks >= 10


async def test_frames_that_need_the_reader_keep_their_order_among_direct_ones(
    hub: Hub, ws_connect: Any, token: Any
) -> None:
    c = await ws_connect(hub.ws_url, token=token(scopes=("publish:allowed.**", "subscribe:allowed.**")))
    assert (await c.request("PUBLISH", topic="allowed.warm", payload=0))["op"] == "OK"
    frames: list[Any] = [
        {"op": "PUBLISH", "topic": "allowed.a", "payload": 1, "rid": 1},
        {"op": "SUBSCRIBE", "topic": "allowed.a", "rid": 2},  # awaited by the reader
        {"op": "PUBLISH", "topic": "allowed.a", "payload": 3, "rid": 3},
        {"op": "PUBLISH", "topic": "other.a", "payload": 4, "rid": 4},  # refused: not allowed
        '{"op": "PUBLISH", "payload": 5, "rid": 5}',  # no topic: the reader answers it
        {"op": "PUBLISH", "topic": "allowed.a", "payload": 6, "rid": 6},
    ]
    for frame in frames:  # sent without waiting: some arrive in one read, some alone
        await c.send(frame if isinstance(frame, str) else json.dumps(frame))
    replies = [await c.recv() for _ in frames]
    assert [(r["op"], r.get("rid")) for r in replies] == [
        ("OK", 1), ("OK", 2), ("OK", 3), ("ERR", 4), ("ERR", 5), ("OK", 6)
    ]  # fmt: skip
    assert replies[3]["code"] == "forbidden" and replies[4]["code"] == "bad_request"
    assert replies[0]["seq"] < replies[2]["seq"] < replies[5]["seq"]
    # The subscription, made between the publishes, sees the events after it (from its start position).
    event = await c.next_event()
    assert event["topic"] == "allowed.a" and event["event"]["payload"] in (1, 3, 6)


async def test_a_frame_before_auth_goes_to_the_reader(hub: Hub, ws_connect: Any, token: Any) -> None:
    c = await ws_connect(hub.ws_url)  # no AUTH
    reply = await c.request("PUBLISH", topic="direct.t", payload=1)
    assert reply["op"] == "ERR" and reply["code"] == "not_authenticated"
    assert (await c.request("AUTH", token=token()))["op"] == "OK"
    assert (await c.request("PUBLISH", topic="direct.t", payload=2))["op"] == "OK"


async def test_a_bad_frame_is_decoded_once(
    hub: Hub, ws_connect: Any, token: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A malformed frame that arrives while the reader waits fails to decode in ``take_now``; the reader
    answers it with that error instead of decoding it again, also when the error closes the connection."""
    decodes: list[str] = []
    decode = connection.decode_hub_frame

    def counted(text: str, **kw: Any) -> Any:
        decodes.append(text)
        return decode(text, **kw)

    monkeypatch.setattr(connection, "decode_hub_frame", counted)
    c = await ws_connect(hub.ws_url, token=token())
    bad = ['{"op": "PUBLISH", "payload": 5, "rid": 5}', '{"op": "PUBLISH", "topic": "t", "rid": 6', "[]"]
    for frame in bad:
        await _reader_waiter(hub)
        decodes.clear()
        await c.send(frame)
        reply = await c.recv()
        assert (reply["op"], reply["code"]) == ("ERR", "bad_request")
        assert decodes == [frame]
    assert (await c.request("PUBLISH", topic="t", payload=1))["op"] == "OK"  # the connection goes on
    await _reader_waiter(hub)
    decodes.clear()
    await c.send('{"op": "AUTH", "rid": 7}')  # no token: ERR no_token, then the close
    assert await c.wait_closed() == CLOSE_AUTH_FAILED
    assert [f["code"] for f in c.others if f.get("op") == "ERR"][-1:] == ["no_token"]
    assert decodes == ['{"op": "AUTH", "rid": 7}']
