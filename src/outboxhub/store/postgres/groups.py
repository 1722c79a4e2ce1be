"""Consumer-group statements of the PostgreSQL store (semantics: ``base.py``; choices shared with SQLite:
``_sqlite_groups``).

Concurrency across hub processes:

* ``claim`` and ``nack`` lock the group row (``SELECT ... FOR UPDATE``) for their transaction, so claims of
  one group are serialised across processes: two claims never take the same new events, and the frontier
  only moves under the lock. Statements after the lock run in fresh READ COMMITTED snapshots, so they see
  every commit that preceded the lock.
* ``ack``, ``extend`` and ``release`` are single statements on ``pending`` rows and take no group lock.
  The claim's hand-out of expired events is an ``UPDATE ... WHERE deadline <= now RETURNING``; PostgreSQL
  re-checks that condition on the newest row version, so an event acked, nacked or extended meanwhile is
  not handed out.
* The ack floor is not stored: it is computed on read from the frontier and the oldest pending seq (the same
  rule as ``_common.ack_floor``), both read in one snapshot, so it is always exact.
* Every lock order is group row, then pending rows, then (dead-letters only) the counter row; publishers
  take only the counter row. A deadlock between two multi-row statements on ``pending`` is still possible in
  theory; the store retries such a transaction.

Durability: claim, ack and nack transactions commit with ``synchronous_commit = off``: the COMMIT returns
before its WAL record is flushed (PostgreSQL flushes it within ``3 × wal_writer_delay``, 600 ms by default,
or earlier with the next synchronous commit, which flushes all WAL before its own). They hold group state
only, never events, and a crash can lose only the last few of them, whole and in commit order (the WAL is
a sequence: nothing after a lost commit survives). Losing them means, after the crash: a lost ack leaves
its event pending, so it is delivered again after its ack timeout; a lost claim puts its events back to
be claimed again (the frontier with them); a lost nack leaves the event with its earlier deadline. Each is
a redelivery, which at-least-once delivery allows. A group transaction that appends dead-letter events
switches back to a synchronous commit (``DURABLE_COMMIT``) first: an event, once visible, must never be
lost, or a reader that saw it would skip the different event that takes its seq after the crash. Event
publishes (``publish_events`` from the store's writer) always commit synchronously. What this buys: a
claim or ack no longer waits for a disk flush, and the flushes left (publishes) are not queued behind them.

Round trips: a claim is two. Its first carries BEGIN, the group lock, the first chunk of expired events and
the first page of new ones (both read in snapshots taken after the lock, see above); its second carries
the pending rows, the frontier and COMMIT (``_pg_conn.pipelined_transaction``). More only when a claim
dead-letters, needs a second chunk or page, or orders by key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from outboxhub.errors import StoreError
from outboxhub.model import Cursor, Delivery, Event, GroupInfo, Lag, StartPosition, nack_backoff_ms
from outboxhub.store.codec import prepare
from outboxhub.store.common import ACK_TIMEOUT_REASON, NACK_REASON, dead_letter_event
from outboxhub.store.postgres import events
from outboxhub.store.postgres.conn import pipelined_transaction
from outboxhub.store.postgres.events import EVENT_SELECT, PgConn, SeqBound, decode_rows
from outboxhub.store.postgres.topics import TopicFilter, topic_filter

__all__ = [
    "ASYNC_COMMIT",
    "DURABLE_COMMIT",
    "ClaimContext",
    "ack",
    "claim",
    "cursor",
    "ensure_group",
    "extend",
    "groups",
    "lag",
    "nack",
    "next_deadline",
    "release",
]

_ORDERED_SCAN_CAP = 4
"""With ordered_by_key, one claim scans at most this many times ``limit`` (min 256) new events looking for
deliverable ones, as in ``_sqlite_groups``."""

_FLOOR = "LEAST(coalesce((SELECT min(p.seq) FROM pending p WHERE p.gid = g.gid) - 1, g.frontier), g.frontier)"
"""The ack floor (``_common.ack_floor`` in SQL): just below the oldest pending seq, else the frontier."""

_INFO = (
    f"SELECT g.pattern, g.name, {_FLOOR}, g.frontier, g.dead_letters,"
    " (SELECT count(*) FROM pending p WHERE p.gid = g.gid AND p.attempts > 0) FROM groups g"
)

_EVENT_SEQ = "(SELECT seq FROM events WHERE id = %s)"
ASYNC_COMMIT = "SET LOCAL synchronous_commit = off"
"""Opens every claim, ack and nack transaction (see the module docstring)."""
DURABLE_COMMIT = "SET LOCAL synchronous_commit TO DEFAULT"
"""Sent before a group transaction appends dead-letter events: a commit that publishes events is durable."""
_GROUP_GID = "(SELECT gid FROM groups WHERE pattern = %s AND name = %s)"


@dataclass(slots=True)
class ClaimContext:
    """What a group transaction tells the store beyond its result: the seq of dead-letters it appended."""

    channel: str
    appended_to: int = 0


def _info(row: Sequence[Any]) -> GroupInfo:
    pattern, name, floor, frontier, dead, in_flight = row
    return GroupInfo(
        pattern=pattern,
        group=name,
        ack_floor=int(floor),
        frontier=int(frontier),
        in_flight=int(in_flight),
        dead_letters=int(dead),
    )


async def _group_info(conn: PgConn, pattern: str, name: str) -> GroupInfo | None:
    cur = await conn.execute(f"{_INFO} WHERE g.pattern = %s AND g.name = %s", (pattern, name))
    row = await cur.fetchone()
    return None if row is None else _info(row)


async def groups(conn: PgConn) -> list[GroupInfo]:
    cur = await conn.execute(f"{_INFO} ORDER BY g.pattern, g.name")
    return [_info(row) for row in await cur.fetchall()]


_TS_START = """
WITH RECURSIVE b (lo, hi) AS (
    SELECT 1::bigint, (SELECT last_seq FROM counter WHERE id = 1) + 1
    UNION ALL
    SELECT CASE WHEN s.ok THEN s.lo ELSE s.mid + 1 END, CASE WHEN s.ok THEN s.mid ELSE s.hi END
    FROM (
        SELECT b.lo, b.hi, (b.lo + b.hi) / 2 AS mid,
               coalesce((SELECT e.ts >= %s FROM events e WHERE e.seq >= (b.lo + b.hi) / 2
                         ORDER BY e.seq LIMIT 1), false) AS ok
        FROM b WHERE b.lo < b.hi
    ) s
)
SELECT min(lo) - 1 FROM b WHERE lo >= hi
"""
"""The ``ts`` start of ``_sqlite_groups``: a binary search over seq, in one statement (one probe per step)."""


async def _start_frontier(conn: PgConn, start: StartPosition) -> int:
    if start.kind == "earliest":
        return 0
    if start.kind == "seq":
        return max(0, start.value)
    if start.kind == "latest":
        return await events.last_seq(conn)
    cur = await conn.execute(_TS_START, (start.value,))
    row = await cur.fetchone()
    return 0 if row is None or row[0] is None else int(row[0])


async def ensure_group(conn: PgConn, pattern: str, name: str, start: StartPosition, now: int) -> GroupInfo:
    info = await _group_info(conn, pattern, name)
    if info is not None:
        return info
    frontier = await _start_frontier(conn, start)
    # Two processes may create the same group at once: the first insert wins, both return its state.
    await conn.execute(
        "INSERT INTO groups (pattern, name, frontier, dead_letters, created_ts) VALUES (%s, %s, %s, 0, %s)"
        " ON CONFLICT (pattern, name) DO NOTHING",
        (pattern, name, frontier, now),
    )
    info = await _group_info(conn, pattern, name)
    if info is None:  # pragma: no cover - the row was just inserted or already there
        raise StoreError(f"consumer group {name!r} on {pattern!r} vanished while being created")
    return info


_LOCK = (
    "SELECT g.gid, g.frontier, c.last_seq FROM groups g CROSS JOIN counter c"
    " WHERE g.pattern = %s AND g.name = %s AND c.id = 1 FOR UPDATE OF g"
)
"""Lock the group row; (gid, frontier, last_seq read no later than the lock)."""

_FRONTIER = "(SELECT frontier FROM groups WHERE pattern = %s AND name = %s)"


def _locked(row: Sequence[Any] | None, pattern: str, name: str) -> tuple[int, int, int]:
    if row is None:
        raise StoreError(f"consumer group {name!r} on {pattern!r} does not exist (call ensure_group first)")
    return int(row[0]), int(row[1]), int(row[2])


async def _lock_group(conn: PgConn, pattern: str, name: str) -> tuple[int, int, int]:
    """Lock the group row; return (gid, frontier, last_seq read no later than the lock)."""
    cur = await conn.execute(_LOCK, (pattern, name))
    return _locked(await cur.fetchone(), pattern, name)


async def claim(
    conn: PgConn,
    ctx: ClaimContext,
    pattern: str,
    name: str,
    member: str,
    *,
    limit: int,
    ack_timeout_ms: int,
    max_deliver: int,
    ordered: bool,
    now: int,
) -> list[Delivery]:
    if limit <= 0:
        async with conn.transaction():
            await _lock_group(conn, pattern, name)
            return []
    deadline = now + ack_timeout_ms
    where = topic_filter(pattern)
    chunk = limit + 32
    first_want = _first_want(limit, ordered)
    async with pipelined_transaction(conn):
        # One round trip: the lock, then (in snapshots taken after it) the first chunk of expired events and
        # the first page of new ones, read from the group's frontier; usually all the claim reads. Its
        # writes and the COMMIT are a second one.
        await conn.execute(ASYNC_COMMIT)
        lock = await conn.execute(_LOCK, (pattern, name))
        expired = await conn.execute(_EXPIRED_BY_NAME, (pattern, name, now, 0, chunk))
        sql, params = events.scan_query(
            where, after_seq=SeqBound(_FRONTIER, (pattern, name)), limit=first_want
        )
        fresh = await conn.execute(sql, params)
        gid, frontier, last_seq = _locked(await lock.fetchone(), pattern, name)
        busy_keys: set[str] = set()  # keys handed out or held back by this claim
        deliveries = await _claim_expired(
            conn,
            ctx,
            gid,
            pattern,
            name,
            member,
            limit,
            max_deliver,
            ordered,
            now,
            deadline,
            busy_keys,
            first=await expired.fetchall(),
        )
        first_page = await fresh.fetchall()
        wanted = limit - len(deliveries)
        if wanted > 0:
            new_frontier = await _claim_new(
                conn,
                gid,
                where,
                member,
                frontier,
                last_seq,
                wanted,
                ordered,
                deadline,
                busy_keys,
                deliveries,
                first=(first_page, first_want),
            )
            if new_frontier != frontier:
                await conn.execute("UPDATE groups SET frontier = %s WHERE gid = %s", (new_frontier, gid))
    return deliveries


_EXPIRED = (
    f"SELECT p.seq, p.key, p.attempts, p.last_reason, {EVENT_SELECT}"
    " FROM pending p JOIN events e ON e.seq = p.seq JOIN topics t ON t.topic_id = e.topic_id"
    " WHERE p.gid = %s AND p.deadline <= %s AND p.seq > %s ORDER BY p.seq LIMIT %s"
)
"""Pending events of a group whose deadline passed, by seq: ``(gid, now, after_seq, limit)``."""
_EXPIRED_BY_NAME = _EXPIRED.replace("p.gid = %s", f"p.gid = {_GROUP_GID}", 1)
"""``_EXPIRED`` with the group given as ``(pattern, name)`` in place of its gid."""


async def _claim_expired(
    conn: PgConn,
    ctx: ClaimContext,
    gid: int,
    pattern: str,
    name: str,
    member: str,
    limit: int,
    max_deliver: int,
    ordered: bool,
    now: int,
    deadline: int,
    busy_keys: set[str],
    *,
    first: list[tuple[Any, ...]],
) -> list[Delivery]:
    """Hand out (or dead-letter) pending events whose deadline passed, oldest first. ``first`` is the first
    chunk of ``_EXPIRED`` (``limit + 32`` rows from seq 0), already read."""
    chosen: list[tuple[int, Event]] = []
    after = 0
    chunk = limit + 32
    rows = first
    while len(chosen) < limit:
        if after:
            cur = await conn.execute(_EXPIRED, (gid, now, after, chunk))
            rows = await cur.fetchall()
        if not rows:
            break
        exhausted = {int(r[0]) for r in rows if r[2] >= max_deliver}
        first_of: dict[str, int] = {}
        if ordered:
            keys = list({r[1] for r in rows if r[1] is not None and int(r[0]) not in exhausted})
            if keys:
                # The oldest pending seq of each key, not counting those about to be dead-lettered.
                kcur = await conn.execute(
                    "SELECT key, min(seq) FROM pending WHERE gid = %s AND key = ANY(%s::text[])"
                    " AND NOT (seq = ANY(%s::bigint[])) GROUP BY key",
                    (gid, keys, list(exhausted)),
                )
                first_of = {key: int(seq) for key, seq in await kcur.fetchall()}
        stop_at: int | None = None
        dead: list[tuple[Event, int, str]] = []
        for row in rows:
            seq, key, attempts, last_reason = int(row[0]), row[1], int(row[2]), row[3]
            if seq in exhausted:
                dead.append((decode_rows([row[4:]])[0], attempts, last_reason or ACK_TIMEOUT_REASON))
                continue
            if ordered and key is not None:
                if key in busy_keys:
                    continue
                busy_keys.add(key)
                if first_of.get(key) != seq:
                    continue
            chosen.append((seq, decode_rows([row[4:]])[0]))
            if len(chosen) == limit:
                stop_at = seq
                break
        if dead:
            await _dead_letter(conn, ctx, gid, pattern, name, dead, now)
        if stop_at is not None or len(rows) < chunk:
            break
        after = int(rows[-1][0])
    if not chosen:
        return []
    # Re-checked on the newest row versions: an event acked, nacked or extended since the SELECT is skipped.
    cur = await conn.execute(
        "UPDATE pending p SET member = %s, deadline = %s, attempts = p.attempts + 1"
        " WHERE p.gid = %s AND p.seq = ANY(%s::bigint[]) AND p.deadline <= %s RETURNING p.seq, p.attempts",
        (member, deadline, gid, [seq for seq, _ in chosen], now),
    )
    attempt_of = {int(seq): int(attempts) for seq, attempts in await cur.fetchall()}
    return [
        Delivery(event=event, attempt=attempt_of[seq], deadline=deadline)
        for seq, event in chosen
        if seq in attempt_of
    ]


def _first_want(limit: int, ordered: bool) -> int:
    """The size of ``_claim_new``'s first page when nothing expired was handed out (wanted = limit)."""
    return max(limit, 64) if ordered else limit


