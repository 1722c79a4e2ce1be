"""Consumer-group mutations, run as writer jobs (``fn(tx, ...)``) inside the writer's transaction.

They run in the one writer thread inside ``BEGIN IMMEDIATE``, so each is atomic and serialized with every
other write, also against other processes using the same file. See ``base.py`` for the semantics; the
SQLite-specific choices are:

* A group created at ``latest`` starts with ``frontier`` = the log's last seq, ``earliest`` at 0, ``seq`` N
  at N, ``ts`` T just below the first event whose ts reaches T (binary search over seq: exact when ts grows
  with seq, as hub-assigned ts do; out-of-order client ts only shift that start point).
* When a claim's scan of new events comes up short, every matching event up to the log's last seq is pending,
  so the frontier moves to the last seq: a caught-up group's cursor follows the head of the log.
* With ``ordered_by_key``, a new event whose key has an earlier pending event is still taken into the pending
  set (``member`` NULL, ``attempts`` 0, ``deadline`` 0) so the frontier can move on; it is handed out, in seq
  order, by a later claim once no earlier event with its key is pending.
"""

from __future__ import annotations

import json
import sqlite3

from outboxhub.model import Delivery, Event, GroupInfo, StartPosition
from outboxhub.store.base import EventRef
from outboxhub.store.codec import EVENT_COLUMNS, EventRow, decode_event, prepare
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
from outboxhub.store.sqlite.topics import select_events
from outboxhub.store.sqlite.tx import WriteTx

__all__ = [
    "ACK_FLOOR_SQL",
    "GROUP_INFO_SQL",
    "ack",
    "claim",
    "ensure_group",
    "extend",
    "group_info",
    "info_from_row",
    "nack",
    "release",
    "reset_group",
]

_JSON_LIST = "(SELECT value FROM json_each(?))"
"""A list passed as one JSON parameter (no limit on its length, unlike ``?, ?, ...``)."""


ACK_FLOOR_SQL = (
    "coalesce(min((SELECT min(p.seq) FROM pending p WHERE p.gid = g.gid) - 1, g.frontier), g.frontier)"
)
"""The ack floor of group row ``g`` (``common.ack_floor``): just below its oldest pending seq (one probe of
the ``(gid, seq)`` key), else its frontier; min() of a NULL is NULL, so no pending row leaves the frontier.
Derived when read, so no ACK's commit writes the group's row (schema version 3)."""

GROUP_INFO_SQL = (
    f"SELECT g.pattern, g.name, {ACK_FLOOR_SQL}, g.frontier, g.dead_letters,"
    " (SELECT count(*) FROM pending p WHERE p.gid = g.gid AND p.attempts > 0) FROM groups g"
)
"""A ``GroupInfo`` row per group; ``in_flight`` counts pending events delivered at least once, not acked."""


def group_info(conn: sqlite3.Connection, gid: int) -> GroupInfo:
    """A group's state."""
    return info_from_row(conn.execute(f"{GROUP_INFO_SQL} WHERE g.gid = ?", (gid,)).fetchone())


def info_from_row(row: tuple[str, str, int, int, int, int]) -> GroupInfo:
    pattern, name, floor, frontier, dead, in_flight = row
    return GroupInfo(
        pattern=pattern,
        group=name,
        ack_floor=floor,
        frontier=frontier,
        in_flight=in_flight,
        dead_letters=dead,
    )


def ensure_group(tx: WriteTx, pattern: str, name: str, start: StartPosition, now: int) -> GroupInfo:
    ref = tx.find_group(pattern, name)
    if ref is not None:
        return group_info(tx.conn, ref[0])
    frontier = _start_frontier(tx, start)
    cursor = tx.conn.execute(
        "INSERT INTO groups (pattern, name, frontier, dead_letters, created_ts) VALUES (?, ?, ?, 0, ?)",
        (pattern, name, frontier, now),
    )
    gid = int(cursor.lastrowid or 0)
    tx.remember_group(pattern, name, gid)
    return group_info(tx.conn, gid)


