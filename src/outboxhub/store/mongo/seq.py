"""Seq allocation and the gap-safe read horizon of the MongoDB store.

One counter document holds the last allocated seq and every *open* allocation (a range of seqs handed to
a writer whose inserts are not finished)::

    {_id: "seq", v: 1200, open: {<token>: {lo: 1101, hi: 1200, exp: <ms>}}}

* **Allocate** (a writer, once per group-commit batch): a compare-and-set on ``v`` that also records the
  range under a fresh token, in one single-document update (atomic on every MongoDB deployment).
* **Release**: after the batch's ``insert_many`` was acknowledged, the token is unset.
* **Horizon** (every reader, first): ``min(lo of open ranges) - 1``, or ``v`` when none is open. Every seq
  at or below the horizon belongs to a closed allocation, whose documents were inserted before it closed,
  so a read bounded by the horizon (``seq <= horizon``) never skips an event that commits later: it reads
  a gap-free prefix of the log. Seqs are *not* commit-ordered across writers (two hub processes insert
  concurrently); the horizon is what makes ``seq > cursor`` reads safe anyway.
* **Abandon**: an open range whose ``exp`` passed (its writer crashed or stalled longer than the lease)
  would hold every reader back forever. Any reader that sees one first fills each still-free seq of the
  range with a *hole* document (``{_id: <seq as int>, seq, hole: true}``, no topic, so no query matches
  it), then unsets the range. The unique index on ``seq`` fences the stalled writer: its late inserts fail
  with a duplicate key on ``seq``, and it re-allocates those events above the horizon, so nothing appears
  below a horizon that readers have passed. Holes are inserted *before* the range is unset, while readers
  are still held below it.

Clocks: ``exp`` is set with the writer's clock and compared with the reader's; hub nodes' clocks must
agree to well within the lease (default 15 s).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from bson.int64 import Int64
from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, DuplicateKeyError

from outboxhub.ids import new_id, now_ms

__all__ = ["COUNTER_ID", "Allocation", "SeqCounter", "horizon_of"]

log = logging.getLogger("outboxhub.store.mongo.store")

COUNTER_ID = "seq"

Doc = dict[str, Any]


def horizon_of(counter: Mapping[str, Any] | None) -> int:
    """The read horizon of a counter document (see the module docstring)."""
    if counter is None:
        return 0
    lows = [int(entry["lo"]) for entry in (counter.get("open") or {}).values() if isinstance(entry, Mapping)]
    return min(lows) - 1 if lows else int(counter.get("v", 0))


class Allocation:
    """A range of seqs ``lo..hi`` held open under ``token`` until released."""

    __slots__ = ("hi", "lo", "token")

    def __init__(self, token: str, lo: int, hi: int) -> None:
        self.token = token
        self.lo = lo
        self.hi = hi


class SeqCounter:
    """The counter document of one store database, seen by one store object."""

    def __init__(
        self, counters: AsyncCollection[Doc], events: AsyncCollection[Doc], *, lease_ms: int
    ) -> None:
        self._counters = counters
        self._events = events
        self._lease_ms = lease_ms
        self._cached_v: int | None = None
        # allocated by this object and not yet reported as committed (see ``MongoStore._poll``)
        self.in_flight: set[Allocation] = set()

    async def create(self) -> None:
        """Create the counter document unless it exists."""
        with contextlib.suppress(DuplicateKeyError):  # another process created it at the same moment
            await self._counters.update_one(
                {"_id": COUNTER_ID}, {"$setOnInsert": {"v": Int64(0), "open": {}}}, upsert=True
            )

    async def allocate(self, n: int) -> Allocation:
        """Reserve ``n`` consecutive seqs (compare-and-set on ``v``, retried under contention)."""
        token = new_id().replace("-", "")
        while True:
            v = self._cached_v
            if v is None:
                doc = await self._counters.find_one({"_id": COUNTER_ID}, {"v": 1})
                v = int(doc["v"]) if doc is not None else 0
            lo, hi = v + 1, v + n
            result = await self._counters.update_one(
                {"_id": COUNTER_ID, "v": v},
                {
                    "$inc": {"v": n},
                    "$set": {
                        f"open.{token}": {"lo": Int64(lo), "hi": Int64(hi), "exp": now_ms() + self._lease_ms}
                    },
                },
            )
            if result.modified_count == 1:
                self._cached_v = hi
                allocation = Allocation(token, lo, hi)
                self.in_flight.add(allocation)
                return allocation
            self._cached_v = None  # another writer allocated since: read v again

    async def release(self, allocation: Allocation) -> int:
        """Close ``allocation``; return the horizon right after."""
        doc = await self._counters.find_one_and_update(
            {"_id": COUNTER_ID},
            {"$unset": {f"open.{allocation.token}": ""}},
            return_document=ReturnDocument.AFTER,
        )
        return horizon_of(doc)

    async def fill_and_release(self, allocation: Allocation) -> None:
        """Give up ``allocation`` (its inserts failed): fill its free seqs with holes, then close it."""
        await self._fill_holes(allocation.lo, allocation.hi)
        await self.release(allocation)
        self.in_flight.discard(allocation)

    async def horizon(self) -> int:
        """The read horizon; abandons open ranges whose lease expired first (see the module docstring)."""
        doc = await self._counters.find_one({"_id": COUNTER_ID})
        if doc is None:
            return 0
        expired = self._expired(doc)
        if not expired:
            return horizon_of(doc)
        for token, entry in expired.items():
            await self._abandon(token, entry)
        return horizon_of(await self._counters.find_one({"_id": COUNTER_ID}))

    def _expired(self, doc: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
        now = now_ms()
        return {
            token: entry
            for token, entry in (doc.get("open") or {}).items()
            if isinstance(entry, Mapping) and int(entry.get("exp", 0)) <= now
        }

    async def _abandon(self, token: str, entry: Mapping[str, Any]) -> None:
        lo, hi = int(entry["lo"]), int(entry["hi"])
        log.warning(
            "MongoDB store: seq allocation %d..%d was not released within its lease (its writer crashed "
            "or stalled); filling its free seqs with holes",
            lo,
            hi,
        )
        await self._fill_holes(lo, hi)
        await self._counters.update_one(
            {"_id": COUNTER_ID, f"open.{token}": {"$exists": True}}, {"$unset": {f"open.{token}": ""}}
        )

    async def _fill_holes(self, lo: int, hi: int) -> None:
        holes = [{"_id": Int64(seq), "seq": Int64(seq), "hole": True} for seq in range(lo, hi + 1)]
        if not holes:
            return
        try:
            await self._events.insert_many(holes, ordered=False)
        except BulkWriteError as exc:
            # Duplicate keys: the seq was taken by a real event (or by another reader's hole). Fine.
            others = [e for e in exc.details.get("writeErrors", []) if e.get("code") != 11000]
            if others:
                raise
