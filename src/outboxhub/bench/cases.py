"""The workloads both systems run, defined once: case names, payloads, pacing, outbox filling.

Case names are the join key of the side-by-side table, so the hub and the peer build them here.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec

from outboxhub.bench.options import BenchOptions, Scenario
from outboxhub.outbox import add, open_outbox

__all__ = [
    "PublishCase",
    "case_consume",
    "case_e2e",
    "case_fanout",
    "case_idle",
    "case_outbox",
    "case_replay",
    "fill_outbox",
    "nats_payload",
    "paced",
    "publish_cases",
    "scenario_sizes",
    "text_payload",
]


class PublishCase(msgspec.Struct, frozen=True, kw_only=True):
    """Confirmed publish: ``clients`` connections, each with up to ``window`` publishes in flight."""

    size: int
    clients: int
    window: int

    @property
    def name(self) -> str:
        flight = "1 in flight" if self.clients == 1 and self.window == 1 else f"{self.clients}×{self.window}"
        return f"publish {_size(self.size)}, {flight}"


def publish_cases(options: BenchOptions) -> list[PublishCase]:
    """One at a time and pipelined, for every payload size."""
    cases: list[PublishCase] = []
    for size in options.sizes_for("publish"):
        cases.append(PublishCase(size=size, clients=1, window=1))
        cases.append(PublishCase(size=size, clients=options.clients_for("publish"), window=options.window))
    return cases


def _size(size: int) -> str:
    return f"{size // 1024} KiB" if size >= 1024 and size % 1024 == 0 else f"{size} B"


def case_consume(n: int, size: int, members: int = 1) -> str:
    group = "1 group" if members == 1 else f"1 group × {members} members"
    return f"consume {n:,} × {_size(size)}, {group}, ack each"


def case_fanout(n: int, groups: int, size: int) -> str:
    return f"fan-out {n:,} × {_size(size)} → {groups} groups"


def case_e2e(rate: float, size: int, publishers: int = 1) -> str:
    shared = "" if publishers == 1 else f", {publishers} publishers"
    return f"end-to-end @ {rate:,.0f}/s, {_size(size)}{shared}"


def case_idle(n: int) -> str:
    return f"idle: {n:,} connections"


def case_outbox(n: int) -> str:
    return f"outbox drain {n:,} records"


def case_replay(n: int, size: int) -> str:
    return f"replay {n:,} × {_size(size)}"


def text_payload(size: int) -> str:
    """A JSON string payload whose encoding is exactly ``size`` bytes (quotes included)."""
    return "x" * (size - 2)


def nats_payload(size: int) -> bytes:
    """The peer's payload of ``size`` bytes."""
    return b"x" * size


async def paced(rate: float, count: int, send: Callable[[int], Awaitable[None]]) -> float:
    """Call ``send(i)`` for ``i`` in ``range(count)`` at ``rate`` per second; return how late the sender
    fell behind the schedule at worst (seconds). Sends that are due together go out back to back."""
    start = time.perf_counter()
    worst = 0.0
    i = 0
    while i < count:
        now = time.perf_counter()
        due = min(count, int((now - start) * rate) + 1)
        worst = max(worst, now - (start + i / rate))
        while i < due:
            await send(i)
            i += 1
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
    return worst


async def fill_outbox(url: str, *, table: str, topic: str, count: int, size: int) -> None:
    """Create the outbox ``table`` at ``url`` (SQLite path or PostgreSQL) and add ``count`` records, 1,000
    per transaction, through :func:`outboxhub.outbox.add` as an application would."""
    store = await open_outbox(url, table=table)
    try:
        await store.ensure_schema()
    finally:
        await store.close()
    payload = {"d": text_payload(max(size - 6, 2))}
    if url.startswith("sqlite:"):
        path = url.removeprefix("sqlite:///")
        await asyncio.to_thread(_fill_sqlite, Path(path), table, topic, count, payload)
    else:
        await asyncio.to_thread(_fill_postgres, url, table, topic, count, payload)


def _fill_sqlite(path: Path, table: str, topic: str, count: int, payload: object) -> None:
    conn = sqlite3.connect(path)
    try:
        for start in range(0, count, 1000):
            with conn:
                for _ in range(min(1000, count - start)):
                    add(conn, topic, payload, table=table)
    finally:
        conn.close()


def _fill_postgres(url: str, table: str, topic: str, count: int, payload: object) -> None:
    import psycopg

    with psycopg.connect(url) as conn:
        for start in range(0, count, 1000):
            with conn.transaction():
                for _ in range(min(1000, count - start)):
                    add(conn, topic, payload, table=table)


def scenario_sizes(options: BenchOptions, scenario: Scenario) -> int:
    """The single payload size of a non-publish scenario."""
    return options.sizes_for(scenario)[0]
