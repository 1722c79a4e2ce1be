"""The ops port: HTTP ops API, Prometheus metrics, the dashboard and the browser client.

:func:`install_ops` is the route installer :func:`outboxhub.app.start_hub` runs on the ops app (by
default). It adds, next to the server's own ``/ws`` and ``/healthz``:

==========================  ========  ==========================================================
route                       access    what
==========================  ========  ==========================================================
``GET /topics``             read      topics with count, last seq and last ts
``GET /groups``             read      groups: pattern, members, in flight, lag, dead letters
``GET /cursors?topic=``     read      legacy-shaped cursors of the groups on a pattern
``GET /lag?topic=&group=``  read      legacy-shaped lag, plus ``lagCount``
``GET /latest-by-key``      read      the newest event of a topic with a key (or null)
``GET /replay``             read      matching events as NDJSON, streamed page by page
``GET /outbox``             read      drained outboxes: counts, oldest pending age, dead records
``POST /outbox/retry``      write     dead records back to pending
``POST /outbox/purge``      write     delete dead records
``GET /dlq?group=``         read      a group's dead letters (within the token's subscribe rights)
``POST /dlq/redrive``       write     republish dead letters to their original topic (idempotent)
``POST /dlq/purge``         write     hide a group's dead letters up to a seq (the log keeps them)
``POST /groups/reset``      write     move a group's cursor (earliest, latest, seq, ts)
``GET /connections``        read      live WebSocket connections with queue depth and rates
``POST /connections/{id}/close`` write  close one connection (1008 closed_by_operator)
``GET /series``             read      15 minutes of rates and lag for the dashboard's charts
``GET /metrics``            metrics   Prometheus text format (a registry per hub)
``GET /openapi.json``       open      the OpenAPI 3.1 document of all of the above
``GET /``                   open      the dashboard (``/dashboard.js``, ``/dashboard.css``)
``GET /outboxhub.js``       open      the browser client (and ``/outboxhub.d.ts``)
==========================  ========  ==========================================================

Access levels are explained in :mod:`outboxhub.ops.security`; docs/ops.md is the operator's guide.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from outboxhub.ops.actions import ACTION_ROUTES
from outboxhub.ops.api import API_ROUTES
from outboxhub.ops.context import OPS, HubView, OpsContext, RouteSpec
from outboxhub.ops.dlq import DLQ_ROUTES
from outboxhub.ops.metrics import HubMetrics
from outboxhub.ops.middleware import ops_middleware
from outboxhub.ops.openapi import OPENAPI_ROUTE, openapi_document
from outboxhub.ops.outboxes import OutboxRegistry
from outboxhub.ops.replay import REPLAY_ROUTE
from outboxhub.ops.security import Access
from outboxhub.ops.series import Sampler, SeriesRing
from outboxhub.ops.static import static_routes

__all__ = [
    "OPS",
    "HubMetrics",
    "HubView",
    "OpsContext",
    "RouteSpec",
    "install_ops",
    "openapi_document",
    "ops_routes",
]

_SERVER_ROUTES: Final[tuple[tuple[str, str, Access], ...]] = (
    ("GET", "/healthz", "metrics"),
    ("GET", "/ws", "open"),
)
"""Routes the server registers itself, with their access levels."""


def ops_routes() -> list[RouteSpec]:
    """Every route :func:`install_ops` adds (static files are read from disk here)."""
    return [*API_ROUTES, *DLQ_ROUTES, *ACTION_ROUTES, REPLAY_ROUTE, OPENAPI_ROUTE, *static_routes()]


def install_ops(app: web.Application, hub: HubView) -> None:
    """Install the ops API, metrics, dashboard and browser client on the hub's ops ``app``.

    The :class:`OpsContext` (with the hub's :class:`HubMetrics`) is ``app[OPS]``. The ops layer's outbox
    connections are closed when the app is cleaned up (``Hub.close``).
    """
    metrics = HubMetrics(
        stats=hub.gateway.stats,
        open_connections=lambda: len(hub.gateway.connections),
        drainers=hub.drainer_metrics,
    )
    ctx = OpsContext(
        hub=hub,
        metrics=metrics,
        outboxes=OutboxRegistry(hub.settings.outbox),
        series=Sampler(hub, SeriesRing()),
    )
    for method, path, access in _SERVER_ROUTES:
        ctx.access[(method, path)] = access
    for spec in ops_routes():
        if spec.method == "GET":
            app.router.add_get(spec.path, spec.handler)
        else:
            app.router.add_route(spec.method, spec.path, spec.handler)
        ctx.access[(spec.method, spec.path)] = spec.access
    app[OPS] = ctx
    app.middlewares.append(ops_middleware)

    async def start_sampler(_: web.Application) -> None:
        ctx.series.start()

    async def close_outboxes(_: web.Application) -> None:
        await ctx.series.stop()
        await ctx.outboxes.close()

    app.on_startup.append(start_sampler)
    app.on_cleanup.append(close_outboxes)
