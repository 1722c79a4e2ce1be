"""Prometheus metrics of one hub, in a registry of its own (several hubs in one process never collide).

Three kinds of source, all read when ``/metrics`` is scraped:

* **counters the gateway keeps** (:class:`~outboxhub.gateway.connection.GatewayStats`: publishes, deliveries,
  redeliveries, acks, nacks, connections, protocol errors) are exported as they are — the gateway stays
  free of Prometheus and pays one integer increment per event;
* **counters the outbox drainers keep** (``Drainer.published``, ``retried``, ``dead``) are read the
  same way, from ``Hub.drainer_metrics`` (empty when the hub drains nothing);
* **state read from the store and the outboxes** (per-group lag, in flight, dead letters, members; outbox
  pending, claimed, dead and the oldest pending record's age) is put in by :meth:`HubMetrics.update`
  just before rendering, so labels of deleted groups disappear instead of going stale;
* **HTTP request latency** of the ops API, observed by the ops middleware.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from outboxhub.gateway.stats import GatewayStats
from outboxhub.outbox import DrainerMetrics

__all__ = ["CONTENT_TYPE", "GroupSample", "HubMetrics", "OutboxSample"]

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST
"""The ``Content-Type`` of :meth:`HubMetrics.render` (Prometheus text format 0.0.4)."""

_LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupSample:
    """One consumer group's state at scrape time."""

    pattern: str
    group: str
    members: int
    in_flight: int
    dead_letters: int
    lag_count: int
    lag_ms: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxSample:
    """One drained outbox's counts at scrape time (``up`` is False when it could not be read)."""

    outbox: str
    up: bool
    pending: int = 0
    claimed: int = 0
    dead: int = 0
    oldest_pending_age_ms: int | None = None


