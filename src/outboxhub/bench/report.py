"""Output of a bench run: progress bars while it runs, then a rich table and a JSON file.

The table has one row per (case, system). When the run had a peer, each outboxhub row carries the ratio
to the peer's row of the same case: ``hub ÷ nats`` of the headline value, marked ``↑`` when higher is
better (throughput) and ``↓`` when lower is (latency, memory), so ``1.20× ↑`` beats the peer and
``1.20× ↓`` trails it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import msgspec
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from outboxhub.bench.results import NATS, BenchReport, Measurement

__all__ = ["Tracker", "ratio", "render", "to_json", "write_json"]

_TICK_S = 0.1


class Tracker:
    """Progress bars for the phases of a run; silent when ``console`` is None."""

    def __init__(self, console: Console | None) -> None:
        self._progress: Progress | None = None
        if console is not None:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            )

    def __enter__(self) -> Tracker:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def note(self, text: str) -> None:
        """Print a line above the bars."""
        if self._progress is not None:
            self._progress.console.print(text, highlight=False)

    @contextlib.asynccontextmanager
    async def phase(
        self, description: str, *, total: float, done: Callable[[], float] | None = None
    ) -> AsyncIterator[None]:
        """A bar for the block: ``done()`` (polled every 100 ms) against ``total``; without ``done``,
        the bar shows seconds elapsed against ``total`` seconds."""
        progress = self._progress
        if progress is None:
            yield
            return
        start = time.perf_counter()
        read = done or (lambda: time.perf_counter() - start)
        task = progress.add_task(description, total=total)

        async def tick() -> None:
            while True:
                progress.update(task, completed=min(read(), total))
                await asyncio.sleep(_TICK_S)

        ticker = asyncio.get_running_loop().create_task(tick())
        try:
            yield
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            progress.remove_task(task)


def ratio(hub: Measurement, peer: Measurement | None) -> str:
    """``hub ÷ peer`` of the headline value with its direction, or an empty string."""
    if peer is None or peer.value <= 0 or hub.value <= 0:
        return ""
    arrow = "↑" if hub.higher_is_better else "↓"
    return f"{hub.value / peer.value:.2f}× {arrow}"


def _value(m: Measurement) -> str:
    if m.unit == "events/s":
        return f"{m.value:,.0f} /s"
    return f"{m.value:,.2f} {m.unit}"


def render(report: BenchReport, console: Console) -> None:
    """Print the report as a table (and its notes below it)."""
    mc = report.machine
    table = Table(
        title=(
            f"outboxhub bench {report.scenario} — store {report.store} — {mc.cpus} CPUs, "
            f"{mc.memory_gib:.0f} GiB, Python {mc.python}"
        ),
        title_justify="left",
    )
    for name, justify in (
        ("case", "left"),
        ("system", "left"),
        ("result", "right"),
        ("p50 ms", "right"),
        ("p90 ms", "right"),
        ("p99 ms", "right"),
        ("max ms", "right"),
        ("server CPU", "right"),
        ("server RSS", "right"),
        ("hub ÷ NATS", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    peers = {(m.scenario, m.case): m for m in report.measurements if m.system == NATS}
    for m in report.measurements:
        lat = m.latency
        cells = (
            [f"{lat.p50_ms:.2f}", f"{lat.p90_ms:.2f}", f"{lat.p99_ms:.2f}", f"{lat.max_ms:.2f}"]
            if lat is not None
            else ["—"] * 4
        )
        srv = m.server
        cpu = f"{srv.cpu_percent:.0f} %" if srv is not None else "—"
        rss = f"{srv.rss_mib:.0f} MiB" if srv is not None else "—"
        vs = "" if m.system == NATS else ratio(m, peers.get((m.scenario, m.case)))
        table.add_row(m.case, m.system, _value(m), *cells, cpu, rss, vs)
    console.print(table)
    for line in report.notes:
        console.print(f"  note: {line}", highlight=False)


def to_json(report: BenchReport) -> bytes:
    """The report as indented JSON, with the ratios to the peer added."""
    data = msgspec.to_builtins(report)
    peers = {(m.scenario, m.case): m for m in report.measurements if m.system == NATS}
    for m, out in zip(report.measurements, data["measurements"], strict=True):
        peer = peers.get((m.scenario, m.case))
        if m.system != NATS and peer is not None and peer.value > 0:
            out["ratio_to_nats"] = m.value / peer.value
    return msgspec.json.format(msgspec.json.encode(data), indent=2) + b"\n"


def write_json(report: BenchReport, path: Path) -> None:
    """Write :func:`to_json` to ``path`` (creating its directory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(to_json(report))
