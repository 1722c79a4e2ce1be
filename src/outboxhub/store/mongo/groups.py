"""Consumer groups on MongoDB (semantics: ``base.py``; choices shared with SQLite and PostgreSQL:
``store/sqlite/groups.py``, ``store/postgres/groups.py``).

Documents::

    groups:  {_id: <uuid7 string>, pattern, name, frontier, dead_letters, created_ts, lock_tok, lock_until}
    pending: {_id: "<gid>:<seq>", gid, seq, event_id, key, member, deadline, attempts, last_reason,
              ctok?, dl?, dl_at?, dl_reason?}

Concurrency across hub processes, without multi-document transactions (they need a replica set):

* ``claim`` holds the group's *claim lock*: a lease taken with one conditional update of the group
  document (``lock_until <= now`` → own token, ``lock_until = now + lease``) and given back by the update
  that moves the frontier (conditional on the token). Claims of one group are thus serialised across
  processes, as the group row lock does on PostgreSQL: two claims never take the same new events, and the
  frontier only moves under the lock. In one process an asyncio lock queues the claims first, so they do
  not poll the database for the lease. A process that dies holding the lease stalls the group's claims
  until the lease expires (``lease_ms``, default 15 s).
* New events become pending documents whose ``_id`` is ``<gid>:<seq>``: even a claim that outlived its
  lease cannot put one event into the pending set twice.
* Redelivery hands out expired pending documents in three steps: choose candidate seqs (``ClaimPlan``), one
  ``update_many`` that repeats the eligibility filter (``deadline <= now``, not being dead-lettered) and
  sets a fresh claim token ``ctok``, then ``find({ctok})``. ``ack``, ``nack``, ``extend`` and ``release``
  take no lock; the repeated filter makes an event acked, nacked or extended since the choice drop out.
* Dead-lettering marks the pending documents first (conditional update setting ``dl`` to a fresh token),
  publishes the dead-letter events (deterministic ids: publishing twice stores one), then deletes the
  marked documents and adds the deleted count to ``dead_letters``. ``ack`` ignores marked documents, so an
  event is never both acked and dead-lettered. A process that dies in between leaves marked documents,
  which ``finish_dead_letters`` (run by the store's maintenance loop) completes after the lease.
* The ack floor is not stored: it is computed on read from the frontier and the oldest pending seq
  (``common.ack_floor``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from bson.int64 import Int64
from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, DuplicateKeyError

from outboxhub.errors import StoreError
from outboxhub.ids import new_id, now_ms
from outboxhub.model import (
    Cursor,
    Delivery,
    Event,
    GroupInfo,
    Lag,
    NewEvent,
    PublishResult,
    StartPosition,
)
from outboxhub.store.base import EventRef
from outboxhub.store.common import ACK_TIMEOUT_REASON, NACK_REASON, ack_floor, dead_letter_event
from outboxhub.store.lifecycle import (
    DEAD_LETTER_TRIGGERS,
    ClaimPlan,
    ClaimRequest,
    Expired,
    ExtendRequest,
    NackRequest,
    Verdict,
)
from outboxhub.store.mongo.events import EventLog, decode_event

__all__ = ["GroupOps"]

Doc = dict[str, Any]
Publish = Callable[[Sequence[NewEvent]], Awaitable[list[PublishResult]]]


def _settle_filter(member: str | None) -> Doc:
    """``may_settle`` of ``store/lifecycle.py`` as a filter on pending documents (not dead-lettering)."""
    if member is None:
        return {"dl": None}
    return {"dl": None, "attempts": {"$gt": 0}, "member": {"$in": [None, member]}}


class GroupOps:
    """Group state of one store database."""

    def __init__(
        self,
        groups: AsyncCollection[Doc],
        pending: AsyncCollection[Doc],
        log: EventLog,
        publish: Publish,
        *,
        lease_ms: int,
    ) -> None:
        self.groups = groups
        self.pending = pending
        self._log = log
        self._publish = publish
        self._lease_ms = lease_ms
        self._gids: dict[tuple[str, str], str] = {}
        self._local: dict[tuple[str, str], asyncio.Lock] = {}

    # -- lookups -------------------------------------------------------------------------------------------

    async def _gid(self, pattern: str, name: str) -> str | None:
        key = (pattern, name)
        gid = self._gids.get(key)
        if gid is None:
            doc = await self.groups.find_one({"pattern": pattern, "name": name}, {"_id": 1})
            if doc is None:
                return None
            gid = self._gids[key] = doc["_id"]
        return gid

    async def _floor(self, gid: str, frontier: int) -> int:
        oldest = await self.pending.find_one({"gid": gid}, {"seq": 1}, sort=[("seq", 1)])
        return ack_floor(None if oldest is None else int(oldest["seq"]), frontier)

    async def _info(self, doc: Doc) -> GroupInfo:
        gid = doc["_id"]
        frontier = int(doc["frontier"])
        floor, in_flight = await asyncio.gather(
            self._floor(gid, frontier), self.pending.count_documents({"gid": gid, "attempts": {"$gt": 0}})
        )
        return GroupInfo(
            pattern=doc["pattern"],
            group=doc["name"],
            ack_floor=floor,
            frontier=frontier,
            in_flight=in_flight,
            dead_letters=int(doc.get("dead_letters", 0)),
        )

    async def groups_info(self) -> list[GroupInfo]:
        docs = await self.groups.find({}).to_list()
        infos = await asyncio.gather(*(self._info(doc) for doc in docs))
        return sorted(infos, key=lambda info: (info.pattern, info.group))

    # -- creation ------------------------------------------------------------------------------------------

    async def _start_frontier(self, start: StartPosition) -> int:
        if start.kind == "earliest":
            return 0
        if start.kind == "seq":
            return max(0, start.value)
        horizon = await self._log.counter.horizon()
        if start.kind == "latest":
            return horizon
        # ts: just below the first event (by seq) whose ts reaches the value; a binary search over seq,
        # exact when ts grows with seq (as hub-assigned ts do), as in store/sqlite/groups.py.
        low, high = 1, horizon + 1
        while low < high:
            mid = (low + high) // 2
            doc = await self._log.events.find_one(
                {"seq": {"$gte": mid, "$lte": horizon}, "topic": {"$gt": ""}}, {"ts": 1}, sort=[("seq", 1)]
            )
            if doc is not None and int(doc["ts"]) >= start.value:
                high = mid
            else:
                low = mid + 1
        return low - 1

    async def ensure_group(self, pattern: str, name: str, start: StartPosition, now: int) -> GroupInfo:
        doc = await self.groups.find_one({"pattern": pattern, "name": name})
        if doc is None:
            frontier = await self._start_frontier(start)
            with contextlib.suppress(DuplicateKeyError):  # created meanwhile: its start position won
                await self.groups.insert_one(
                    {
                        "_id": new_id(),
                        "pattern": pattern,
                        "name": name,
                        "frontier": Int64(frontier),
                        "dead_letters": Int64(0),
                        "created_ts": Int64(now),
                        "lock_until": Int64(0),
                    }
                )
            doc = await self.groups.find_one({"pattern": pattern, "name": name})
            if doc is None:  # pragma: no cover - it was just inserted
                raise StoreError(f"consumer group {name!r} on {pattern!r} vanished while being created")
        return await self._info(doc)

    async def reset_group(self, pattern: str, name: str, to: StartPosition) -> GroupInfo | None:
        """Move an existing group's frontier to ``to`` and drop its pending set, holding the claim lease so
        no claim moves the frontier meanwhile (semantics: ``store/sqlite/groups.py`` ``reset_group``).
        Documents already marked for dead-lettering are left for ``finish_dead_letters``. None when the
        group does not exist."""
        if await self._gid(pattern, name) is None:
            return None
        local = self._local.setdefault((pattern, name), asyncio.Lock())
        async with local:
            token = new_id()
            group = await self._lock(pattern, name, token)
            gid = group["_id"]
            try:
                frontier = await self._start_frontier(to)
                await self.pending.delete_many({"gid": gid, "dl": None})
                await self.groups.update_one(
                    {"_id": gid, "lock_tok": token}, {"$set": {"frontier": Int64(frontier)}}
                )
            finally:
                await asyncio.shield(self._unlock(gid, token, None))
        doc = await self.groups.find_one({"_id": gid})
        return None if doc is None else await self._info(doc)

    # -- claim ---------------------------------------------------------------------------------------------

    async def _lock(self, pattern: str, name: str, token: str) -> Doc:
        """Take the group's claim lease (waiting while another process holds it); return the group."""
        delay = 0.002
        while True:
            now = now_ms()
            doc = await self.groups.find_one_and_update(
                {"pattern": pattern, "name": name, "lock_until": {"$lte": now}},
                {"$set": {"lock_tok": token, "lock_until": Int64(now + self._lease_ms)}},
                projection={"frontier": 1},
                return_document=ReturnDocument.AFTER,
            )
            if doc is not None:
                self._gids[(pattern, name)] = doc["_id"]
                return doc
            if await self._gid(pattern, name) is None:
                raise StoreError(
                    f"consumer group {name!r} on {pattern!r} does not exist (call ensure_group first)"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    async def _unlock(self, gid: str, token: str, frontier: int | None) -> None:
        update: Doc = {"$set": {"lock_until": Int64(0)}, "$unset": {"lock_tok": ""}}
        if frontier is not None:
            update["$max"] = {"frontier": Int64(frontier)}
        # Conditional on our token: a claim that outlived its lease changes nothing.
        await self.groups.update_one({"_id": gid, "lock_tok": token}, update)

    async def claim(self, request: ClaimRequest) -> list[Delivery]:
        pattern, name, member = request.pattern, request.group, request.member
        local = self._local.setdefault((pattern, name), asyncio.Lock())
        async with local:
            token = new_id()
            group = await self._lock(pattern, name, token)
            gid, frontier = group["_id"], int(group["frontier"])
            new_frontier: int | None = None
            try:
                if request.limit <= 0:
                    return []
                horizon = await self._log.counter.horizon()  # before any scan: see seq.py
                plan = request.plan()
                deliveries = await self._claim_expired(gid, pattern, name, member, plan)
                plan.begin_new(frontier, delivered=len(deliveries))
                if plan.wanted > 0:
                    new_frontier = await self._claim_new(gid, pattern, member, plan, horizon, deliveries)
                return deliveries
            finally:
                await asyncio.shield(
                    self._unlock(gid, token, new_frontier if new_frontier != frontier else None)
                )

    async def _events_by_seq(self, seqs: Sequence[int]) -> dict[int, Event]:
        if not seqs:
            return {}
        docs = await self._log.events.find({"seq": {"$in": [Int64(s) for s in seqs]}}).to_list()
        return {int(doc["seq"]): decode_event(doc) for doc in docs if "topic" in doc}

    async def _oldest_pending(self, gid: str, keys: list[str], dying: list[int]) -> dict[str, int]:
        """The oldest pending seq of each of ``keys``, not counting the seqs in ``dying``."""
        cursor = await self.pending.aggregate(
            [
                {"$match": {"gid": gid, "key": {"$in": keys}, "seq": {"$nin": [Int64(s) for s in dying]}}},
                {"$group": {"_id": "$key", "first": {"$min": "$seq"}}},
            ]
        )
        return {row["_id"]: int(row["first"]) async for row in cursor}

    async def _claim_expired(
        self, gid: str, pattern: str, name: str, member: str, plan: ClaimPlan
    ) -> list[Delivery]:
        """Hand out (or dead-letter) pending events whose deadline passed, as ``plan`` decides."""
        chosen: list[int] = []
        while not plan.expired_done:
            rows = await self.pending.find(
                {"gid": gid, "deadline": {"$lte": plan.now}, "seq": {"$gt": plan.after}, "dl": None},
                sort=[("seq", 1)],
                limit=plan.chunk,
            ).to_list()
            candidates = [Expired(int(r["seq"]), r.get("key"), int(r["attempts"])) for r in rows]
            keys, dying = plan.keys_to_check(candidates)
            oldest = await self._oldest_pending(gid, keys, dying) if keys else {}
            dead: list[int] = []
            for decision in plan.expired(candidates, oldest):
                if decision.verdict is Verdict.DEAD_LETTER:
                    dead.append(decision.seq)
                elif decision.verdict is Verdict.REDELIVER:
                    chosen.append(decision.seq)
            if dead:
                where = {
                    "seq": {"$in": [Int64(s) for s in dead]},
                    "deadline": {"$lte": plan.now},
                    "attempts": {"$gte": plan.max_deliver},
                }
                await self._dead_letter(gid, pattern, name, where, None, plan.now)
        if not chosen:
            return []
        token = new_id()
        # The eligibility filter again: an event acked, nacked, extended or dead-lettered since it was
        # chosen is not updated, and so not handed out.
        await self.pending.update_many(
            {
                "gid": gid,
                "seq": {"$in": [Int64(s) for s in chosen]},
                "deadline": {"$lte": plan.now},
                "dl": None,
            },
            {
                "$set": {"member": member, "deadline": Int64(plan.deadline), "ctok": token},
                "$inc": {"attempts": 1},
            },
        )
        got = await self.pending.find({"gid": gid, "ctok": token}, {"seq": 1, "attempts": 1}).to_list()
        attempt_of = {int(doc["seq"]): int(doc["attempts"]) for doc in got}
        events = await self._events_by_seq(sorted(attempt_of))
        return [
            Delivery(event=events[seq], attempt=attempt_of[seq], deadline=plan.deadline)
            for seq in chosen
            if seq in attempt_of and seq in events
        ]

    async def _claim_new(
        self, gid: str, pattern: str, member: str, plan: ClaimPlan, horizon: int, deliveries: list[Delivery]
    ) -> int:
        """Take new events above the frontier into the pending set, as ``plan`` decides; return the new
        frontier."""
        where = await self._log.topic_query(pattern)
        pending: list[Doc] = []
        handed: list[Delivery] = []
        while size := plan.page_size():
            rows = (
                []
                if where is None  # no topic matches: every matching event (none) is pending
                else await self._log.scan_docs(where, after_seq=plan.position, horizon=horizon, limit=size)
            )
            page = [(int(r["seq"]), r.get("key")) for r in rows]
            keys = plan.new_keys_to_check(page)
            held_keys: set[str] = set()
            if keys:
                rows_of_keys = self.pending.find({"gid": gid, "key": {"$in": keys}}, {"key": 1, "_id": 0})
                held_keys = {doc["key"] async for doc in rows_of_keys}
            by_seq = {int(r["seq"]): r for r in rows}
            for decision in plan.new_events(page, held_keys, asked=size):
                row = by_seq[decision.seq]
                doc: Doc = {
                    "_id": f"{gid}:{decision.seq}",
                    "gid": gid,
                    "seq": Int64(decision.seq),
                    "event_id": row["id"],
                    "key": row.get("key"),
                    "member": member,
                    "deadline": Int64(plan.deadline),
                    "attempts": decision.attempt,
                }
                if decision.verdict is Verdict.HOLD:
                    doc.update(member=None, deadline=Int64(0), attempts=0)
                else:
                    handed.append(
                        Delivery(event=decode_event(row), attempt=decision.attempt, deadline=plan.deadline)
                    )
                pending.append(doc)
        if pending:
            taken = await self._insert_pending(pending)
            handed = [d for d in handed if d.event.seq not in taken]
        deliveries.extend(handed)
        # When the scan reached the end, every matching event up to the horizon (read before the scans)
        # is pending now.
        return plan.frontier(horizon)

    async def _insert_pending(self, docs: list[Doc]) -> set[int]:
        """Insert pending documents; return the seqs that were pending already (only after a claim that
        outlived its lease: those stay with whoever has them)."""
        try:
            await self.pending.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != 11000 for e in errors):
                raise
            return {int(docs[e["index"]]["seq"]) for e in errors}
        return set()

    # -- dead letters --------------------------------------------------------------------------------------

    async def _dead_letter(
        self, gid: str, pattern: str, name: str, where: Doc, reason: str | None, now: int
    ) -> int:
        """Dead-letter the pending documents of ``gid`` matching ``where`` (mark, publish, delete).

        ``reason`` None means "the event's last NACK reason, else ack timeout"."""
        token = new_id()
        mark: Doc = {"dl": token, "dl_at": Int64(now_ms()), "dl_now": Int64(now)}
        if reason is not None:
            mark["dl_reason"] = reason
        await self.pending.update_many({**where, "gid": gid, "dl": None}, {"$set": mark})
        return await self._finish(gid, pattern, name, token)

    async def _finish(self, gid: str, pattern: str, name: str, token: str) -> int:
        marked = await self.pending.find({"gid": gid, "dl": token}).to_list()
        if not marked:
            return 0
        events = await self._events_by_seq([int(doc["seq"]) for doc in marked])
        letters = [
            dead_letter_event(
                events[int(doc["seq"])],
                pattern,
                name,
                attempts=int(doc["attempts"]),
                reason=doc.get("dl_reason") or doc.get("last_reason") or ACK_TIMEOUT_REASON,
                now=int(doc.get("dl_now", now_ms())),
            )
            for doc in marked
            if int(doc["seq"]) in events
        ]
        if letters:
            await self._publish(letters)
        deleted = await self.pending.delete_many({"gid": gid, "dl": token})
        if deleted.deleted_count:
            await self.groups.update_one({"_id": gid}, {"$inc": {"dead_letters": deleted.deleted_count}})
        return deleted.deleted_count

    async def finish_dead_letters(self) -> int:
        """Complete dead-lettering left half-done by a process that died (marked longer than the lease)."""
        stale = await self.pending.find(
            {"dl": {"$gt": ""}, "dl_at": {"$lte": now_ms() - self._lease_ms}}, {"gid": 1, "dl": 1}
        ).to_list()
        done = 0
        for gid, token in {(doc["gid"], doc["dl"]) for doc in stale}:
            group = await self.groups.find_one({"_id": gid}, {"pattern": 1, "name": 1})
            if group is not None:
                done += await self._finish(gid, group["pattern"], group["name"], token)
        return done

    # -- ack / nack / extend / release ---------------------------------------------------------------------

    async def ack(self, pattern: str, name: str, refs: Sequence[EventRef], member: str | None) -> int:
        """Refs with a seq name their pending row (``<gid>:<seq>``, which must carry the id); refs without
        one settle the row of that id only when it is the one row ``member`` may settle."""
        gid = await self._gid(pattern, name)
        if gid is None:
            return 0
        settle = _settle_filter(member)
        named = {f"{gid}:{ref.seq}": ref.id for ref in refs if ref.seq is not None}
        targets: list[str] = []
        if named:
            found = self.pending.find({"_id": {"$in": list(named)}, **settle}, {"event_id": 1})
            targets += [doc["_id"] async for doc in found if named.get(doc["_id"]) == doc["event_id"]]
        by_id = list(dict.fromkeys(ref.id for ref in refs if ref.seq is None))
        if by_id:
            rows: dict[str, list[str]] = {}
            found = self.pending.find({"gid": gid, "event_id": {"$in": by_id}, **settle}, {"event_id": 1})
            async for doc in found:
                rows.setdefault(doc["event_id"], []).append(doc["_id"])
            targets += [ids[0] for ids in rows.values() if len(ids) == 1]  # two topics, one id: ambiguous
        if not targets:
            return 0
        result = await self.pending.delete_many({"_id": {"$in": targets}, **settle})
        return result.deleted_count

    async def nack(self, request: NackRequest) -> bool:
        pattern, name, reason, now = request.pattern, request.group, request.reason, request.now
        gid = await self._gid(pattern, name)
        if gid is None:
            return False
        where: Doc = {"gid": gid, "event_id": request.event_id, **_settle_filter(request.member)}
        if request.seq is not None:
            where["_id"] = f"{gid}:{request.seq}"
        for _ in range(5):
            rows = await self.pending.find(where).to_list(2)
            if len(rows) != 1:  # none, or an id two topics share and no seq to tell them apart
                return False
            row = rows[0]
            attempts = int(row["attempts"])
            trigger = request.trigger(
                attempts=attempts, held=row.get("member") is not None, deadline=int(row["deadline"])
            )
            if trigger is None:
                return False
            current = {
                "_id": row["_id"],
                "attempts": row["attempts"],
                "member": row.get("member"),
                "dl": None,
            }
            if trigger in DEAD_LETTER_TRIGGERS:
                await self._dead_letter(gid, pattern, name, current, reason or NACK_REASON, now)
                return True
            update: Doc = {"member": None, "deadline": Int64(request.redeliver_at(attempts))}
            if reason is not None:
                update["last_reason"] = reason
            result = await self.pending.update_one(current, {"$set": update})
            if result.matched_count:
                return True
            # Claimed again (attempts moved) or acked between the read and the update: look again.
        return False

    async def extend(self, request: ExtendRequest) -> bool:
        """The ``extend`` transition: its condition is ``ExtendRequest.applies`` (held, by the member, not
        due)."""
        gid = await self._gid(request.pattern, request.group)
        if gid is None:
            return False
        member: Any = {"$ne": None} if request.member is None else request.member
        where: Doc = {
            "gid": gid,
            "event_id": request.event_id,
            "member": member,
            "dl": None,
            "attempts": {"$gt": 0},
            "deadline": {"$gt": Int64(request.now)},
        }
        if request.seq is not None:
            where["_id"] = f"{gid}:{request.seq}"
        else:
            rows = await self.pending.find(where, {"_id": 1}).to_list(2)
            if len(rows) != 1:  # none, or an id two topics share and no seq to tell them apart
                return False
            where["_id"] = rows[0]["_id"]
        result = await self.pending.update_one(where, {"$set": {"deadline": Int64(request.new_deadline)}})
        return result.matched_count > 0

    async def release(self, pattern: str, name: str, member: str) -> int:
        gid = await self._gid(pattern, name)
        if gid is None:
            return 0
        result = await self.pending.update_many(
            {"gid": gid, "member": member, "dl": None}, {"$set": {"member": None, "deadline": Int64(0)}}
        )
        return result.matched_count

    async def next_deadline(self, pattern: str, name: str) -> int | None:
        """Earliest deadline of a pending event delivered before (held-back events are not counted)."""
        gid = await self._gid(pattern, name)
        if gid is None:
            return None
        doc = await self.pending.find_one(
            {"gid": gid, "attempts": {"$gt": 0}}, {"deadline": 1}, sort=[("deadline", 1)]
        )
        return None if doc is None else int(doc["deadline"])

    # -- cursor and lag ------------------------------------------------------------------------------------

    async def _cursor(self, pattern: str, name: str, where: Doc | None) -> Cursor | None:
        doc = await self.groups.find_one({"pattern": pattern, "name": name}, {"frontier": 1})
        if doc is None:
            return None
        floor = await self._floor(doc["_id"], int(doc["frontier"]))
        last = None if where is None else await self._log.newest_at_or_below(where, floor)
        if last is None:
            return Cursor(pattern=pattern, group=name, seq=floor)
        return Cursor(pattern=pattern, group=name, seq=floor, last_id=last["id"], last_ts=int(last["ts"]))

    async def cursor(self, pattern: str, name: str) -> Cursor | None:
        return await self._cursor(pattern, name, await self._log.topic_query(pattern))

    async def lag(self, pattern: str, name: str) -> Lag | None:
        # No snapshot spans several queries without a transaction: the horizon is read first, and the
        # tail and count are bounded by it, so they describe one prefix of the log.
        horizon = await self._log.counter.horizon()
        where = await self._log.topic_query(pattern)
        current = await self._cursor(pattern, name, where)
        if current is None:
            return None
        horizon = max(horizon, current.seq)
        last_doc = None if where is None else await self._log.newest_at_or_below(where, horizon)
        last = None if last_doc is None else decode_event(last_doc)
        count = 0
        if where is not None and current.seq < horizon:
            count = await self._log.events.count_documents(
                {**where, "seq": {"$gt": current.seq, "$lte": horizon}}
            )
        return Lag.behind(current, last, count)
