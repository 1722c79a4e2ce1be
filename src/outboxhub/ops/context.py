"""What every ops handler reaches through ``request.app[OPS]``: the hub, its metrics, its outboxes, and the
route table (path, method, access level) that the middleware and the OpenAPI test read."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from aiohttp import web

from outboxhub.ops.metrics import HubMetrics
from outboxhub.ops.outboxes import OutboxRegistry
from outboxhub.ops.security import Access

if TYPE_CHECKING:
    from outboxhub.app import Hub

__all__ = ["OPS", "Handler", "OpsContext", "RouteSpec"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteSpec:
    """One ops route: ``method`` and ``path`` as registered, who may call it, and its handler."""

    method: str
    path: str
    access: Access
    handler: Handler


@dataclass(slots=True, kw_only=True)
class OpsContext:
    """The ops layer's state for one hub."""

    hub: Hub
    metrics: HubMetrics
    outboxes: OutboxRegistry
    access: dict[tuple[str, str], Access] = field(default_factory=dict)
    """``(method, path template) -> access``; routes other installers add are ``read`` unless listed."""

    def access_for(self, method: str, path: str) -> Access:
        method = "GET" if method == "HEAD" else method
        return self.access.get((method, path), "read")


OPS: Final = web.AppKey("outboxhub.ops", OpsContext)
