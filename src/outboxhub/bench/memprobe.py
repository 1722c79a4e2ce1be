"""What one idle connection allocates: tracemalloc snapshots of an in-process hub, diffed around N sockets.

``python -m outboxhub.bench.memprobe [--connections N] [--top K]`` starts a hub in this process (SQLite in a
temporary directory, the default asyncio loop), opens N authenticated idle connections from a client
subprocess (so only the hub's allocations are traced), and prints the traced bytes and blocks per
connection grouped by file and by line, largest first. It shows Python-level allocations only (not the
kernel's socket buffers, nor uvloop's C transports under ``outboxhub serve``), so its total differs from
the RSS growth that ``outboxhub bench idle`` reports; it says where the bytes come from.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tempfile
import tracemalloc
from typing import Final

__all__ = ["main"]

_CLIENT: Final = r"""
import asyncio, sys
from outboxhub.bench.wsclient import connect_many
async def main(url, token, n):
    await connect_many(url, token, n)
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


async def _clients(url: str, token: str, n: int) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CLIENT, url, token, str(n),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    if not (await proc.stdout.readline()).startswith(b"ready"):
        raise RuntimeError("the client process failed to open its connections")
    return proc


def _report(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, n: int, top: int) -> None:
    own = [tracemalloc.Filter(False, tracemalloc.__file__)]
    before, after = before.filter_traces(own), after.filter_traces(own)
    lines = after.compare_to(before, "lineno")
    total = sum(st.size_diff for st in lines)
    blocks = sum(st.count_diff for st in lines)
    print(f"{n} idle connections: {total / n:,.0f} B and {blocks / n:.1f} blocks traced per connection")
    for key in ("filename", "lineno"):
        print(f"-- by {key}")
        for st in after.compare_to(before, key)[:top]:
            frame = st.traceback[0]
            where = frame.filename if key == "filename" else f"{frame.filename}:{frame.lineno}"
            print(f"{st.size_diff / n:8,.0f} B {st.count_diff / n:7.2f} blocks  {where}")


async def _probe(n: int, top: int) -> None:
    from outboxhub.app import start_hub
    from outboxhub.auth.jwt import mint_token
    from outboxhub.bench.hubproc import BENCH_SCOPES
    from outboxhub.config import load_settings

    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(
            store=f"sqlite:///{tmp}/probe.db",
            host="127.0.0.1",
            ws_port=0,
            ops_port=0,
            jwt_secret="memprobe-" + "x" * 40,
            max_connections=n + 100,
            max_connections_per_ip=n + 100,
        )
        hub = await start_hub(settings, ops_routes=[])
        try:
            assert hub.jwt_secret is not None
            token = mint_token(hub.jwt_secret, sub="memprobe", scopes=BENCH_SCOPES)
            url = f"ws://127.0.0.1:{hub.ws_port}/"
            warm = await _clients(url, token, 20)  # first-connection caches are not per connection
            await asyncio.sleep(0.5)
            gc.collect()
            tracemalloc.start()
            before = tracemalloc.take_snapshot()
            probe = await _clients(url, token, n)
            await asyncio.sleep(1.0)
            gc.collect()
            after = tracemalloc.take_snapshot()
            tracemalloc.stop()
            _report(before, after, n, top)
            for proc in (probe, warm):
                proc.kill()
                await proc.wait()
        finally:
            await hub.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m outboxhub.bench.memprobe", description=__doc__)
    parser.add_argument("--connections", type=int, default=200, help="idle connections to open")
    parser.add_argument("--top", type=int, default=20, help="rows per grouping")
    args = parser.parse_args(argv)
    if args.connections < 1:
        parser.error("--connections must be at least 1")
    asyncio.run(_probe(args.connections, args.top))


if __name__ == "__main__":
    main()
