"""WebSocket framing at the gateway, byte by byte over a raw socket, on both WS servers (aiohttp and
picows): fragmented messages, the hard size limit across fragments, invalid UTF-8, binary frames."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from outboxhub.app import Hub
from outboxhub.gateway import server as gateway_server

BOTH_WS_SERVERS = True  # every test here runs against the aiohttp and the picows WS port


def _frame(opcode: int, data: bytes, *, fin: bool = True) -> bytes:
    """A client frame (masked with key 0: the payload goes as is)."""
    n = len(data)
    first = (0x80 if fin else 0) | opcode
    if n < 126:
        head = bytes([first, 0x80 | n])
    elif n < 65536:
        head = bytes([first, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([first, 0x80 | 127]) + n.to_bytes(8, "big")
    return head + b"\0\0\0\0" + data


class _Raw:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def read_frame(self) -> tuple[int, bytes]:
        """The next server frame (opcode, payload); (-1, b"") when the connection ended."""
        try:
            first, second = await asyncio.wait_for(self.reader.readexactly(2), 10)
            n = second & 0x7F
            if n == 126:
                n = int.from_bytes(await self.reader.readexactly(2), "big")
            elif n == 127:
                n = int.from_bytes(await self.reader.readexactly(8), "big")
            return first & 0x0F, await self.reader.readexactly(n)
        except asyncio.IncompleteReadError:
            return -1, b""

    async def reply(self) -> dict[str, Any]:
        opcode, data = await self.read_frame()
        assert opcode == 1, (opcode, data)
        reply: dict[str, Any] = json.loads(data)
        return reply

    async def close_code(self) -> int | None:
        """Read on until the server's close frame; its code."""
        while True:
            opcode, data = await self.read_frame()
            if opcode == 8:
                return int.from_bytes(data[:2], "big")
            if opcode == -1:
                return None


async def _connect(hub: Hub, token: str) -> _Raw:
    reader, writer = await asyncio.open_connection("127.0.0.1", hub.ws_port, limit=1 << 22)
    writer.write(
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    assert b" 101 " in await reader.readuntil(b"\r\n\r\n")
    raw = _Raw(reader, writer)
    writer.write(_frame(1, json.dumps({"op": "AUTH", "token": token, "rid": 0}).encode()))
    assert (await raw.reply())["op"] == "OK"
    return raw


async def test_a_fragmented_message_is_reassembled(hub: Hub, token: Any) -> None:
    raw = await _connect(hub, token())
    message = {"op": "PUBLISH", "topic": "f.x", "payload": "é" * 3000, "rid": 7}
    text = json.dumps(message, ensure_ascii=False).encode()
    cut1 = text.index("é".encode()) + 1  # inside a two-byte character: UTF-8 is decoded after reassembly
    cut2 = len(text) - 10
    raw.writer.write(_frame(1, text[:cut1], fin=False))
    raw.writer.write(_frame(0, text[cut1:cut2], fin=False))
    raw.writer.write(_frame(9, b"ping"))  # a control frame may come between fragments
    raw.writer.write(_frame(0, text[cut2:]))
    opcode, data = await raw.read_frame()
    if opcode == 10:  # the pong
        assert data == b"ping"
        opcode, data = await raw.read_frame()
    assert opcode == 1 and json.loads(data)["op"] == "OK" and json.loads(data)["rid"] == 7, data
    assert await hub.store.count("f.x") == 1


async def test_fragments_beyond_the_hard_limit_close_with_1009(hub_factory: Any, token: Any) -> None:
    """The hard limit (twice max_frame_bytes) counts the whole message, not each fragment."""
    hub = await hub_factory(max_frame_bytes=4096)
    raw = await _connect(hub, token())
    for _ in range(3):  # 3 x 3000 bytes: each fragment under the limit, the message over 8192
        raw.writer.write(_frame(1 if _ == 0 else 0, b" " * 3000, fin=False))
    assert await raw.close_code() == 1009


async def test_invalid_utf8_text_closes_with_1007(hub: Hub, token: Any) -> None:
    raw = await _connect(hub, token())
    raw.writer.write(_frame(1, b'{"op": "PUBLISH", "topic": "a.b", "payload": "\xff\xfe"}'))
    assert await raw.close_code() == 1007


async def test_a_binary_frame_is_answered_with_bad_request(hub: Hub, token: Any) -> None:
    raw = await _connect(hub, token())
    raw.writer.write(_frame(2, b'{"op": "PUBLISH"}'))
    reply = await raw.reply()
    assert reply["op"] == "ERR" and reply["code"] == "bad_request", reply
    raw.writer.write(
        _frame(1, json.dumps({"op": "PUBLISH", "topic": "a.b", "payload": 1, "rid": 2}).encode())
    )
    assert (await raw.reply())["op"] == "OK"  # the connection stays


async def test_a_client_close_is_answered_with_1000(hub: Hub, token: Any) -> None:
    raw = await _connect(hub, token())
    raw.writer.write(_frame(8, (4321).to_bytes(2, "big") + b"bye"))
    assert await raw.close_code() == 1000
    assert await raw.read_frame() == (-1, b"")  # and the hub closes the TCP connection


async def test_a_peer_that_does_not_answer_pings_is_cut_off(
    hub_factory: Any, token: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The heartbeat: an idle peer is pinged; one that answers stays, one that does not is cut off."""
    monkeypatch.setattr(gateway_server, "HEARTBEAT_S", 0.4)  # both servers read it at the upgrade
    hub = await hub_factory()
    alive, silent = await _connect(hub, token()), await _connect(hub, token())

    async def answer_pings() -> tuple[int, bytes]:
        while True:
            opcode, data = await alive.read_frame()
            if opcode == 9:
                alive.writer.write(_frame(10, data))
            else:
                return opcode, data

    answering = asyncio.create_task(answer_pings())
    opcodes = []
    while (opcode := (await silent.read_frame())[0]) != -1:
        opcodes.append(opcode)
    assert 9 in opcodes, opcodes  # it was pinged before it was cut off
    alive.writer.write(
        _frame(1, json.dumps({"op": "PUBLISH", "topic": "a.b", "payload": 1, "rid": 3}).encode())
    )
    opcode, data = await answering
    assert opcode == 1 and json.loads(data)["op"] == "OK", (opcode, data)
    assert len(hub.gateway.connections) == 1


async def test_pings_from_a_peer_that_does_not_read_do_not_grow_the_hub(hub: Hub, token: Any) -> None:
    """Every ping is answered with a pong of the same payload: a peer that sends pings and never reads
    must not make the hub buffer its pongs without bound (aiohttp waits for the socket to drain; on
    picows the socket's pings stop being read while its write buffer is full)."""
    raw = await _connect(hub, token())
    ping = _frame(9, b"p" * 125)
    (conn,) = hub.gateway.connections
    for _ in range(300):  # 300 x 64 KiB of pings = 19 MB, far more than the kernel's buffers hold
        raw.writer.write(ping * 500)
        try:
            await asyncio.wait_for(raw.writer.drain(), 0.2)
        except TimeoutError:
            break  # the hub stopped reading
    await asyncio.sleep(0.5)
    held = conn.ws.write_buffer_size()
    assert held < 3_000_000, f"the hub holds {held} bytes of pongs for a peer that does not read"
    raw.writer.transport.abort()