class HubMetrics:
    """The hub's metrics. ``stats`` are the gateway's counters; ``open_connections`` counts live sockets;
    ``drainers`` returns ``(outbox name, counters)`` for each outbox drainer (``Hub.drainer_metrics``).

    Everything is registered in :attr:`registry`, never in prometheus-client's global default registry.
    """

    def __init__(
        self,
        *,
        stats: GatewayStats,
        open_connections: Callable[[], int],
        drainers: Callable[[], Iterable[tuple[str, DrainerMetrics]]] | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.stats = stats
        self._open_connections = open_connections
        self._drainers = drainers
        self._groups: tuple[GroupSample, ...] = ()
        self._outboxes: tuple[OutboxSample, ...] = ()
        self._last_seq = 0
        self._store_up = True
        self.request_seconds = Histogram(
            "outboxhub_http_request_duration_seconds",
            "Ops API request latency by route template, method and status.",
            ["route", "method", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_HubCollector(self))

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Record one ops request (``route`` is the template, e.g. ``/lag``, never the raw URL)."""
        self.request_seconds.labels(route, method, str(status)).observe(seconds)

    def update(
        self,
        *,
        store_up: bool,
        last_seq: int,
        groups: Sequence[GroupSample],
        outboxes: Sequence[OutboxSample],
    ) -> None:
        """Replace the store-derived state with a fresh reading (called before :meth:`render`)."""
        self._store_up = store_up
        self._last_seq = last_seq
        self._groups = tuple(groups)
        self._outboxes = tuple(outboxes)

    def render(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)

    def samples(self) -> Iterator[Metric]:
        """Every metric family that does not come from a prometheus-client object (for the collector)."""
        s = self.stats
        yield _counter(
            "outboxhub_publishes", "Events published through the gateway (confirmed).", s.publishes
        )
        yield _counter("outboxhub_deliveries", "EVENT frames queued to WebSocket clients.", s.events_out)
        yield _counter(
            "outboxhub_redeliveries",
            "Deliveries with attempt > 1 (ack timeout, NACK or a member that left).",
            s.redeliveries,
        )
        yield _counter("outboxhub_acks", "ACK frames handled.", s.acks)
        yield _counter("outboxhub_nacks", "NACK frames handled.", s.nacks)
        yield _counter(
            "outboxhub_deliveries_refused",
            "Deliveries refused because a client's send queue was full.",
            s.events_refused,
        )
        yield _counter("outboxhub_connections", "WebSocket connections accepted.", s.connections_total)
        yield _gauge(
            "outboxhub_connections_open", "WebSocket connections open now.", self._open_connections()
        )
        errors = CounterMetricFamily(
            "outboxhub_protocol_errors", "ERR replies sent, by error code.", labels=["code"]
        )
        for code, count in sorted(s.errors.items()):
            errors.add_metric([code], count)
        yield errors
        refusals = CounterMetricFamily(
            "outboxhub_quota_refusals",
            "PUBLISHes refused by a publish quota (per hub process), by kind (principal, topic, token) and "
            "quota pattern.",
            labels=["kind", "pattern"],
        )
        for (kind, pattern), count in sorted(s.quota_refusals.items()):
            refusals.add_metric([kind, pattern], count)
        yield refusals
        yield _counter("outboxhub_extends", "EXTEND frames that pushed a delivery's deadline.", s.extends)
        yield _counter(
            "outboxhub_events_withheld",
            "Dead letters not delivered to a subscriber that may not read their original topic.",
            s.events_withheld,
        )
        yield _gauge("outboxhub_store_up", "1 when the store answered the last scrape.", int(self._store_up))
        yield _gauge("outboxhub_store_last_seq", "Highest committed seq in the store.", self._last_seq)

        labels = ["pattern", "group"]
        families = {
            "members": GaugeMetricFamily(
                "outboxhub_group_members", "Members of the group connected to this hub.", labels=labels
            ),
            "in_flight": GaugeMetricFamily(
                "outboxhub_group_in_flight", "Delivered events not yet acked.", labels=labels
            ),
            "lag_count": GaugeMetricFamily(
                "outboxhub_group_lag_events", "Matching events above the group's ack floor.", labels=labels
            ),
            "lag_ms": GaugeMetricFamily(
                "outboxhub_group_lag_seconds",
                "Tail ts minus the ts of the group's cursor event (absent when either is missing).",
                labels=labels,
            ),
            "dead_letters": GaugeMetricFamily(
                "outboxhub_group_dead_letters", "Events the group dead-lettered so far.", labels=labels
            ),
        }
        for g in self._groups:
            key = [g.pattern, g.group]
            families["members"].add_metric(key, g.members)
            families["in_flight"].add_metric(key, g.in_flight)
            families["lag_count"].add_metric(key, g.lag_count)
            families["dead_letters"].add_metric(key, g.dead_letters)
            if g.lag_ms is not None:
                families["lag_ms"].add_metric(key, g.lag_ms / 1000)
        yield from families.values()

        outbox_families = {
            "up": GaugeMetricFamily(
                "outboxhub_outbox_up", "1 when the outbox could be read.", labels=["outbox"]
            ),
            "pending": GaugeMetricFamily(
                "outboxhub_outbox_pending", "Outbox records waiting to be published.", labels=["outbox"]
            ),
            "claimed": GaugeMetricFamily(
                "outboxhub_outbox_claimed", "Outbox records claimed by a drainer now.", labels=["outbox"]
            ),
            "dead": GaugeMetricFamily(
                "outboxhub_outbox_dead",
                "Outbox records that gave up (retry or purge them).",
                labels=["outbox"],
            ),
            "age": GaugeMetricFamily(
                "outboxhub_outbox_oldest_pending_age_seconds",
                "Age of the oldest pending outbox record (0 when none is pending).",
                labels=["outbox"],
            ),
        }
        for o in self._outboxes:
            key = [o.outbox]
            outbox_families["up"].add_metric(key, int(o.up))
            if not o.up:
                continue
            outbox_families["pending"].add_metric(key, o.pending)
            outbox_families["claimed"].add_metric(key, o.claimed)
            outbox_families["dead"].add_metric(key, o.dead)
            outbox_families["age"].add_metric(key, (o.oldest_pending_age_ms or 0) / 1000)
        yield from outbox_families.values()
        yield from self._drainer_samples()

    def _drainer_samples(self) -> Iterator[Metric]:
        families = {
            "published": CounterMetricFamily(
                "outboxhub_outbox_published",
                "Outbox records this hub's drainers published (marked sent).",
                labels=["outbox"],
            ),
            "retried": CounterMetricFamily(
                "outboxhub_outbox_retried",
                "Outbox record publishes that failed and were scheduled for a retry.",
                labels=["outbox"],
            ),
            "dead": CounterMetricFamily(
                "outboxhub_outbox_failed_permanently",
                "Outbox records this hub's drainers gave up on (marked dead).",
                labels=["outbox"],
            ),
        }
        totals: dict[str, list[int]] = {}
        for name, counters in self._drainers() if self._drainers is not None else ():
            total = totals.setdefault(name, [0, 0, 0])  # the same URL configured twice: one series
            total[0] += counters.published
            total[1] += counters.retried
            total[2] += counters.dead
        for name, (published, retried, dead) in totals.items():
            families["published"].add_metric([name], published)
            families["retried"].add_metric([name], retried)
            families["dead"].add_metric([name], dead)
        yield from families.values()


def _counter(name: str, doc: str, value: int) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


class _HubCollector(Collector):
    def __init__(self, metrics: HubMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return self._metrics.samples()
