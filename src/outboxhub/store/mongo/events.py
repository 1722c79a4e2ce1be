"""The event log of the MongoDB store: document layout, appends (the group-commit stage) and every read.

Event documents::

    {_id: <seq>, id: <event id>, seq, topic, ts, payload, key?, headers?, tags?, caused_by?, sid?}

Event ids are unique per topic (the unique sparse index on ``(id, topic)``), not across the log. Documents
written before that (schema version 1) keep their event id as ``_id``; the migration in ``store.py`` copies
it to ``id``, which every read uses.

``payload`` is stored as native BSON after a round trip through JSON (so a payload reads back exactly as
on the SQL backends: JSON types only). A payload BSON cannot hold exactly (an integer beyond 64 bits, a
key starting with ``$``, containing ``.`` or NUL, nesting deeper than 90) is stored as JSON text in
``payload_json`` instead. Hole documents (``seq.py``) have no ``topic``, so no event query sees them.

Pattern reads resolve the pattern against the small ``topics`` collection first: the topic names are read
(narrowed to the pattern's literal prefix by an ``_id`` range when it has one) and matched in Python by
``outboxhub.topics`` (linear in the topic's length; no regular expression is ever sent to the database,
where a pattern like ``**.a.**.a.**...`` would backtrack for seconds), then read
``{topic: {$in: [...]}, seq: ...}`` by the ``(topic, seq)`` index. Writers register a topic before
allocating seqs for its events, and readers read the horizon before resolving, so every event at or below
the horizon has its topic registered.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import msgspec
from bson.int64 import Int64
from pymongo import UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError

from outboxhub.errors import StoreError
from outboxhub.ids import now_ms
from outboxhub.model import Event, PublishResult, TopicInfo
from outboxhub.store.codec import Prepared
from outboxhub.store.mongo.seq import Allocation, SeqCounter
from outboxhub.store.patterns import matches_every_topic
from outboxhub.topics import compile_pattern

__all__ = ["EventLog", "Staged", "bson_safe", "decode_event", "encode_payload", "event_doc"]

Doc = dict[str, Any]

_MAX_DEPTH = 90
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_decode_json = msgspec.json.Decoder().decode


class _Meta(msgspec.Struct, omit_defaults=True):
    headers: dict[str, str] | None = None
    tags: list[str] | None = None
    caused_by: list[str] | None = None
    sid: str | None = None


_decode_meta = msgspec.json.Decoder(_Meta).decode


def bson_safe(value: Any, depth: int = 0) -> bool:
    """Whether a JSON value (as decoded by msgspec) survives a BSON round trip unchanged."""
    if isinstance(value, bool) or value is None or isinstance(value, str | float):
        return True
    if isinstance(value, int):
        return _INT64_MIN <= value <= _INT64_MAX
    if depth >= _MAX_DEPTH:
        return False
    if isinstance(value, list):
        return all(bson_safe(item, depth + 1) for item in value)
    if isinstance(value, dict):
        return all(
            not k.startswith("$") and "." not in k and "\x00" not in k and bson_safe(v, depth + 1)
            for k, v in value.items()
        )
    return False


def encode_payload(payload_json: bytes | str, doc: Doc) -> None:
    """Put a JSON payload into ``doc``: native ``payload`` when BSON holds it exactly, else the text in
    ``payload_json``."""
    value = _decode_json(payload_json)
    if bson_safe(value):
        doc["payload"] = value
    else:
        doc["payload_json"] = payload_json.decode() if isinstance(payload_json, bytes) else payload_json


def decode_payload(doc: Doc) -> Any:
    """The payload of a document written by ``encode_payload`` (or natively by someone else)."""
    text = doc.get("payload_json")
    if isinstance(text, str):
        return _decode_json(text)
    return plain_ints(doc.get("payload"))


def plain_ints(value: Any) -> Any:
    """``value`` with every ``bson.Int64`` (how pymongo reads a BSON int64, e.g. ``1700000000000``) made a
    plain ``int``: msgspec, and so every client encoder, refuses the subclass."""
    if isinstance(value, dict):
        return {k: plain_ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_ints(v) for v in value]
    if type(value) is Int64:
        return int(value)
    return value


def event_doc(row: Prepared, seq: int) -> Doc:
    """The document of a prepared event (``_codec.prepare``) at ``seq``."""
    event_id, topic, ts, key, payload, meta = row
    doc: Doc = {"_id": Int64(seq), "id": event_id, "seq": Int64(seq), "topic": topic, "ts": Int64(ts)}
    encode_payload(payload, doc)
    if key is not None:
        doc["key"] = key
    if meta is not None:
        m = _decode_meta(meta)
        if m.headers:
            doc["headers"] = m.headers
        if m.tags:
            doc["tags"] = m.tags
        if m.caused_by:
            doc["caused_by"] = m.caused_by
        if m.sid is not None:
            doc["sid"] = m.sid
    return doc


def decode_event(doc: Doc) -> Event:
    """An ``Event`` from a stored document."""
    return Event(
        id=doc["id"],
        topic=doc["topic"],
        seq=int(doc["seq"]),
        ts=int(doc["ts"]),
        payload=decode_payload(doc),
        key=doc.get("key"),
        headers=doc.get("headers") or None,
        tags=doc.get("tags") or None,
        caused_by=doc.get("caused_by") or None,
        sid=doc.get("sid"),
    )


class Staged:
    """A batch inserted under open allocations; ``commit`` releases them (see ``groupcommit.Staged``)."""

    __slots__ = ("_allocations", "_log", "_topics", "results", "top")

    def __init__(
        self,
        log: EventLog,
        allocations: list[Allocation],
        results: list[PublishResult],
        topics: frozenset[str],
    ) -> None:
        self._log = log
        self._allocations = allocations
        self._topics = topics
        self.results = results
        self.top = max((r.seq for r in results if not r.duplicate), default=0)

    async def commit(self) -> None:
        await self._log.commit(self._allocations, self._topics)


class EventLog:
    """The ``events`` and ``topics`` collections plus the seq counter of one store object."""

    def __init__(
        self,
        events: AsyncCollection[Doc],
        topics: AsyncCollection[Doc],
        counter: SeqCounter,
        *,
        on_horizon: Callable[[int, Sequence[Allocation], frozenset[str]], None],
    ) -> None:
        self.events = events
        self.topics = topics
        self.counter = counter
        self._on_horizon = on_horizon
        self._known_topics: set[str] = set()

    # -- appends (run by the group-commit writer) --------------------------------------------------------

    async def stage(self, rows: Sequence[Prepared]) -> Staged:
        """Insert ``rows`` (in order, idempotent by ``(topic, id)``) under fresh allocations, not yet
        released."""
        unique: list[Prepared] = []
        firsts: set[tuple[str, str]] = set()
        for row in rows:
            if (row[0], row[1]) not in firsts:
                firsts.add((row[0], row[1]))
                unique.append(row)
        seq_of: dict[tuple[str, str], int] = {}
        duplicate: set[tuple[str, str]] = set()
        await self._find_stored(firsts, seq_of, duplicate)
        fresh = [row for row in unique if (row[0], row[1]) not in duplicate]
        await self._register_topics({row[1] for row in fresh})
        allocations: list[Allocation] = []
        try:
            while fresh:
                allocation = await self.counter.allocate(len(fresh))
                allocations.append(allocation)
                docs = [event_doc(row, allocation.lo + i) for i, row in enumerate(fresh)]
                fenced = await self._insert(docs, seq_of, duplicate)
                for doc in docs:
                    both = (doc["id"], doc["topic"])
                    if both not in duplicate and both not in fenced:
                        seq_of[both] = int(doc["seq"])
                # Fenced events lost their seqs to an abandoned allocation: allocate again, above it.
                fresh = [row for row in fresh if (row[0], row[1]) in fenced]
        except BaseException:
            for allocation in allocations:
                try:
                    await self.counter.fill_and_release(allocation)
                except Exception:  # the server is gone: the lease expires and readers fill the range
                    break
            raise
        results: list[PublishResult] = []
        seen: set[tuple[str, str]] = set()
        for row in rows:
            both = (row[0], row[1])
            repeated = both in seen
            seen.add(both)
            results.append(
                PublishResult(id=row[0], seq=seq_of[both], duplicate=repeated or both in duplicate)
            )
        topics = frozenset(row[1] for row in unique)
        return Staged(self, allocations, results, topics)

    async def _find_stored(
        self,
        wanted: set[tuple[str, str]],
        seq_of: dict[tuple[str, str], int],
        duplicate: set[tuple[str, str]],
    ) -> None:
        """Record in ``seq_of``/``duplicate`` which ``(id, topic)`` of ``wanted`` are stored already."""
        ids = sorted({event_id for event_id, _ in wanted})
        async for doc in self.events.find({"id": {"$in": ids}}, {"seq": 1, "id": 1, "topic": 1}):
            both = (str(doc["id"]), str(doc.get("topic")))
            if both in wanted:
                seq_of[both] = int(doc["seq"])
                duplicate.add(both)

    async def _insert(
        self, docs: list[Doc], seq_of: dict[tuple[str, str], int], duplicate: set[tuple[str, str]]
    ) -> set[tuple[str, str]]:
        """``insert_many`` (unordered); return the ``(id, topic)`` fenced out by holes. Those that turn out
        to exist already (inserted by another process since the check) become duplicates with their seq."""
        try:
            await self.events.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            other = [e for e in errors if e.get("code") != 11000]
            if other:
                raise StoreError(f"storing events failed: {other[0].get('errmsg')}") from exc
            failed = {(docs[e["index"]]["id"], docs[e["index"]]["topic"]) for e in errors}
            await self._find_stored(failed, seq_of, duplicate)
            return {both for both in failed if both not in duplicate}
        return set()

    async def _register_topics(self, topics: set[str]) -> None:
        new = sorted(topics - self._known_topics)
        if not new:
            return
        now = now_ms()
        ops = [UpdateOne({"_id": t}, {"$setOnInsert": {"created_ts": now}}, upsert=True) for t in new]
        try:
            await self.topics.bulk_write(ops, ordered=False)
        except BulkWriteError as exc:  # concurrent upserts of one new topic: it exists either way
            if any(e.get("code") != 11000 for e in exc.details.get("writeErrors", [])):
                raise
        self._known_topics.update(new)

    async def commit(self, allocations: list[Allocation], topics: frozenset[str]) -> None:
        """Release ``allocations``; report the new horizon with them and the topics their events went to."""
        horizon = 0
        try:
            for allocation in allocations:
                horizon = await self.counter.release(allocation)
            if allocations:
                self._on_horizon(horizon, allocations, topics)
        finally:
            self.counter.in_flight.difference_update(allocations)

    # -- reads ---------------------------------------------------------------------------------------------

    async def topic_query(self, pattern: str) -> Doc | None:
        """The events filter selecting ``pattern``'s topics; None when no topic matches (validates)."""
        matcher = compile_pattern(pattern)
        if matcher.concrete:
            return {"topic": pattern}
        if matches_every_topic(pattern):
            return {"topic": {"$gt": ""}}  # one or more segments: every event (holes have no topic)
        where: Doc = {}
        if matcher.prefix:
            # every match equals the prefix or starts with "prefix." ("/" is the character after ".")
            where = {"_id": {"$gte": matcher.prefix, "$lt": matcher.prefix + "/"}}
        names = [
            name
            async for doc in self.topics.find(where, {"_id": 1})
            if isinstance(name := doc["_id"], str) and matcher.match(name)
        ]
        if not names:
            return None
        return {"topic": names[0]} if len(names) == 1 else {"topic": {"$in": names}}

    async def get_event(self, event_id: str, topic: str | None) -> Event | None:
        """The event ``event_id`` of ``topic`` (ids are unique per topic); without a topic the oldest one."""
        where: Doc = {"id": event_id, "topic": {"$gt": ""} if topic is None else topic}
        doc = await self.events.find_one(where, sort=[("seq", 1)])
        return None if doc is None else decode_event(doc)

    async def scan_docs(
        self,
        where: Doc,
        *,
        after_seq: int,
        horizon: int,
        limit: int,
        since_ts: int | None = None,
        until_ts: int | None = None,
    ) -> list[Doc]:
        if limit <= 0 or after_seq >= horizon:
            return []
        query: Doc = {**where, "seq": {"$gt": after_seq, "$lte": horizon}}
        if since_ts is not None or until_ts is not None:
            ts: Doc = {}
            if since_ts is not None:
                ts["$gte"] = since_ts
            if until_ts is not None:
                ts["$lte"] = until_ts
            query["ts"] = ts
        return await self.events.find(query, sort=[("seq", 1)], limit=limit).to_list()

    async def scan(
        self,
        pattern: str,
        *,
        after_seq: int,
        since_ts: int | None,
        until_ts: int | None,
        limit: int,
    ) -> list[Event]:
        horizon = await self.counter.horizon()
        where = await self.topic_query(pattern)
        if where is None:
            return []
        docs = await self.scan_docs(
            where, after_seq=after_seq, horizon=horizon, limit=limit, since_ts=since_ts, until_ts=until_ts
        )
        return [decode_event(doc) for doc in docs]

    async def newest_at_or_below(self, where: Doc, seq: int) -> Doc | None:
        if seq <= 0:
            return None
        return await self.events.find_one({**where, "seq": {"$lte": seq}}, sort=[("seq", -1)])

    async def tail(self, pattern: str, horizon: int | None = None) -> Event | None:
        if horizon is None:
            horizon = await self.counter.horizon()
        where = await self.topic_query(pattern)
        if where is None:
            return None
        doc = await self.newest_at_or_below(where, horizon)
        return None if doc is None else decode_event(doc)

    async def count(self, pattern: str, *, after_seq: int, horizon: int | None = None) -> int:
        if horizon is None:
            horizon = await self.counter.horizon()
        where = await self.topic_query(pattern)
        if where is None or after_seq >= horizon:
            return 0
        return await self.events.count_documents({**where, "seq": {"$gt": after_seq, "$lte": horizon}})

    async def last_seq(self) -> int:
        horizon = await self.counter.horizon()
        doc = await self.newest_at_or_below({"topic": {"$gt": ""}}, horizon)
        return 0 if doc is None else int(doc["seq"])

    async def latest_by_key(self, topic: str, keys: Sequence[str]) -> dict[str, Event]:
        wanted = list(dict.fromkeys(keys))
        cursor = await self.events.aggregate(
            [
                {"$match": {"topic": topic, "key": {"$in": wanted}}},
                {"$sort": {"seq": -1}},
                {"$group": {"_id": "$key", "doc": {"$first": "$$ROOT"}}},
            ]
        )
        found = {row["_id"]: decode_event(row["doc"]) async for row in cursor}
        return {key: found[key] for key in wanted if key in found}

    async def topic_infos(self) -> list[TopicInfo]:
        horizon = await self.counter.horizon()
        if horizon <= 0:
            return []
        cursor = await self.events.aggregate(
            [
                {"$match": {"seq": {"$lte": horizon}, "topic": {"$gt": ""}}},
                {"$sort": {"seq": 1}},
                {
                    "$group": {
                        "_id": "$topic",
                        "count": {"$sum": 1},
                        "last_seq": {"$max": "$seq"},
                        "last_ts": {"$last": "$ts"},
                    }
                },
            ]
        )
        infos = [
            TopicInfo(
                topic=row["_id"],
                count=int(row["count"]),
                last_seq=int(row["last_seq"]),
                last_ts=int(row["last_ts"]),
            )
            async for row in cursor
        ]
        return sorted(infos, key=lambda info: info.topic)
