"""The measuring both systems share: the server watch, time bounds, the outbox drain and the rows
(:class:`~outboxhub.bench.results.Measurement`) each kind of scenario reports.

The hub (:mod:`~outboxhub.bench.hub_scenarios`) and the peer (:mod:`~outboxhub.bench.peer_nats`) differ
only in how they drive their server; what a row holds for a scenario is built here once, so both sides
stay comparable.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec

from outboxhub.bench.cases import (
    PublishCase,
    case_consume,
    case_e2e,
    case_fanout,
    case_idle,
    case_outbox,
    case_replay,
    fill_outbox,
)
from outboxhub.bench.procstats import ProcessWatch, ProcStats
from outboxhub.bench.report import Tracker
from outboxhub.bench.results import Measurement, System
from outboxhub.bench.stats import LatencySummary
from outboxhub.outbox import Drainer, DrainerSettings, open_outbox

__all__ = [
    "consume_row",
    "drain_outbox",
    "e2e_row",
    "fanout_row",
    "fill_outbox_phase",
    "idle_row",
    "outbox_row",
    "publish_row",
    "replay_row",
    "start_watch",
    "stop_watch",
    "throughput_row",
    "timeout_for",
]


def timeout_for(events: int) -> float:
    """A generous bound for moving ``events`` (a stuck run fails instead of hanging)."""
    return 60.0 + events / 1_000


def start_watch(pid: int | None) -> ProcessWatch | None:
    """A started watch on the server process ``pid``, or None when its pid is unknown."""
    if pid is None:
        return None
    watch = ProcessWatch(pid)
    watch.start()
    return watch


async def stop_watch(watch: ProcessWatch | None) -> ProcStats | None:
    """The server's CPU and RSS over the window of ``watch`` (None when there was no watch)."""
    return None if watch is None else await watch.stop()


def throughput_row(
    scenario: str,
    case: str,
    system: System,
    *,
    count: int,
    elapsed_s: float,
    server: ProcStats | None,
    latency: LatencySummary | None = None,
    extra: dict[str, Any] | None = None,
) -> Measurement:
    """A row whose headline is ``count`` events over ``elapsed_s`` (events/s, higher is better)."""
    return Measurement(
        scenario=scenario,
        case=case,
        system=system,
        value=count / elapsed_s,
        unit="events/s",
        higher_is_better=True,
        count=count,
        elapsed_s=elapsed_s,
        latency=latency,
        server=server,
        extra={} if extra is None else extra,
    )


def publish_row(
    system: System,
    case: PublishCase,
    *,
    count: int,
    elapsed_s: float,
    latency: LatencySummary | None,
    server: ProcStats | None,
    **more: Any,
) -> Measurement:
    """A confirmed-publish row for ``case``: ``count`` OKs over ``elapsed_s``, with publish → OK
    ``latency``. ``more`` is added to ``extra`` after the case's size, clients and window."""
    return throughput_row(
        "publish",
        case.name,
        system,
        count=count,
        elapsed_s=elapsed_s,
        latency=latency,
        server=server,
        extra={"size": case.size, "clients": case.clients, "window": case.window, **more},
    )


def consume_row(
    system: System,
    n: int,
    size: int,
    *,
    count: int,
    elapsed_s: float,
    server: ProcStats | None,
    per_member: list[int],
    **more: Any,
) -> Measurement:
    """A consume row: ``n`` prefilled events of ``size`` bytes read by ``len(per_member)`` competing
    members (``per_member``: how many each got). ``more`` is added to ``extra`` before the members."""
    members = len(per_member)
    return throughput_row(
        "consume",
        case_consume(n, size, members),
        system,
        count=count,
        elapsed_s=elapsed_s,
        server=server,
        extra={**more, "members": members, "per_member": per_member},
    )


def fanout_row(
    system: System,
    n: int,
    groups: int,
    size: int,
    *,
    count: int,
    elapsed_s: float,
    latency: LatencySummary | None,
    server: ProcStats | None,
    publish_s: float,
    measured: str,
) -> Measurement:
    """A fan-out row: ``n`` events published in ``publish_s``, each delivered to ``groups`` groups;
    ``measured`` says what the latency spans."""
    return throughput_row(
        "fanout",
        case_fanout(n, groups, size),
        system,
        count=count,
        elapsed_s=elapsed_s,
        latency=latency,
        server=server,
        extra={"publish_rate": n / publish_s, "groups": groups, "latency": measured},
    )