def _start_frontier(tx: WriteTx, start: StartPosition) -> int:
    if start.kind == "earliest":
        return 0
    if start.kind == "latest":
        return tx.last_seq
    if start.kind == "seq":
        return max(0, start.value)
    # ts: the smallest seq s such that the first event at or after s has ts >= value; start just below it.
    low, high = 1, tx.last_seq + 1
    while low < high:
        mid = (low + high) // 2
        row = tx.conn.execute("SELECT ts FROM events WHERE seq >= ? ORDER BY seq LIMIT 1", (mid,)).fetchone()
        if row is not None and row[0] >= start.value:
            high = mid
        else:
            low = mid + 1
    return low - 1


def claim(tx: WriteTx, request: ClaimRequest) -> list[Delivery]:
    pattern, name, member = request.pattern, request.group, request.member
    gid, frontier = tx.group(pattern, name)
    if request.limit <= 0:
        return []
    plan = request.plan()
    redelivered = _claim_expired(tx, gid, pattern, name, member, plan)
    deliveries: list[Delivery] = []
    if redelivered:
        rows = tx.conn.execute(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE seq IN ({','.join(str(s) for s in redelivered)})"
            " ORDER BY seq"
        ).fetchall()
        for row in rows:
            event = decode_event(row, tx.topic_name)
            deliveries.append(Delivery(event=event, attempt=redelivered[row[0]], deadline=plan.deadline))
    plan.begin_new(frontier, delivered=len(redelivered))
    if plan.wanted > 0:
        new_frontier = _claim_new(tx, gid, pattern, member, plan, deliveries)
        if new_frontier != frontier:
            tx.conn.execute("UPDATE groups SET frontier = ? WHERE gid = ?", (new_frontier, gid))
    return deliveries


def _claim_expired(
    tx: WriteTx, gid: int, pattern: str, name: str, member: str, plan: ClaimPlan
) -> dict[int, int]:
    """Hand out (or dead-letter) pending events whose deadline passed, as ``plan`` decides; return
    {seq: attempt} handed out."""
    conn = tx.conn
    handed: dict[int, int] = {}
    while not plan.expired_done:
        rows = conn.execute(
            "SELECT seq, key, attempts, last_reason FROM pending INDEXED BY pending_deadline"
            " WHERE gid = ? AND deadline <= ? AND seq > ? ORDER BY seq LIMIT ?",
            (gid, plan.now, plan.after, plan.chunk),
        ).fetchall()
        candidates = [Expired(seq, key, attempts) for seq, key, attempts, _ in rows]
        keys, dying = plan.keys_to_check(candidates)
        oldest: dict[str, int] = {}
        if keys:
            oldest = dict(
                conn.execute(
                    f"SELECT key, min(seq) FROM pending WHERE gid = ? AND key IN {_JSON_LIST}"
                    f" AND seq NOT IN {_JSON_LIST} GROUP BY key",
                    (gid, json.dumps(keys), json.dumps(dying)),
                ).fetchall()
            )
        by_seq = {seq: (attempts, last_reason) for seq, _, attempts, last_reason in rows}
        for decision in plan.expired(candidates, oldest):
            if decision.verdict is Verdict.DEAD_LETTER:
                attempts, last_reason = by_seq[decision.seq]
                reason = last_reason or ACK_TIMEOUT_REASON
                _dead_letter(tx, gid, pattern, name, decision.seq, attempts, reason, plan.now)
            elif decision.verdict is Verdict.REDELIVER:
                handed[decision.seq] = decision.attempt
    if handed:
        conn.executemany(
            "UPDATE pending SET member = ?, deadline = ?, attempts = ? WHERE gid = ? AND seq = ?",
            [(member, plan.deadline, attempt, gid, seq) for seq, attempt in handed.items()],
        )
    return handed


