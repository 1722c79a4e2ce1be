"""The client against a scripted peer on a real socket, for hub answers a healthy hub rarely gives on cue:
``ERR unavailable`` (retried with the same id), rid-less ERRs, malformed frames, codes from a newer hub."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
import pytest
from aiohttp import WSMsgType, web

from outboxhub.client import Backoff, HubClient, HubError, Unavailable

BOTH_WS_SERVERS = True  # every test here runs against the aiohttp and the picows WS port

Script = Callable[[dict[str, Any], web.WebSocketResponse], Awaitable[None]]


class ScriptedHub:
    """Answers AUTH with OK; hands every other frame to ``script``; records every frame received."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.script: Script | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:
                break
            frame = msgspec.json.decode(msg.data)
            self.frames.append(frame)
            if frame["op"] == "AUTH":
                await ws.send_json(
                    {"op": "OK", "rid": frame["rid"], "sub": "s", "exp": int(time.time()) + 600}
                )
            elif self.script is not None:
                await self.script(frame, ws)
        return ws


@pytest.fixture
async def scripted() -> AsyncIterator[ScriptedHub]:
    peer = ScriptedHub()
    app = web.Application()
    app.router.add_get("/", peer.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    peer.url = f"ws://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/"  # type: ignore[union-attr]
    yield peer
    await runner.cleanup()


def _ok(frame: dict[str, Any], seq: int, duplicate: bool = False) -> dict[str, Any]:
    return {"op": "OK", "rid": frame["rid"], "id": frame["opts"]["id"], "seq": seq, "duplicate": duplicate}


@pytest.mark.parametrize("code", ["unavailable", "not_authenticated"])
async def test_refusals_without_effect_are_retried_with_the_same_id(scripted: ScriptedHub, code: str) -> None:
    answers = 0

    async def script(frame: dict[str, Any], ws: web.WebSocketResponse) -> None:
        nonlocal answers
        answers += 1
        if answers <= 2:
            await ws.send_json({"op": "ERR", "rid": frame["rid"], "code": code, "msg": "not now"})
        else:
            await ws.send_json(_ok(frame, 7))

    scripted.script = script
    async with HubClient(scripted.url, "t", backoff=Backoff(initial_s=0.01, max_s=0.05)) as client:
        result = await client.publish("a.b", {"x": 1})
    publishes = [f for f in scripted.frames if f["op"] == "PUBLISH"]
    assert len(publishes) == 3
    assert len({f["opts"]["id"] for f in publishes}) == 1 and result.id == publishes[0]["opts"]["id"]
    assert result.seq == 7


async def test_unavailable_raises_when_retrying_is_off(scripted: ScriptedHub) -> None:
    async def script(frame: dict[str, Any], ws: web.WebSocketResponse) -> None:
        await ws.send_json({"op": "ERR", "rid": frame["rid"], "code": "unavailable", "msg": "store down"})

    scripted.script = script
    async with HubClient(scripted.url, "t", retry_unavailable=False) as client:
        with pytest.raises(Unavailable, match="unavailable: store down"):
            await client.publish("a.b", 1)


async def test_noise_from_the_peer_is_ignored_and_new_codes_still_raise(scripted: ScriptedHub) -> None:
    async def script(frame: dict[str, Any], ws: web.WebSocketResponse) -> None:
        await ws.send_str("this is not JSON")
        await ws.send_json({"op": "ERR", "code": "internal", "msg": "no rid: logged only"})
        await ws.send_json({"op": "OK", "rid": 999_999})  # nobody asked
        await ws.send_json({"op": "ERR", "rid": frame["rid"], "code": "quota_exceeded", "msg": "too much"})

    scripted.script = script
    async with HubClient(scripted.url, "t") as client:
        with pytest.raises(HubError) as caught:
            await client.publish("a.b", 1)
        assert type(caught.value) is HubError and caught.value.code == "quota_exceeded"
        assert client.connected
