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

import sqlite3

from outboxhub.model import Delivery, Event, GroupInfo, StartPosition, nack_backoff_ms
from outboxhub.store.codec import EVENT_COLUMNS, EventRow, decode_event, prepare
from outboxhub.store.common import ACK_TIMEOUT_REASON, NACK_REASON, dead_letter_event
from outboxhub.store.sqlite.topics import select_events
from outboxhub.store.sqlite.tx import WriteTx

__all__ = ["ack", "claim", "ensure_group", "extend", "group_info", "info_from_row", "nack", "release"]

_ORDERED_SCAN_CAP = 4
"""With ordered_by_key, one claim scans at most this many times ``limit`` (min 256) new events looking for
deliverable ones, so a hot key cannot make one claim walk the whole log."""

_EVENT_ID_SEQ = "(SELECT seq FROM events WHERE id = ?)"


def group_info(conn: sqlite3.Connection, gid: int) -> GroupInfo:
    """A group's state; ``in_flight`` counts pending events delivered at least once and not acked."""
    row = conn.execute(
        "SELECT pattern, name, ack_floor, frontier, dead_letters,"
        " (SELECT count(*) FROM pending p WHERE p.gid = g.gid AND p.attempts > 0)"
        " FROM groups g WHERE gid = ?",
        (gid,),
    ).fetchone()
    return info_from_row(row)


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
        "INSERT INTO groups (pattern, name, ack_floor, frontier, dead_letters, created_ts)"
        " VALUES (?, ?, ?, ?, 0, ?)",
        (pattern, name, frontier, frontier, now),
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


def claim(
    tx: WriteTx,
    pattern: str,
    name: str,
    member: str,
    limit: int,
    ack_timeout_ms: int,
    max_deliver: int,
    ordered: bool,
    now: int,
) -> list[Delivery]:
    gid, frontier = tx.group(pattern, name)
    if limit <= 0:
        return []
    max_deliver = max(1, max_deliver)  # 0 would dead-letter events never delivered
    conn = tx.conn
    deadline = now + ack_timeout_ms
    busy_keys: set[str] = set()  # keys handed out or held back by this claim
    redelivered = _claim_expired(
        tx, gid, pattern, name, member, limit, max_deliver, ordered, now, deadline, busy_keys
    )
    deliveries: list[Delivery] = []
    if redelivered:
        rows = conn.execute(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE seq IN ({','.join(str(s) for s in redelivered)})"
            " ORDER BY seq"
        ).fetchall()
        for row in rows:
            deliveries.append(
                Delivery(
                    event=decode_event(row, tx.topic_name), attempt=redelivered[row[0]], deadline=deadline
                )
            )
    wanted = limit - len(redelivered)
    if wanted > 0:
        new_frontier = _claim_new(
            tx, gid, pattern, member, frontier, wanted, ordered, deadline, busy_keys, deliveries
        )
        if new_frontier != frontier:
            conn.execute("UPDATE groups SET frontier = ? WHERE gid = ?", (new_frontier, gid))
            tx.dirty(gid)
    return deliveries


def _claim_expired(
    tx: WriteTx,
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
) -> dict[int, int]:
    """Hand out (or dead-letter) pending events whose deadline passed; return {seq: attempt} handed out."""
    conn = tx.conn
    handed: dict[int, int] = {}
    after = 0
    chunk = limit + 32
    while len(handed) < limit:
        rows = conn.execute(
            "SELECT seq, key, attempts, last_reason FROM pending INDEXED BY pending_deadline"
            " WHERE gid = ? AND deadline <= ? AND seq > ? ORDER BY seq LIMIT ?",
            (gid, now, after, chunk),
        ).fetchall()
        for seq, key, attempts, last_reason in rows:
            after = seq
            if attempts >= max_deliver:
                _dead_letter(tx, gid, pattern, name, seq, attempts, last_reason or ACK_TIMEOUT_REASON, now)
                continue
            if ordered and key is not None:
                if key in busy_keys:
                    continue
                busy_keys.add(key)
                earlier = conn.execute(
                    "SELECT 1 FROM pending WHERE gid = ? AND key = ? AND seq < ? LIMIT 1", (gid, key, seq)
                ).fetchone()
                if earlier is not None:
                    continue
            handed[seq] = attempts + 1
            if len(handed) == limit:
                break
        if len(rows) < chunk:
            break
    if handed:
        conn.executemany(
            "UPDATE pending SET member = ?, deadline = ?, attempts = ? WHERE gid = ? AND seq = ?",
            [(member, deadline, attempt, gid, seq) for seq, attempt in handed.items()],
        )
    return handed


