"""outboxhub: a durable event hub with a transactional outbox.

Services write business data and outbox records in one transaction; drainers publish them to the hub's
log exactly once. Clients connect over WebSocket with a JWT and publish/subscribe to dot-separated topics
(``*`` one segment, ``**`` any number) through consumer groups with ACK/NACK, redelivery and dead-letters.
"""

from __future__ import annotations

from outboxhub.errors import (
    AuthError,
    ConfigError,
    OutboxError,
    OutboxhubError,
    PolicyError,
    ProtocolError,
    StoreError,
    StoreUnavailable,
    StoreURLError,
    TopicError,
)
from outboxhub.model import Event, GroupOptions, NewEvent, PublishResult, StartPosition

__all__ = [
    "AuthError",
    "ConfigError",
    "Event",
    "GroupOptions",
    "NewEvent",
    "OutboxError",
    "OutboxhubError",
    "PolicyError",
    "ProtocolError",
    "PublishResult",
    "StartPosition",
    "StoreError",
    "StoreURLError",
    "StoreUnavailable",
    "TopicError",
    "__version__",
]

__version__ = "0.1.0"