async def _claim_new(
    conn: PgConn,
    gid: int,
    where: TopicFilter,
    member: str,
    frontier: int,
    last_seq: int,
    wanted: int,
    ordered: bool,
    deadline: int,
    busy_keys: set[str],
    deliveries: list[Delivery],
    *,
    first: tuple[list[tuple[Any, ...]], int],
) -> int:
    """Take new events above the frontier into the pending set; return the new frontier. ``first`` is the
    first page above the frontier, already read, with the limit it was read with (``_first_want``)."""
    pending: list[tuple[int, str, str | None, str | None, int, int]] = []
    position = frontier
    handed = 0
    budget = max(wanted * _ORDERED_SCAN_CAP, 256) if ordered else wanted
    exhausted = False
    page: tuple[list[tuple[Any, ...]], int] | None = first
    while handed < wanted and budget > 0:
        if page is not None:
            (rows, want), page = page, None
            if len(rows) > budget:
                rows, want = rows[:budget], budget
        else:
            want = min(budget, max(wanted - handed, 64)) if ordered else wanted - handed
            rows = await events.scan_rows(conn, where, after_seq=position, limit=want)
        budget -= len(rows)
        held_keys: set[str] = set()
        if ordered:
            keys = list({row[4] for row in rows if row[4] is not None and row[4] not in busy_keys})
            if keys:
                kcur = await conn.execute(
                    "SELECT DISTINCT key FROM pending WHERE gid = %s AND key = ANY(%s::text[])", (gid, keys)
                )
                held_keys = {key for (key,) in await kcur.fetchall()}
        for row in rows:
            seq, event_id, key = int(row[0]), str(row[1]), cast("str | None", row[4])
            position = seq
            if ordered and key is not None:
                held = key in busy_keys or key in held_keys
                busy_keys.add(key)
                if held:
                    pending.append((seq, event_id, key, None, 0, 0))
                    continue
            pending.append((seq, event_id, key, member, deadline, 1))
            deliveries.append(Delivery(event=decode_rows([row])[0], attempt=1, deadline=deadline))
            handed += 1
            if handed == wanted:
                break
        if handed == wanted:
            break
        if len(rows) < want:
            exhausted = True
            break
    if pending:
        await conn.execute(
            "INSERT INTO pending (gid, seq, event_id, key, member, deadline, attempts)"
            " SELECT %s, * FROM unnest("
            "%s::bigint[], %s::text[], %s::text[], %s::text[], %s::bigint[], %s::int[])",
            (
                gid,
                [p[0] for p in pending],
                [p[1] for p in pending],
                [p[2] for p in pending],
                [p[3] for p in pending],
                [p[4] for p in pending],
                [p[5] for p in pending],
            ),
        )
    if exhausted:
        # Every matching event up to last_seq (read before the scans, so they saw all of it) is pending.
        position = max(position, last_seq)
    return position


