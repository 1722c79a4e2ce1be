"""The topic catalog (topic name ↔ topic id) and the SQL that scans events by a set of topic ids.

Pattern scans never run Python per row: a pattern is resolved to the ids of the topics it matches, then
SQLite walks the ``(topic_id, seq)`` index. Resolutions are cached per pattern in a bounded LRU
(``PATTERN_CACHE_MAX``); each entry remembers the highest topic id it has seen and is extended lazily, when
the pattern is next resolved, by matching only the topics added since. So a new topic costs the writer the
same whatever patterns were ever asked about (a reader asking about thousands of patterns cannot slow
publishes), and memory grows with the number of topics and the bounded cache, never with the log.

The catalog holds only committed topics, always a contiguous prefix of topic ids (ids are assigned max + 1
by whoever holds the write lock). ``sync`` loads the topics committed since, so it must run inside the
snapshot of the query that follows it: every event that snapshot can see then belongs to a known topic.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence

from outboxhub.store.codec import EVENT_COLUMNS, EventRow
from outboxhub.topics import compile_pattern

__all__ = [
    "MERGE_MAX_TOPICS",
    "PATTERN_CACHE_MAX",
    "TOPIC_STATS_SQL",
    "TopicCatalog",
    "count_events",
    "last_seq_at_or_below",
    "select_events",
    "tail_seq",
]

MERGE_MAX_TOPICS = 24
"""Up to this many topics, a multi-topic scan is a k-way merge of index ranges (``UNION ALL ... ORDER BY``
runs as a merge in SQLite, stopping at the limit). Beyond it, a walk of the rowid with a topic filter, which
is what a pattern matching many topics wants (it usually matches much of the log)."""

PATTERN_CACHE_MAX = 4096
"""How many patterns' resolutions the catalog keeps (least recently used ones are dropped)."""


class TopicCatalog:
    """Committed topics by name and id, and the topic ids each pattern resolves to. Thread-safe.

    ``matches`` counts pattern-against-topic matches run, for tests that count work.
    """

    def __init__(self, *, cache_max: int = PATTERN_CACHE_MAX) -> None:
        self._lock = threading.Lock()
        self._ids: dict[str, int] = {}
        self._names: dict[int, str] = {}
        self._max_id = 0
        self._cache_max = max(1, cache_max)
        # pattern -> (ids of the matching topics, the highest topic id those were resolved against)
        self._patterns: OrderedDict[str, tuple[list[int], int]] = OrderedDict()
        self.matches = 0

    @property
    def max_id(self) -> int:
        return self._max_id

    @property
    def cached_patterns(self) -> int:
        return len(self._patterns)

    def sync(self, conn: sqlite3.Connection) -> None:
        """Load the topics committed since the last sync, as seen by ``conn``'s current snapshot."""
        top = conn.execute("SELECT coalesce(max(topic_id), 0) FROM topics").fetchone()[0]
        if top > self._max_id:
            rows = conn.execute(
                "SELECT topic_id, topic FROM topics WHERE topic_id > ? ORDER BY topic_id", (self._max_id,)
            ).fetchall()
            self.merge(rows)

    def merge(self, rows: Iterable[tuple[int, str]]) -> None:
        """Add committed topics (idempotent). Cached patterns pick them up when next resolved."""
        with self._lock:
            for topic_id, name in rows:
                if topic_id in self._names:
                    continue
                self._names[topic_id] = name
                self._ids[name] = topic_id
                self._max_id = max(self._max_id, topic_id)

    def topic_id(self, name: str) -> int | None:
        return self._ids.get(name)

    def name(self, topic_id: int) -> str:
        return self._names[topic_id]

    def resolve(self, pattern: str) -> tuple[int, ...]:
        """The ids of the known topics that ``pattern`` matches."""
        matcher = compile_pattern(pattern)  # cached; validates the pattern (TopicError)
        if matcher.concrete:
            topic_id = self._ids.get(pattern)
            return () if topic_id is None else (topic_id,)
        with self._lock:
            entry = self._patterns.get(pattern)
            if entry is None:
                ids: list[int] = []
                seen = 0
            else:
                ids, seen = entry
                self._patterns.move_to_end(pattern)
            top = self._max_id
            if seen < top or entry is None:
                # Only the topics added since this pattern was last resolved (ids are a contiguous prefix,
                # but a gap is tolerated: an id missing here was never committed).
                names = self._names
                fresh = range(seen + 1, top + 1) if entry is not None else sorted(names)
                extra: list[int] = []
                for topic_id in fresh:
                    name = names.get(topic_id)
                    if name is not None and matcher.match(name):
                        extra.append(topic_id)
                self.matches += len(fresh)
                ids = ids + extra if extra else ids
                self._patterns[pattern] = (ids, top)
                if entry is None and len(self._patterns) > self._cache_max:
                    self._patterns.popitem(last=False)
            return tuple(ids)


