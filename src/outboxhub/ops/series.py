"""The charts' data: an in-process ring of samples (read by ``GET /series``) and the task that takes them.

Every :data:`SAMPLE_INTERVAL_S` the :class:`Sampler` reads the gateway's counters (publishes, EVENTs sent),
each topic's event count, each group's lag and each connection's counters into a :class:`Sample`;
:class:`SeriesRing` keeps the last :data:`SAMPLES` of them (15 minutes) and turns neighbouring samples into
rates per second. Memory is bounded: at most :data:`MAX_SERIES` topics (the most recently written) and
:data:`MAX_SERIES` groups (the most lagging) per sample, times :data:`SAMPLES` samples. Nothing leaves the
process: a restarted hub starts with empty charts (Prometheus and docs/grafana/ keep the long history).

The ring is pure (no I/O, no clock): the sampler passes timestamps in, and the property tests drive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from outboxhub.errors import StoreError
from outboxhub.gateway.server import Gateway
from outboxhub.ids import now_ms
from outboxhub.store.base import Store, groups_with_lag

__all__ = ["MAX_SERIES", "SAMPLES", "SAMPLE_INTERVAL_S", "Sample", "SampledHub", "Sampler", "SeriesRing"]

log = logging.getLogger("outboxhub.ops")

SAMPLE_INTERVAL_S: Final = 5.0
SAMPLES: Final = 180
"""15 minutes of samples at :data:`SAMPLE_INTERVAL_S`."""
MAX_SERIES: Final = 100
"""Most topics and most groups kept per sample."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Sample:
    """The hub's counters at ``ts`` (unix ms). Counters only grow while the hub runs."""

    ts: int
    publishes: int
    delivered: int
    topics: Mapping[str, int] = field(default_factory=dict)
    """Topic -> event count."""
    lag: Mapping[tuple[str, str], int] = field(default_factory=dict)
    """(pattern, group) -> lag (events)."""
    connections: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    """Connection id -> (published, delivered)."""


def _rate(newer: int, older: int, seconds: float) -> float:
    """Per-second growth; a counter that went down (reset) counts from zero, as Prometheus' rate does."""
    grown = newer - older if newer >= older else newer
    return round(grown / seconds, 3) if seconds > 0 else 0.0


class SeriesRing:
    """The last ``capacity`` samples, oldest first."""

    def __init__(self, capacity: int = SAMPLES) -> None:
        if capacity < 2:
            raise ValueError(f"capacity must be >= 2, got {capacity}")
        self._samples: deque[Sample] = deque(maxlen=capacity)

    def __len__(self) -> int:
        return len(self._samples)

    def add(self, sample: Sample) -> None:
        """Append ``sample``; after a clock step back it replaces the samples that are not older, so the
        ring stays in strictly increasing time order."""
        while self._samples and sample.ts <= self._samples[-1].ts:
            self._samples.pop()
        self._samples.append(sample)

    def series(self) -> dict[str, Any]:
        """Rates between neighbouring samples (one point per sample after the first) and lag per sample.

        ``topics`` maps each topic to its events/s (None where a sample lacks it), ``groups`` maps
        ``"<pattern> <group>"`` to its lag."""
        samples = list(self._samples)
        pairs = list(itertools.pairwise(samples))
        names = sorted({t for s in samples[1:] for t in s.topics})
        keys = sorted({k for s in samples for k in s.lag})
        topics: dict[str, list[float | None]] = {name: [] for name in names}
        for old, new in pairs:
            seconds = (new.ts - old.ts) / 1000
            for name in names:
                now, before = new.topics.get(name), old.topics.get(name, 0)
                topics[name].append(None if now is None else _rate(now, before, seconds))
        return {
            "ts": [new.ts for _, new in pairs],
            "publishRate": [_rate(n.publishes, o.publishes, (n.ts - o.ts) / 1000) for o, n in pairs],
            "deliverRate": [_rate(n.delivered, o.delivered, (n.ts - o.ts) / 1000) for o, n in pairs],
            "topics": topics,
            "lagTs": [s.ts for s in samples],
            "groups": {f"{p} {g}": [s.lag.get((p, g)) for s in samples] for p, g in keys},
        }

    def connection_rates(self) -> dict[str, tuple[float, float]]:
        """Connection id -> (publishes/s, deliveries/s) over the last interval."""
        if len(self._samples) < 2:
            return {}
        old, new = self._samples[-2], self._samples[-1]
        seconds = (new.ts - old.ts) / 1000
        rates: dict[str, tuple[float, float]] = {}
        for conn_id, (published, delivered) in new.connections.items():
            before = old.connections.get(conn_id, (0, 0))
            rates[conn_id] = (_rate(published, before[0], seconds), _rate(delivered, before[1], seconds))
        return rates


class SampledHub(Protocol):
    """What the sampler reads (``ops.context.HubView`` is one)."""

    @property
    def store(self) -> Store: ...

    @property
    def gateway(self) -> Gateway: ...


class Sampler:
    """Takes a :class:`Sample` of ``hub`` into ``ring`` every ``interval_s`` (first one at start)."""

    def __init__(self, hub: SampledHub, ring: SeriesRing, *, interval_s: float = SAMPLE_INTERVAL_S) -> None:
        self.hub = hub
        self.ring = ring
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    async def sample(self) -> Sample:
        gateway = self.hub.gateway
        store = self.hub.store
        conns = {c.id: (c.published, c.delivered) for c in gateway.snapshot()}
        topics: dict[str, int] = {}
        lag: dict[tuple[str, str], int] = {}
        try:
            found = sorted(await store.topics(), key=lambda t: t.last_seq, reverse=True)[:MAX_SERIES]
            topics = {t.topic: t.count for t in found}
            rows = await groups_with_lag(store, lambda g: not g.group.startswith("~"))
            pairs = [((g.pattern, g.group), x.lag_count) for g, x in rows if x]
            lag = dict(sorted(pairs, key=lambda kv: kv[1], reverse=True)[:MAX_SERIES])
        except StoreError as exc:
            log.warning("series: store unavailable: %s", exc)
        return Sample(
            ts=now_ms(),
            publishes=gateway.stats.publishes,
            delivered=gateway.stats.events_out,
            topics=topics,
            lag=lag,
            connections=conns,
        )

    async def _run(self) -> None:
        while True:
            try:
                self.ring.add(await self.sample())
            except Exception:  # never let a bad sample stop the charts
                log.exception("series: sampling failed")
            await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="outboxhub-ops-series")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def connection_rates(self) -> dict[str, tuple[float, float]]:
        return self.ring.connection_rates()
