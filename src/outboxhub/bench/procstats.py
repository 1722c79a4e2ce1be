"""CPU and memory of a server process (the hub subprocess, nats-server) over a measured window.

:class:`ProcessWatch` reads the process's CPU times at the start and the end of the window (CPU % is
their difference over the wall time, so 100 % is one full core) and samples its RSS every 100 ms for
the peak. :func:`find_listener` finds the local process that listens on a TCP port (how the harness
finds nats-server, or a hub given by ``--url``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Final

import msgspec
import psutil

__all__ = ["ProcStats", "ProcessWatch", "find_listener", "rss_bytes"]

_SAMPLE_S: Final = 0.1
_MIB: Final = 1024 * 1024


class ProcStats(msgspec.Struct, frozen=True, kw_only=True):
    """A server process over one measurement: CPU (% of one core) and RSS (MiB) at the end and peak."""

    pid: int
    cpu_percent: float
    rss_mib: float
    rss_peak_mib: float


def rss_bytes(pid: int) -> int:
    """The resident set size of ``pid`` now."""
    return int(psutil.Process(pid).memory_info().rss)


def find_listener(port: int, host: str = "127.0.0.1") -> int | None:
    """The pid of the local process listening on TCP ``port`` (None when there is none or it is not ours
    to see)."""
    try:
        conns = psutil.net_connections(kind="tcp")
    except psutil.AccessDenied:
        return None
    for conn in conns:
        if conn.status != psutil.CONN_LISTEN or conn.pid is None or not conn.laddr:
            continue
        if conn.laddr.port == port and conn.laddr.ip in (host, "0.0.0.0", "::", "::1", "127.0.0.1"):
            return int(conn.pid)
    return None


class ProcessWatch:
    """Watch one process between :meth:`start` and :meth:`stop` (an async context manager too)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._proc = psutil.Process(pid)
        self._t0 = 0.0
        self._cpu0 = 0.0
        self._peak = 0
        self._task: asyncio.Task[None] | None = None

    def _cpu(self) -> float:
        times = self._proc.cpu_times()
        return float(times.user + times.system)

    async def _sample(self) -> None:
        while True:
            with contextlib.suppress(psutil.Error):
                self._peak = max(self._peak, int(self._proc.memory_info().rss))
            await asyncio.sleep(_SAMPLE_S)

    def start(self) -> None:
        """Begin the window."""
        self._t0 = time.perf_counter()
        self._cpu0 = self._cpu()
        self._peak = int(self._proc.memory_info().rss)
        self._task = asyncio.get_running_loop().create_task(self._sample())

    async def stop(self) -> ProcStats:
        """End the window and return what was seen."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        wall = max(time.perf_counter() - self._t0, 1e-9)
        cpu = self._cpu() - self._cpu0
        rss = int(self._proc.memory_info().rss)
        return ProcStats(
            pid=self.pid,
            cpu_percent=100.0 * cpu / wall,
            rss_mib=rss / _MIB,
            rss_peak_mib=max(self._peak, rss) / _MIB,
        )
