"""The async Python SDK of outboxhub: publish, subscribe with consumer groups, typed topics.

::

    from outboxhub.client import HubClient, Topic

    STATE = Topic("process.state", ProcessState)      # a dataclass, pydantic model or msgspec Struct

    async with HubClient("ws://127.0.0.1:8090/", token) as hub:
        await hub.publish(STATE, ProcessState(name="db", state="up"))

        async def on_state(state: ProcessState, ctx: SubscribeContext) -> None:
            ...                                          # return: ACK; raise: NACK (redelivered)
            # raise Retry(delay_ms=5_000): NACK, redelivered in 5 s

        await hub.subscribe(STATE, "ops", on_state)

Everything public is re-exported here from private modules; ``tests/test_client_exports.py`` pins the list.
"""

from __future__ import annotations

from outboxhub.client._backoff import Backoff
from outboxhub.client._client import DEFAULT_URL, HubClient, connect
from outboxhub.client._exceptions import (
    AuthFailed,
    BadRequest,
    ClientClosed,
    Forbidden,
    HubConnectionError,
    HubError,
    InternalError,
    NotAuthenticated,
    NotSubscribed,
    RateLimited,
    TokenExpired,
    TooLarge,
    Unavailable,
    error_from_code,
)
from outboxhub.client._messages import Message, SubscribeContext
from outboxhub.client._outcomes import InboxRunner, Retry, Terminate
from outboxhub.client._subscription import Handler, InboxHandler, Subscription
from outboxhub.client._sync import SyncHubClient, connect_sync
from outboxhub.client._sync_messages import SyncMessage, SyncSubscription
from outboxhub.client._token import TokenProvider, TokenSource
from outboxhub.client._topic import PayloadError, Topic
from outboxhub.model import Event, PublishResult

__all__ = [
    "DEFAULT_URL",
    "AuthFailed",
    "Backoff",
    "BadRequest",
    "ClientClosed",
    "Event",
    "Forbidden",
    "Handler",
    "HubClient",
    "HubConnectionError",
    "HubError",
    "InboxHandler",
    "InboxRunner",
    "InternalError",
    "Message",
    "NotAuthenticated",
    "NotSubscribed",
    "PayloadError",
    "PublishResult",
    "RateLimited",
    "Retry",
    "SubscribeContext",
    "Subscription",
    "SyncHubClient",
    "SyncMessage",
    "SyncSubscription",
    "Terminate",
    "TokenExpired",
    "TokenProvider",
    "TokenSource",
    "TooLarge",
    "Topic",
    "Unavailable",
    "connect",
    "connect_sync",
    "error_from_code",
]

# Show the public names as outboxhub.client.X (in reprs, tracebacks and docs), as httpx does.
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("outboxhub.client._"):
        _obj.__module__ = __name__
del _name, _obj