async def _dead_letter(
    conn: PgConn,
    ctx: ClaimContext,
    gid: int,
    pattern: str,
    name: str,
    items: list[tuple[Event, int, str]],
    now: int,
) -> None:
    """Publish events to ``dlq.<group>.<topic>`` and ack them for the group (under the group lock)."""
    cur = await conn.execute(
        "DELETE FROM pending WHERE gid = %s AND seq = ANY(%s::bigint[]) RETURNING seq",
        (gid, [event.seq for event, _, _ in items]),
    )
    gone = {int(seq) for (seq,) in await cur.fetchall()}
    letters = [
        prepare(dead_letter_event(event, pattern, name, attempts=attempts, reason=reason, now=now))
        for event, attempts, reason in items
        if event.seq in gone
    ]
    if not letters:
        return
    await conn.execute(DURABLE_COMMIT)  # the transaction now publishes events
    _, top = await events.append(conn, ctx.channel, letters)
    ctx.appended_to = max(ctx.appended_to, top)
    await conn.execute(
        "UPDATE groups SET dead_letters = dead_letters + %s WHERE gid = %s", (len(letters), gid)
    )


async def ack(conn: PgConn, pattern: str, name: str, event_ids: Sequence[str]) -> int:
    # One statement in its own transaction; the set_config (evaluated once, before any row) makes that
    # transaction's COMMIT asynchronous.
    cur = await conn.execute(
        "DELETE FROM pending p USING groups g, events e"
        " WHERE g.pattern = %s AND g.name = %s AND p.gid = g.gid"
        " AND e.id = ANY(%s::text[]) AND p.seq = e.seq"
        " AND (SELECT set_config('synchronous_commit', 'off', true)) IS NOT NULL",
        (pattern, name, list(event_ids)),
    )
    return max(0, cur.rowcount)


