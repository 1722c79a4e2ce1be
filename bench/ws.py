"""WebSocket gateway benchmark: confirmed publishes/s and end-to-end latency.

    .venv/bin/python bench/ws.py [--store URL | --postgres] [--clients 8] [--seconds 5] [--rate 1000]
                                 [--runs 3] [--json FILE]

The hub runs in a subprocess (``outboxhub serve``; by default on an SQLite file in a temporary directory,
``--store URL`` for another store, ``--postgres`` for a throwaway schema on the local PostgreSQL, dropped
afterwards) and the clients run here, so server and clients each have their own core and event loop.
Two phases:

1. **Throughput**: ``--clients`` connections each keep up to ``--window`` PUBLISH frames in flight
   (pipelined) for ``--seconds``; counted are OK replies, i.e. publishes confirmed after the durable
   commit. Target: >= 25,000/s on the project's 2-core machine
   (>= 20,000/s on PostgreSQL).
2. **Latency**: one publisher at a fixed ``--rate`` events/s, one subscriber in a consumer group (ACKing
   each event); measured is publish send → EVENT receipt (p50/p99), and publish send → OK. Target: p99 <
   10 ms at 1,000 events/s.

Each phase runs ``--runs`` times against the same hub and the median run is reported (the machine is
shared, so single runs are noisy). Prints a table and writes JSON (default ``bench/results/ws.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from rich.console import Console
from rich.table import Table

from outboxhub import __version__
from outboxhub.auth.jwt import mint_token

SECRET = "bench-secret-" + "0123456789abcdef" * 3
SERVE = "from outboxhub.config import load_settings; from outboxhub.app import serve; serve(load_settings())"
PAYLOAD = {"order": 12345, "status": "created", "amount": 99.5, "note": "x" * 40}
TARGET_PUBLISH_PER_S = 25_000
TARGET_PUBLISH_PER_S_POSTGRES = 20_000
TARGET_P99_MS = 10.0


LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


async def start_hub(store: str) -> tuple[asyncio.subprocess.Process, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOXHUB_")}
    env.update(
        OUTBOXHUB_STORE=store,
        OUTBOXHUB_HOST="127.0.0.1",
        OUTBOXHUB_WS_PORT="0",
        OUTBOXHUB_OPS_PORT="0",
        OUTBOXHUB_JWT_SECRET=SECRET,
        OUTBOXHUB_LOG_LEVEL="warning",
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVE, env=env, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    ws_url = ""
    async with asyncio.timeout(30):
        while True:
            line = (await proc.stdout.readline()).decode()
            if not line:
                raise RuntimeError("the hub exited during start-up")
            key, _, value = line.strip().partition(": ")
            if key == "ws":
                ws_url = value
            if key == "dashboard":
                return proc, ws_url


async def stop_hub(proc: asyncio.subprocess.Process) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return await asyncio.wait_for(proc.wait(), 30)
    except TimeoutError:
        proc.kill()
        return await proc.wait()


async def connect(session: aiohttp.ClientSession, url: str, token: str) -> aiohttp.ClientWebSocketResponse:
    ws = await session.ws_connect(url, max_msg_size=0, compress=0)
    await ws.send_str(json.dumps({"op": "AUTH", "token": token}))
    reply = json.loads((await ws.receive(timeout=10)).data)
    if reply.get("op") != "OK":
        raise RuntimeError(f"AUTH refused: {reply}")
    return ws


# ---------------------------------------------------------------- throughput


async def publisher(
    ws: aiohttp.ClientWebSocketResponse, frame: str, window: int, stop_at: float, counts: list[int], idx: int
) -> None:
    """Keep up to ``window`` publishes in flight until ``stop_at``; count OK replies."""
    in_flight = 0
    room = asyncio.Event()
    room.set()
    done = False
    errors = 0

    async def reader() -> None:
        nonlocal in_flight, errors
        while True:
            msg = await ws.receive(timeout=30)
            if msg.type is not aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"connection closed during the run: {msg.type!r} {msg.data!r}")
            if msg.data.startswith('{"op":"OK"'):
                counts[idx] += 1
            else:
                errors += 1
            in_flight -= 1
            if in_flight <= window // 2:
                room.set()
            if done and in_flight == 0:
                return

    task = asyncio.create_task(reader())
    loop = asyncio.get_running_loop()
    burst = max(1, window // 4)
    while loop.time() < stop_at:
        await room.wait()
        n = min(burst, window - in_flight)
        for _ in range(n):
            await ws.send_str(frame)
        in_flight += n
        if in_flight >= window:
            room.clear()
    done = True
    if in_flight:
        await asyncio.wait_for(task, 30)
    else:
        task.cancel()
    if errors:
        raise RuntimeError(f"{errors} publishes were refused")


async def throughput(url: str, *, clients: int, seconds: float, window: int) -> dict[str, Any]:
    token = mint_token(SECRET, sub="bench", scopes=["publish:**", "subscribe:**"], ttl_s=3600)
    frame = json.dumps({"op": "PUBLISH", "topic": "bench.orders.created", "payload": PAYLOAD})
    async with aiohttp.ClientSession() as session:
        sockets = [await connect(session, url, token) for _ in range(clients)]
        # warm-up: a short run so the first measured second is not paying for start-up
        loop = asyncio.get_running_loop()
        warm = [0] * clients
        await asyncio.gather(
            *(publisher(ws, frame, window, loop.time() + 0.5, warm, i) for i, ws in enumerate(sockets))
        )
        counts = [0] * clients
        start = time.perf_counter()
        stop_at = loop.time() + seconds
        await asyncio.gather(
            *(publisher(ws, frame, window, stop_at, counts, i) for i, ws in enumerate(sockets))
        )
        elapsed = time.perf_counter() - start
        for ws in sockets:
            await ws.close()
    total = sum(counts)
    return {
        "clients": clients,
        "window": window,
        "seconds": elapsed,
        "confirmed": total,
        "per_s": total / elapsed,
    }


# ---------------------------------------------------------------- latency


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def latency(url: str, *, rate: float, seconds: float) -> dict[str, Any]:
    token = mint_token(SECRET, sub="bench", scopes=["publish:**", "subscribe:**"], ttl_s=3600)
    n = int(rate * seconds)
    sent_at: dict[int, float] = {}
    e2e: list[float] = []
    confirm: list[float] = []
    async with aiohttp.ClientSession() as session:
        sub = await connect(session, url, token)
        pub = await connect(session, url, token)
        await sub.send_str(json.dumps({"op": "SUBSCRIBE", "topic": "lat.*", "group": "bench", "rid": "s"}))
        reply = json.loads((await sub.receive(timeout=10)).data)
        if reply.get("op") != "OK":
            raise RuntimeError(f"SUBSCRIBE refused: {reply}")

        async def consume() -> None:
            while len(e2e) < n:
                msg = await sub.receive(timeout=30)
                now = time.perf_counter()
                frame = json.loads(msg.data)
                if frame.get("op") != "EVENT":
                    continue
                e2e.append(now - sent_at[frame["event"]["payload"]["i"]])
                ev_id = frame["event"]["id"]
                await sub.send_str(f'{{"op":"ACK","topic":"lat.*","group":"bench","id":"{ev_id}"}}')

        async def confirms() -> None:
            for _ in range(n):
                msg = await pub.receive(timeout=30)
                now = time.perf_counter()
                frame = json.loads(msg.data)
                confirm.append(now - sent_at[frame["rid"]])

        consumer = asyncio.create_task(consume())
        confirmer = asyncio.create_task(confirms())
        start = time.perf_counter()
        interval = 1.0 / rate
        for i in range(n):
            due = start + i * interval
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sent_at[i] = time.perf_counter()
            await pub.send_str(json.dumps({"op": "PUBLISH", "topic": "lat.x", "payload": {"i": i}, "rid": i}))
        await asyncio.wait_for(asyncio.gather(consumer, confirmer), 60)
        achieved = n / (time.perf_counter() - start)
        await sub.close()
        await pub.close()

    def ms(values: list[float]) -> dict[str, float]:
        return {
            "p50_ms": _pct(values, 0.50) * 1000,
            "p99_ms": _pct(values, 0.99) * 1000,
            "max_ms": max(values) * 1000,
            "mean_ms": statistics.fmean(values) * 1000,
        }

    return {"rate": rate, "events": n, "achieved_rate": achieved, "e2e": ms(e2e), "publish_ok": ms(confirm)}


# ---------------------------------------------------------------- main


async def drop_schema(schema: str) -> None:
    import psycopg

    async with await psycopg.AsyncConnection.connect(LOCAL_POSTGRES, autocommit=True) as conn:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def run(args: argparse.Namespace) -> dict[str, Any]:
    schema = f"bench_ws_{os.getpid()}" if args.postgres else None
    with tempfile.TemporaryDirectory(prefix="outboxhub-bench-") as tmp:
        if schema is not None:
            store = f"{LOCAL_POSTGRES}?schema={schema}"
        else:
            store = args.store or f"sqlite:///{Path(tmp) / 'bench.db'}"
        proc, url = await start_hub(store)
        try:
            tputs = [
                await throughput(url, clients=args.clients, seconds=args.seconds, window=args.window)
                for _ in range(args.runs)
            ]
            lats = [
                await latency(url, rate=args.rate, seconds=args.latency_seconds) for _ in range(args.runs)
            ]
        finally:
            code = await stop_hub(proc)
            if schema is not None:
                await drop_schema(schema)
    # The median run of each phase (by its headline number) is the result; every run is kept in the JSON.
    tput = sorted(tputs, key=lambda r: float(r["per_s"]))[len(tputs) // 2]
    lat = sorted(lats, key=lambda r: float(r["e2e"]["p99_ms"]))[len(lats) // 2]
    return {
        "bench": "ws",
        "version": __version__,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "store": store.split(":", 1)[0],
        "throughput": tput,
        "latency": lat,
        "runs": args.runs,
        "throughput_runs": [r["per_s"] for r in tputs],
        "latency_p99_runs": [r["e2e"]["p99_ms"] for r in lats],
        "hub_exit_code": code,
        "targets": {
            "publish_per_s": TARGET_PUBLISH_PER_S_POSTGRES
            if store.startswith("postgres")
            else TARGET_PUBLISH_PER_S,
            "e2e_p99_ms": TARGET_P99_MS,
        },
    }


def report(result: dict[str, Any], console: Console) -> None:
    t, lat = result["throughput"], result["latency"]
    table = Table(
        title=f"outboxhub WebSocket gateway ({result['store']}, {result['machine']['cpus']} CPUs, "
        f"median of {result['runs']} runs)"
    )
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    table.add_row(
        f"confirmed publishes/s ({t['clients']} clients, window {t['window']})",
        f"{t['per_s']:,.0f}",
        f">= {result['targets']['publish_per_s']:,}",
    )
    table.add_row("publishes confirmed", f"{t['confirmed']:,}", "")
    e2e, ok = lat["e2e"], lat["publish_ok"]
    table.add_row(f"end-to-end p50 @ {lat['rate']:,.0f}/s (publish → EVENT)", f"{e2e['p50_ms']:.2f} ms", "")
    table.add_row(
        f"end-to-end p99 @ {lat['rate']:,.0f}/s", f"{e2e['p99_ms']:.2f} ms", f"< {TARGET_P99_MS:g} ms"
    )
    table.add_row("end-to-end max", f"{e2e['max_ms']:.2f} ms", "")
    table.add_row("publish → OK p50 / p99", f"{ok['p50_ms']:.2f} / {ok['p99_ms']:.2f} ms", "")
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--store", help="store URL for the hub (default: a new SQLite file)")
    where.add_argument(
        "--postgres", action="store_true", help=f"a throwaway schema on {LOCAL_POSTGRES}, dropped afterwards"
    )
    parser.add_argument("--clients", type=int, default=8, help="publishing connections (default 8)")
    parser.add_argument("--seconds", type=float, default=5.0, help="throughput phase length (default 5)")
    parser.add_argument(
        "--window", type=int, default=1000, help="publishes in flight per client (default 1000)"
    )
    parser.add_argument("--rate", type=float, default=1000.0, help="latency phase events/s (default 1000)")
    parser.add_argument("--latency-seconds", type=float, default=5.0, help="latency phase length (default 5)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each phase; the median is reported")
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "ws.json")
    args = parser.parse_args()
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        result = runner.run(run(args))
    report(result, Console())
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
