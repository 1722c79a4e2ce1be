"""What a bench run produces: a :class:`Measurement` per (case, system), in a :class:`BenchReport`."""

from __future__ import annotations

import datetime
import os
import platform
import sys
from typing import Any, Literal

import msgspec

from outboxhub.bench.procstats import ProcStats
from outboxhub.bench.stats import LatencySummary

__all__ = [
    "BASELINE",
    "HUB",
    "NATS",
    "SDK",
    "BenchReport",
    "Machine",
    "Measurement",
    "System",
    "machine_info",
    "started_now",
]

System = Literal["outboxhub", "outboxhub (SDK)", "nats", "naive baseline"]
HUB: System = "outboxhub"
SDK: System = "outboxhub (SDK)"
NATS: System = "nats"
BASELINE: System = "naive baseline"
"""The baseline rows of ``bench inproc`` (plain sqlite3, one transaction per event) and ``bench drainers``
(a naive one-record-at-a-time drainer, :mod:`~outboxhub.bench.naive_drainer`)."""


class Measurement(msgspec.Struct, frozen=True, kw_only=True):
    """One case measured on one system.

    ``value`` is the headline number in ``unit`` (events/s, ms p99, KiB/conn); ``higher_is_better`` says
    which way it points. ``latency`` is the per-operation distribution when the case has one; ``server``
    the CPU and RSS of the server process (the hub subprocess or nats-server) over the window.
    """

    scenario: str
    case: str
    system: System
    value: float
    unit: str
    higher_is_better: bool
    count: int
    elapsed_s: float
    latency: LatencySummary | None = None
    server: ProcStats | None = None
    extra: dict[str, Any] = {}


class Machine(msgspec.Struct, frozen=True, kw_only=True):
    """Where the numbers were taken."""

    cpus: int
    memory_gib: float
    python: str
    platform: str
    load_avg: tuple[float, float, float]


def machine_info() -> Machine:
    """This machine (memory via psutil)."""
    import psutil

    return Machine(
        cpus=os.cpu_count() or 0,
        memory_gib=psutil.virtual_memory().total / 1024**3,
        python=sys.version.split()[0],
        platform=platform.platform(),
        load_avg=os.getloadavg(),
    )


class BenchReport(msgspec.Struct, kw_only=True):
    """A whole run: the options it ran with, the machine, the store, every measurement."""

    scenario: str
    version: str
    store: str
    machine: Machine
    options: dict[str, Any]
    started_at: str
    measurements: list[Measurement] = []
    notes: list[str] = []

    @classmethod
    def of_run(
        cls,
        scenario: str,
        *,
        store: str,
        options: msgspec.Struct,
        started_at: str,
        measurements: list[Measurement],
        notes: list[str] | None = None,
    ) -> BenchReport:
        """The report of a run of this outboxhub version on this machine, with ``options`` as plain data."""
        from outboxhub import __version__

        return cls(
            scenario=scenario,
            version=__version__,
            store=store,
            machine=machine_info(),
            options=msgspec.to_builtins(options),
            started_at=started_at,
            measurements=measurements,
            notes=[] if notes is None else notes,
        )


def started_now() -> str:
    """When a run starts, as its report records it (UTC, ISO 8601 to the second)."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
