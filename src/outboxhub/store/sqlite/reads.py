"""Read queries of the SQLite store, run on reader connections inside one read transaction (one snapshot).

Each function takes a connection whose snapshot the caller has opened and whose topics the catalog has
synced within that snapshot.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from outboxhub.model import Cursor, Event, GroupInfo, Lag, TopicInfo
from outboxhub.store.codec import EVENT_COLUMNS, decode_event
from outboxhub.store.sqlite.groups import ACK_FLOOR_SQL, GROUP_INFO_SQL, info_from_row
from outboxhub.store.sqlite.topics import (
    TOPIC_STATS_SQL,
    TopicCatalog,
    count_events,
    last_seq_at_or_below,
    select_events,
    tail_seq,
)

__all__ = [
    "count",
    "cursor",
    "get_event",
    "groups",
    "lag",
    "last_seq",
    "latest_by_key",
    "next_deadline",
    "scan",
    "tail",
    "topics",
]


def _event_at(conn: sqlite3.Connection, catalog: TopicCatalog, seq: int) -> Event | None:
    row = conn.execute(f"SELECT {EVENT_COLUMNS} FROM events WHERE seq = ?", (seq,)).fetchone()
    return None if row is None else decode_event(row, catalog.name)


def get_event(
    conn: sqlite3.Connection, catalog: TopicCatalog, event_id: str, topic: str | None
) -> Event | None:
    """The event ``event_id`` of ``topic`` (ids are unique per topic); without a topic the oldest one."""
    if topic is None:
        row = conn.execute(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE id = ? ORDER BY seq LIMIT 1", (event_id,)
        ).fetchone()
    else:
        topic_id = catalog.topic_id(topic)
        if topic_id is None:
            return None
        row = conn.execute(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE id = ? AND topic_id = ?", (event_id, topic_id)
        ).fetchone()
    return None if row is None else decode_event(row, catalog.name)


def scan(
    conn: sqlite3.Connection,
    catalog: TopicCatalog,
    pattern: str,
    after_seq: int,
    since_ts: int | None,
    until_ts: int | None,
    limit: int,
) -> list[Event]:
    rows = select_events(
        conn, catalog.resolve(pattern), after_seq=after_seq, limit=limit, since_ts=since_ts, until_ts=until_ts
    )
    name = catalog.name
    return [decode_event(row, name) for row in rows]


def latest_by_key(
    conn: sqlite3.Connection, catalog: TopicCatalog, topic: str, keys: Sequence[str]
) -> dict[str, Event]:
    topic_id = catalog.topic_id(topic)
    found: dict[str, Event] = {}
    if topic_id is None:
        return found
    for key in dict.fromkeys(keys):
        row = conn.execute(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE topic_id = ? AND key = ? ORDER BY seq DESC LIMIT 1",
            (topic_id, key),
        ).fetchone()
        if row is not None:
            found[key] = decode_event(row, catalog.name)
    return found


def tail(conn: sqlite3.Connection, catalog: TopicCatalog, pattern: str) -> Event | None:
    seq = tail_seq(conn, catalog.resolve(pattern))
    return None if seq is None else _event_at(conn, catalog, seq)


def count(conn: sqlite3.Connection, catalog: TopicCatalog, pattern: str, after_seq: int) -> int:
    return count_events(conn, catalog.resolve(pattern), after_seq=after_seq)


def last_seq(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0])


def topics(conn: sqlite3.Connection) -> list[TopicInfo]:
    rows = conn.execute(f"{TOPIC_STATS_SQL} ORDER BY t.topic")
    return [TopicInfo(topic=t, count=n, last_seq=s, last_ts=ts) for t, n, s, ts in rows]


def groups(conn: sqlite3.Connection) -> list[GroupInfo]:
    rows = conn.execute(f"{GROUP_INFO_SQL} ORDER BY g.pattern, g.name").fetchall()
    return [info_from_row(row) for row in rows]


def _group_row(conn: sqlite3.Connection, pattern: str, name: str) -> tuple[int, int] | None:
    row = conn.execute(
        f"SELECT g.gid, {ACK_FLOOR_SQL} FROM groups g WHERE g.pattern = ? AND g.name = ?", (pattern, name)
    ).fetchone()
    return None if row is None else (int(row[0]), int(row[1]))


def next_deadline(conn: sqlite3.Connection, pattern: str, name: str) -> int | None:
    """Earliest deadline of a pending event that was delivered before. Events held back by key ordering
    are not counted: they become deliverable when the earlier event of their key is acked or
    dead-lettered, which the caller sees happen (or at that event's own deadline, which is counted)."""
    group = _group_row(conn, pattern, name)
    if group is None:
        return None
    row = conn.execute(
        "SELECT min(deadline) FROM pending WHERE gid = ? AND attempts > 0", (group[0],)
    ).fetchone()
    return None if row[0] is None else int(row[0])


def _cursor(conn: sqlite3.Connection, catalog: TopicCatalog, pattern: str, name: str, floor: int) -> Cursor:
    seq = last_seq_at_or_below(conn, catalog.resolve(pattern), floor)
    if seq is None:
        return Cursor(pattern=pattern, group=name, seq=floor)
    row = conn.execute("SELECT id, ts FROM events WHERE seq = ?", (seq,)).fetchone()
    return Cursor(pattern=pattern, group=name, seq=floor, last_id=row[0], last_ts=row[1])


def cursor(conn: sqlite3.Connection, catalog: TopicCatalog, pattern: str, name: str) -> Cursor | None:
    group = _group_row(conn, pattern, name)
    return None if group is None else _cursor(conn, catalog, pattern, name, group[1])


def lag(conn: sqlite3.Connection, catalog: TopicCatalog, pattern: str, name: str) -> Lag | None:
    group = _group_row(conn, pattern, name)
    if group is None:
        return None
    current = _cursor(conn, catalog, pattern, name, group[1])
    topic_ids = catalog.resolve(pattern)
    last = tail_seq(conn, topic_ids)
    tail_row = (
        None if last is None else conn.execute("SELECT id, ts FROM events WHERE seq = ?", (last,)).fetchone()
    )
    tail_id, tail_ts = (None, None) if tail_row is None else (tail_row[0], int(tail_row[1]))
    lag_ms = None if tail_ts is None or current.last_ts is None else tail_ts - current.last_ts
    return Lag(
        cursor=current,
        tail_id=tail_id,
        tail_seq=last,
        tail_ts=tail_ts,
        lag_ms=lag_ms,
        lag_count=count_events(conn, topic_ids, after_seq=current.seq),
    )