async def nack(
    conn: PgConn,
    ctx: ClaimContext,
    pattern: str,
    name: str,
    event_id: str,
    *,
    max_deliver: int,
    delay_ms: int | None,
    reason: str | None,
    now: int,
) -> bool:
    async with pipelined_transaction(conn):
        await conn.execute(ASYNC_COMMIT)
        lock = await conn.execute(
            "SELECT gid FROM groups WHERE pattern = %s AND name = %s FOR UPDATE", (pattern, name)
        )
        cur = await conn.execute(
            f"SELECT p.seq, p.attempts, {EVENT_SELECT} FROM pending p"
            " JOIN events e ON e.seq = p.seq JOIN topics t ON t.topic_id = e.topic_id"
            f" WHERE p.gid = {_GROUP_GID} AND e.id = %s",
            (pattern, name, event_id),
        )
        group = await lock.fetchone()
        row = await cur.fetchone()
        if group is None or row is None:
            return False
        gid = int(group[0])
        seq, attempts = int(row[0]), int(row[1])
        if attempts >= max_deliver:
            event = decode_rows([row[2:]])[0]
            await _dead_letter(conn, ctx, gid, pattern, name, [(event, attempts, reason or NACK_REASON)], now)
            return True
        await conn.execute(
            "UPDATE pending SET member = NULL, deadline = %s, last_reason = coalesce(%s, last_reason)"
            " WHERE gid = %s AND seq = %s",
            (now + nack_backoff_ms(attempts, delay_ms), reason, gid, seq),
        )
        return True


