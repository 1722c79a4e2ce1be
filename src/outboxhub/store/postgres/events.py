"""Event-log statements of the PostgreSQL store: append (through ``publish_events``) and every read.

Each function takes a connection from the store's pool (``search_path`` set to the store's schema). Reads
are single statements, so each sees one snapshot; ``append`` may run inside a caller's transaction (a
claim that dead-letters appends its dead-letter events there).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import psycopg

from outboxhub.model import Event, PublishResult, TopicInfo
from outboxhub.store.codec import EventRow, Prepared, decode_event
from outboxhub.store.postgres import wire
from outboxhub.store.postgres.topics import TopicFilter, topic_filter

__all__ = [
    "EVENT_SELECT",
    "AppendBatch",
    "PgConn",
    "SeqBound",
    "append",
    "append_now",
    "count",
    "decode_rows",
    "get_event",
    "last_seq",
    "latest_by_key",
    "scan",
    "scan_query",
    "scan_rows",
    "seq_at_or_below",
    "tail",
    "topics",
]

PgConn = psycopg.AsyncConnection[Any]

_EVENT_COLUMNS = "e.seq, e.id, e.topic_id, e.ts, e.key, e.payload, e.meta"
EVENT_SELECT = f"{_EVENT_COLUMNS}, t.topic"
"""The columns every event query selects: the ``_codec`` row layout plus the topic name."""

_APPEND = (
    "SELECT ord, seq, duplicate FROM publish_events("
    "%b::text[], %b::text[], %b::bigint[], %b::text[], %b::text[], %b::text[], %s)"
)


def decode_rows(rows: Sequence[Sequence[Any]]) -> list[Event]:
    """Events from rows selected with ``EVENT_SELECT``."""
    if not rows:
        return []
    names = {row[2]: row[7] for row in rows}
    return [decode_event(cast(EventRow, tuple(row[:7])), names.__getitem__) for row in rows]


async def append(conn: PgConn, channel: str, rows: Sequence[Prepared]) -> tuple[list[PublishResult], int]:
    """Append prepared events in order (idempotent by ``(topic, id)``, also within ``rows``); return the
    results and the highest new seq (0 when every event was a duplicate). Runs in the caller's transaction,
    if any; on a connection in autocommit mode with none open, the one statement is its own transaction
    and the results arrive once it is committed (the store's writer: one round trip, one wait)."""
    batch = AppendBatch(rows)
    cur = await conn.execute(_APPEND, (*batch.params, channel))
    return batch.results([(int(seq), bool(dup)) for _, seq, dup in await cur.fetchall()])


_APPEND_NOW = wire.Statement(
    "publish_events",
    "SELECT ord, seq, duplicate FROM publish_events($1, $2, $3, $4, $5, $6, $7)",
    [*(wire.TEXT_ARRAY,) * 2, wire.INT8_ARRAY, *(wire.TEXT_ARRAY,) * 3, wire.TEXT],
)


async def append_now(conn: PgConn, channel: str, rows: Sequence[Prepared]) -> tuple[list[PublishResult], int]:
    """``append`` as its own transaction, through ``wire`` (the store's writer): ``conn`` must be in
    autocommit mode with no transaction open; the results arrive once the statement is committed."""
    batch = AppendBatch(rows)
    res = await wire.execute(conn, _APPEND_NOW, [*batch.wire_params(), channel.encode()])
    read_int, read_bool, value = wire.read_int, wire.read_bool, res.get_value
    return batch.results([(read_int(value(i, 1)), read_bool(value(i, 2))) for i in range(res.ntuples)])


class AppendBatch:
    """``publish_events``' arguments for ``rows`` (each ``(topic, id)`` once) and the reading of its
    results back into one ``PublishResult`` per row."""

    __slots__ = ("_first", "_rows", "_unique")

    def __init__(self, rows: Sequence[Prepared]) -> None:
        first: dict[tuple[str, str], int] = {}
        unique: list[Prepared] = []
        for row in rows:
            if (row[0], row[1]) not in first:
                first[(row[0], row[1])] = len(unique)
                unique.append(row)
        self._rows = rows
        self._first = first
        self._unique = unique

    @property
    def params(self) -> tuple[list[Any], ...]:
        """The first six arguments of ``publish_events`` (the channel comes last), for ``execute``."""
        unique = self._unique
        return (
            [r[0] for r in unique],
            [r[1] for r in unique],
            [r[2] for r in unique],
            [r[3] for r in unique],
            [r[4].decode() for r in unique],
            [None if r[5] is None else r[5].decode() for r in unique],
        )

    def wire_params(self) -> list[bytes]:
        """The same six, encoded for ``wire.execute`` (payload and meta bytes go as they are)."""
        unique, text = self._unique, wire.text_array
        return [
            text([r[0] for r in unique]),
            text([r[1] for r in unique]),
            wire.int8_array([r[2] for r in unique]),
            text([r[3] for r in unique]),
            text([r[4] for r in unique]),
            text([r[5] for r in unique]),
        ]

    def results(self, seqs: list[tuple[int, bool]]) -> tuple[list[PublishResult], int]:
        """The results from ``publish_events``' ``(seq, duplicate)`` rows in order, and the highest new
        seq (0 when every event was a duplicate)."""
        rows = self._rows
        top = max((seq for seq, dup in seqs if not dup), default=0)
        if len(self._unique) == len(rows):
            return [
                PublishResult(id=row[0], seq=seq, duplicate=dup)
                for row, (seq, dup) in zip(rows, seqs, strict=True)
            ], top
        results: list[PublishResult] = []
        seen: set[tuple[str, str]] = set()
        for row in rows:
            both = (row[0], row[1])
            seq, dup = seqs[self._first[both]]
            results.append(PublishResult(id=row[0], seq=seq, duplicate=dup or both in seen))
            seen.add(both)
        return results, top


async def get_event(conn: PgConn, event_id: str, topic: str | None) -> Event | None:
    """The event ``event_id`` of ``topic`` (ids are unique per topic); without a topic the oldest one."""
    sql = f"SELECT {EVENT_SELECT} FROM events e JOIN topics t ON t.topic_id = e.topic_id WHERE e.id = %s"
    if topic is None:
        cur = await conn.execute(f"{sql} ORDER BY e.seq LIMIT 1", (event_id,))
    else:
        cur = await conn.execute(f"{sql} AND t.topic = %s", (event_id, topic))
    return _first(decode_rows(await cur.fetchall()))


def _first(events: list[Event]) -> Event | None:
    return events[0] if events else None


def _ts_bounds(since_ts: int | None, until_ts: int | None) -> tuple[str, list[int]]:
    sql = ""
    params: list[int] = []
    if since_ts is not None:
        sql += " AND e.ts >= %s"
        params.append(since_ts)
    if until_ts is not None:
        sql += " AND e.ts <= %s"
        params.append(until_ts)
    return sql, params


@dataclass(frozen=True, slots=True)
class SeqBound:
    """A lower seq bound given as SQL (``sql`` with ``params``), e.g. a group's frontier read in the query."""

    sql: str
    params: tuple[Any, ...]


def scan_query(
    where: TopicFilter,
    *,
    after_seq: int | SeqBound,
    limit: int,
    since_ts: int | None = None,
    until_ts: int | None = None,
) -> tuple[str, list[Any]]:
    """The statement of a scan: ``EVENT_SELECT`` columns, in seq order.

    Every topic's events are read as one range of the ``(topic_id, seq)`` index that stops at the limit, so
    a page costs its own rows whatever lies after it. Two things make that plan the only one left:

    * The topic id is a value known at execution time (a sub-select, or the lateral topic row), written as
      ``topic_id = ANY(ARRAY[...])`` with ``ORDER BY topic_id, seq``. With a plain equality the planner
      may walk the primary key in seq order and filter by topic, which reads every event of every other
      topic on the way (it assumes a topic's events are spread evenly over the log; they rarely are).
      The primary key's order is not ``(topic_id, seq)``, so that plan would need a sort and loses.
    * The store's connections run with bitmap and sequential scans off (``conn.PLANNER_SETTINGS``).
      When statistics are missing or stale (a topic created since the last ANALYZE) the planner expects a
      few rows and would otherwise fetch and sort *all* of the topic's remaining rows for each page: 300 ms
      per 5,000-row page at 720k rows, quadratic over a replay.
    """
    ts_sql, ts_params = _ts_bounds(since_ts, until_ts)
    if isinstance(after_seq, SeqBound):
        after_sql, after_params = after_seq.sql, list(after_seq.params)
    else:
        after_sql, after_params = "%s", [after_seq]
    if where.everything:
        sql = (
            f"SELECT {EVENT_SELECT} FROM events e JOIN topics t ON t.topic_id = e.topic_id"
            f" WHERE e.seq > {after_sql}{ts_sql} ORDER BY e.seq LIMIT %s"
        )
        return sql, [*after_params, *ts_params, limit]
    if where.concrete:
        (topic,) = where.params
        sql = (
            f"SELECT {_EVENT_COLUMNS}, %s::text FROM events e"
            " WHERE e.topic_id = ANY(ARRAY[(SELECT t.topic_id FROM topics t WHERE t.topic = %s)])"
            f" AND e.seq > {after_sql}{ts_sql} ORDER BY e.topic_id, e.seq LIMIT %s"
        )
        return sql, [topic, topic, *after_params, *ts_params, limit]
    # One index range per matching topic (topics whose last seq is not above the bound are skipped), each
    # cut at the limit, merged by seq.
    sql = (
        f"SELECT {EVENT_SELECT} FROM topics t CROSS JOIN LATERAL ("
        f" SELECT e.* FROM events e WHERE e.topic_id = ANY(ARRAY[t.topic_id]) AND e.seq > {after_sql}{ts_sql}"
        " ORDER BY e.topic_id, e.seq LIMIT %s) e"
        f" WHERE {where.sql} AND t.last_seq > {after_sql} ORDER BY e.seq LIMIT %s"
    )
    return sql, [*after_params, *ts_params, limit, *where.params, *after_params, limit]


async def scan_rows(
    conn: PgConn,
    pattern: str | TopicFilter,
    *,
    after_seq: int,
    limit: int,
    since_ts: int | None = None,
    until_ts: int | None = None,
) -> list[tuple[Any, ...]]:
    """Rows (``EVENT_SELECT``) of events matching ``pattern`` with ``seq > after_seq``, in seq order."""
    if limit <= 0:
        return []
    where = pattern if isinstance(pattern, TopicFilter) else topic_filter(pattern)
    sql, params = scan_query(where, after_seq=after_seq, limit=limit, since_ts=since_ts, until_ts=until_ts)
    cur = await conn.execute(sql, params)
    return await cur.fetchall()


async def scan(
    conn: PgConn,
    pattern: str,
    *,
    after_seq: int,
    since_ts: int | None,
    until_ts: int | None,
    limit: int,
) -> list[Event]:
    rows = await scan_rows(
        conn, pattern, after_seq=after_seq, limit=limit, since_ts=since_ts, until_ts=until_ts
    )
    return decode_rows(rows)


async def latest_by_key(conn: PgConn, topic: str, keys: Sequence[str]) -> dict[str, Event]:
    cur = await conn.execute(
        f"SELECT {EVENT_SELECT} FROM topics t CROSS JOIN unnest(%s::text[]) AS k (key)"
        " CROSS JOIN LATERAL (SELECT e.* FROM events e WHERE e.topic_id = t.topic_id AND e.key = k.key"
        " ORDER BY e.seq DESC LIMIT 1) e WHERE t.topic = %s",
        (list(dict.fromkeys(keys)), topic),
    )
    return {event.key: event for event in decode_rows(await cur.fetchall()) if event.key is not None}


async def tail(conn: PgConn, pattern: str) -> Event | None:
    where = topic_filter(pattern)
    cur = await conn.execute(
        f"SELECT {EVENT_SELECT} FROM topics t JOIN events e ON e.seq = t.last_seq"
        f" WHERE {where.sql} AND t.count > 0 ORDER BY t.last_seq DESC LIMIT 1",
        where.params,
    )
    return _first(decode_rows(await cur.fetchall()))


async def count(conn: PgConn, pattern: str | TopicFilter, *, after_seq: int) -> int:
    where = pattern if isinstance(pattern, TopicFilter) else topic_filter(pattern)
    if after_seq <= 0:
        cur = await conn.execute(
            f"SELECT coalesce(sum(t.count), 0) FROM topics t WHERE {where.sql}", where.params
        )
    elif where.everything:
        cur = await conn.execute("SELECT count(*) FROM events e WHERE e.seq > %s", (after_seq,))
    else:
        cur = await conn.execute(
            "SELECT coalesce(sum((SELECT count(*) FROM events e"
            " WHERE e.topic_id = t.topic_id AND e.seq > %s)), 0)"
            f" FROM topics t WHERE {where.sql} AND t.last_seq > %s",
            (after_seq, *where.params, after_seq),
        )
    row = await cur.fetchone()
    return 0 if row is None else int(row[0])


async def seq_at_or_below(conn: PgConn, pattern: str | TopicFilter, seq: int) -> tuple[str, int] | None:
    """``(id, ts)`` of the newest event matching ``pattern`` with a seq at or below ``seq``."""
    if seq <= 0:
        return None
    where = pattern if isinstance(pattern, TopicFilter) else topic_filter(pattern)
    if where.everything:
        sql = "SELECT e.id, e.ts FROM events e WHERE e.seq <= %s ORDER BY e.seq DESC LIMIT 1"
        params: tuple[Any, ...] = (seq,)
    else:
        sql = (
            "SELECT e.id, e.ts FROM events e WHERE e.seq = (SELECT max(x.m) FROM topics t CROSS JOIN LATERAL"
            " (SELECT max(e2.seq) AS m FROM events e2 WHERE e2.topic_id = t.topic_id AND e2.seq <= %s) x"
            f" WHERE {where.sql})"
        )
        params = (seq, *where.params)
    cur = await conn.execute(sql, params)
    row = await cur.fetchone()
    return None if row is None else (str(row[0]), int(row[1]))


async def last_seq(conn: PgConn) -> int:
    cur = await conn.execute("SELECT last_seq FROM counter WHERE id = 1")
    row = await cur.fetchone()
    return 0 if row is None else int(row[0])


async def topics(conn: PgConn) -> list[TopicInfo]:
    cur = await conn.execute(
        "SELECT topic, count, last_seq, last_ts FROM topics WHERE count > 0 ORDER BY topic"
    )
    return [
        TopicInfo(topic=topic, count=int(n), last_seq=int(seq), last_ts=int(ts))
        for topic, n, seq, ts in await cur.fetchall()
    ]
