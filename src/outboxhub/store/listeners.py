"""The commit listeners of one store: registered by the bus, called with the newest committed seq."""

from __future__ import annotations

import contextlib
import logging

from outboxhub.store.base import CommitListener

__all__ = ["CommitListeners"]


class CommitListeners:
    """A registry of ``CommitListener``s that calls them all, in registration order, when events commit.

    A listener that raises is logged and the others are still called. With ``newer_only`` a seq not above
    the last one notified is dropped (backends that hear the same commit twice, locally and from the
    database's notification, or whose notifications may arrive out of order); ``last`` starts at the
    log's last seq when the store opens.
    """

    __slots__ = ("_listeners", "_log", "last", "newer_only")

    def __init__(self, log: logging.Logger, *, newer_only: bool) -> None:
        self._listeners: list[CommitListener] = []
        self._log = log
        self.newer_only = newer_only
        self.last = 0
        """The last seq notified."""

    def add(self, listener: CommitListener) -> None:
        self._listeners.append(listener)

    def remove(self, listener: CommitListener) -> None:
        """Unregister ``listener`` (once); unknown listeners are ignored."""
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    def __len__(self) -> int:
        return len(self._listeners)

    def notify(self, seq: int) -> None:
        """Call every listener with ``seq`` (from the event loop thread)."""
        if self.newer_only and seq <= self.last:
            return
        self.last = seq
        for listener in tuple(self._listeners):
            try:
                listener(seq)
            except Exception:
                self._log.exception("commit listener %r failed", listener)
