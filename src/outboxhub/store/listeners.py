"""The commit listeners of one store: registered by the bus, called with the newest committed seq (topic
listeners also with the topics committed, when the store knows them)."""

from __future__ import annotations

import contextlib
import logging

from outboxhub.store.base import CommitListener, TopicListener

__all__ = ["CommitListeners"]


class CommitListeners:
    """A registry of ``CommitListener``s that calls them all, in registration order, when events commit.

    A listener that raises is logged and the others are still called. With ``newer_only`` a seq not above
    the last one notified is dropped (backends that hear the same commit twice, locally and from the
    database's notification, or whose notifications may arrive out of order); ``last`` starts at the
    log's last seq when the store opens. A notification that names its topics is still passed to the topic
    listeners when its seq is not newer: it is the only news of those topics.
    """

    __slots__ = ("_listeners", "_log", "_topic_listeners", "last", "newer_only")

    def __init__(self, log: logging.Logger, *, newer_only: bool) -> None:
        self._listeners: list[CommitListener] = []
        self._topic_listeners: list[TopicListener] = []
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

    def add_topics(self, listener: TopicListener) -> None:
        self._topic_listeners.append(listener)

    def remove_topics(self, listener: TopicListener) -> None:
        """Unregister a topic listener (once); unknown listeners are ignored."""
        with contextlib.suppress(ValueError):
            self._topic_listeners.remove(listener)

    def __len__(self) -> int:
        return len(self._listeners) + len(self._topic_listeners)

    def notify(self, seq: int, topics: frozenset[str] | None = None) -> None:
        """Call every listener with ``seq`` (and topic listeners with ``topics``: None when unknown), from
        the event loop thread."""
        stale = self.newer_only and seq <= self.last
        if stale and topics is None:
            return
        if not stale:
            self.last = max(self.last, seq) if self.newer_only else seq
            for listener in tuple(self._listeners):
                try:
                    listener(seq)
                except Exception:
                    self._log.exception("commit listener %r failed", listener)
        for topic_listener in tuple(self._topic_listeners):
            try:
                topic_listener(seq, topics)
            except Exception:
                self._log.exception("commit listener %r failed", topic_listener)