def _claim_new(
    tx: WriteTx,
    gid: int,
    pattern: str,
    member: str,
    frontier: int,
    wanted: int,
    ordered: bool,
    deadline: int,
    busy_keys: set[str],
    deliveries: list[Delivery],
) -> int:
    """Take new events above the frontier into the pending set; return the new frontier."""
    conn = tx.conn
    topic_ids = tx.topic_ids(pattern)
    if not topic_ids:
        return max(frontier, tx.last_seq)
    pending: list[tuple[int, int, str, str | None, str | None, int, int]] = []
    position = frontier
    handed = 0
    budget = max(wanted * _ORDERED_SCAN_CAP, 256) if ordered else wanted
    exhausted = False
    while handed < wanted and budget > 0:
        want = min(budget, max(wanted - handed, 64)) if ordered else wanted - handed
        rows: list[EventRow] = select_events(conn, topic_ids, after_seq=position, limit=want)
        budget -= len(rows)
        for row in rows:
            seq, event_id, key = row[0], row[1], row[4]
            position = seq
            if ordered and key is not None:
                held = key in busy_keys or (
                    conn.execute(
                        "SELECT 1 FROM pending WHERE gid = ? AND key = ? LIMIT 1", (gid, key)
                    ).fetchone()
                    is not None
                )
                busy_keys.add(key)
                if held:
                    pending.append((gid, seq, event_id, key, None, 0, 0))
                    continue
            pending.append((gid, seq, event_id, key, member, deadline, 1))
            event: Event = decode_event(row, tx.topic_name)
            deliveries.append(Delivery(event=event, attempt=1, deadline=deadline))
            handed += 1
            if handed == wanted:
                break
        if handed == wanted:
            break
        if len(rows) < want:
            exhausted = True
            break
    if pending:
        conn.executemany(
            "INSERT INTO pending (gid, seq, event_id, key, member, deadline, attempts)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            pending,
        )
    if exhausted:
        position = max(position, tx.last_seq)
    return position


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
    tx.dirty(gid)


def ack(tx: WriteTx, pattern: str, name: str, event_ids: list[str]) -> int:
    ref = tx.find_group(pattern, name)
    if ref is None or not event_ids:
        return 0
    gid = ref[0]
    cursor = tx.conn.executemany(
        f"DELETE FROM pending WHERE gid = ? AND seq = {_EVENT_ID_SEQ}",
        [(gid, event_id) for event_id in event_ids],
    )
    count = max(0, cursor.rowcount)
    if count:
        tx.dirty(gid)
    return count


def nack(
    tx: WriteTx,
    pattern: str,
    name: str,
    event_id: str,
    max_deliver: int,
    delay_ms: int | None,
    reason: str | None,
    now: int,
) -> bool:
    ref = tx.find_group(pattern, name)
    if ref is None:
        return False
    gid = ref[0]
    row = tx.conn.execute(
        f"SELECT seq, attempts FROM pending WHERE gid = ? AND seq = {_EVENT_ID_SEQ}", (gid, event_id)
    ).fetchone()
    if row is None:
        return False
    seq, attempts = row
    if attempts >= max(1, max_deliver):
        _dead_letter(tx, gid, pattern, name, seq, attempts, reason or NACK_REASON, now)
        return True
    tx.conn.execute(
        "UPDATE pending SET member = NULL, deadline = ?, last_reason = coalesce(?, last_reason)"
        " WHERE gid = ? AND seq = ?",
        (now + nack_backoff_ms(attempts, delay_ms), reason, gid, seq),
    )
    return True


def extend(tx: WriteTx, pattern: str, name: str, event_id: str, ack_timeout_ms: int, now: int) -> bool:
    ref = tx.find_group(pattern, name)
    if ref is None:
        return False
    cursor = tx.conn.execute(
        f"UPDATE pending SET deadline = ? WHERE gid = ? AND seq = {_EVENT_ID_SEQ} AND member IS NOT NULL",
        (now + ack_timeout_ms, ref[0], event_id),
    )
    return cursor.rowcount > 0


def release(tx: WriteTx, pattern: str, name: str, member: str) -> int:
    ref = tx.find_group(pattern, name)
    if ref is None:
        return 0
    cursor = tx.conn.execute(
        "UPDATE pending SET member = NULL, deadline = 0 WHERE gid = ? AND member = ?", (ref[0], member)
    )
    return max(0, cursor.rowcount)
