"""``MongoOutbox``: the drainer's ``OutboxStore`` over one MongoDB collection.

Records in the original shape (:mod:`outboxhub.outbox.mongo.records`) are drained as they are.

Draining: a claim is three round trips: candidate ids (claimable, oldest first), one ``update_many``
repeating the eligibility filter and setting a fresh ``claim_token``, then a find by that token. Two
drainers racing for the same candidates split them (each document is updated once); a drainer that lost
every candidate looks again. With ``ordered_by_key`` the candidates are filtered against blocking records
of their keys, and after the update each claimed keyed record is checked again: if an unsent earlier
record of its key belongs to nobody in this batch (another drainer claimed it meanwhile), the record is
given back at once. Marks are fenced by the claim token, as on SQL.

Wake-up: a change stream on the collection (inserts, and updates that make a record pending) when the
deployment supports one, detected by opening it and logged once; polling of the pending count every
``poll_interval_ms`` otherwise (and every second as a safety net under a change stream).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from bson.int64 import Int64
from pymongo import ASCENDING, UpdateMany, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.mongo_client import AsyncMongoClient
from pymongo.errors import PyMongoError

from outboxhub.errors import OutboxClosed, StoreError, StoreURLError
from outboxhub.ids import new_id
from outboxhub.outbox.base import OutboxBackend, StatsRow, check_positive, readable, take_wake
from outboxhub.outbox.model import Failure, OutboxRecord
from outboxhub.outbox.mongo.records import Doc, decode_record, id_values, to_ms
from outboxhub.outbox.mongo.schema import collection_name, outbox_indexes
from outboxhub.store.base import mask_url
from outboxhub.store.mongo.conn import translate
from outboxhub.store.mongo.watch import Watcher
from outboxhub.urls import join_url

__all__ = ["DEFAULT_POLL_INTERVAL_MS", "MongoOutbox", "open_mongo_outbox"]

DEFAULT_POLL_INTERVAL_MS = 100
_SAFETY_POLL_MS = 1_000
_DEAD = ["dead", "error"]  # "error" is the terminal status of the original shape
_ORDER = [("ord", ASCENDING), ("ts", ASCENDING), ("_id", ASCENDING)]
_CLEAR_CLAIM = {"claimed_by": "", "claim_token": "", "lease_until": ""}
_ORDERED_PAGES = 10


def _position(doc: Mapping[str, Any]) -> tuple[int, float, str]:
    """The outbox order of a document in Python, as ``_ORDER`` sorts it (missing ``ord`` first)."""
    ord_ = doc.get("ord")
    ts = doc.get("ts")
    return (
        -1 if ord_ is None else int(ord_),
        float(ts) if isinstance(ts, int | float) else 0.0,
        str(doc.get("_id")),
    )


def _claimable(now: int) -> Doc:
    # Records without available_at (in the original shape) get one from _backfill before each claim.
    return {"status": "pending", "available_at": {"$lte": now}}


async def open_mongo_outbox(
    url: str, *, table: str = "outbox", poll_interval_ms: int | None = None
) -> MongoOutbox:
    """Open the outbox collection ``table`` in the database named by ``url`` (what ``open_outbox`` calls)."""
    return await MongoOutbox.open(url, table=table, poll_interval_ms=poll_interval_ms)


class MongoOutbox(OutboxBackend):
    """``OutboxStore`` over one MongoDB collection. Create with ``await MongoOutbox.open(url)``."""

    def __init__(
        self, client: AsyncMongoClient[Doc], url: str, database: str, *, table: str, poll_interval_ms: int
    ) -> None:
        self._client = client
        self._url = mask_url(url)
        self._table = table
        self._coll: AsyncCollection[Doc] = client[database][table]
        self._poll_interval_s = poll_interval_ms / 1000
        self._wake = asyncio.Event()
        self._watcher: Watcher | None = None
        self._poller: asyncio.Task[None] | None = None
        self._closed = False

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        table: str = "outbox",
        poll_interval_ms: int | None = None,
        connect_timeout_s: float = 10.0,
    ) -> MongoOutbox:
        """Connect to the database named by ``url`` (``mongodb://host:27017/appdb?replicaSet=rs0``).

        ``poll_interval_ms`` (also a URL query parameter) is the wake-up poll without change streams."""
        collection_name(table)
        shown = mask_url(url)
        try:
            parts = urlsplit(url)
            query = parse_qsl(parts.query, keep_blank_values=True)
        except ValueError as exc:
            raise StoreURLError(f"outbox URL {shown} cannot be parsed: {exc}") from exc
        rest = [(k, v) for k, v in query if k != "poll_interval_ms"]
        raw_poll = dict(query).get("poll_interval_ms")
        if poll_interval_ms is None:
            if raw_poll is not None and (not raw_poll.isdigit() or int(raw_poll) <= 0):
                raise StoreURLError(f"outbox URL {shown}: poll_interval_ms must be a positive integer")
            poll_interval_ms = int(raw_poll) if raw_poll is not None else DEFAULT_POLL_INTERVAL_MS
        check_positive(poll_interval_ms, name="poll_interval_ms")
        database = parts.path.lstrip("/")
        if not database:
            raise StoreURLError(
                f"outbox URL {shown} must name the application's database: mongodb://host:27017/appdb"
            )
        keys = {k.lower() for k, _ in rest}
        for name in ("serverSelectionTimeoutMS", "connectTimeoutMS"):
            if name.lower() not in keys:
                rest.append((name, str(int(connect_timeout_s * 1000))))
        try:
            client: AsyncMongoClient[Doc] = AsyncMongoClient(
                join_url(parts._replace(query=urlencode(rest))), connect=False
            )
        except (PyMongoError, ValueError, TypeError) as exc:
            raise StoreURLError(f"outbox URL {shown} is not usable: {exc}") from exc
        outbox = cls(client, url, database, table=table, poll_interval_ms=poll_interval_ms)
        try:
            await client[database].command("ping")
        except PyMongoError as exc:
            await client.close()
            raise translate(exc, shown) from exc
        return outbox

    @property
    def url(self) -> str:
        return self._url

    @property
    def table(self) -> str:
        return self._table

    @property
    def collection(self) -> AsyncCollection[Doc]:
        """The outbox collection (for tests and operators)."""
        return self._coll

    @property
    def watch_mode(self) -> str:
        """``change stream``, ``polling``, or ``starting`` (``wait`` was not called yet)."""
        return "starting" if self._watcher is None else self._watcher.mode

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._watcher is not None:
            await self._watcher.close()
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        await self._client.close()

    async def _run(self, coro: Any) -> Any:
        if self._closed:
            coro.close()
            raise OutboxClosed("MongoOutbox is closed")
        try:
            return await coro
        except PyMongoError as exc:
            raise translate(exc, self._url) from exc

    async def ensure_schema(self) -> None:
        """Create the indexes (the collection is created by MongoDB on first write). Indexes the original
        TypeScript outbox created (``{status: 1, lease_until: 1}``, ``{ts: 1}``) are the same ones, under
        the same names. The indexes are those of :func:`outbox_indexes`."""
        from outboxhub.store.mongo.store import create_indexes

        await self._run(create_indexes(self._coll, outbox_indexes()))

    # -- claims -------------------------------------------------------------------------------------------

    async def _claim_batch(
        self, limit: int, lease_ms: int, worker_id: str, ordered: bool, now: int
    ) -> list[OutboxRecord]:
        result: list[OutboxRecord] = await self._run(self._claim(limit, lease_ms, worker_id, ordered, now))
        return result

    async def _backfill(self) -> None:
        """Give records written without ``available_at`` (the original shape) one: available since ever.

        A plain ``$or`` on a missing field would do in a query, but the nx-27017 stand-in drops the other
        conditions of an update filter that has a top-level ``$or`` (docs/mongodb.md): normalising the
        record keeps every claim filter free of ``$or``, which is right on MongoDB too."""
        await self._coll.update_many(
            {"status": "pending", "available_at": None}, {"$set": {"available_at": Int64(0)}}
        )

    async def _claim(
        self, limit: int, lease_ms: int, worker_id: str, ordered: bool, now: int
    ) -> list[OutboxRecord]:
        await self._backfill()
        for _ in range(3):
            if ordered:
                candidates = await self._ordered_candidates(limit, now)
            else:
                docs = await self._coll.find(_claimable(now), {"_id": 1}, sort=_ORDER, limit=limit).to_list()
                candidates = [doc["_id"] for doc in docs]
            if not candidates:
                return []
            token = new_id()
            # The eligibility filter again: a candidate another drainer claimed meanwhile is not updated.
            await self._coll.update_many(
                {"_id": {"$in": candidates}, **_claimable(now)},
                {
                    "$set": {
                        "status": "claimed",
                        "claimed_by": worker_id,
                        "claim_token": token,
                        "lease_until": Int64(now + lease_ms),
                    },
                    "$inc": {"attempts": 1},
                },
            )
            docs = await self._coll.find({"claim_token": token}, sort=_ORDER).to_list()
            if ordered and docs:
                docs = await self._verify_order(docs, token)
            if docs:
                return await self._decode_claimed(docs, token)
        return []  # every candidate went to other drainers three times: the next pass will try again

    async def _ordered_candidates(self, limit: int, now: int) -> list[Any]:
        """Claimable records, oldest first, none behind an unsent record of its key that is not claimable
        now (claimed, dead, or pending in backoff). Pages skip the keys found blocked, so a key blocked by
        a dead record cannot starve the others."""
        chosen: list[Any] = []
        blocked: set[str] = set()
        page = max(limit, 100)
        for _ in range(_ORDERED_PAGES):
            query = _claimable(now)
            if chosen:
                query["_id"] = {"$nin": chosen}
            if blocked:
                query["key"] = {"$nin": sorted(blocked)}
            docs = await self._coll.find(
                query, {"_id": 1, "key": 1, "ts": 1, "ord": 1}, sort=_ORDER, limit=page
            ).to_list()
            if not docs:
                break
            keys = list({d["key"] for d in docs if isinstance(d.get("key"), str)})
            first_blocker: dict[str, tuple[int, float, str]] = {}
            if keys:
                fields = {"_id": 1, "key": 1, "ts": 1, "ord": 1}
                unsent = {"key": {"$in": keys}, "status": {"$in": ["claimed", *_DEAD]}}
                waiting = {"key": {"$in": keys}, "status": "pending", "available_at": {"$gt": now}}
                for query_ in (unsent, waiting):
                    async for blocker in self._coll.find(query_, fields):
                        position = _position(blocker)
                        known = first_blocker.get(blocker["key"])
                        if known is None or position < known:
                            first_blocker[blocker["key"]] = position
            for doc in docs:
                key = doc.get("key")
                if isinstance(key, str) and key in first_blocker and first_blocker[key] < _position(doc):
                    blocked.add(key)
                    continue
                chosen.append(doc["_id"])
                if len(chosen) == limit:
                    return chosen
            if len(docs) < page:
                break
        return chosen

    async def _verify_order(self, docs: list[Doc], token: str) -> list[Doc]:
        """Give back each claimed keyed record behind an unsent record of its key outside this batch."""
        keys = list({d["key"] for d in docs if isinstance(d.get("key"), str)})
        if not keys:
            return docs
        earliest: dict[str, tuple[int, float, str]] = {}
        others = self._coll.find(
            {"key": {"$in": keys}, "status": {"$ne": "sent"}, "claim_token": {"$ne": token}},
            {"_id": 1, "key": 1, "ts": 1, "ord": 1},
        )
        async for other in others:
            position = _position(other)
            known = earliest.get(other["key"])
            if known is None or position < known:
                earliest[other["key"]] = position
        give_back = [
            d["_id"]
            for d in docs
            if isinstance(d.get("key"), str) and d["key"] in earliest and earliest[d["key"]] < _position(d)
        ]
        if not give_back:
            return docs
        await self._coll.update_many(
            {"_id": {"$in": give_back}, "claim_token": token, "status": "claimed"},
            {"$set": {"status": "pending"}, "$inc": {"attempts": -1}, "$unset": _CLEAR_CLAIM},
        )
        returned = set(map(str, give_back))
        return [d for d in docs if str(d["_id"]) not in returned]

    async def _decode_claimed(self, docs: list[Doc], token: str) -> list[OutboxRecord]:
        records: list[OutboxRecord] = []
        bad: list[tuple[Any, str]] = []
        for doc in docs:
            decoded = decode_record(doc)
            if isinstance(decoded, str):
                bad.append((doc["_id"], decoded))
            else:
                records.append(decoded)
        if bad:
            await self._coll.bulk_write(
                [
                    UpdateOne(
                        {"_id": raw_id, "claim_token": token},
                        {"$set": {"status": "dead", "last_err": error}, "$unset": _CLEAR_CLAIM},
                    )
                    for raw_id, error in bad
                ],
                ordered=False,
            )
        return records

    # -- outcomes -----------------------------------------------------------------------------------------

    @staticmethod
    def _by_token(records: Sequence[OutboxRecord]) -> dict[str | None, list[Any]]:
        groups: dict[str | None, list[Any]] = defaultdict(list)
        for record in records:
            groups[record.claim_token].extend(id_values(record.id))
        return groups

    @staticmethod
    def _still_claimed(ids: list[Any], token: str) -> Doc:
        """The filter that fences an update to the records of ``ids`` still claimed under ``token``."""
        return {"_id": {"$in": ids}, "claim_token": token, "status": "claimed"}

    async def _bulk_update(self, ops: Sequence[UpdateOne | UpdateMany]) -> int:
        """Run ``ops`` unordered in one round trip (none: no round trip); how many records they changed."""
        if not ops:
            return 0
        result = await self._run(self._coll.bulk_write(list(ops), ordered=False))
        return int(result.modified_count)

    async def _update_by_token(self, records: Sequence[OutboxRecord], update: Doc) -> int:
        return await self._bulk_update(
            [
                UpdateMany(self._still_claimed(ids, token), update)
                for token, ids in self._by_token(records).items()
                if token is not None
            ]
        )

    async def _mark_sent(self, records: Sequence[OutboxRecord], now: int) -> int:
        return await self._update_by_token(
            records, {"$set": {"status": "sent", "sent_at": Int64(now)}, "$unset": _CLEAR_CLAIM}
        )

    async def _mark_failed(self, failures: Sequence[Failure], now: int) -> int:
        ops: list[UpdateOne] = []
        for failure in failures:
            record = failure.record
            if record.claim_token is None:
                continue
            values: Doc = {"last_err": failure.error}
            if failure.verdict.dead:
                values["status"] = "dead"
            else:
                values.update(status="pending", available_at=Int64(now + failure.verdict.delay_ms))
            ops.append(
                UpdateOne(
                    self._still_claimed(id_values(record.id), record.claim_token),
                    {"$set": values, "$unset": _CLEAR_CLAIM},
                )
            )
        return await self._bulk_update(ops)

    async def _release(self, records: Sequence[OutboxRecord], available_at: int) -> int:
        return await self._update_by_token(
            records,
            {
                "$set": {"status": "pending", "available_at": Int64(available_at)},
                "$inc": {"attempts": -1},
                "$unset": _CLEAR_CLAIM,
            },
        )

    async def _requeue_expired(self, now: int) -> int:
        result = await self._run(
            self._coll.update_many(
                {"status": "claimed", "lease_until": {"$lt": now}},
                {"$set": {"status": "pending"}, "$unset": _CLEAR_CLAIM},
            )
        )
        return int(result.modified_count)

    # -- operators ----------------------------------------------------------------------------------------

    async def _retry(self, ids: list[str] | None, now: int) -> int:
        query: Doc = {"status": {"$in": _DEAD}}
        if ids is not None:
            query["_id"] = {"$in": [v for i in ids for v in id_values(i)]}
        result = await self._run(
            self._coll.update_many(
                query, {"$set": {"status": "pending", "attempts": 0, "available_at": Int64(now)}}
            )
        )
        if result.modified_count:
            self._wake.set()
        return int(result.modified_count)

    async def _purge(self, ids: list[str] | None, created_by: int | None) -> int:
        query: Doc = {"status": {"$in": _DEAD}}
        if ids is not None:
            query["_id"] = {"$in": [v for i in ids for v in id_values(i)]}
        if created_by is not None:
            query["ts"] = {"$lte": created_by}
        result = await self._run(self._coll.delete_many(query))
        return int(result.deleted_count)

    async def _stats(self, now: int) -> StatsRow:
        coll = self._coll
        pending, claimed, dead, oldest, retry_doc = await self._run(
            asyncio.gather(
                coll.count_documents({"status": "pending"}),
                coll.count_documents({"status": "claimed"}),
                coll.count_documents({"status": {"$in": _DEAD}}),
                coll.find_one({"status": "pending"}, {"ts": 1}, sort=[("ts", ASCENDING)]),
                coll.find_one(
                    {"status": "pending", "available_at": {"$gt": now}},
                    {"available_at": 1},
                    sort=[("available_at", ASCENDING)],
                ),
            )
        )
        return StatsRow(
            pending,
            claimed,
            dead,
            None if oldest is None else to_ms(oldest.get("ts")),
            None if retry_doc is None else to_ms(retry_doc["available_at"]),
        )

    async def _list_dead(self, limit: int) -> list[OutboxRecord]:
        docs = await self._run(
            self._coll.find({"status": {"$in": _DEAD}}, sort=_ORDER, limit=limit).to_list()
        )
        return readable(decode_record(doc, lenient=True) for doc in docs)

    async def get(self, record_id: str) -> OutboxRecord | None:
        doc = await self._run(self._coll.find_one({"_id": {"$in": id_values(record_id)}}))
        if doc is None:
            return None
        record = decode_record(doc, lenient=True)
        return record if isinstance(record, OutboxRecord) else None

    async def _delete_sent(self, cutoff: int, batch_size: int) -> int:
        # Sent records in the original shape have no sent_at: their ts stands in for it.
        total = 0
        for query in (
            {"status": "sent", "sent_at": {"$lt": cutoff}},
            {"status": "sent", "sent_at": None, "ts": {"$lt": cutoff}},
        ):
            while True:
                docs = await self._run(self._coll.find(query, {"_id": 1}, limit=batch_size).to_list())
                if not docs:
                    break
                result = await self._run(
                    self._coll.delete_many({"_id": {"$in": [d["_id"] for d in docs]}, "status": "sent"})
                )
                total += int(result.deleted_count)
                if len(docs) < batch_size or not result.deleted_count:
                    break
        return total

    # -- wake-up ------------------------------------------------------------------------------------------

    def _on_change(self, change: Doc) -> None:
        # Updates matter when they make a record pending (retry, release, failure with backoff). The
        # filter is applied here, not in the pipeline: the nx-27017 stand-in's change streams deliver
        # nothing for a $match with $or, and send no updateDescription (then every update wakes us).
        if change.get("operationType") == "update":
            description = change.get("updateDescription")
            if isinstance(description, Mapping):
                fields = description.get("updatedFields") or {}
                if fields.get("status") != "pending":
                    return
        self._wake.set()

    async def _poll(self) -> None:
        last: int | None = None
        while True:
            mode = self._watcher.mode if self._watcher is not None else "polling"
            interval = _SAFETY_POLL_MS / 1000 if mode == "change stream" else self._poll_interval_s
            try:
                count = await self._coll.count_documents({"status": "pending"})
            except PyMongoError:
                count = None
            if count is not None:
                if last is not None and count != last:
                    self._wake.set()
                last = count
            await asyncio.sleep(interval)

    async def wait(self, timeout_s: float) -> bool:
        if self._closed:
            raise StoreError(f"MongoDB outbox {self._url} is closed")
        if self._watcher is None:
            self._watcher = Watcher(
                self._coll,
                [{"$match": {"operationType": {"$in": ["insert", "replace", "update"]}}}],
                self._on_change,
                label=f"MongoDB outbox {self._url} ({self._table})",
            )
            self._watcher.start()
            self._poller = asyncio.create_task(self._poll(), name=f"outbox-poll:{self._table}")
            self._wake.set()  # records may have landed before we started watching
        return await take_wake(self._wake, timeout_s)
