"""The MongoDB store: ``mongodb://user:password@host:port/dbname?replicaSet=rs0``.

pymongo's ``AsyncMongoClient`` (not Motor). The database is the URL path (default ``outboxhub``); the
store creates its collections and indexes, every name prefixed (``prefix``, default ``outboxhub_``):
``events``, ``topics``, ``counters``, ``groups``, ``pending``. Several hub processes may share one database
(``docs/stores.md``); nothing here needs multi-document transactions, so a standalone ``mongod``
works as well as a replica set (which adds change-stream wake-ups).

Design:

* **Gap-safe reads, not commit-ordered seqs.** Seqs are allocated per group-commit batch from one counter
  document (a compare-and-set that also records the open range, ``seq.py``); two processes insert
  their batches concurrently, so seq order is not commit order. Readers are made gap-safe instead: every
  read first takes the *horizon* (the lowest open range's ``lo - 1``, else the last allocated seq) and
  reads only ``seq <= horizon``, a prefix of the log in which every event has committed. We chose this
  over commit-ordered seqs because assigning seqs in commit order needs the allocation and the inserts in
  one transaction holding the counter (replica sets only, and MongoDB aborts the competing transaction
  with a write conflict instead of queueing it); the horizon works on every deployment and costs readers
  one primary-key read. Its price: a writer that dies with an open range holds every reader back until
  the range's lease (``lease_ms``, default 15 s) expires; then readers fill the range's free seqs with hole
  documents, which also fences a writer that was only stalled (its late inserts hit the unique ``seq``
  index and are re-allocated above the horizon). Readers and writers must therefore use the primary
  (the default read preference) and clocks that agree to well within the lease.
* **Group commit.** One writer task per store (``groupcommit.GroupCommitWriter``) stages everything
  queued: check which ids exist (duplicates answer with their original seq), register new topics,
  allocate, ``insert_many(ordered=False)``; it confirms each publish after the range is released. A
  duplicate-key error (E11000) on ``_id`` from another process's concurrent insert becomes the duplicate
  result with the original seq. A batch is not atomic: if the process dies mid-insert, some of its
  events are stored and the publishers, never confirmed, publish them again (idempotent by id).
* **Pattern scans** resolve the pattern against the ``topics`` collection and read by the
  ``(topic, seq)`` index (``events.py``).
* **Groups** (``groups.py``): claims hold a per-group lease lock (one conditional update), the
  redelivery hand-out is a conditional ``update_many`` with a claim token, dead-letters are marked before
  they are published. ``ack``/``nack``/``extend``/``release`` are single conditional updates.
* **Wake-up** (``watch.py``): a change stream on the counter document when the deployment supports
  one (detected by opening it; logged once either way), and in every mode a poll of the counter every
  ``poll_interval_s`` (default 1 s), which also finishes abandoned allocations and half-done dead-letters.
  Commit listeners are called with the horizon, for commits of any process.
* **Connection loss**: operations raise ``StoreUnavailable`` naming the URL (password masked) when no
  server is selectable within ``connect_timeout_s``; pymongo reconnects by itself.

Options (URL query or keyword arguments of ``open_store``, which win): ``prefix``, ``poll_interval_s`` (1),
``connect_timeout_s`` (5), ``max_batch`` (2000 events per group commit), ``lease_ms`` (15000).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ParamSpec, TypeVar

from pymongo import ASCENDING, IndexModel, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure, PyMongoError

from outboxhub.errors import StoreError
from outboxhub.ids import now_ms
from outboxhub.model import (
    Cursor,
    Delivery,
    Event,
    GroupInfo,
    Lag,
    NewEvent,
    PublishResult,
    StartPosition,
    TopicInfo,
)
from outboxhub.store.backend import StoreBackend
from outboxhub.store.base import EventRef
from outboxhub.store.codec import Prepared, prepare
from outboxhub.store.groupcommit import GroupCommitWriter
from outboxhub.store.lifecycle import ClaimRequest, ExtendRequest, NackRequest
from outboxhub.store.mongo.conn import MongoSettings, make_client, parse_url, translate
from outboxhub.store.mongo.events import EventLog, Staged
from outboxhub.store.mongo.groups import GroupOps
from outboxhub.store.mongo.seq import Allocation, SeqCounter, horizon_of
from outboxhub.store.mongo.watch import Watcher, WatchMode
from outboxhub.topics import compile_pattern

__all__ = ["MongoStore", "open_store"]

_log = logging.getLogger("outboxhub.store.mongo.store")

_T = TypeVar("_T")
_P = ParamSpec("_P")

Doc = dict[str, Any]

_INDEXES: dict[str, list[IndexModel]] = {
    "events": [
        IndexModel([("seq", ASCENDING)], unique=True),
        # ids are unique per topic; sparse: hole documents (no id, no topic) stay out of it
        IndexModel([("id", ASCENDING), ("topic", ASCENDING)], unique=True, sparse=True),
        IndexModel([("topic", ASCENDING), ("seq", ASCENDING)]),
        IndexModel([("topic", ASCENDING), ("key", ASCENDING), ("seq", ASCENDING)]),
    ],
    "groups": [IndexModel([("pattern", ASCENDING), ("name", ASCENDING)], unique=True)],
    "pending": [
        IndexModel([("gid", ASCENDING), ("seq", ASCENDING)]),
        IndexModel([("gid", ASCENDING), ("event_id", ASCENDING)]),
        IndexModel([("gid", ASCENDING), ("deadline", ASCENDING)]),
        IndexModel([("gid", ASCENDING), ("member", ASCENDING)]),
        IndexModel([("gid", ASCENDING), ("key", ASCENDING), ("seq", ASCENDING)]),
        IndexModel([("dl", ASCENDING)], sparse=True),
    ],
}


async def open_store(url: str, **options: Any) -> MongoStore:
    """Open the MongoDB store at ``url``, creating its collections and indexes as needed."""
    return await MongoStore.open(url, **options)


async def create_indexes(collection: AsyncCollection[Doc], models: list[IndexModel]) -> None:
    """Create ``models`` on ``collection``; an index that exists under another name is kept as it is."""
    try:
        await collection.create_indexes(models)
    except OperationFailure as exc:
        if exc.code not in (85, 86):  # IndexOptionsConflict, IndexKeySpecsConflict
            raise
        for model in models:  # one by one, keeping the ones that exist in another form
            try:
                await collection.create_indexes([model])
            except OperationFailure as one:
                if one.code not in (85, 86):
                    raise
                _log.warning(
                    "%s: keeping the existing index %s (%s)", collection.full_name, model.document, one
                )


SCHEMA_VERSION = 2
"""The layout version, kept in the counters collection as ``{_id: "schema", v: <version>}``. Version 2
(issue #14): event ids unique per topic, events keyed by seq with the event id in ``id``."""


async def migrate(events: AsyncCollection[Doc], counters: AsyncCollection[Doc]) -> int:
    """Bring the collections to ``SCHEMA_VERSION``; return the version found. Idempotent, so two processes
    may run it at once; stop hubs of an older version first (they would write the old layout).

    1 -> 2: copy each event's ``_id`` (its id) to ``id``. The old ``_id`` values stay (strings, never equal to
    a new event's Int64 ``_id``); the unique ``(id, topic)`` index is created after this step."""
    doc = await counters.find_one({"_id": "schema"})
    found = 1 if doc is None else int(doc.get("v", 1))
    if found > SCHEMA_VERSION:
        raise StoreError(
            f"the MongoDB layout is at version {found}, newer than this outboxhub supports "
            f"({SCHEMA_VERSION}); upgrade outboxhub"
        )
    if found < 2:
        batch: list[UpdateOne] = []
        async for old in events.find({"topic": {"$exists": True}, "id": {"$exists": False}}, {"_id": 1}):
            batch.append(UpdateOne({"_id": old["_id"]}, {"$set": {"id": old["_id"]}}))
            if len(batch) >= 1000:
                await events.bulk_write(batch, ordered=False)
                batch = []
        if batch:
            await events.bulk_write(batch, ordered=False)
    if found != SCHEMA_VERSION:
        await counters.update_one({"_id": "schema"}, {"$set": {"v": SCHEMA_VERSION}}, upsert=True)
    return found


def _covers(allocations: Sequence[Allocation], lo: int, hi: int) -> bool:
    """Whether the seqs ``lo..hi`` all lie in ``allocations``."""
    for allocation in sorted(allocations, key=lambda a: a.lo):
        if allocation.lo > lo:
            return False
        lo = max(lo, allocation.hi + 1)
        if lo > hi:
            return True
    return lo > hi


class MongoStore(StoreBackend):
    """The ``Store`` protocol over a MongoDB database. Open with ``await MongoStore.open(url)``."""

    label = "MongoDB store"

    def __init__(self, settings: MongoSettings) -> None:
        super().__init__(settings.url, newer_only=True)
        self._settings = settings
        self._client = make_client(settings)
        self.db: AsyncDatabase[Doc] = self._client[settings.database]
        p = settings.prefix
        self._events = self.db[f"{p}events"]
        self._topics = self.db[f"{p}topics"]
        self._counters = self.db[f"{p}counters"]
        self._groups_coll = self.db[f"{p}groups"]
        self._pending = self.db[f"{p}pending"]
        self._counter = SeqCounter(self._counters, self._events, lease_ms=settings.lease_ms)
        self._log_ = EventLog(self._events, self._topics, self._counter, on_horizon=self._local_commit)
        self._groups = GroupOps(
            self._groups_coll, self._pending, self._log_, self._publish_events, lease_ms=settings.lease_ms
        )
        self._writer = GroupCommitWriter(self._stage, max_batch=settings.max_batch)
        self._watcher = Watcher(
            self._counters,
            [{"$match": {"operationType": {"$in": ["insert", "update", "replace"]}}}],
            self._on_counter_change,
            label=f"MongoDB store {self._url}",
            full_document="updateLookup",
        )
        self._poll_now = asyncio.Event()
        self._poller: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, url: str, **options: Any) -> MongoStore:
        """Connect, create collections, indexes and the counter, start the watcher."""
        store = cls(parse_url(url, options))
        try:
            await store.db.command("ping")
            collections = {
                "events": store._events,
                "groups": store._groups_coll,
                "pending": store._pending,
            }
            await migrate(store._events, store._counters)
            for name, models in _INDEXES.items():
                await create_indexes(collections[name], models)
            await store._counter.create()
            store._commits.last = await store._counter.horizon()
        except PyMongoError as exc:
            await store._client.close()
            raise translate(exc, store._url) from exc
        store._watcher.start()
        store._poller = asyncio.get_running_loop().create_task(store._poll(), name="outboxhub-mongo-poll")
        return store

    # -- lifecycle ----------------------------------------------------------------------------------------

    @property
    def settings(self) -> MongoSettings:
        return self._settings

    @property
    def watch_mode(self) -> WatchMode:
        """How other processes' commits are heard: ``change stream`` or ``polling`` (first ``starting``)."""
        return self._watcher.mode

    async def wait_watch_detected(self) -> WatchMode:
        """Wait until the wake-up mode is known; return it."""
        await self._watcher.detected.wait()
        return self._watcher.mode

    async def _shutdown(self) -> None:
        try:
            await self._writer.close()
        finally:
            await self._watcher.close()
            if self._poller is not None:
                self._poller.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._poller
            await self._client.close()

    async def ping(self) -> None:
        self._check_open()
        await self._run(self.db.command, "ping")

    def _local_commit(self, horizon: int, allocations: Sequence[Allocation], topics: frozenset[str]) -> None:
        """This store's batch is released: name its topics when every seq newly below the horizon is one of
        its allocations; otherwise other processes' events became visible too (report None: wake all)."""
        last = self._commits.last
        if horizon > last and not _covers(allocations, last + 1, horizon):
            self._committed(horizon)
        else:
            self._committed(horizon, topics)

    def _on_counter_change(self, change: Doc) -> None:
        doc = change.get("fullDocument")
        if isinstance(doc, dict):
            self._counter_moved(horizon_of(doc))
        else:
            self._poll_now.set()

    def _counter_moved(self, horizon: int) -> None:
        """A horizon read from the counter (change stream or poll), with no topics: every group is woken,
        unless every seq it newly shows is this store's own, released but not reported yet: its commit
        reports them a moment later with their topics (``_local_commit``)."""
        if not _covers(list(self._counter.in_flight), self._commits.last + 1, horizon):
            self._committed(horizon)

    async def _poll(self) -> None:
        interval = self._settings.poll_interval_s
        rounds_per_lease = max(1, int(self._settings.lease_ms / 1000 / interval))
        rounds = 0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poll_now.wait(), interval)
            self._poll_now.clear()
            rounds += 1
            try:
                self._counter_moved(await self._counter.horizon())
                if rounds % rounds_per_lease == 0:
                    await self._groups.finish_dead_letters()
            except PyMongoError as exc:
                _log.debug("MongoDB store %s: poll failed: %s", self._url, exc)
            except Exception:
                _log.exception("MongoDB store %s: poll failed", self._url)

    # -- plumbing -----------------------------------------------------------------------------------------

    async def _run(self, fn: Callable[_P, Awaitable[_T]], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Run ``fn(...)``, translating pymongo errors (pymongo retries reads and writes once itself)."""
        try:
            return await fn(*args, **kwargs)
        except PyMongoError as exc:
            raise translate(exc, self._url) from exc

    async def _stage(self, rows: Sequence[Prepared]) -> _TranslatedStaged:
        staged = await self._run(self._log_.stage, rows)
        return _TranslatedStaged(staged, self._url)

    async def _publish_events(self, events_: Sequence[NewEvent]) -> list[PublishResult]:
        """Append events (dead letters) without the closed check: maintenance may run while closing."""
        return await self._writer.submit([prepare(event) for event in events_])

    # -- events -------------------------------------------------------------------------------------------

    async def _append(self, rows: list[Prepared]) -> list[PublishResult]:
        return await self._writer.submit(rows)

    async def get_event(self, event_id: str, topic: str | None = None) -> Event | None:
        self._check_open()
        return await self._run(self._log_.get_event, event_id, topic)

    async def _scan(
        self, pattern: str, after_seq: int, since_ts: int | None, until_ts: int | None, limit: int
    ) -> list[Event]:
        return await self._run(
            self._log_.scan, pattern, after_seq=after_seq, since_ts=since_ts, until_ts=until_ts, limit=limit
        )

    async def _latest_by_key(self, topic: str, keys: list[str]) -> dict[str, Event]:
        return await self._run(self._log_.latest_by_key, topic, keys)

    async def tail(self, pattern: str) -> Event | None:
        self._check_open()
        return await self._run(self._log_.tail, pattern)

    async def count(self, pattern: str, *, after_seq: int = 0) -> int:
        self._check_open()
        return await self._run(self._log_.count, pattern, after_seq=after_seq)

    async def last_seq(self) -> int:
        self._check_open()
        return await self._run(self._log_.last_seq)

    async def topics(self) -> list[TopicInfo]:
        self._check_open()
        return await self._run(self._log_.topic_infos)

    # -- consumer groups ----------------------------------------------------------------------------------

    async def ensure_group(self, pattern: str, group: str, start: StartPosition) -> GroupInfo:
        self._check_open()
        compile_pattern(pattern)  # TopicError for an invalid pattern, before anything is written
        return await self._run(self._groups.ensure_group, pattern, group, start, now_ms())

    async def groups(self) -> list[GroupInfo]:
        self._check_open()
        return await self._run(self._groups.groups_info)

    async def _claim(self, request: ClaimRequest) -> list[Delivery]:
        return await self._run(self._groups.claim, request)

    async def _ack(self, pattern: str, group: str, refs: list[EventRef], member: str | None) -> int:
        return await self._run(self._groups.ack, pattern, group, refs, member)

    async def _nack(self, request: NackRequest) -> bool:
        return await self._run(self._groups.nack, request)

    async def _extend(self, request: ExtendRequest) -> bool:
        return await self._run(self._groups.extend, request)

    async def release(self, pattern: str, group: str, member: str) -> int:
        self._check_open()
        return await self._run(self._groups.release, pattern, group, member)

    async def reset_group(self, pattern: str, group: str, to: StartPosition) -> GroupInfo | None:
        self._check_open()
        return await self._run(self._groups.reset_group, pattern, group, to)

    async def next_deadline(self, pattern: str, group: str) -> int | None:
        self._check_open()
        return await self._run(self._groups.next_deadline, pattern, group)

    async def cursor(self, pattern: str, group: str) -> Cursor | None:
        self._check_open()
        return await self._run(self._groups.cursor, pattern, group)

    async def lag(self, pattern: str, group: str) -> Lag | None:
        self._check_open()
        return await self._run(self._groups.lag, pattern, group)


class _TranslatedStaged:
    """A staged batch whose commit raises ``StoreError``s, as the group-commit writer expects."""

    __slots__ = ("_staged", "_url", "results")

    def __init__(self, staged: Staged, url: str) -> None:
        self._staged = staged
        self._url = url
        self.results = staged.results

    async def commit(self) -> None:
        try:
            await self._staged.commit()
        except PyMongoError as exc:
            raise translate(exc, self._url) from exc
