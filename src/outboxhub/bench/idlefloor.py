"""What one idle WebSocket connection costs a bare server, by allocator: the floor under the hub's number.

``python -m outboxhub.bench.idlefloor [--connections N] [--rounds R]`` starts a bare echo server in a
subprocess (``aiohttp`` and ``picows-2k``, picows with a 2 KiB read buffer, under uvloop as ``outboxhub
serve`` runs; ``aiohttp-asyncio`` on the default loop), opens N idle WebSockets to it and has the server
report how much each connection grew:

* **RSS**: resident memory (what ``outboxhub bench idle`` reports for the hub);
* **pymalloc**: bytes in pymalloc's allocated blocks (Python objects up to 512 B) — from
  ``sys._debugmallocstats``;
* **malloc**: glibc's bytes in use (``mallinfo2``: larger Python objects, uvloop/libuv handles, picows'
  buffers);
* **traced**: what tracemalloc sees (Python-level allocations, in a second run with tracing on, since
  tracing costs memory of its own).

RSS minus pymalloc minus malloc is allocator slack: partly used pymalloc pools and arenas and malloc's
free chunks (kernel socket buffers are not in RSS). Medians of the rounds. Linux and glibc only.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import re
import statistics
import sys
import tempfile
from typing import Final

import aiohttp
import psutil

from outboxhub.bench.wsfloor import serve_aiohttp_echo, serve_picows_echo

__all__ = ["main"]

_SERVERS: Final = ("aiohttp", "aiohttp-asyncio", "picows-2k")


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
            "keepcost",
        )
    ]  # fmt: skip


def _malloc_in_use() -> int:
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    return int(info.uordblks + info.hblkhd)


def _pymalloc_in_use() -> int:
    """``# bytes in allocated blocks`` of ``sys._debugmallocstats`` (it writes to the C stderr)."""
    with tempfile.TemporaryFile() as out:
        saved = os.dup(2)
        os.dup2(out.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read().decode()
    found = re.search(r"# bytes in allocated blocks\s*=\s*([\d,]+)", text)
    return int(found.group(1).replace(",", "")) if found else 0


def _measure(trace: bool) -> dict[str, int]:
    import gc
    import tracemalloc

    gc.collect()
    return {
        "rss": psutil.Process().memory_info().rss,
        "pymalloc": _pymalloc_in_use(),
        "malloc": _malloc_in_use(),
        "traced": tracemalloc.get_traced_memory()[0] if trace else 0,
    }


def _serve(kind: str, trace: bool) -> None:
    """The server process: print the port; on each stdin line print the measures as JSON."""
    import tracemalloc

    if trace:
        tracemalloc.start()

    async def run() -> None:
        port = await (serve_picows_echo(2048) if kind.startswith("picows") else serve_aiohttp_echo())
        print(port, flush=True)
        loop = asyncio.get_running_loop()
        while await loop.run_in_executor(None, sys.stdin.readline):
            print(json.dumps(_measure(trace)), flush=True)

    if kind == "aiohttp-asyncio":
        asyncio.run(run())
    else:
        import uvloop

        uvloop.run(run())


async def _round(kind: str, n: int, trace: bool) -> dict[str, float]:
    args = ["--serve", kind] + (["--trace"] if trace else [])
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "outboxhub.bench.idlefloor", *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdin is not None
    stdin, stdout = proc.stdin, proc.stdout

    async def measure() -> dict[str, int]:
        stdin.write(b"\n")
        await stdin.drain()
        values: dict[str, int] = json.loads(await stdout.readline())
        return values

    try:
        url = f"ws://127.0.0.1:{int(await stdout.readline())}/"
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            warm = [await session.ws_connect(url, compress=0) for _ in range(20)]  # first-use allocations
            before = await measure()
            sockets = [await session.ws_connect(url, compress=0) for _ in range(n)]
            await asyncio.sleep(0.5)
            after = await measure()
            proc.kill()  # measured: the sockets need no graceful close
            for s in [*warm, *sockets]:
                await s.close()
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
    return {key: (after[key] - before[key]) / n for key in after}


async def _run(n: int, rounds: int) -> None:
    rows: dict[str, list[dict[str, float]]] = {kind: [] for kind in _SERVERS}
    for _ in range(rounds):
        for kind in _SERVERS:
            plain, traced = await _round(kind, n, False), await _round(kind, n, True)
            rows[kind].append({**plain, "traced": traced["traced"]})
    print(f"{n} idle WebSockets per bare server, bytes per connection (medians of {rounds} rounds)")
    print(f"{'server':<16} {'RSS':>8} {'pymalloc':>9} {'malloc':>8} {'slack':>8} {'traced':>8}")
    for kind, results in rows.items():
        med = {key: statistics.median(r[key] for r in results) for key in results[0]}
        slack = med["rss"] - med["pymalloc"] - med["malloc"]
        print(
            f"{kind:<16} {med['rss']:>8,.0f} {med['pymalloc']:>9,.0f} {med['malloc']:>8,.0f} "
            f"{slack:>8,.0f} {med['traced']:>8,.0f}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m outboxhub.bench.idlefloor", description=__doc__)
    parser.add_argument("--connections", type=int, default=1000, help="idle connections per server")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (every server in each)")
    parser.add_argument("--serve", choices=_SERVERS, help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        _serve(args.serve, args.trace)
    else:
        asyncio.run(_run(args.connections, args.rounds))


if __name__ == "__main__":
    main()
