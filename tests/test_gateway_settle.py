"""EXTEND and terminal NACK over real sockets (gateway/settle.py): EXTEND keeps a delivery from being
redelivered past its ack timeout, only its holder may extend it, a terminal NACK dead-letters on the first
attempt, and settling an event the connection does not hold is a clear ERR."""

from __future__ import annotations

import asyncio
from typing import Any

from outboxhub.app import Hub

BOTH_WS_SERVERS = True  # every test here runs against the aiohttp and the picows WS port


async def test_extend_keeps_a_delivery_past_its_ack_timeout(hub: Hub, ws_connect: Any, token: Any) -> None:
    opts = {"ack_timeout_ms": 1_500, "max_in_flight": 1}
    holder = await ws_connect(hub.ws_url, token=token())
    assert (await holder.request("SUBSCRIBE", topic="ext.t", group="g", opts=opts))["op"] == "OK"
    await holder.request("PUBLISH", topic="ext.t", payload=1)
    first = await holder.next_event()
    event_id = first["event"]["id"]
    other = await ws_connect(hub.ws_url, token=token())
    assert (await other.request("SUBSCRIBE", topic="ext.t", group="g", opts=opts))["op"] == "OK"
    # Keep extending for three ack timeouts: nobody gets it again.
    for _ in range(9):
        reply = await holder.request("EXTEND", topic="ext.t", group="g", id=event_id)
        assert reply["op"] == "OK", reply
        await asyncio.sleep(0.5)
    # The other member may not extend what it does not hold (its reply also flushes any EVENT before it).
    err = await other.request("EXTEND", topic="ext.t", group="g", id=event_id)
    assert err["code"] == "bad_request", err
    assert "not held by this connection" in err["msg"] and event_id in err["msg"]
    assert not other.events and not holder.events
    # Once the holder stops, the delivery times out and goes on (attempt 2, to either member).
    await holder.request("UNSUBSCRIBE", topic="ext.t", group="g")
    again = await other.next_event(wait_s=20)
    assert again["event"]["id"] == event_id and again["ctx"]["attempt"] == 2


async def test_terminal_nack_dead_letters_on_the_first_attempt(hub: Hub, ws_connect: Any, token: Any) -> None:
    c = await ws_connect(hub.ws_url, token=token())
    opts = {"max_deliver": 5, "ack_timeout_ms": 60_000}
    assert (await c.request("SUBSCRIBE", topic="term.*", group="g", opts=opts))["op"] == "OK"
    await c.request("PUBLISH", topic="term.x", payload={"bad": True})
    event = await c.next_event()
    assert event["ctx"]["attempt"] == 1
    reply = await c.request(
        "NACK", topic="term.*", group="g", id=event["event"]["id"], reason="cannot parse", terminal=True
    )
    assert reply["op"] == "OK", reply
    [dead] = await hub.store.scan("dlq.**")
    assert dead.topic == "dlq.g.term.x" and dead.payload == {"bad": True}
    assert dead.headers is not None and dead.headers["x-reason"] == "cannot parse"
    assert dead.headers["x-attempts"] == "1"
    # Settled for good: a second terminal NACK names the problem.
    err = await c.request("NACK", topic="term.*", group="g", id=event["event"]["id"], terminal=True)
    assert err["code"] == "bad_request" and "NACK (terminal)" in err["msg"]


async def test_extend_of_an_unknown_event_or_subscription(hub: Hub, ws_connect: Any, token: Any) -> None:
    c = await ws_connect(hub.ws_url, token=token())
    err = await c.request("EXTEND", topic="nope.*", group="g", id="x")
    assert err["code"] == "not_subscribed" and "EXTEND" in err["msg"]
    assert (await c.request("SUBSCRIBE", topic="some.*", group="g"))["op"] == "OK"
    err = await c.request("EXTEND", topic="some.*", group="g", id="never-delivered")
    assert err["code"] == "bad_request" and "'never-delivered' is not held" in err["msg"]
    err = await c.request("EXTEND", topic="some.*", id="x")
    assert err["code"] == "bad_request" and "EXTEND.group" in err["msg"]


async def test_extend_and_terminal_nack_name_the_delivery_by_seq(
    hub: Hub, ws_connect: Any, token: Any
) -> None:
    c = await ws_connect(hub.ws_url, token=token())
    opts = {"max_deliver": 5, "ack_timeout_ms": 60_000}
    assert (await c.request("SUBSCRIBE", topic="same.*", group="g", opts=opts))["op"] == "OK"
    for topic in ("same.a", "same.b"):
        await c.request("PUBLISH", topic=topic, opts={"id": "one-id"}, payload=topic)
    a, b = await c.next_event(), await c.next_event()
    ids = {"topic": "same.*", "group": "g", "id": "one-id"}
    for op, extra in (("EXTEND", {}), ("NACK", {"terminal": True})):
        err = await c.request(op, **ids, **extra)  # two deliveries carry the id: which one?
        assert err["code"] == "bad_request" and "seq" in err["msg"], err
    assert (await c.request("EXTEND", **ids, seq=b["event"]["seq"]))["op"] == "OK"
    assert (await c.request("NACK", **ids, seq=a["event"]["seq"], reason="r", terminal=True))["op"] == "OK"
    [dead] = await hub.store.scan("dlq.**")
    assert dead.topic == "dlq.g.same.a"
    # Now the id names one delivery: no seq needed.
    assert (await c.request("EXTEND", **ids))["op"] == "OK"
