"""CI smoke (the seed's "/lag checks in CI smoke"): publish a burst, run a consumer group to the end, and
``/lag`` reports nothing behind with the cursor at the last event."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from outboxhub.app import Hub

BURST = 2_000


async def test_lag_is_zero_after_a_group_consumes_a_burst(hub: Hub, ws_connect: Any, token: Any) -> None:
    producer = await ws_connect(hub.ws_url, token=token(scopes=["publish:smoke.**"]))
    for i in range(BURST):  # pipelined: every frame goes out before the first reply is read
        await producer.send({"op": "PUBLISH", "rid": i, "topic": f"smoke.k{i % 7}", "payload": {"i": i}})
    replies = [await producer.recv() for _ in range(BURST)]
    assert [r["op"] for r in replies] == ["OK"] * BURST
    assert [r["rid"] for r in replies] == list(range(BURST))
    last = replies[-1]

    ops_token = token(scopes=["ops:read"])
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {ops_token}"}) as http:

        async def lag() -> dict[str, Any]:
            async with http.get(hub.ops_url + "lag", params={"topic": "smoke.*", "group": "ci"}) as r:
                assert r.status == 200
                body: dict[str, Any] = await r.json()
                return body

        consumer = await ws_connect(hub.ws_url, token=token(scopes=["subscribe:smoke.**"]))
        ok = await consumer.request("SUBSCRIBE", topic="smoke.*", group="ci", opts={"start": "earliest"})
        assert ok["op"] == "OK"
        assert (await lag())["lagCount"] == BURST
        seen: set[int] = set()
        while len(seen) < BURST:
            frame = await consumer.next_event()
            seen.add(frame["event"]["seq"])
            await consumer.send({"op": "ACK", "topic": "smoke.*", "group": "ci", "id": frame["event"]["id"]})

        for _ in range(500):  # the last acks are settled asynchronously
            body = await lag()
            if body["lagCount"] == 0:
                break
            await asyncio.sleep(0.01)
    assert body["lagCount"] == 0, body
    assert body["tail"] == last["id"] and body["tailSeq"] == last["seq"]
    assert body["lastCursor"]["lastId"] == last["id"]
    assert body["lastCursor"]["seq"] == last["seq"]
    assert body["lagMs"] == 0