async def extend(conn: PgConn, pattern: str, name: str, event_id: str, ack_timeout_ms: int, now: int) -> bool:
    cur = await conn.execute(
        f"UPDATE pending SET deadline = %s WHERE gid = {_GROUP_GID} AND seq = {_EVENT_SEQ}"
        " AND member IS NOT NULL",
        (now + ack_timeout_ms, pattern, name, event_id),
    )
    return cur.rowcount > 0


async def release(conn: PgConn, pattern: str, name: str, member: str) -> int:
    cur = await conn.execute(
        f"UPDATE pending SET member = NULL, deadline = 0 WHERE gid = {_GROUP_GID} AND member = %s",
        (pattern, name, member),
    )
    return max(0, cur.rowcount)


async def next_deadline(conn: PgConn, pattern: str, name: str) -> int | None:
    """Earliest deadline of a pending event delivered before (held-back events are not counted, as in
    ``_sqlite_reads.next_deadline``)."""
    cur = await conn.execute(
        f"SELECT min(deadline) FROM pending WHERE gid = {_GROUP_GID} AND attempts > 0", (pattern, name)
    )
    row = await cur.fetchone()
    return None if row is None or row[0] is None else int(row[0])


async def _floor(conn: PgConn, pattern: str, name: str) -> int | None:
    cur = await conn.execute(
        f"SELECT {_FLOOR} FROM groups g WHERE g.pattern = %s AND g.name = %s", (pattern, name)
    )
    row = await cur.fetchone()
    return None if row is None else int(row[0])


async def _cursor_at(conn: PgConn, pattern: str, name: str, floor: int) -> Cursor:
    last = await events.seq_at_or_below(conn, pattern, floor)
    if last is None:
        return Cursor(pattern=pattern, group=name, seq=floor)
    return Cursor(pattern=pattern, group=name, seq=floor, last_id=last[0], last_ts=last[1])


async def cursor(conn: PgConn, pattern: str, name: str) -> Cursor | None:
    floor = await _floor(conn, pattern, name)
    return None if floor is None else await _cursor_at(conn, pattern, name, floor)


async def lag(conn: PgConn, pattern: str, name: str) -> Lag | None:
    # One snapshot for the whole answer, so floor, tail and count agree with each other.
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        floor = await _floor(conn, pattern, name)
        if floor is None:
            return None
        current = await _cursor_at(conn, pattern, name, floor)
        last = await events.tail(conn, pattern)
        lag_ms = None if last is None or current.last_ts is None else last.ts - current.last_ts
        return Lag(
            cursor=current,
            tail_id=None if last is None else last.id,
            tail_seq=None if last is None else last.seq,
            tail_ts=None if last is None else last.ts,
            lag_ms=lag_ms,
            lag_count=await events.count(conn, pattern, after_seq=floor),
        )
