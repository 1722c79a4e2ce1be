"""The SDK's exceptions: one class per protocol error code (protocol/codes.py), plus link-level failures.

    OutboxhubError                       (outboxhub.errors)
    └── HubError(code, msg)              the hub answered ERR, or the link to it failed
        ├── AuthFailed (+ AuthError)     no_token, jwt_invalid: the token was refused
        │   └── TokenExpired             token_expired: the token ran out (refresh it with a provider)
        ├── NotAuthenticated             not_authenticated
        ├── Forbidden                    forbidden: the token's policy does not allow it
        ├── BadRequest                   bad_request: the frame broke a rule (the message names it)
        ├── TooLarge                     too_large
        ├── RateLimited                  rate_limited
        ├── NotSubscribed                not_subscribed
        ├── Unavailable                  unavailable: the store is down; the request had no effect
        ├── InternalError                internal
        └── HubConnectionError           code "connection": cannot connect, or the link dropped for good
            └── ClientClosed             code "closed": the client was closed while the request waited

:func:`error_from_code` is the one place that maps a wire code to its class; a code this SDK does not
know yet becomes a plain :class:`HubError` that still carries it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from outboxhub.errors import AuthError, OutboxhubError
from outboxhub.protocol.codes import (
    BAD_REQUEST,
    ERROR_CODES,
    FORBIDDEN,
    INTERNAL,
    JWT_INVALID,
    NO_TOKEN,
    NOT_AUTHENTICATED,
    NOT_SUBSCRIBED,
    RATE_LIMITED,
    TOKEN_EXPIRED,
    TOO_LARGE,
    UNAVAILABLE,
    ErrorCode,
    is_error_code,
)

__all__ = [
    "AuthFailed",
    "BadRequest",
    "ClientClosed",
    "Forbidden",
    "HubConnectionError",
    "HubError",
    "InternalError",
    "NotAuthenticated",
    "NotSubscribed",
    "RateLimited",
    "TokenExpired",
    "TooLarge",
    "Unavailable",
    "error_from_code",
]

CONNECTION: Final = "connection"
CLOSED: Final = "closed"


class HubError(OutboxhubError):
    """The hub refused a request (``code`` is an error code of docs/protocol.md) or could not be reached.

    ``code`` and ``msg`` are the ``ERR`` frame's fields; ``str(exc)`` is ``"<code>: <msg>"``.
    """

    def __init__(self, code: str, msg: str) -> None:
        # Not super(): AuthFailed also derives from AuthError, whose __init__ has this signature too.
        Exception.__init__(self, f"{code}: {msg}")
        self.code = code
        self.msg = msg


class AuthFailed(HubError, AuthError):
    """The token was refused (``no_token``, ``jwt_invalid``); the hub closed the connection."""


class TokenExpired(AuthFailed):
    """The token expired (``token_expired``). Pass a token provider to :class:`HubClient` to refresh it."""


class NotAuthenticated(HubError):
    """A request came before a successful ``AUTH`` (``not_authenticated``)."""


class Forbidden(HubError):
    """The token's policy does not allow this topic, pattern or group (``forbidden``)."""


class BadRequest(HubError):
    """The request broke a protocol rule (``bad_request``); the message names the field at fault."""


class TooLarge(HubError):
    """The frame exceeded the hub's size limit (``too_large``)."""


class RateLimited(HubError):
    """The publish rate or the subscription count is over the hub's limit (``rate_limited``)."""


class NotSubscribed(HubError):
    """ACK, NACK or UNSUBSCRIBE for a subscription this connection does not have (``not_subscribed``)."""


class Unavailable(HubError):
    """The hub's store is unavailable or the hub is shutting down (``unavailable``); no effect was had."""


class InternalError(HubError):
    """The hub failed unexpectedly (``internal``); the request may or may not have been carried out."""


class HubConnectionError(HubError):
    """The hub cannot be reached, or the connection dropped and will not be re-established."""

    def __init__(self, msg: str, *, code: str = CONNECTION) -> None:
        super().__init__(code, msg)


class ClientClosed(HubConnectionError):
    """The client was closed (or never connected) while the request was waiting."""

    def __init__(self, msg: str = "the client is closed") -> None:
        super().__init__(msg, code=CLOSED)


_BY_CODE: Final[Mapping[ErrorCode, type[HubError]]] = {
    NO_TOKEN: AuthFailed,
    JWT_INVALID: AuthFailed,
    TOKEN_EXPIRED: TokenExpired,
    NOT_AUTHENTICATED: NotAuthenticated,
    FORBIDDEN: Forbidden,
    BAD_REQUEST: BadRequest,
    TOO_LARGE: TooLarge,
    RATE_LIMITED: RateLimited,
    NOT_SUBSCRIBED: NotSubscribed,
    UNAVAILABLE: Unavailable,
    INTERNAL: InternalError,
}
assert _BY_CODE.keys() == ERROR_CODES, "every protocol error code needs its exception class"


def error_from_code(code: str, msg: str) -> HubError:
    """The exception for an ``ERR {code, msg}`` frame (or a link failure), by code."""
    if is_error_code(code):
        return _BY_CODE[code](code, msg)
    if code == CONNECTION:
        return HubConnectionError(msg)
    if code == CLOSED:
        return ClientClosed(msg)
    return HubError(code, msg)
