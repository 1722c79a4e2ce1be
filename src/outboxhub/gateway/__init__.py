"""The WebSocket gateway: one ``Connection`` per socket over the sans-I/O ``protocol``.

* ``server`` — ``Gateway`` (the aiohttp handler: upgrade, Origin check, live connections, shutdown) and
  ``GatewayStats`` (its counters);
* ``connection`` — ``Connection`` (AUTH, ACL, frames → bus, ACK/NACK);
* ``delivery`` — the per-subscription callback that queues EVENTs for a connection;
* ``sendqueue`` — the ordered, bounded per-connection send queue;
* ``ratelimit`` — the per-connection token bucket.
"""

from outboxhub.gateway.server import Gateway
from outboxhub.gateway.stats import GatewayStats

__all__ = ["Gateway", "GatewayStats"]