def _ids_sql(topic_ids: Sequence[int]) -> str:
    # Topic ids are ints from our own catalog, so inlining them is safe; it also sidesteps the bound
    # parameter limit for patterns that match thousands of topics.
    return ",".join(str(int(topic_id)) for topic_id in topic_ids)


def select_events(
    conn: sqlite3.Connection,
    topic_ids: Sequence[int],
    *,
    after_seq: int,
    limit: int,
    since_ts: int | None = None,
    until_ts: int | None = None,
) -> list[EventRow]:
    """Rows of events in ``topic_ids`` with ``seq > after_seq`` (and the ts bounds), in seq order."""
    if not topic_ids or limit <= 0:
        return []
    extra = ""
    extra_params: list[int] = []
    if since_ts is not None:
        extra += " AND ts >= ?"
        extra_params.append(since_ts)
    if until_ts is not None:
        extra += " AND ts <= ?"
        extra_params.append(until_ts)
    params: list[int]
    if len(topic_ids) == 1:
        sql = (
            f"SELECT {EVENT_COLUMNS} FROM events WHERE topic_id = {int(topic_ids[0])} AND seq > ?{extra}"
            " ORDER BY seq LIMIT ?"
        )
        params = [after_seq, *extra_params, limit]
    elif len(topic_ids) <= MERGE_MAX_TOPICS:
        arms = [
            f"SELECT {EVENT_COLUMNS} FROM events WHERE topic_id = {int(topic_id)} AND seq > ?{extra}"
            for topic_id in topic_ids
        ]
        sql = " UNION ALL ".join(arms) + " ORDER BY seq LIMIT ?"
        params = [after_seq, *extra_params] * len(topic_ids) + [limit]
    else:
        # The unary + keeps the planner off the topic index: walk seq order and filter.
        sql = (
            f"SELECT {EVENT_COLUMNS} FROM events WHERE seq > ? AND +topic_id IN ({_ids_sql(topic_ids)})"
            f"{extra} ORDER BY seq LIMIT ?"
        )
        params = [after_seq, *extra_params, limit]
    return conn.execute(sql, params).fetchall()


_TOPIC_COUNT_SQL = (
    "t.counted + (SELECT count(*) FROM events e WHERE e.topic_id = t.topic_id AND e.seq > t.counted_to)"
)
"""Topic row ``t``'s event count: the folded count plus the events above ``counted_to`` (schema version 3:
the writer folds the count every ``tx.FOLD_EVERY`` appends, so this counts a short range of the index)."""

TOPIC_STATS_SQL = (
    f"SELECT t.topic, {_TOPIC_COUNT_SQL}, last.seq, last.ts FROM topics t"
    " JOIN events last ON last.seq = (SELECT max(e.seq) FROM events e WHERE e.topic_id = t.topic_id)"
)
"""(topic, count, last seq, last ts) per topic with at least one event (events are never deleted); the last
event is one probe of the ``(topic_id, seq)`` index."""


def tail_seq(conn: sqlite3.Connection, topic_ids: Sequence[int]) -> int | None:
    """The highest seq of an event in ``topic_ids`` (one index probe per topic)."""
    if not topic_ids:
        return None
    row = conn.execute(
        "SELECT max((SELECT max(e.seq) FROM events e WHERE e.topic_id = t.topic_id))"
        f" FROM topics t WHERE t.topic_id IN ({_ids_sql(topic_ids)})"
    ).fetchone()
    return None if row[0] is None else int(row[0])


def count_events(conn: sqlite3.Connection, topic_ids: Sequence[int], *, after_seq: int) -> int:
    """How many events in ``topic_ids`` have ``seq > after_seq``."""
    if not topic_ids:
        return 0
    ids = _ids_sql(topic_ids)
    if after_seq <= 0:
        row = conn.execute(
            f"SELECT coalesce(sum({_TOPIC_COUNT_SQL}), 0) FROM topics t WHERE t.topic_id IN ({ids})"
        ).fetchone()
        return int(row[0])
    row = conn.execute(
        f"SELECT count(*) FROM events WHERE topic_id IN ({ids}) AND seq > ?", (after_seq,)
    ).fetchone()
    return int(row[0])


def last_seq_at_or_below(conn: sqlite3.Connection, topic_ids: Sequence[int], seq: int) -> int | None:
    """The highest seq of an event in ``topic_ids`` that is ``<= seq`` (one index probe per topic)."""
    if not topic_ids or seq <= 0:
        return None
    if len(topic_ids) == 1:
        row = conn.execute(
            "SELECT max(seq) FROM events WHERE topic_id = ? AND seq <= ?", (topic_ids[0], seq)
        ).fetchone()
    else:
        row = conn.execute(
            "SELECT max((SELECT max(e.seq) FROM events e WHERE e.topic_id = t.topic_id AND e.seq <= ?))"
            f" FROM topics t WHERE t.topic_id IN ({_ids_sql(topic_ids)})",
            (seq,),
        ).fetchone()
    return None if row[0] is None else int(row[0])
