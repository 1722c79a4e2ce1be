"""Tokens: a fixed JWT or a provider callback, and when to refresh before the hub's ``exp``."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import TypeAlias

__all__ = ["TokenProvider", "TokenSource", "get_token", "refresh_delay"]

TokenProvider: TypeAlias = Callable[[], str | Awaitable[str]]
"""A callable (sync or async) returning a fresh JWT; called at every connect and before each expiry."""

TokenSource: TypeAlias = str | TokenProvider

# Refresh when this share of the remaining lifetime is left, but never earlier than _MAX_MARGIN_S
# before expiry: an hour-long token is refreshed a minute early, a 3 s test token after 2 s.
_SHARE: float = 1 / 3
_MAX_MARGIN_S: float = 60.0


async def get_token(source: TokenSource) -> str:
    """The token now: the fixed string, or what the provider returns (awaited when async)."""
    if isinstance(source, str):
        token = source
    else:
        result = source()
        token = await result if inspect.isawaitable(result) else result
    if not isinstance(token, str) or not token:
        raise ValueError(f"the token provider must return a non-empty str, got {token!r:.60}")
    return token


def refresh_delay(exp: float, now: float) -> float:
    """Seconds from ``now`` until a token expiring at ``exp`` (both epoch seconds) should be replaced."""
    remaining = exp - now
    if remaining <= 0:
        return 0.0
    return max(0.0, remaining - min(_MAX_MARGIN_S, remaining * _SHARE))
