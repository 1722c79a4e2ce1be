"""The error codes of the wire protocol and the WebSocket close codes that go with them: the one list.

docs/protocol.md ("Error codes") documents them. They are part of the wire contract: never rename one.
An ``ERR`` with ``no_token`` or ``jwt_invalid`` is followed by close 4001 (the AUTH failed), one with
``token_expired`` by close 4003; every other ``ERR`` leaves the connection open. (A gateway that refuses
a malformed AUTH frame with ``bad_request`` may still close with 4001, since that AUTH failed too; that is
the gateway's policy, not the protocol's.)

This module imports nothing from outboxhub, so everything can use it: ``errors`` (``ProtocolError``
carries an :data:`ErrorCode` and re-exports it), the codec, the gateway, the SDK's exception mapping and
the ops layer. The JS client (``clients/js/src/outboxhub/codes.ts``, built into what the hub serves)
repeats the list; ``tests/test_error_codes.py`` holds it to this one.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final, Literal, TypeAlias, TypeGuard, get_args

__all__ = [
    "BAD_REQUEST",
    "CLOSE_AUTH_FAILED",
    "CLOSE_CODES",
    "CLOSE_GOING_AWAY",
    "CLOSE_MESSAGE_TOO_BIG",
    "CLOSE_NORMAL",
    "CLOSE_TOKEN_EXPIRED",
    "ERROR_CODES",
    "FORBIDDEN",
    "INTERNAL",
    "JWT_INVALID",
    "NOT_AUTHENTICATED",
    "NOT_SUBSCRIBED",
    "NO_TOKEN",
    "RATE_LIMITED",
    "TOKEN_EXPIRED",
    "TOO_LARGE",
    "UNAVAILABLE",
    "ErrorCode",
    "close_code_for",
    "is_error_code",
]

ErrorCode: TypeAlias = Literal[
    "no_token",
    "jwt_invalid",
    "token_expired",
    "not_authenticated",
    "forbidden",
    "bad_request",
    "too_large",
    "rate_limited",
    "not_subscribed",
    "unavailable",
    "internal",
]

NO_TOKEN: Final = "no_token"
JWT_INVALID: Final = "jwt_invalid"
TOKEN_EXPIRED: Final = "token_expired"
NOT_AUTHENTICATED: Final = "not_authenticated"
FORBIDDEN: Final = "forbidden"
BAD_REQUEST: Final = "bad_request"
TOO_LARGE: Final = "too_large"
RATE_LIMITED: Final = "rate_limited"
NOT_SUBSCRIBED: Final = "not_subscribed"
UNAVAILABLE: Final = "unavailable"
INTERNAL: Final = "internal"

ERROR_CODES: Final[frozenset[ErrorCode]] = frozenset(get_args(ErrorCode))
"""Every error code, as a set."""

CLOSE_NORMAL: Final = 1000
CLOSE_GOING_AWAY: Final = 1001
"""The hub is shutting down."""
CLOSE_MESSAGE_TOO_BIG: Final = 1009
"""A frame beyond the hard size limit, or beyond ``max_auth_frame_bytes`` before a successful AUTH."""
CLOSE_AUTH_FAILED: Final = 4001
"""AUTH failed (``no_token``, ``jwt_invalid``), or no AUTH came in time."""
CLOSE_TOKEN_EXPIRED: Final = 4003
"""The token of an authenticated connection expired (``token_expired``)."""

CLOSE_CODES: Final[Mapping[ErrorCode, int]] = MappingProxyType(
    {NO_TOKEN: CLOSE_AUTH_FAILED, JWT_INVALID: CLOSE_AUTH_FAILED, TOKEN_EXPIRED: CLOSE_TOKEN_EXPIRED}
)
"""The close code that follows ``ERR <code>``, for the codes that close the connection."""


def is_error_code(code: str) -> TypeGuard[ErrorCode]:
    """Whether ``code`` is one of the protocol's error codes."""
    return code in ERROR_CODES


def close_code_for(code: str) -> int | None:
    """The WebSocket close code that follows ``ERR <code>``, or None when the connection stays open."""
    return CLOSE_CODES.get(code) if is_error_code(code) else None
