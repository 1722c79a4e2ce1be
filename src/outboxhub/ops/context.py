"""What every ops handler reaches through ``request.app[OPS]``: the hub, its metrics, its outboxes, and the
route table (path, method, access level) that the middleware and the OpenAPI test read.

The ops layer sees the hub through :class:`HubView`, the few things it reads; ``outboxhub.app.Hub`` is one,
and ``outboxhub.app`` (the composition root) is what installs the ops layer. Ops never imports the app.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final, Protocol

from aiohttp import web

from outboxhub.auth.jwt import TokenVerifier
from outboxhub.bus.core import Bus
from outboxhub.config import Settings
from outboxhub.gateway.server import Gateway
from outboxhub.ops.metrics import HubMetrics
from outboxhub.ops.outboxes import OutboxRegistry
from outboxhub.ops.security import Access
from outboxhub.ops.series import Sampler
from outboxhub.outbox import DrainerMetrics
from outboxhub.store.base import Store

__all__ = ["OPS", "Handler", "HubView", "OpsContext", "RouteSpec"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HubView(Protocol):
    """What the ops layer reads from a running hub."""

    @property
    def settings(self) -> Settings:
        """``outbox`` (the drained outboxes) and ``ops_open_metrics``."""
        ...

    @property
    def store(self) -> Store: ...

    @property
    def bus(self) -> Bus:
        """``members()``, for the member counts of ``/groups``."""
        ...

    @property
    def gateway(self) -> Gateway:
        """``stats`` and ``connections`` for ``/metrics``; ``snapshot`` and ``close_connection`` for
        ``/connections``."""
        ...

    @property
    def verifier(self) -> TokenVerifier:
        """Checks the bearer tokens of the ops routes."""
        ...

    def drainer_metrics(self) -> list[tuple[str, DrainerMetrics]]:
        """Each outbox drainer's counters with the outbox's name, for ``/metrics``."""
        ...


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

    hub: HubView
    metrics: HubMetrics
    outboxes: OutboxRegistry
    series: Sampler
    """The charts' sampler and its ring (``GET /series``, the connections' rates)."""
    access: dict[tuple[str, str], Access] = field(default_factory=dict)
    """``(method, path template) -> access``; routes other installers add are ``read`` unless listed."""

    def access_for(self, method: str, path: str) -> Access:
        method = "GET" if method == "HEAD" else method
        return self.access.get((method, path), "read")


OPS: Final = web.AppKey("outboxhub.ops", OpsContext)
