"""Which consumer groups a commit concerns: a bounded topic -> groups index, and the bus's work counters.

A commit that names its topics wakes only the groups whose pattern matches one of them; a group on
``idle.**`` costs nothing when ``victim.orders`` is published (no wake-up, no claim, no ``next_deadline``).
Matching every group's pattern against every committed topic would still be work per group per publish,
so the answer per topic is cached (``TopicInterest``): an LRU of at most ``max_topics`` topics, dropped
whole whenever the set of groups changes. A commit whose topics the store does not know (another process's
commit on PostgreSQL/MongoDB) wakes every group, as before.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from outboxhub.topics import compile_pattern

__all__ = ["BusStats", "TopicInterest"]

K = TypeVar("K")


@dataclass
class BusStats:
    """Counters of the bus's store work (they only grow): for tests and metrics, not for decisions."""

    claims: int = 0
    """``store.claim`` calls made by group members."""
    deadline_checks: int = 0
    """``store.next_deadline`` calls made by group members."""
    commit_wakeups: int = 0
    """Group members woken by a commit notification."""
    reparks: int = 0
    """Parked claims renewed in the commit callback that handed the last one out (no task step)."""
    pattern_matches: int = 0
    """Group patterns matched against committed topics (cache misses of ``TopicInterest``)."""


class TopicInterest(Generic[K]):
    """topic -> the keys (``(pattern, group)``) of the groups whose pattern matches it, cached."""

    def __init__(
        self,
        keys: Callable[[], Iterable[K]],
        pattern_of: Callable[[K], str],
        *,
        stats: BusStats,
        max_topics: int = 4096,
    ) -> None:
        self._keys = keys
        self._pattern_of = pattern_of
        self._stats = stats
        self._max = max(1, max_topics)
        self._cache: OrderedDict[str, tuple[K, ...]] = OrderedDict()

    def invalidate(self) -> None:
        """The set of groups changed: forget every answer."""
        self._cache.clear()

    def __len__(self) -> int:
        return len(self._cache)

    def groups_for(self, topic: str) -> tuple[K, ...]:
        found = self._cache.get(topic)
        if found is not None:
            self._cache.move_to_end(topic)
            return found
        keys = list(self._keys())
        self._stats.pattern_matches += len(keys)
        found = tuple(key for key in keys if compile_pattern(self._pattern_of(key)).match(topic))
        self._cache[topic] = found
        if len(self._cache) > self._max:
            self._cache.popitem(last=False)
        return found
