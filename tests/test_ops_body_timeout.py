"""The ops port bounds a request body in time (``ops_body_timeout_s``): the header timeout ends with the
request head, so a client trickling a POST body would otherwise hold an ops handler for as long as it
likes. Real hub, raw sockets."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

import msgspec

from outboxhub.app import Hub


async def _open(hub: Hub) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    parts = urlsplit(hub.ops_url)
    assert parts.hostname is not None and parts.port is not None
    return await asyncio.open_connection(parts.hostname, parts.port)


def _head(path: str, token: str, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: hub\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


async def test_a_trickled_body_gets_408_and_the_connection_is_closed(hub_factory: Any, token: Any) -> None:
    hub = await hub_factory(ops_body_timeout_s=0.5)
    reader, writer = await _open(hub)
    body = msgspec.json.encode({"pattern": "a.*", "group": "g", "to": "latest"})
    writer.write(_head("/groups/reset", token(scopes=["ops:write", "subscribe:**"]), len(body)) + body[:3])
    await writer.drain()  # the head is complete; the rest of the body never comes
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    status, _, headers = head.partition(b"\r\n")
    assert status == b"HTTP/1.1 408 Request Timeout", head
    assert b"Connection: close" in headers  # (aiohttp then lingers ≤ 10 s reading what still comes)
    length = int(headers.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    assert b"ops_body_timeout_s" in await reader.readexactly(length)
    writer.close()


async def test_a_whole_body_is_handled_as_before(hub: Hub, token: Any) -> None:
    reader, writer = await _open(hub)
    body = msgspec.json.encode({"topic": "no.such"})
    writer.write(_head("/dlq/redrive", token(scopes=["ops:write", "subscribe:**"]), len(body)) + body)
    await writer.drain()
    status = await asyncio.wait_for(reader.readline(), 30)
    assert not status.startswith(b"HTTP/1.1 408"), status
    writer.close()
