"""SQLite schema, migrations and connection settings.

The schema version lives in ``schema_version`` (one row). ``MIGRATIONS[n]`` moves a database from version
``n`` to ``n + 1``; a new schema change is one more function appended to the list, never an edit of an
existing one. Migrations run in one ``BEGIN IMMEDIATE`` transaction when the store opens, so two processes
opening the same new file do not both create it.

Tables:

* ``events``: the log, unique by ``(id, topic_id)`` (version 2; ids were unique log-wide before). ``seq`` is
  the rowid (assigned by the single writer as max + 1, so commit-ordered);
  ``payload`` is JSON bytes; ``meta`` is JSON of headers/tags/caused_by/sid, NULL when none is set.
* ``topics``: one row per concrete topic; ``counted`` is its number of events up to seq ``counted_to``
  (version 3: folded every ``tx.FOLD_EVERY`` appends of a writer, not once per batch; a reader adds the
  events above ``counted_to`` from the ``(topic_id, seq)`` index, and the last seq and ts are the topic's
  last event's, ``topics.TOPIC_STATS_SQL``).
* ``groups``: one row per ``(pattern, name)`` with its frontier and dead-letter count. The ack floor is
  derived when read (``groups.ACK_FLOOR_SQL``: just below the oldest pending seq, else the frontier;
  version 3, stored and moved by every ACK's commit before).
* ``pending``: a group's deliveries not yet acked. ``member`` NULL with ``attempts`` 0 marks an event held
  back by key ordering; ``deadline`` is when it becomes deliverable (again). Indexed by ``(gid, seq)`` and
  ``(gid, deadline)``; a member's release walks its group's rows (version 3 dropped ``pending_member``).

Version 3 exists to write fewer pages per small commit (a publish: 4 → 3 WAL frames, a claim or an ACK:
4 → 3 and 4 → 2; docs/benchmarks.md, "Hot path, tenth round: fewer WAL frames per small commit").
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from outboxhub.errors import StoreError

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "configure", "migrate"]


def _v1(conn: sqlite3.Connection) -> None:
    for statement in (
        """CREATE TABLE topics (
            topic_id INTEGER PRIMARY KEY,
            topic TEXT NOT NULL UNIQUE,
            count INTEGER NOT NULL DEFAULT 0,
            last_seq INTEGER NOT NULL DEFAULT 0,
            last_ts INTEGER NOT NULL DEFAULT 0
        )""",
        """CREATE TABLE events (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            topic_id INTEGER NOT NULL,
            ts INTEGER NOT NULL,
            key TEXT,
            payload BLOB NOT NULL,
            meta BLOB
        )""",
        "CREATE INDEX events_topic_seq ON events (topic_id, seq)",
        "CREATE INDEX events_topic_key_seq ON events (topic_id, key, seq) WHERE key IS NOT NULL",
        """CREATE TABLE groups (
            gid INTEGER PRIMARY KEY,
            pattern TEXT NOT NULL,
            name TEXT NOT NULL,
            ack_floor INTEGER NOT NULL,
            frontier INTEGER NOT NULL,
            dead_letters INTEGER NOT NULL DEFAULT 0,
            created_ts INTEGER NOT NULL,
            UNIQUE (pattern, name)
        )""",
        """CREATE TABLE pending (
            gid INTEGER NOT NULL,
            seq INTEGER NOT NULL,
            event_id TEXT NOT NULL,
            key TEXT,
            member TEXT,
            deadline INTEGER NOT NULL,
            attempts INTEGER NOT NULL,
            last_reason TEXT,
            PRIMARY KEY (gid, seq)
        ) WITHOUT ROWID""",
        "CREATE INDEX pending_deadline ON pending (gid, deadline)",
        "CREATE INDEX pending_member ON pending (gid, member) WHERE member IS NOT NULL",
        "CREATE INDEX pending_key ON pending (gid, key, seq) WHERE key IS NOT NULL",
    ):
        conn.execute(statement)


def _v2(conn: sqlite3.Connection) -> None:
    """Event ids are unique per topic, not across the log (issue #14): rebuild ``events`` with
    ``UNIQUE (id, topic_id)`` (SQLite cannot drop a constraint in place). Rows are copied as they are; the
    index serves look-ups by id alone too."""
    for statement in (
        """CREATE TABLE events_v2 (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL,
            topic_id INTEGER NOT NULL,
            ts INTEGER NOT NULL,
            key TEXT,
            payload BLOB NOT NULL,
            meta BLOB,
            UNIQUE (id, topic_id)
        )""",
        "INSERT INTO events_v2 (seq, id, topic_id, ts, key, payload, meta)"
        " SELECT seq, id, topic_id, ts, key, payload, meta FROM events",
        "DROP TABLE events",
        "ALTER TABLE events_v2 RENAME TO events",
        "CREATE INDEX events_topic_seq ON events (topic_id, seq)",
        "CREATE INDEX events_topic_key_seq ON events (topic_id, key, seq) WHERE key IS NOT NULL",
    ):
        conn.execute(statement)


def _v3(conn: sqlite3.Connection) -> None:
    """Fewer pages per small commit: ``topics`` keeps a count folded now and then instead of stats updated
    by every publish, ``groups`` loses the stored ack floor (derived when read), ``pending_member`` goes.
    Both tables are rebuilt (no ``DROP COLUMN`` before SQLite 3.35); ids, counts and frontiers are kept."""
    for statement in (
        """CREATE TABLE topics_v3 (
            topic_id INTEGER PRIMARY KEY,
            topic TEXT NOT NULL UNIQUE,
            counted INTEGER NOT NULL DEFAULT 0,
            counted_to INTEGER NOT NULL DEFAULT 0
        )""",
        "INSERT INTO topics_v3 (topic_id, topic, counted, counted_to)"
        " SELECT topic_id, topic, count, last_seq FROM topics",
        "DROP TABLE topics",
        "ALTER TABLE topics_v3 RENAME TO topics",
        """CREATE TABLE groups_v3 (
            gid INTEGER PRIMARY KEY,
            pattern TEXT NOT NULL,
            name TEXT NOT NULL,
            frontier INTEGER NOT NULL,
            dead_letters INTEGER NOT NULL DEFAULT 0,
            created_ts INTEGER NOT NULL,
            UNIQUE (pattern, name)
        )""",
        "INSERT INTO groups_v3 (gid, pattern, name, frontier, dead_letters, created_ts)"
        " SELECT gid, pattern, name, frontier, dead_letters, created_ts FROM groups",
        "DROP TABLE groups",
        "ALTER TABLE groups_v3 RENAME TO groups",
        "DROP INDEX pending_member",
    ):
        conn.execute(statement)


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_v1, _v2, _v3]
"""``MIGRATIONS[n]`` upgrades a database at version ``n`` to ``n + 1``."""

SCHEMA_VERSION = len(MIGRATIONS)


def configure(conn: sqlite3.Connection, *, synchronous: str, busy_timeout_ms: int, writer: bool) -> None:
    """Per-connection settings. The caller opened ``conn`` with ``isolation_level=None``."""
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute("PRAGMA temp_store = MEMORY")
    if writer:
        conn.execute("PRAGMA cache_size = -32768")  # 32 MiB: the hot right edge of every index
        conn.execute("PRAGMA journal_size_limit = 67108864")
    else:
        conn.execute("PRAGMA query_only = 1")


def migrate(conn: sqlite3.Connection) -> int:
    """Switch to WAL and bring the schema to ``SCHEMA_VERSION``; return the version found before."""
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise StoreError(f"could not switch the database to WAL journal mode (got {mode!r})")
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = conn.execute("SELECT version FROM schema_version").fetchone()
        found = 0 if row is None else int(row[0])
        if found > SCHEMA_VERSION:
            raise StoreError(
                f"database schema version {found} is newer than this outboxhub supports ({SCHEMA_VERSION})"
            )
        for step in MIGRATIONS[found:]:
            step(conn)
        if row is None:
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
        elif found != SCHEMA_VERSION:
            conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return found