def _claim_new(
    tx: WriteTx, gid: int, pattern: str, member: str, plan: ClaimPlan, deliveries: list[Delivery]
) -> int:
    """Take new events above the frontier into the pending set, as ``plan`` decides; return the new
    frontier."""
    conn = tx.conn
    topic_ids = tx.topic_ids(pattern)
    pending: list[tuple[int, int, str, str | None, str | None, int, int]] = []
    while size := plan.page_size():
        rows: list[EventRow] = (
            select_events(conn, topic_ids, after_seq=plan.position, limit=size) if topic_ids else []
        )
        page = [(row[0], row[4]) for row in rows]
        keys = plan.new_keys_to_check(page)
        held: set[str] = set()
        if keys:
            held = {
                key
                for (key,) in conn.execute(
                    f"SELECT DISTINCT key FROM pending WHERE gid = ? AND key IN {_JSON_LIST}",
                    (gid, json.dumps(keys)),
                )
            }
        by_seq = {row[0]: row for row in rows}
        for decision in plan.new_events(page, held, asked=size):
            row = by_seq[decision.seq]
            if decision.verdict is Verdict.HOLD:
                pending.append((gid, row[0], row[1], row[4], None, 0, 0))
                continue
            pending.append((gid, row[0], row[1], row[4], member, plan.deadline, decision.attempt))
            event: Event = decode_event(row, tx.topic_name)
            deliveries.append(Delivery(event=event, attempt=decision.attempt, deadline=plan.deadline))
    if pending:
        conn.executemany(
            "INSERT INTO pending (gid, seq, event_id, key, member, deadline, attempts)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            pending,
        )
    return plan.frontier(tx.last_seq)


def _dead_letter(
    tx: WriteTx, gid: int, pattern: str, name: str, seq: int, attempts: int, reason: str, now: int
) -> None:
    """Publish the event to ``dlq.<group>.<topic>`` and ack it for the group."""
    conn = tx.conn
    row = conn.execute(f"SELECT {EVENT_COLUMNS} FROM events WHERE seq = ?", (seq,)).fetchone()
    if row is not None:
        event = decode_event(row, tx.topic_name)
        tx.append(
            [prepare(dead_letter_event(event, pattern, name, attempts=attempts, reason=reason, now=now))]
        )
    conn.execute("DELETE FROM pending WHERE gid = ? AND seq = ?", (gid, seq))
    conn.execute("UPDATE groups SET dead_letters = dead_letters + 1 WHERE gid = ?", (gid,))


_SETTLE_WHERE = {prefix: SETTLE_SQL.format(p=prefix, param="?") for prefix in ("", "p.")}
"""``SETTLE_SQL`` per row prefix, formatted once (an ACK is one per event)."""


def _settle_where(member: str | None, prefix: str = "") -> str:
    return "" if member is None else _SETTLE_WHERE[prefix]


def _settle_params(member: str | None) -> tuple[str, ...]:
    return () if member is None else (member,)


def _unique_seq_sql(member: str | None, where: str | None = None) -> str:
    """The seq of the one pending row of group ``?`` whose event has id ``?`` and that ``member`` may settle
    (or that meets ``where``, on rows ``p.``, when given); NULL when there is none or more than one (two
    topics under the pattern carrying the same id)."""
    if where is None:
        where = _settle_where(member, "p.")
    return (
        "(SELECT max(p.seq) FROM events e JOIN pending p ON p.gid = ? AND p.seq = e.seq"
        f" WHERE e.id = ?{where} HAVING count(*) = 1)"
    )


_EXTEND_SQL = (
    " AND {p}attempts > 0 AND {p}deadline > ? AND {p}member IS NOT NULL"
    " AND {p}member = coalesce(?, {p}member)"
)
"""``ExtendRequest.applies`` as a SQL condition (``{p}``: the row's table prefix); params: now, member."""


def ack(tx: WriteTx, pattern: str, name: str, refs: list[EventRef], member: str | None) -> int:
    gid = tx.find_gid(pattern, name)
    if gid is None or not refs:
        return 0
    where, extra = _settle_where(member), _settle_params(member)
    count = 0
    by_seq = [(gid, ref.seq, ref.id, *extra) for ref in refs if ref.seq is not None]
    if by_seq:
        cursor = tx.conn.executemany(
            f"DELETE FROM pending WHERE gid = ? AND seq = ? AND event_id = ?{where}", by_seq
        )
        count += max(0, cursor.rowcount)
    by_id = [(gid, gid, ref.id, *extra) for ref in refs if ref.seq is None]
    if by_id:
        cursor = tx.conn.executemany(
            f"DELETE FROM pending WHERE gid = ? AND seq = {_unique_seq_sql(member)}", by_id
        )
        count += max(0, cursor.rowcount)
    return count


