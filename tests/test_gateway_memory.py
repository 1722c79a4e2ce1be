"""Issue #14 item 5 on an ``outboxhub serve`` process: memory per connection is bounded by bytes.

The hub's resident memory (VmRSS from /proc of the server process) is compared before and after the
load with the configured budget × connections plus a fixed margin: no timing is asserted.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import msgspec
import pytest

from outboxhub.auth.jwt import mint_token

BOTH_WS_SERVERS = True  # every test here runs against the aiohttp and the picows WS port

SERVE = "from outboxhub.config import load_settings; from outboxhub.app import serve; serve(load_settings())"
BUDGET = 2 * 1024 * 1024  # send_queue_max_bytes of the served hub
MARGIN = (
    64 * 1024 * 1024
)  # the SQLite page cache (32 MiB, filled by the 60 MB written), transport buffers, slack

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc (Linux)")


class Served(msgspec.Struct):
    pid: int
    ws_url: str
    secret: str


@pytest.fixture
async def served(tmp_path: Path, ws_server: str | None) -> AsyncIterator[Served]:
    secret = secrets.token_urlsafe(48)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOXHUB_")}
    if ws_server is not None:
        env["OUTBOXHUB_WS_SERVER"] = ws_server
    env.update(
        OUTBOXHUB_STORE=f"sqlite:///{tmp_path / 'mem.db'}",
        OUTBOXHUB_WS_PORT="0",
        OUTBOXHUB_OPS_PORT="0",
        OUTBOXHUB_HOST="127.0.0.1",
        OUTBOXHUB_LOG_LEVEL="warning",
        OUTBOXHUB_JWT_SECRET=secret,
        OUTBOXHUB_SEND_QUEUE_MAX_BYTES=str(BUDGET),
        OUTBOXHUB_MAX_FRAME_BYTES=str(1_100_000),
        OUTBOXHUB_PUBLISH_RATE="0",
        # glibc: serve every large block by mmap and give it back when freed, so that RSS shows what the
        # hub holds rather than what the allocator kept for reuse (its dynamic threshold would otherwise
        # move 1 MB blocks onto the heap after the first few are freed)
        MALLOC_MMAP_THRESHOLD_="131072",
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SERVE,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    ws_url = ""
    try:
        async with asyncio.timeout(30):
            while True:
                line = (await proc.stdout.readline()).decode()
                assert line, "serve exited early"
                if line.startswith("ws: "):
                    ws_url = line[4:].strip()
                if line.startswith("dashboard: "):
                    break
        yield Served(pid=proc.pid, ws_url=ws_url, secret=secret)
    finally:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 20)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def rss(pid: int) -> int:
    """Resident memory of process ``pid`` in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def _connect(http: aiohttp.ClientSession, served: Served, sub: str) -> aiohttp.ClientWebSocketResponse:
    ws = await http.ws_connect(served.ws_url, max_msg_size=0)
    token = mint_token(served.secret, sub=sub, scopes=["publish:**", "subscribe:**"], ttl_s=600)
    await ws.send_json({"op": "AUTH", "token": token, "rid": "auth"})
    assert (await ws.receive_json(timeout=10))["op"] == "OK"
    return ws


async def test_non_reading_subscribers_of_big_events_keep_the_hub_bounded(served: Served) -> None:
    """Three subscribers that never read, 60 events of 1 MB: the hub holds at most the byte budget per
    connection (before: every frame was queued, 3 × 60 MB)."""
    async with aiohttp.ClientSession() as http:
        stalled = [await _connect(http, served, f"stalled{i}") for i in range(3)]
        for ws in stalled:
            await ws.send_json({"op": "SUBSCRIBE", "topic": "big.*", "rid": "s"})
            assert (await ws.receive_json(timeout=10))["op"] == "OK"
        reader = await _connect(http, served, "reader")  # proves every event was fanned out
        await reader.send_json({"op": "SUBSCRIBE", "topic": "big.*", "rid": "s"})
        assert (await reader.receive_json(timeout=10))["op"] == "OK"
        pub = await _connect(http, served, "publisher")
        payload = "p" * 1_000_000

        async def publish(i: int) -> None:
            await pub.send_json({"op": "PUBLISH", "topic": "big.x", "payload": payload, "rid": i})
            assert (await pub.receive_json(timeout=30))["op"] == "OK"

        async def read_events(n: int) -> None:
            for _ in range(n):
                frame = msgspec.json.decode((await reader.receive(timeout=60)).data)
                assert frame["op"] == "EVENT"

        for i in range(3):  # warm up: the allocator, the store, the encoder
            await publish(i)
        await read_events(3)
        before = rss(served.pid)
        n = 60
        for i in range(n):
            await publish(100 + i)
        await read_events(n)
        await asyncio.sleep(0.5)  # let the last fan-out settle (not a timing assertion)
        grown = rss(served.pid) - before
        limit = len(stalled) * BUDGET + MARGIN
        assert grown < limit, f"hub RSS grew by {grown / 2**20:.0f} MiB; bound {limit / 2**20:.0f} MiB"


async def test_frames_with_a_large_rid_before_auth_do_not_hold_memory(served: Served) -> None:
    """300 frames with a 1 MB rid before AUTH, over 10 connections that never read: each connection is
    closed at its first frame (before: each frame was answered with its rid echoed, ~300 MB held)."""
    frame = '{"op":"PUBLISH","topic":"a.b","rid":"' + "r" * 1_000_000 + '"}'
    async with aiohttp.ClientSession() as http:
        before = rss(served.pid)
        conns = [await http.ws_connect(served.ws_url, max_msg_size=0) for _ in range(10)]
        for ws in conns:
            for _ in range(30):
                if ws.closed:
                    break
                try:
                    await ws.send_str(frame)
                except (ConnectionError, RuntimeError):
                    break
        await asyncio.sleep(0.5)
        grown = rss(served.pid) - before
        assert grown < MARGIN, f"hub RSS grew by {grown / 2**20:.0f} MiB"
        for ws in conns:
            msg = await ws.receive(timeout=30)
            while msg.type is aiohttp.WSMsgType.TEXT:
                msg = await ws.receive(timeout=30)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
            assert ws.close_code == 1009 or msg.data == 1009, (msg, ws.close_code)
