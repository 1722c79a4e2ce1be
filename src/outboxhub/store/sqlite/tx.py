"""State of the writer's current transaction: seq assignment, new topics and groups, dirty ack floors.

Everything the writer learns inside a transaction (topic ids it inserted, groups it created) stays in this
overlay until COMMIT succeeds, then moves into the shared caches; a rolled-back job or batch drops its part
(``mark``/``reset``), so a rolled-back topic id can never be reused under another name.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from outboxhub.errors import StoreError
from outboxhub.model import PublishResult
from outboxhub.store.codec import Prepared
from outboxhub.store.common import ack_floor
from outboxhub.store.sqlite.topics import TopicCatalog
from outboxhub.topics import compile_pattern

__all__ = ["GroupRef", "Mark", "WriteTx"]

_INSERT_EVENT = "INSERT INTO events (seq, id, topic_id, ts, key, payload, meta) VALUES (?, ?, ?, ?, ?, ?, ?)"
_UPDATE_TOPIC = "UPDATE topics SET count = count + ?, last_seq = ?, last_ts = ? WHERE topic_id = ?"
_EXISTING_CHUNK = 500

Mark = tuple[int, int, int, int]
GroupRef = tuple[int, int]
"""(gid, frontier) of a group, read inside the current transaction."""

_EventParams = tuple[int, str, int, int, str | None, bytes, bytes | None]


class WriteTx:
    """The writer thread's view of its open transaction. Only the writer thread touches it."""

    def __init__(self, conn: sqlite3.Connection, catalog: TopicCatalog) -> None:
        self.conn = conn
        self.catalog = catalog
        self._groups: dict[tuple[str, str], int] = {}  # committed groups: (pattern, name) -> gid
        self.next_seq = 1
        self.appended_to = 0  # the highest seq appended in this transaction (0: none)
        self.appended_topics: set[str] = set()  # topics appended to (a rolled-back job's may stay: harmless)
        self._new_topics: dict[str, int] = {}
        self._new_topic_names: dict[int, str] = {}
        self._new_groups: dict[tuple[str, str], int] = {}
        self._dirty: set[int] = set()

    # -- transaction lifecycle ----------------------------------------------------------------------------

    def begin(self) -> None:
        """Call right after ``BEGIN IMMEDIATE``: we hold the write lock, so the view below is exact."""
        self.catalog.sync(self.conn)
        self.next_seq = self.conn.execute("SELECT coalesce(max(seq), 0) + 1 FROM events").fetchone()[0]
        self.appended_to = 0
        self.appended_topics.clear()
        self._new_topics.clear()
        self._new_topic_names.clear()
        self._new_groups.clear()
        self._dirty.clear()

    def mark(self) -> Mark:
        """A point to roll the overlay back to (taken with a SAVEPOINT)."""
        return (self.next_seq, self.appended_to, len(self._new_topics), len(self._new_groups))

    def reset(self, mark: Mark) -> None:
        self.next_seq, self.appended_to, topics, groups = mark
        while len(self._new_topics) > topics:
            _, topic_id = self._new_topics.popitem()
            del self._new_topic_names[topic_id]
        while len(self._new_groups) > groups:
            self._new_groups.popitem()

    def finish(self) -> None:
        """Before COMMIT: move the ack floor of every group whose pending set or frontier changed."""
        for gid in self._dirty:
            row = self.conn.execute(
                # plain ? placeholders: ?1 with a sequence warns on Python 3.12+ and fails on 3.14
                "SELECT (SELECT min(seq) FROM pending WHERE gid = ?), frontier FROM groups WHERE gid = ?",
                (gid, gid),
            ).fetchone()
            if row is not None:
                self.conn.execute(
                    "UPDATE groups SET ack_floor = ? WHERE gid = ?", (ack_floor(row[0], row[1]), gid)
                )
        self._dirty.clear()

    def committed(self) -> None:
        """After COMMIT: publish the overlay to the shared caches."""
        if self._new_topics:
            self.catalog.merge(self._new_topic_names.items())
        self._groups.update(self._new_groups)

    # -- topics -------------------------------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        return self.next_seq - 1

    def topic_id_for(self, name: str) -> int:
        """The id of topic ``name``, inserting it when new."""
        topic_id = self._new_topics.get(name)
        if topic_id is None:
            topic_id = self.catalog.topic_id(name)
            if topic_id is None:
                cursor = self.conn.execute("INSERT INTO topics (topic) VALUES (?)", (name,))
                topic_id = int(cursor.lastrowid or 0)
                self._new_topics[name] = topic_id
                self._new_topic_names[topic_id] = name
        return topic_id

    def topic_name(self, topic_id: int) -> str:
        name = self._new_topic_names.get(topic_id)
        return name if name is not None else self.catalog.name(topic_id)

    def topic_ids(self, pattern: str) -> tuple[int, ...]:
        """Topic ids matching ``pattern``, including topics created in this transaction."""
        ids = self.catalog.resolve(pattern)
        if self._new_topics:
            matcher = compile_pattern(pattern)
            extra = tuple(tid for name, tid in self._new_topics.items() if matcher.match(name))
            ids = ids + extra
        return ids

    # -- groups -------------------------------------------------------------------------------------------

    def find_group(self, pattern: str, name: str) -> GroupRef | None:
        """(gid, frontier) of the group, or None when it does not exist."""
        gid = self._groups.get((pattern, name)) or self._new_groups.get((pattern, name))
        if gid is None:
            row = self.conn.execute(
                "SELECT gid, frontier FROM groups WHERE pattern = ? AND name = ?", (pattern, name)
            ).fetchone()
            if row is None:
                return None
            gid = int(row[0])
            self._new_groups[(pattern, name)] = gid
            return (gid, int(row[1]))
        row = self.conn.execute("SELECT frontier FROM groups WHERE gid = ?", (gid,)).fetchone()
        return (gid, int(row[0]))

    def group(self, pattern: str, name: str) -> GroupRef:
        """Like ``find_group`` but a missing group is an error."""
        ref = self.find_group(pattern, name)
        if ref is None:
            raise StoreError(
                f"consumer group {name!r} on {pattern!r} does not exist (call ensure_group first)"
            )
        return ref

    def remember_group(self, pattern: str, name: str, gid: int) -> None:
        self._new_groups[(pattern, name)] = gid

    def dirty(self, gid: int) -> None:
        """The group's pending set or frontier changed: recompute its ack floor before COMMIT."""
        self._dirty.add(gid)

    # -- events -------------------------------------------------------------------------------------------

    def append(self, rows: Sequence[Prepared]) -> list[PublishResult]:
        """Insert events in order, idempotent by ``(topic, id)`` (also within ``rows``); topic counters
        updated once."""
        first: dict[tuple[str, str], int] = {}
        unique: list[int] = []
        for index, row in enumerate(rows):
            if first.setdefault((row[0], row[1]), index) == index:
                unique.append(index)
        existing: dict[tuple[str, str], int] = {}
        conn = self.conn
        # Topic rows are inserted here, outside the savepoint below, so the retry keeps them.
        params = self._params(rows, unique, existing)
        if len(params) == 1:
            # One INSERT is atomic: a duplicate leaves nothing to undo, and the caller's SAVEPOINT (or
            # its transaction) undoes the insert if the topic count fails after it. No savepoint here.
            try:
                conn.execute(_INSERT_EVENT, params[0])
            except sqlite3.IntegrityError:
                existing = self._existing_seqs([rows[index] for index in unique])
                params = self._params(rows, unique, existing)
                if params:  # not a duplicate after all: let the INSERT say what it is
                    conn.execute(_INSERT_EVENT, params[0])
            self._count_topics(params)
        else:
            self._append_many(rows, unique, params, existing)
        if params:
            self.next_seq = params[-1][0] + 1
            self.appended_to = params[-1][0]
            self.appended_topics.update(row[1] for row in rows)
        if not existing and len(unique) == len(rows):
            return [PublishResult(id=p[1], seq=p[0]) for p in params]
        seq_of = {(p[1], self.topic_name(p[2])): p[0] for p in params}
        seq_of.update(existing)
        results: list[PublishResult] = []
        for index, row in enumerate(rows):
            both = (row[0], row[1])
            duplicate = both in existing or first[both] != index
            results.append(PublishResult(id=row[0], seq=seq_of[both], duplicate=duplicate))
        return results

    def _append_many(
        self,
        rows: Sequence[Prepared],
        unique: list[int],
        params: list[_EventParams],
        existing: dict[tuple[str, str], int],
    ) -> None:
        """Insert ``params`` (several rows) under a SAVEPOINT: ``executemany`` keeps the rows before a
        duplicate, so a duplicate rolls back to it and the rows are inserted again without the stored
        ones (``existing`` and ``params`` are updated in place)."""
        conn = self.conn
        conn.execute("SAVEPOINT append")
        try:
            try:
                conn.executemany(_INSERT_EVENT, params)
            except sqlite3.IntegrityError:
                # Some (topic, id) exist already (a re-published outbox record): find them, insert the rest.
                conn.execute("ROLLBACK TO append")
                existing.update(self._existing_seqs([rows[index] for index in unique]))
                params[:] = self._params(rows, unique, existing)
                conn.executemany(_INSERT_EVENT, params)
            self._count_topics(params)
            conn.execute("RELEASE append")
        except BaseException:
            conn.execute("ROLLBACK TO append")
            conn.execute("RELEASE append")
            raise

    def _params(
        self, rows: Sequence[Prepared], unique: list[int], existing: dict[tuple[str, str], int]
    ) -> list[_EventParams]:
        seq = self.next_seq
        params: list[_EventParams] = []
        topic_ids: dict[str, int] = {}
        for index in unique:
            event_id, topic, ts, key, payload, meta = rows[index]
            if (event_id, topic) in existing:
                continue
            topic_id = topic_ids.get(topic)
            if topic_id is None:
                topic_id = topic_ids[topic] = self.topic_id_for(topic)
            params.append((seq, event_id, topic_id, ts, key, payload, meta))
            seq += 1
        return params

    def _existing_seqs(self, rows: list[Prepared]) -> dict[tuple[str, str], int]:
        """{(id, topic): seq} of the events among ``rows`` already stored."""
        wanted = {(row[0], row[1]) for row in rows}
        ids = sorted({row[0] for row in rows})
        found: dict[tuple[str, str], int] = {}
        for start in range(0, len(ids), _EXISTING_CHUNK):
            chunk = ids[start : start + _EXISTING_CHUNK]
            marks = ",".join("?" * len(chunk))
            for event_id, topic_id, seq in self.conn.execute(
                f"SELECT id, topic_id, seq FROM events WHERE id IN ({marks})", chunk
            ):
                both = (event_id, self.topic_name(topic_id))
                if both in wanted:
                    found[both] = seq
        return found

    def _count_topics(self, params: list[_EventParams]) -> None:
        stats: dict[int, list[int]] = {}
        for seq, _, topic_id, ts, *_rest in params:
            entry = stats.get(topic_id)
            if entry is None:
                stats[topic_id] = [1, seq, ts]
            else:
                entry[0] += 1
                entry[1] = seq
                entry[2] = ts
        self.conn.executemany(_UPDATE_TOPIC, [(n, seq, ts, tid) for tid, (n, seq, ts) in stats.items()])
