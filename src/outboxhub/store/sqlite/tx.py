"""State of the writer's current transaction: seq assignment, new topics and groups, topic counts to fold.

Everything the writer learns inside a transaction (topic ids it inserted, groups it created) stays in this
overlay until COMMIT succeeds, then moves into the shared caches; a rolled-back job or batch drops its part
(``mark``/``reset``), so a rolled-back topic id can never be reused under another name.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Sequence
from operator import itemgetter

from outboxhub.errors import StoreError
from outboxhub.model import PublishResult
from outboxhub.store.codec import Prepared
from outboxhub.store.sqlite.topics import TopicCatalog
from outboxhub.topics import compile_pattern

__all__ = ["GroupRef", "Mark", "WriteTx"]

_INSERT_ROWS_MAX = 512
"""Most rows per INSERT statement (7 parameters each), when the SQLite build allows that many parameters."""
_INSERT_STEP = 32
"""Row counts of INSERT statements: a multiple of this, or fewer rows than it (the rest of a batch), so a
batch takes at most two statements per ``_INSERT_ROWS_MAX`` rows and the writer connection's statement
cache holds at most 31 + 512/32 = 47 of them."""
_INSERT_BYTES = 8 << 20
"""Payload bytes per INSERT statement, at most (unless 32 rows hold more): their copies live while it runs."""
_EVENT_PARAMS = 7
_INSERT_EVENTS: dict[int, str] = {}
"""INSERT statement texts by row count, made on first use."""


def _insert_sql(rows: int) -> str:
    sql = _INSERT_EVENTS.get(rows)
    if sql is None:
        values = ", ".join(["(" + ", ".join("?" * _EVENT_PARAMS) + ")"] * rows)
        sql = _INSERT_EVENTS[rows] = (
            f"INSERT INTO events (seq, id, topic_id, ts, key, payload, meta) VALUES {values}"
        )
    return sql


def _chunk_rows(remaining: int, most: int) -> int:
    """Rows of the next INSERT statement, ``remaining`` rows to go and at most ``most`` per statement."""
    if remaining < _INSERT_STEP:
        return remaining
    return min(remaining, most) // _INSERT_STEP * _INSERT_STEP


FOLD_EVERY = 64
"""A topic's count is folded into its ``topics`` row once per this many of a writer's appends to it (and at
its first append after the writer opened or rolled back), not by every publish: one WAL page fewer per
small commit. A reader counts the events above ``counted_to`` from the ``(topic_id, seq)`` index (at most
about this many per writer sharing the file), so counts stay exact whatever the fold lags."""
_FOLD_TOPIC = (
    "UPDATE topics SET counted = counted + (SELECT count(*) FROM events e WHERE e.topic_id = topics.topic_id"
    " AND e.seq > topics.counted_to), counted_to = ? WHERE topic_id = ?"
)
"""Self-contained (the events above the old ``counted_to`` are counted in SQL): right whoever appended."""
_EXISTING_CHUNK = 500

Mark = tuple[int, int, int, int]
GroupRef = tuple[int, int]
"""(gid, frontier) of a group, read inside the current transaction."""

_EventParams = tuple[int, str, int, int, str | None, bytes, bytes | None]

# Python's sqlite3 binds int, float, str and bytearray as they are, but sends every other value (None,
# bytes) through its adapter lookup first, which fails by raising and formatting an AttributeError
# (``PrepareProtocol.__adapt__``): ≈ 3,000 instructions per value, three per event (key, payload, meta).
# So an INSERT binds the events' values as other types, made per statement: a float NaN binds as NULL
# (SQLite stores NaN as NULL, ``sqlite3_bind_double``), and the JSON bytes go as a bytearray (the same
# BLOB, one memcpy; the copies live only while one statement of at most _INSERT_ROWS_MAX rows runs).
_NULL = float("nan")


def _bound(
    seq: int, event_id: str, topic_id: int, ts: int, key: str | None, payload: bytes, meta: bytes | None
) -> tuple[object, ...]:
    """An event's INSERT values as types sqlite3 binds without its adapter lookup (see ``_NULL``)."""
    return (
        seq,
        event_id,
        topic_id,
        ts,
        _NULL if key is None else key,
        bytearray(payload),
        _NULL if meta is None else bytearray(meta),
    )


_ID, _TOPIC = itemgetter(0), itemgetter(1)
"""Fields of a ``Prepared`` row."""


