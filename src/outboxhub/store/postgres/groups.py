"""Consumer-group statements of the PostgreSQL store (semantics: ``base.py``; choices shared with SQLite:
``store/sqlite/groups.py``).

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
  rule as ``common.ack_floor``), both read in one snapshot, so it is always exact.
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

Round trips: a claim that hands out new events only (no pending event due, not key-ordered) is one, the
``claim_new`` function (``claim.py``); it falls back to the claim below, in Python, otherwise. That claim is
two round trips. Its first carries BEGIN, the group lock, the first chunk of expired events and
the first page of new ones (both read in snapshots taken after the lock, see above); its second carries
the pending rows, the frontier and COMMIT (``conn.pipelined_transaction``). More only when a claim
dead-letters, needs a second chunk or page, or orders by key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from outboxhub.errors import StoreError
from outboxhub.model import Cursor, Delivery, Event, GroupInfo, Lag, StartPosition
from outboxhub.store.base import EventRef
from outboxhub.store.codec import prepare
from outboxhub.store.common import ACK_TIMEOUT_REASON, NACK_REASON, dead_letter_event
from outboxhub.store.lifecycle import (
    DEAD_LETTER_TRIGGERS,
    SETTLE_SQL,
    ClaimPlan,
    ClaimRequest,
    Expired,
    ExtendRequest,
    NackRequest,
    Verdict,
)
from outboxhub.store.postgres import claim as fast
from outboxhub.store.postgres import events, settle
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
    "reset_group",
]

_FLOOR = "LEAST(coalesce((SELECT min(p.seq) FROM pending p WHERE p.gid = g.gid) - 1, g.frontier), g.frontier)"
"""The ack floor (``common.ack_floor`` in SQL): just below the oldest pending seq, else the frontier."""

_INFO = (
    f"SELECT g.pattern, g.name, {_FLOOR}, g.frontier, g.dead_letters,"
    " (SELECT count(*) FROM pending p WHERE p.gid = g.gid AND p.attempts > 0) FROM groups g"
)

_ASYNC_STATEMENT = settle.ASYNC_STATEMENT
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
    appended_topics: set[str] = field(default_factory=set)


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
"""The ``ts`` start of ``store/sqlite/groups.py``: a binary search over seq, in one statement (one probe per
step)."""


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


async def claim(conn: PgConn, ctx: ClaimContext, request: ClaimRequest) -> list[Delivery]:
    pattern, name, member, now = request.pattern, request.group, request.member, request.now
    if request.limit <= 0:
        async with conn.transaction():
            await _lock_group(conn, pattern, name)
            return []
    if fast.handles(request) and (claimed := await fast.claim_new(conn, request)) is not None:
        return claimed
    plan = request.plan()
    where = topic_filter(pattern)
    first_want = plan.first_page_size()
    async with pipelined_transaction(conn):
        # One round trip: the lock, then (in snapshots taken after it) the first chunk of expired events and
        # the first page of new ones, read from the group's frontier; usually all the claim reads. Its
        # writes and the COMMIT are a second one.
        await conn.execute(ASYNC_COMMIT)
        lock = await conn.execute(_LOCK, (pattern, name))
        expired = await conn.execute(_EXPIRED_BY_NAME, (pattern, name, now, 0, plan.chunk))
        sql, params = events.scan_query(
            where, after_seq=SeqBound(_FRONTIER, (pattern, name)), limit=first_want
        )
        fresh = await conn.execute(sql, params)
        gid, frontier, last_seq = _locked(await lock.fetchone(), pattern, name)
        deliveries = await _claim_expired(
            conn, ctx, gid, pattern, name, member, plan, first=await expired.fetchall()
        )
        first_page = await fresh.fetchall()
        plan.begin_new(frontier, delivered=len(deliveries))
        if plan.wanted > 0:
            new_frontier = await _claim_new(
                conn, gid, where, member, plan, last_seq, deliveries, first=(first_page, first_want)
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
    plan: ClaimPlan,
    *,
    first: list[tuple[Any, ...]],
) -> list[Delivery]:
    """Hand out (or dead-letter) pending events whose deadline passed, as ``plan`` decides. ``first`` is
    the first chunk of ``_EXPIRED`` (``plan.chunk`` rows from seq 0), already read."""
    chosen: list[tuple[int, Event]] = []
    rows: list[tuple[Any, ...]] | None = first
    while not plan.expired_done:
        if rows is None:
            cur = await conn.execute(_EXPIRED, (gid, plan.now, plan.after, plan.chunk))
            rows = await cur.fetchall()
        candidates = [Expired(int(r[0]), r[1], int(r[2])) for r in rows]
        keys, dying = plan.keys_to_check(candidates)
        oldest: dict[str, int] = {}
        if keys:
            # The oldest pending seq of each key, not counting those about to be dead-lettered.
            kcur = await conn.execute(
                "SELECT key, min(seq) FROM pending WHERE gid = %s AND key = ANY(%s::text[])"
                " AND NOT (seq = ANY(%s::bigint[])) GROUP BY key",
                (gid, keys, dying),
            )
            oldest = {key: int(seq) for key, seq in await kcur.fetchall()}
        by_seq = {int(r[0]): r for r in rows}
        dead: list[tuple[Event, int, str]] = []
        for decision in plan.expired(candidates, oldest):
            row = by_seq[decision.seq]
            if decision.verdict is Verdict.DEAD_LETTER:
                dead.append((decode_rows([row[4:]])[0], int(row[2]), row[3] or ACK_TIMEOUT_REASON))
            elif decision.verdict is Verdict.REDELIVER:
                chosen.append((decision.seq, decode_rows([row[4:]])[0]))
        if dead:
            await _dead_letter(conn, ctx, gid, pattern, name, dead, plan.now)
        rows = None
    if not chosen:
        return []
    # Re-checked on the newest row versions: an event acked, nacked or extended since the SELECT is skipped.
    cur = await conn.execute(
        "UPDATE pending p SET member = %s, deadline = %s, attempts = p.attempts + 1"
        " WHERE p.gid = %s AND p.seq = ANY(%s::bigint[]) AND p.deadline <= %s RETURNING p.seq, p.attempts",
        (member, plan.deadline, gid, [seq for seq, _ in chosen], plan.now),
    )
    attempt_of = {int(seq): int(attempts) for seq, attempts in await cur.fetchall()}
    return [
        Delivery(event=event, attempt=attempt_of[seq], deadline=plan.deadline)
        for seq, event in chosen
        if seq in attempt_of
    ]


async def _claim_new(
    conn: PgConn,
    gid: int,
    where: TopicFilter,
    member: str,
    plan: ClaimPlan,
    last_seq: int,
    deliveries: list[Delivery],
    *,
    first: tuple[list[tuple[Any, ...]], int],
) -> int:
    """Take new events above the frontier into the pending set, as ``plan`` decides; return the new
    frontier. ``first`` is the first page above the frontier, already read, with the limit it was read
    with."""
    pending: list[tuple[int, str, str | None, str | None, int, int]] = []
    page: tuple[list[tuple[Any, ...]], int] | None = first
    while size := plan.page_size():
        if page is not None:
            (rows, asked), page = page, None
        else:
            rows, asked = await events.scan_rows(conn, where, after_seq=plan.position, limit=size), size
        seqs_keys = [(int(row[0]), cast("str | None", row[4])) for row in rows]
        keys = plan.new_keys_to_check(seqs_keys)
        held_keys: set[str] = set()
        if keys:
            kcur = await conn.execute(
                "SELECT DISTINCT key FROM pending WHERE gid = %s AND key = ANY(%s::text[])", (gid, keys)
            )
            held_keys = {key for (key,) in await kcur.fetchall()}
        by_seq = {int(row[0]): row for row in rows}
        for decision in plan.new_events(seqs_keys, held_keys, asked=asked):
            row = by_seq[decision.seq]
            event_id, key = str(row[1]), cast("str | None", row[4])
            if decision.verdict is Verdict.HOLD:
                pending.append((decision.seq, event_id, key, None, 0, 0))
                continue
            pending.append((decision.seq, event_id, key, member, plan.deadline, decision.attempt))
            deliveries.append(
                Delivery(event=decode_rows([row])[0], attempt=decision.attempt, deadline=plan.deadline)
            )
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
    # When the scan reached the end, every matching event up to last_seq (read before the scans, so they
    # saw all of it) is pending.
    return plan.frontier(last_seq)


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
    ctx.appended_topics.update(letter[1] for letter in letters)
    await conn.execute(
        "UPDATE groups SET dead_letters = dead_letters + %s WHERE gid = %s", (len(letters), gid)
    )


def _settle_where(member: str | None, prefix: str) -> str:
    return "" if member is None else SETTLE_SQL.format(p=prefix, param="%s")


def _settle_params(member: str | None) -> tuple[str, ...]:
    return () if member is None else (member,)


async def ack(conn: PgConn, pattern: str, name: str, refs: Sequence[EventRef], member: str | None) -> int:
    """Refs with a seq name their row; refs without one settle the row of that id only when it is the one
    row of the group with that id that ``member`` may settle. Each statement is its own transaction
    (``conn`` in autocommit mode, none open)."""
    count = 0
    extra = _settle_params(member)
    with_seq = [ref for ref in refs if ref.seq is not None]
    if with_seq:
        count += await settle.ack_by_seq(conn, pattern, name, with_seq, member)
    by_id = [ref.id for ref in refs if ref.seq is None]
    if by_id:
        cur = await conn.execute(
            "DELETE FROM pending p USING groups g, events e"
            " WHERE g.pattern = %s AND g.name = %s AND p.gid = g.gid"
            f" AND e.id = ANY(%s::text[]) AND p.seq = e.seq{_settle_where(member, 'p.')}"
            " AND NOT EXISTS (SELECT 1 FROM events e2 JOIN pending q ON q.gid = p.gid AND q.seq = e2.seq"
            f" WHERE e2.id = e.id AND e2.seq <> e.seq{_settle_where(member, 'q.')}){_ASYNC_STATEMENT}",
            (pattern, name, by_id, *extra, *extra),
        )
        count += max(0, cur.rowcount)
    return count


async def nack(conn: PgConn, ctx: ClaimContext, request: NackRequest) -> bool:
    pattern, name, reason, now = request.pattern, request.group, request.reason, request.now
    async with pipelined_transaction(conn):
        await conn.execute(ASYNC_COMMIT)
        lock = await conn.execute(
            "SELECT gid FROM groups WHERE pattern = %s AND name = %s FOR UPDATE", (pattern, name)
        )
        by_seq = "" if request.seq is None else " AND p.seq = %s"
        cur = await conn.execute(
            f"SELECT p.seq, p.attempts, p.member IS NOT NULL, p.deadline, {EVENT_SELECT} FROM pending p"
            " JOIN events e ON e.seq = p.seq JOIN topics t ON t.topic_id = e.topic_id"
            f" WHERE p.gid = {_GROUP_GID} AND e.id = %s{by_seq}{_settle_where(request.member, 'p.')}"
            " LIMIT 2",
            (
                pattern,
                name,
                request.event_id,
                *(() if request.seq is None else (request.seq,)),
                *_settle_params(request.member),
            ),
        )
        group = await lock.fetchone()
        rows = await cur.fetchall()
        if group is None or len(rows) != 1:  # none, or an id two topics share and no seq to tell them
            return False
        row = rows[0]
        gid = int(group[0])
        seq, attempts = int(row[0]), int(row[1])
        trigger = request.trigger(attempts=attempts, held=bool(row[2]), deadline=int(row[3]))
        if trigger is None:
            return False
        if trigger in DEAD_LETTER_TRIGGERS:
            event = decode_rows([row[4:]])[0]
            await _dead_letter(conn, ctx, gid, pattern, name, [(event, attempts, reason or NACK_REASON)], now)
            return True
        await conn.execute(
            "UPDATE pending SET member = NULL, deadline = %s, last_reason = coalesce(%s, last_reason)"
            " WHERE gid = %s AND seq = %s",
            (request.redeliver_at(attempts), reason, gid, seq),
        )
        return True


_EXTEND_SQL = (
    " AND {p}attempts > 0 AND {p}deadline > %s AND {p}member IS NOT NULL"
    " AND {p}member = coalesce(%s::text, {p}member)"
)
"""``ExtendRequest.applies`` as a SQL condition (``{p}``: the row's table prefix); params: now, member."""


async def extend(conn: PgConn, request: ExtendRequest) -> bool:
    """The ``extend`` transition, its condition that of ``ExtendRequest.applies`` (held, not due); the row
    is found as a settle finds it: by seq when given, else the one row of that id the condition holds for."""
    held = (request.now, request.member)
    params: tuple[int | str | None, ...]
    if request.seq is not None:
        where, params = " AND p.seq = %s", (request.seq,)
    else:
        where = (
            " AND NOT EXISTS (SELECT 1 FROM pending q WHERE q.gid = p.gid AND q.event_id = p.event_id"
            f" AND q.seq <> p.seq{_EXTEND_SQL.format(p='q.')})"
        )
        params = held
    cur = await conn.execute(
        f"UPDATE pending p SET deadline = %s WHERE p.gid = {_GROUP_GID} AND p.event_id = %s"
        f"{_EXTEND_SQL.format(p='p.')}{where}",
        (request.new_deadline, request.pattern, request.group, request.event_id, *held, *params),
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
    ``sqlite.reads.next_deadline``)."""
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
        return Lag.behind(current, last, await events.count(conn, pattern, after_seq=floor))


async def reset_group(conn: PgConn, pattern: str, name: str, to: StartPosition) -> GroupInfo | None:
    """Move an existing group's frontier to ``to`` and drop its pending set, under the group row lock
    (semantics: ``store/sqlite/groups.py`` ``reset_group``). None when the group does not exist."""
    async with conn.transaction():
        cur = await conn.execute(
            "SELECT gid FROM groups WHERE pattern = %s AND name = %s FOR UPDATE", (pattern, name)
        )
        row = await cur.fetchone()
        if row is None:
            return None
        gid = int(row[0])
        frontier = await _start_frontier(conn, to)
        await conn.execute("DELETE FROM pending WHERE gid = %s", (gid,))
        await conn.execute("UPDATE groups SET frontier = %s WHERE gid = %s", (frontier, gid))
        return await _group_info(conn, pattern, name)
