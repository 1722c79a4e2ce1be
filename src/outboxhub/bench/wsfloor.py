"""The WebSocket layer's floor on this machine: aiohttp against picows, echo servers side by side.

``python -m outboxhub.bench.wsfloor [--seconds S] [--idle N] [--rounds R]`` starts an echo server in a
subprocess (uvloop): ``aiohttp``, ``picows``, and ``picows-2k`` (picows with a 2 KiB read buffer). It
drives each with the same aiohttp client (one 100-byte text frame at a time, the next sent when the echo
is back) and reports per server: round trips per second, the server's CPU per round trip (its
user+system time over the window ÷ round trips), and the server's RSS growth per idle connection
(``--idle`` connections opened after the round trips). The servers alternate within each round, so both
see the same machine load; every row is the median of the rounds. No hub code runs: this is what the
WebSocket library alone costs, the lower bound under the gateway's numbers. picows is a dependency
of outboxhub (the gateway's WebSocket port).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from typing import Any, Final

import aiohttp
import psutil

__all__ = ["main"]

_FRAME: Final = "x" * 100
_SERVERS: Final = ("aiohttp", "picows", "picows-2k")
"""``picows-2k``: picows with a 2 KiB initial read buffer per connection (its default is 16 KiB)."""


async def serve_aiohttp_echo() -> int:
    """Start an aiohttp WebSocket echo server on an ephemeral loopback port; return the port."""
    from aiohttp import web

    async def echo(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(compress=False, max_msg_size=1 << 20)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.TEXT:
                await ws.send_str(msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server: Any = site._server  # the bound port of an ephemeral site
    return int(server.sockets[0].getsockname()[1])


async def serve_picows_echo(read_buffer: int) -> int:
    """Start a picows WebSocket echo server (``read_buffer`` initial bytes per connection) on an ephemeral
    loopback port; return the port."""
    import picows

    class Echo(picows.WSListener):
        def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
            if frame.msg_type == picows.WSMsgType.TEXT:
                transport.send(picows.WSMsgType.TEXT, frame.get_payload_as_bytes())
            elif frame.msg_type == picows.WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code(), frame.get_close_message())
                transport.disconnect()

    server = await picows.ws_create_server(
        lambda _request: Echo(), "127.0.0.1", 0, read_buffer_init_size=read_buffer
    )
    return int(server.sockets[0].getsockname()[1])


def _serve(kind: str) -> None:
    """The server process: print the port, serve until killed (or stdin closes)."""
    import uvloop

    async def run() -> None:
        if kind == "aiohttp":
            port = await serve_aiohttp_echo()
        else:
            port = await serve_picows_echo(2048 if kind == "picows-2k" else 16 * 1024)
        print(port, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

    uvloop.run(run())


async def _round(kind: str, seconds: float, idle: int) -> dict[str, float]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "outboxhub.bench.wsfloor", "--serve", kind,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdin is not None
    port = int(await proc.stdout.readline())
    server = psutil.Process(proc.pid)
    url = f"ws://127.0.0.1:{port}/"
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            ws = await session.ws_connect(url, compress=0, autoping=True)
            for _ in range(200):  # warm-up
                await ws.send_str(_FRAME)
                await ws.receive()
            cpu0, t0, n = sum(server.cpu_times()[:2]), time.perf_counter(), 0
            end = t0 + seconds
            while time.perf_counter() < end:
                await ws.send_str(_FRAME)
                await ws.receive()
                n += 1
            elapsed, cpu = time.perf_counter() - t0, sum(server.cpu_times()[:2]) - cpu0
            rss0 = server.memory_info().rss
            sockets = [await session.ws_connect(url, compress=0) for _ in range(idle)]
            await asyncio.sleep(0.5)
            rss = server.memory_info().rss - rss0
            for s in [ws, *sockets]:
                await s.close()
    finally:
        proc.kill()  # measured: no need for a graceful close of hundreds of sockets
        await proc.wait()
    return {"rt_per_s": n / elapsed, "cpu_us": cpu / n * 1e6, "rss_per_conn": rss / max(idle, 1)}


async def _run(seconds: float, idle: int, rounds: int) -> None:
    results: dict[str, list[dict[str, float]]] = {kind: [] for kind in _SERVERS}
    for _ in range(rounds):
        for kind in _SERVERS:
            results[kind].append(await _round(kind, seconds, idle))
    print(f"echo, one 100 B text frame at a time, aiohttp client, {seconds:g} s × {rounds} rounds (medians)")
    print(f"{'server':<8} {'round trips/s':>14} {'server CPU µs/rt':>17} {'RSS B/idle conn':>16}")
    for kind, rows in results.items():
        med = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
        print(f"{kind:<8} {med['rt_per_s']:>14,.0f} {med['cpu_us']:>17.1f} {med['rss_per_conn']:>16,.0f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m outboxhub.bench.wsfloor", description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds of round trips per server")
    parser.add_argument("--idle", type=int, default=1000, help="idle connections opened for the RSS column")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (both servers in each)")
    parser.add_argument("--serve", choices=_SERVERS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        _serve(args.serve)
        return
    asyncio.run(_run(args.seconds, args.idle, args.rounds))


if __name__ == "__main__":
    main()