class WriteTx:
    """The writer thread's view of its open transaction. Only the writer thread touches it."""

    def __init__(self, conn: sqlite3.Connection, catalog: TopicCatalog) -> None:
        self.conn = conn
        # A multiple of _INSERT_STEP that the build's parameter limit allows (999 before SQLite 3.32: 128).
        variables = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        self._insert_rows = min(_INSERT_ROWS_MAX, variables // _EVENT_PARAMS) // _INSERT_STEP * _INSERT_STEP
        # For the statements of one publish at a time that return no rows (BEGIN, INSERT, UPDATE, COMMIT):
        # ``conn.execute`` makes and frees a cursor per statement; this one is reused.
        self.cursor = conn.cursor()
        self.catalog = catalog
        self._groups: dict[tuple[str, str], int] = {}  # committed groups: (pattern, name) -> gid
        self.next_seq = 1
        self.appended_to = 0  # the highest seq appended in this transaction (0: none)
        self.appended_topics: set[str] = set()  # topics appended to (a rolled-back job's may stay: harmless)
        self._new_topics: dict[str, int] = {}
        self._new_topic_names: dict[int, str] = {}
        self._new_groups: dict[tuple[str, str], int] = {}
        self._unfolded: dict[int, int] = {}  # topic id -> this writer's appends since it folded the count
        # ``PRAGMA data_version`` at the last begin, and whether that transaction committed: while both hold
        # and the version is unchanged, no other connection (another hub, an outbox drainer, a reader's
        # write) has committed since, so ``next_seq`` and the catalog are still exact.
        self._version = -1
        self._exact = False

    # -- transaction lifecycle ----------------------------------------------------------------------------

    def begin(self) -> None:
        """Call right after ``BEGIN IMMEDIATE``: we hold the write lock, so the view below is exact.

        The log's last seq and the topics are read again only when another connection committed since our
        last commit (``PRAGMA data_version`` changes only for other connections' commits) or our last
        transaction did not commit: one statement instead of two for a writer that has the file to itself.
        """
        conn = self.conn
        exact, self._exact = self._exact, False
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        if not exact or version != self._version:
            self._version = version
            if not exact:  # a rolled-back fold: fold each topic again at its next append
                self._unfolded.clear()
            self.catalog.sync(conn)
            self.next_seq = conn.execute("SELECT coalesce(max(seq), 0) + 1 FROM events").fetchone()[0]
        self.appended_to = 0
        self.appended_topics.clear()
        self._new_topics.clear()
        self._new_topic_names.clear()
        self._new_groups.clear()

    def mark(self) -> Mark:
        """A point to roll the overlay back to (taken with a SAVEPOINT)."""
        return (self.next_seq, self.appended_to, len(self._new_topics), len(self._new_groups))

    def reset(self, mark: Mark) -> None:
        self.next_seq, self.appended_to, topics, groups = mark
        self._unfolded.clear()  # a fold may have been rolled back: fold each topic at its next append
        while len(self._new_topics) > topics:
            _, topic_id = self._new_topics.popitem()
            del self._new_topic_names[topic_id]
        while len(self._new_groups) > groups:
            self._new_groups.popitem()

    def committed(self) -> None:
        """After COMMIT: publish the overlay to the shared caches."""
        self._exact = True
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

    def find_gid(self, pattern: str, name: str) -> int | None:
        """The group's gid (None: no such group), without a statement once known: a settle needs no
        frontier, and a group's gid never changes (groups are never deleted)."""
        gid = self._groups.get((pattern, name)) or self._new_groups.get((pattern, name))
        if gid is not None:
            return gid
        ref = self.find_group(pattern, name)
        return None if ref is None else ref[0]

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

    # -- events -------------------------------------------------------------------------------------------

    def append(self, rows: Sequence[Prepared], *, plain: bool = False) -> list[PublishResult]:
        """Insert events in order, idempotent by ``(topic, id)`` (also within ``rows``); topic counts
        folded when due (``FOLD_EVERY``). ``plain``: no SAVEPOINT, and a stored id among several rows raises
        ``IntegrityError`` (the caller rolls the transaction back and appends again without ``plain``)."""
        if len(rows) == 1:
            return [self._append_one(rows[0])]
        first: dict[tuple[str, str], int] | None = None  # (id, topic) -> index of its first row, if repeated
        unique: Sequence[int] = range(len(rows))
        if len(rows) > 1 and len(set(zip(map(_ID, rows), map(_TOPIC, rows), strict=True))) != len(rows):
            first = {}
            unique = [i for i, row in enumerate(rows) if first.setdefault((row[0], row[1]), i) == i]
        existing: dict[tuple[str, str], int] = {}
        conn = self.conn
        # Topic rows are inserted here, outside the savepoint below, so the retry keeps them.
        params = self._params(rows, unique, existing)
        if len(params) == 1:
            # One INSERT is atomic: a duplicate leaves nothing to undo, and the caller's SAVEPOINT (or
            # its transaction) undoes the insert if the topic fold fails after it. No savepoint here.
            try:
                _insert_events(conn, params, self._insert_rows)
            except sqlite3.IntegrityError:
                existing = self._existing_seqs([rows[index] for index in unique])
                params = self._params(rows, unique, existing)
                if params:  # not a duplicate after all: let the INSERT say what it is
                    _insert_events(conn, params, self._insert_rows)
            self._count_topics(params)
        elif plain:
            _insert_events(conn, params, self._insert_rows)
            self._count_topics(params)
        else:
            self._append_many(rows, unique, params, existing)
        if params:
            self.next_seq = params[-1][0] + 1
            self.appended_to = params[-1][0]
            self.appended_topics.update(map(_TOPIC, rows))
        if not existing and len(unique) == len(rows):
            return [PublishResult(id=p[1], seq=p[0]) for p in params]
        seq_of = {(p[1], self.topic_name(p[2])): p[0] for p in params}
        seq_of.update(existing)
        results: list[PublishResult] = []
        for index, row in enumerate(rows):
            both = (row[0], row[1])
            duplicate = both in existing or (first is not None and first[both] != index)
            results.append(PublishResult(id=row[0], seq=seq_of[both], duplicate=duplicate))
        return results

    def _append_one(self, row: Prepared) -> PublishResult:
        """``append`` of one event (one publish at a time): the same statements, less Python around them.
        One INSERT is atomic: a duplicate leaves nothing to undo, and the caller's SAVEPOINT (or its
        transaction) undoes the insert if the topic fold fails after it."""
        event_id, topic, ts, key, payload, meta = row
        topic_id = self.topic_id_for(topic)  # inserted when new, kept when the INSERT below is refused
        seq = self.next_seq
        cursor = self.cursor
        try:
            cursor.execute(_insert_sql(1), _bound(seq, event_id, topic_id, ts, key, payload, meta))
        except sqlite3.IntegrityError:
            stored = self._existing_seqs([row]).get((event_id, topic))
            if stored is None:  # not a duplicate after all: the INSERT's own error
                raise
            return PublishResult(id=event_id, seq=stored, duplicate=True)
        self._appended(topic_id, 1, seq)
        self.next_seq = seq + 1
        self.appended_to = seq
        self.appended_topics.add(topic)
        return PublishResult(id=event_id, seq=seq)

    def _append_many(
        self,
        rows: Sequence[Prepared],
        unique: Sequence[int],
        params: list[_EventParams],
        existing: dict[tuple[str, str], int],
    ) -> None:
        """Insert ``params`` (several rows) under a SAVEPOINT: the chunks before a duplicate's stay inserted,
        so a duplicate rolls back to it and the rows are inserted again without the stored ones
        (``existing`` and ``params`` are updated in place)."""
        conn = self.conn
        conn.execute("SAVEPOINT append")
        try:
            try:
                _insert_events(conn, params, self._insert_rows)
            except sqlite3.IntegrityError:
                # Some (topic, id) exist already (a re-published outbox record): find them, insert the rest.
                conn.execute("ROLLBACK TO append")
                existing.update(self._existing_seqs([rows[index] for index in unique]))
                params[:] = self._params(rows, unique, existing)
                _insert_events(conn, params, self._insert_rows)
            self._count_topics(params)
            conn.execute("RELEASE append")
        except BaseException:
            conn.execute("ROLLBACK TO append")
            conn.execute("RELEASE append")
            raise

    def _params(
        self, rows: Sequence[Prepared], unique: Sequence[int], existing: dict[tuple[str, str], int]
    ) -> list[_EventParams]:
        picked = rows if len(unique) == len(rows) else [rows[index] for index in unique]
        if existing:
            picked = [row for row in picked if (row[0], row[1]) not in existing]
        # New topics get their ids in order of first appearance.
        topic_ids = {topic: self.topic_id_for(topic) for topic in dict.fromkeys(map(_TOPIC, picked))}
        seq = self.next_seq
        return [
            (seq + offset, event_id, topic_ids[topic], ts, key, payload, meta)
            for offset, (event_id, topic, ts, key, payload, meta) in enumerate(picked)
        ]

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
        if not params:
            return
        last = {p[2]: p[0] for p in params}  # each topic's last seq
        for topic_id, appended in Counter(p[2] for p in params).items():
            self._appended(topic_id, appended, last[topic_id])

    def _appended(self, topic_id: int, appended: int, last_seq: int) -> None:
        """``appended`` events up to ``last_seq`` went to the topic: fold its count when due."""
        unfolded = self._unfolded.get(topic_id, FOLD_EVERY) + appended
        if unfolded < FOLD_EVERY:
            self._unfolded[topic_id] = unfolded
            return
        self.cursor.execute(_FOLD_TOPIC, (last_seq, topic_id))
        self._unfolded[topic_id] = 0


def _insert_events(conn: sqlite3.Connection, params: list[_EventParams], most: int) -> None:
    """Insert rows in seq order, up to ``most`` per statement: a multi-row INSERT costs about 1 µs less per
    row than ``executemany`` (one statement step and bind pass instead of one per row), and each statement
    lets go of the GIL once and waits to get it back (up to the switch interval while the loop runs)."""
    total = len(params)
    largest = max(len(row[5]) for row in params) if params else 0
    if largest * most > _INSERT_BYTES:  # large payloads: fewer rows per statement (at least 32, or all)
        most = max(_INSERT_STEP, _INSERT_BYTES // largest // _INSERT_STEP * _INSERT_STEP)
    start = 0
    while start < total:
        rows = _chunk_rows(total - start, most)
        values: list[object] = []
        for row in params[start : start + rows]:
            values += _bound(*row)
        conn.execute(_insert_sql(rows), values)
        start += rows