def replay_row(
    system: System, n: int, size: int, *, count: int, elapsed_s: float, server: ProcStats | None, via: str
) -> Measurement:
    """A replay row: the ``n`` prefilled events read back to the end ``via`` the named interface."""
    return throughput_row(
        "replay",
        case_replay(n, size),
        system,
        count=count,
        elapsed_s=elapsed_s,
        server=server,
        extra={"via": via},
    )


def e2e_row(
    system: System,
    *,
    rate: float,
    size: int,
    count: int,
    received: int,
    latency: LatencySummary,
    span_ns: int,
    send_s: float,
    lag_s: float,
    ok_latency: LatencySummary | None,
    server: ProcStats | None,
    publishers: int = 1,
    **more: Any,
) -> Measurement:
    """An end-to-end row at ``rate``: the headline is the p99 of send → receive (lower is better);
    ``count`` events were sent over ``send_s`` by ``publishers`` connections, ``received`` arrived over
    ``span_ns``. ``more`` is added to ``extra`` after the common keys."""
    return Measurement(
        scenario="e2e",
        case=case_e2e(rate, size, publishers),
        system=system,
        value=latency.p99_ms,
        unit="ms p99",
        higher_is_better=False,
        count=received,
        elapsed_s=span_ns / 1e9,
        latency=latency,
        server=server,
        extra={
            "rate": rate,
            "publishers": publishers,
            "achieved_rate": count / send_s,
            "sender_max_lag_ms": lag_s * 1000,
            "publish_ok_latency": msgspec.to_builtins(ok_latency),
            **more,
        },
    )


def idle_row(
    system: System, n: int, *, before: int, after: int, elapsed_s: float, server: ProcStats | None
) -> Measurement:
    """An idle-connections row: the server's RSS growth (``before`` → ``after`` bytes) per connection."""
    return Measurement(
        scenario="idle",
        case=case_idle(n),
        system=system,
        value=(after - before) / n / 1024,
        unit="KiB/conn",
        higher_is_better=False,
        count=n,
        elapsed_s=elapsed_s,
        server=server,
        extra={"rss_before_mib": before / 2**20, "rss_after_mib": after / 2**20},
    )


async def fill_outbox_phase(tracker: Tracker, url: str, *, table: str, topic: str, n: int, size: int) -> None:
    """:func:`~outboxhub.bench.cases.fill_outbox` under a progress phase (before the measured window)."""
    async with tracker.phase(f"fill outbox with {n:,} records", total=1):
        await fill_outbox(url, table=table, topic=topic, count=n, size=size)


async def drain_outbox(
    ctx_tracker: Tracker, label: str, url: str, table: str, sink: Any, n: int
) -> tuple[int, float]:
    """Drain the outbox ``table`` at ``url`` into ``sink`` until it is empty; return (published, seconds)."""
    outbox = await open_outbox(url, table=table)
    drainer = Drainer(outbox, sink, DrainerSettings(idle_wait_ms=50, retention_ms=None))
    try:
        start = time.perf_counter()
        async with ctx_tracker.phase(label, total=n, done=lambda: drainer.published):
            await asyncio.wait_for(drainer.run_until_idle(), timeout_for(n))
        elapsed = time.perf_counter() - start
    finally:
        await outbox.close()
    return drainer.published, elapsed


def outbox_row(
    system: System, n: int, *, published: int, elapsed_s: float, server: ProcStats | None, sink: str
) -> Measurement:
    """An outbox-drain row: ``published`` records from an SQLite outbox, drained in the bench process
    into the ``sink``."""
    return throughput_row(
        "outbox",
        case_outbox(n),
        system,
        count=published,
        elapsed_s=elapsed_s,
        server=server,
        extra={"outbox": "sqlite", "drainer": f"in the bench process, {sink} sink"},
    )
