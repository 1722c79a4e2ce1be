"""The WebSocket gateway: one ``Connection`` per socket over the sans-I/O ``protocol``.

* ``connection`` — ``Gateway`` (the aiohttp handler) and ``Connection`` (AUTH, ACL, frames → bus);
* ``sendqueue`` — the ordered, bounded per-connection send queue;
* ``ratelimit`` — the per-connection token bucket.
"""

from outboxhub.gateway.connection import Gateway, GatewayStats

__all__ = ["Gateway", "GatewayStats"]
