"""The gateway's shared state: the upgrade rules (:meth:`Gateway.upgrade_refusal`: shutdown, Origin), the
registry of live connections, their shared counters, graceful shutdown, and the aiohttp upgrade handler
(the ops port's ``/ws``, and the WS port when ``ws_server = "aiohttp"``; the picows WS port is
:mod:`outboxhub.gateway.picowsserver`). Each upgraded socket, of either server, is served by a
:class:`~outboxhub.gateway.connection.Connection` through :meth:`Gateway.serve`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from aiohttp import hdrs, web

from outboxhub.auth.decide import SharedDeciders
from outboxhub.auth.jwt import TokenVerifier
from outboxhub.bus.core import Bus
from outboxhub.config import Settings
from outboxhub.gateway.connection import Connection
from outboxhub.gateway.publishquota import PublishQuotas
from outboxhub.gateway.quota import PrincipalQuota
from outboxhub.gateway.stats import GatewayStats
from outboxhub.gateway.transport import AiohttpSocket, WebSocket
from outboxhub.quotas import parse_quotas

__all__ = ["CLOSE_BY_OPERATOR", "ConnectionInfo", "Gateway", "GatewayStats"]

log = logging.getLogger("outboxhub.gateway.connection")

# Frames above max_frame_bytes but below this multiple of it are read and answered with ERR too_large (the
# connection stays). From this multiple up, aiohttp refuses the frame from its header, before buffering
# any of it, and closes the connection with 1009 at once: no ERR can go first (README, --max-frame-bytes).
HARD_LIMIT_FACTOR: Final = 2
HEARTBEAT_S: Final = 30.0
"""The hub pings an idle WebSocket this often; a peer that has not answered within half of it is cut off."""

CLOSE_BY_OPERATOR: Final = 1008
"""Close code of a connection an operator closed (``POST /connections/{id}/close``; reason
``closed_by_operator``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionInfo:
    """A read-only view of one live connection (:meth:`Gateway.snapshot`)."""

    id: str
    sub: str | None
    """The token's subject (None before AUTH)."""
    remote: str | None
    connected_at: int
    """Unix ms."""
    subscriptions: tuple[tuple[str, str | None], ...]
    """(pattern, group or None) of each subscription."""
    queue_depth: int
    """EVENT frames and replies queued and not yet sent."""
    published: int
    """Events published (durably) since the connection opened."""
    delivered: int
    """EVENT frames queued to it since it opened."""


class Gateway:
    """State shared by every connection: the bus, the token verifier, the limits and the live connections.

    :meth:`handle` is the aiohttp request handler (mounted at ``/`` on the WS port and ``/ws`` on the ops
    port); :meth:`shutdown` closes every connection gracefully.
    """

    def __init__(
        self, *, bus: Bus, verifier: TokenVerifier, settings: Settings, close_timeout_s: float = 5.0
    ) -> None:
        self.bus = bus
        self.verifier = verifier
        self.settings = settings
        self.close_timeout_s = close_timeout_s
        self.connections: set[Connection] = set()
        self.stats = GatewayStats()
        self.deciders = SharedDeciders()  # one compiled policy per distinct policy in use
        self.quota = PrincipalQuota(
            max_subscriptions=settings.max_subscriptions_per_principal,
            max_groups=settings.max_groups_per_principal,
        )
        self.publish_quotas = PublishQuotas(
            parse_quotas(settings.quotas),
            parse_quotas(settings.topic_quotas),
            max_buckets=settings.quota_max_buckets,
            stats=self.stats,
        )
        self._closing = False
        self._origins = frozenset(_normalize_origin(o) for o in settings.allowed_origins)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Upgrade to WebSocket (after the Origin check) and serve the connection until it closes."""
        refused = self.upgrade_refusal(request.headers.get(hdrs.ORIGIN), request.host)
        if refused is not None:
            status, text = refused
            if status == 503:
                raise web.HTTPServiceUnavailable(text=text)
            raise web.HTTPForbidden(text=text)
        ws = web.WebSocketResponse(
            max_msg_size=self.settings.max_frame_bytes * HARD_LIMIT_FACTOR,
            compress=False,
            heartbeat=HEARTBEAT_S,
            timeout=self.close_timeout_s,
        )
        if not ws.can_prepare(request).ok:
            return web.Response(
                status=426,
                headers={hdrs.UPGRADE: "websocket", hdrs.CONNECTION: "Upgrade"},
                text="this is the outboxhub WebSocket gateway: connect with a WebSocket client\n",
            )
        await ws.prepare(request)
        log.debug("connection from %s", request.remote)
        await self.serve(AiohttpSocket(ws, request.transport), request.remote)
        return ws

    async def serve(self, ws: WebSocket, peer: str | None) -> None:
        """Serve one upgraded WebSocket (of either server) until it closes."""
        conn = Connection(self, ws, peer=peer)
        self.connections.add(conn)
        self.stats.connections_total += 1
        try:
            await conn.run()
        finally:
            self.connections.discard(conn)

    def upgrade_refusal(self, origin: str | None, host: str) -> tuple[int, str] | None:
        """Why an upgrade request is refused, as (HTTP status, body), or None: 503 while shutting down,
        403 for a browser Origin that is not allowed."""
        if self._closing:
            return 503, "hub is shutting down\n"
        if origin is not None and not self.origin_allowed(origin, host):
            log.info("refused WebSocket from origin %r (not in allowed_origins)", origin)
            return 403, f"origin {origin!r} is not allowed (see allowed_origins)\n"
        return None

    def origin_allowed(self, origin: str, host: str) -> bool:
        """A browser Origin is allowed when no list is configured, it is listed (or ``*`` is), or it is
        this server's own origin (the dashboard served from the ops port)."""
        if not self._origins or "*" in self._origins:
            return True
        norm = _normalize_origin(origin)
        if norm in self._origins:
            return True
        try:
            return urlsplit(norm).netloc == host.lower()
        except ValueError:
            return False

    def snapshot(self) -> list[ConnectionInfo]:
        """The live connections, oldest first (a copy: nothing in it changes the gateway)."""
        infos = [
            ConnectionInfo(
                id=c.member,
                sub=c.principal.sub if c.principal is not None else None,
                remote=c.peer,
                connected_at=c.connected_at,
                subscriptions=tuple(c.subs),
                queue_depth=c.out.events + c.out.replies,
                published=c.published,
                delivered=c.out.events_total,
            )
            for c in self.connections
        ]
        return sorted(infos, key=lambda i: (i.connected_at, i.id))

    async def close_connection(self, conn_id: str) -> bool:
        """Close the connection ``conn_id`` (in-flight requests are answered first) with
        :data:`CLOSE_BY_OPERATOR`; False when no such connection is open."""
        found = next((c for c in self.connections if c.member == conn_id), None)
        if found is None:
            return False
        await found.close_by_operator(CLOSE_BY_OPERATOR, "closed_by_operator")
        return True

    async def shutdown(self) -> None:
        """Refuse new connections, let every connection finish its in-flight requests, then close them
        with 1001 (going away)."""
        self._closing = True
        conns = list(self.connections)
        if conns:
            await asyncio.gather(*(c.shutdown() for c in conns), return_exceptions=True)


def _normalize_origin(origin: str) -> str:
    return origin.strip().rstrip("/").lower()
