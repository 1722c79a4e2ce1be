"""The one exception tree of outboxhub.

    OutboxhubError
    ├── ConfigError            a setting has a bad value (names the setting)
    ├── TopicError(ValueError) a topic or pattern breaks the syntax rules (names the segment)
    ├── PolicyError(ValueError) an ACL policy or scope cannot be read (names the path)
    ├── ProtocolError          a wire frame is malformed (carries an error code, protocol/codes.py)
    ├── AuthError              a token was refused (carries the error code: jwt_invalid, token_expired, ...)
    ├── StoreError             the store failed
    │   ├── StoreURLError      the store URL is unknown or malformed (password masked)
    │   └── StoreUnavailable   the database cannot be reached; the request had no effect
    ├── OutboxError            the outbox refused a record (bad target, topic, payload)
    ├── OutboxClosed(RuntimeError) an outbox was used after ``close()``
    └── InboxError             the inbox refused a call (bad target, table, group, topic or event id)

Only store and transport adapters catch driver exceptions (sqlite3, psycopg, pymongo, aiohttp) and
translate them into these, chaining with ``from``.

``ErrorCode`` and ``is_error_code`` are re-exported from :mod:`outboxhub.protocol.codes`, their home (a
leaf module: it imports nothing from outboxhub, so this module stays at the bottom of the import graph).
"""

from __future__ import annotations

from outboxhub.protocol.codes import ErrorCode, is_error_code

__all__ = [
    "AuthError",
    "ConfigError",
    "ErrorCode",
    "InboxError",
    "OutboxClosed",
    "OutboxError",
    "OutboxhubError",
    "PolicyError",
    "ProtocolError",
    "StoreError",
    "StoreURLError",
    "StoreUnavailable",
    "StoreUnsupported",
    "TopicError",
    "is_error_code",
]


class OutboxhubError(Exception):
    """Root of every error raised by outboxhub."""


class ConfigError(OutboxhubError):
    """A configuration value is invalid; the message names the setting."""


class TopicError(OutboxhubError, ValueError):
    """A topic or pattern is invalid; the message names the bad segment."""


class PolicyError(OutboxhubError, ValueError):
    """An ACL policy or scope is invalid; the message names the path of the bad field."""


class ProtocolError(OutboxhubError):
    """A wire frame was rejected. ``code`` is one of the protocol's error codes (docs/protocol.md)."""

    def __init__(self, code: ErrorCode, msg: str, *, rid: str | int | float | None = None) -> None:
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg
        self.rid = rid


class AuthError(OutboxhubError):
    """A token was refused. ``code`` is ``no_token``, ``jwt_invalid`` or ``token_expired``."""

    def __init__(self, code: str, msg: str) -> None:
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg


class StoreError(OutboxhubError):
    """The store failed to do what was asked."""


class StoreURLError(StoreError, ValueError):
    """A store URL has an unknown scheme or cannot be parsed; the message masks any password."""


class StoreUnsupported(StoreError, ValueError):
    """The store cannot do what was asked by design (an option it has no counterpart for, e.g.
    ``ordered_by_key`` on JetStream); the message names the option (``ERR bad_request`` at SUBSCRIBE)."""


class StoreUnavailable(StoreError):
    """The database cannot be reached right now; the request had no effect (``ERR unavailable``)."""


class OutboxError(OutboxhubError, ValueError):
    """An outbox record was refused before anything was written."""


class OutboxClosed(OutboxhubError, RuntimeError):
    """An outbox was used after it was closed (a drainer stopping, or a caller's own ``close()``)."""


class InboxError(OutboxhubError):
    """The consumer inbox (``outboxhub.inbox``) refused a call; the message names the problem."""