def _settle_row(tx: WriteTx, gid: int, request: NackRequest) -> tuple[int, int, int, int] | None:
    """(seq, attempts, held, deadline) of the pending row ``request`` names and its member may settle."""
    where, extra = _settle_where(request.member), _settle_params(request.member)
    columns = "seq, attempts, member IS NOT NULL, deadline"
    if request.seq is not None:
        row = tx.conn.execute(
            f"SELECT {columns} FROM pending WHERE gid = ? AND seq = ? AND event_id = ?{where}",
            (gid, request.seq, request.event_id, *extra),
        ).fetchone()
    else:
        row = tx.conn.execute(
            f"SELECT {columns} FROM pending WHERE gid = ? AND seq = {_unique_seq_sql(request.member)}",
            (gid, gid, request.event_id, *extra),
        ).fetchone()
    return None if row is None else (int(row[0]), int(row[1]), int(row[2]), int(row[3]))


def nack(tx: WriteTx, request: NackRequest) -> bool:
    pattern, name, reason, now = request.pattern, request.group, request.reason, request.now
    gid = tx.find_gid(pattern, name)
    if gid is None:
        return False
    row = _settle_row(tx, gid, request)
    if row is None:
        return False
    seq, attempts, held, deadline = row
    trigger = request.trigger(attempts=attempts, held=bool(held), deadline=deadline)
    if trigger is None:
        return False
    if trigger in DEAD_LETTER_TRIGGERS:
        _dead_letter(tx, gid, pattern, name, seq, attempts, reason or NACK_REASON, now)
        return True
    tx.conn.execute(
        "UPDATE pending SET member = NULL, deadline = ?, last_reason = coalesce(?, last_reason)"
        " WHERE gid = ? AND seq = ?",
        (request.redeliver_at(attempts), reason, gid, seq),
    )
    return True


def extend(tx: WriteTx, request: ExtendRequest) -> bool:
    """The ``extend`` transition, its condition that of ``ExtendRequest.applies`` (held, not due)."""
    gid = tx.find_gid(request.pattern, request.group)
    if gid is None:
        return False
    held = _EXTEND_SQL.format(p="")
    params = (request.now, request.member)
    if request.seq is not None:
        cursor = tx.conn.execute(
            f"UPDATE pending SET deadline = ? WHERE gid = ? AND seq = ? AND event_id = ?{held}",
            (request.new_deadline, gid, request.seq, request.event_id, *params),
        )
    else:
        unique = _unique_seq_sql(None, _EXTEND_SQL.format(p="p."))
        cursor = tx.conn.execute(
            f"UPDATE pending SET deadline = ? WHERE gid = ? AND seq = {unique}{held}",
            (request.new_deadline, gid, gid, request.event_id, *params, *params),
        )
    return cursor.rowcount > 0


def release(tx: WriteTx, pattern: str, name: str, member: str) -> int:
    gid = tx.find_gid(pattern, name)
    if gid is None:
        return 0
    cursor = tx.conn.execute(
        "UPDATE pending SET member = NULL, deadline = 0 WHERE gid = ? AND member = ?", (gid, member)
    )
    return max(0, cursor.rowcount)


def reset_group(tx: WriteTx, pattern: str, name: str, to: StartPosition) -> GroupInfo | None:
    """Move an existing group's cursor to ``to`` (as a new group would start there) and drop its pending set:
    in-flight deliveries are released (their late ACKs are no-ops) and events above the new frontier are
    read again from the log. The dead-letter count is kept. None when the group does not exist."""
    ref = tx.find_group(pattern, name)
    if ref is None:
        return None
    gid = ref[0]
    frontier = _start_frontier(tx, to)
    tx.conn.execute("DELETE FROM pending WHERE gid = ?", (gid,))
    tx.conn.execute("UPDATE groups SET frontier = ? WHERE gid = ?", (frontier, gid))
    return group_info(tx.conn, gid)
