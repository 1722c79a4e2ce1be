"""The outboxes the hub drains (``settings.outbox``), as the ops API sees them.

The ops API keeps its own connection to each outbox database (the drainers keep theirs): reading counts,
listing dead records and the operator actions (retry, purge) never wait behind a batch being drained.
Connections are opened on first use, so an outbox database that is down when the hub starts shows up as
an error in ``/outbox`` instead of stopping the hub, and is read again as soon as it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from outboxhub.errors import OutboxhubError
from outboxhub.outbox import OutboxStore, open_outbox
from outboxhub.store.base import mask_url

__all__ = ["OutboxHandle", "OutboxRegistry", "describe_error"]


class OutboxHandle:
    """One configured outbox: its public ``name`` (the URL, password masked) and a lazily opened store."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.name = mask_url(url)
        self._store: OutboxStore | None = None
        self._lock = asyncio.Lock()

    async def store(self) -> OutboxStore:
        """The open store; opens it on first use. Raises ``OutboxhubError`` when it cannot be opened."""
        if self._store is not None:
            return self._store
        async with self._lock:
            if self._store is None:
                self._store = await open_outbox(self.url)
            return self._store

    async def close(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            with contextlib.suppress(Exception):
                await store.close()


class OutboxRegistry:
    """Every outbox of ``settings.outbox``, in configuration order."""

    def __init__(self, urls: Sequence[str]) -> None:
        self.handles = [OutboxHandle(url) for url in urls]

    def find(self, name: str | None) -> OutboxHandle:
        """The outbox called ``name`` (its masked URL, or its 0-based index as text); with one outbox
        configured ``name`` may be None. Raises ``LookupError`` naming the choices."""
        if name is None:
            if len(self.handles) == 1:
                return self.handles[0]
            if not self.handles:
                raise LookupError("no outbox is configured (settings.outbox / OUTBOXHUB_OUTBOX)")
            raise LookupError(f"{len(self.handles)} outboxes are configured; name one of: {self._names()}")
        for handle in self.handles:
            if handle.name == name:
                return handle
        if name.isdigit() and int(name) < len(self.handles):
            return self.handles[int(name)]
        raise LookupError(f"no outbox named {name!r}; configured: {self._names() or 'none'}")

    def _names(self) -> str:
        return ", ".join(repr(h.name) for h in self.handles)

    async def close(self) -> None:
        await asyncio.gather(*(h.close() for h in self.handles))


def describe_error(exc: BaseException) -> str:
    """A one-line reason an outbox could not be read (no traceback, password already masked)."""
    if isinstance(exc, OutboxhubError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
