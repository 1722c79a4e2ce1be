"""Reading the event log from the stream: scans, tails, counts, topics, latest-by-key and lookups by id.

* A read starts with up to ``DIRECT_READS`` direct gets (``next_by_subj``), one request per message; when
  the log holds more it goes on with a throwaway pull consumer (memory storage, one replica, no acks) that
  is deleted afterwards. So the live tail's scan after a commit costs a request or two, and a long replay
  costs one consumer.
* A pattern with a ``**`` before its last token has no exact subject filter: the read uses the narrowest
  filter (``subjects.pattern_filter``) and drops the other topics here, so it costs the messages it drops.
* ``get_event`` has no index to use (JetStream keeps message ids only inside the duplicate window, and does
  not answer lookups by them): it scans the topic's subjects (the stream without a topic), O(events).
  Nothing in the hub's serving path calls it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from functools import partial

import nats.js.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from outboxhub.errors import StoreError, StoreUnavailable, TopicError
from outboxhub.model import Event, TopicInfo
from outboxhub.store.nats.conn import TRANSIENT, NatsConn, unavailable
from outboxhub.store.nats.subjects import Filter, decode_body, subject_of, topic_of
from outboxhub.topics import validate_topic

__all__ = ["DIRECT_READS", "EventLog"]

_log = logging.getLogger(__name__)
DIRECT_READS = 4
"""How many messages a read fetches by direct get before it creates a consumer for the rest."""
_BATCH = 1000


class EventLog:
    """Reads of the stream behind one store (see the module docstring)."""

    def __init__(self, conn: NatsConn) -> None:
        self._conn = conn

    async def last_seq(self) -> int:
        info = await self._conn.call("stream info", lambda: self._conn.js.stream_info(self._conn.stream))
        return int(info.state.last_seq or 0)

    async def at(self, seq: int) -> Event | None:
        """The event stored at ``seq`` (None when there is none or it is no outboxhub event)."""
        if seq <= 0:
            return None
        return await self._get(lambda: self._conn.js.get_msg(self._conn.stream, seq=seq, direct=True))

    async def last_on(self, subject: str) -> Event | None:
        """The newest event on ``subject`` (wildcards allowed)."""
        return await self._get(lambda: self._conn.js.get_msg(self._conn.stream, subject=subject, direct=True))

    async def _get(self, make: Callable[..., object]) -> Event | None:
        try:
            raw = await make()  # type: ignore[misc]
        except NotFoundError:
            return None
        except TRANSIENT as exc:
            raise unavailable(self._conn.shown, exc) from exc
        except nats.js.errors.APIError as exc:
            if exc.code == 404:
                return None
            raise
        try:
            return decode_body(int(raw.seq), raw.data or b"")
        except ValueError:
            return None

    async def read(self, flt: Filter, after_seq: int, want: int | None) -> AsyncIterator[Event]:
        """Matching events with seq > ``after_seq`` in seq order (all of them when ``want`` is None; the
        caller stops early when it has enough). Direct gets first, a consumer past ``DIRECT_READS``."""
        position = after_seq
        for _ in range(DIRECT_READS):  # a live tail's scan after a commit usually ends here
            event = await self._next(flt, position)
            if event is None:
                return
            position = event.seq
            if flt.matches(event.topic):
                yield event
        try:
            async for event in self._consume(flt, position, want):
                position = event.seq
                yield event
        except StoreUnavailable:
            # No consumer can be made now (a meta-leader election, a node lost): replicas still answer
            # direct gets, so the read goes on one message at a time.
            _log.warning("NATS store %s: reading by direct get (no consumer could be made)", self._conn.shown)
            while (event := await self._next(flt, position)) is not None:
                position = event.seq
                if flt.matches(event.topic):
                    yield event

    async def _next(self, flt: Filter, position: int) -> Event | None:
        """The first message on the filter after ``position`` (any replica answers)."""
        return await self._get(
            lambda: self._conn.js.get_msg(
                self._conn.stream, seq=position + 1, subject=flt.subject, next=True, direct=True
            )
        )

    async def _consume(self, flt: Filter, after_seq: int, want: int | None) -> AsyncIterator[Event]:
        conn = self._conn
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=after_seq + 1,
            ack_policy=AckPolicy.NONE,
            filter_subject=flt.subject,
            mem_storage=True,
            num_replicas=1,
            inactive_threshold=60.0,
        )
        sub = await conn.call(
            "read", lambda: conn.js.pull_subscribe(flt.subject, stream=conn.stream, config=config)
        )
        try:
            info = await conn.call("consumer info", sub.consumer_info)
            remaining = int(info.num_pending or 0)
            while remaining > 0:
                try:
                    batch = min(_BATCH, remaining, want or _BATCH)
                    msgs = await sub.fetch(batch=batch, timeout=conn.options.timeout_s)
                except TRANSIENT as exc:
                    raise unavailable(conn.shown, exc) from exc
                for msg in msgs:
                    meta = msg.metadata
                    remaining = int(meta.num_pending)
                    try:
                        event = decode_body(int(meta.sequence.stream), msg.data)
                    except ValueError:
                        continue
                    if flt.matches(event.topic):
                        yield event
                if not msgs:
                    return
        finally:
            with contextlib.suppress(Exception):
                name = sub._consumer
                await sub.unsubscribe()
                await conn.js.delete_consumer(conn.stream, name)

    async def count(self, flt: Filter, after_seq: int) -> int:
        conn = self._conn
        if flt.matcher is None:
            config = ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=after_seq + 1,
                ack_policy=AckPolicy.NONE,
                filter_subject=flt.subject,
                mem_storage=True,
                num_replicas=1,
                inactive_threshold=10.0,
            )
            info = await conn.call("count", lambda: conn.js.add_consumer(conn.stream, config))
            with contextlib.suppress(Exception):
                await conn.js.delete_consumer(conn.stream, info.name)
            return int(info.num_pending or 0)
        if after_seq <= 0:
            return sum(
                n
                for subject, n in (await self.subjects(flt.subject)).items()
                if flt.matches(self._topic(subject))
            )
        total = 0
        async for _ in self.read(flt, after_seq, None):
            total += 1
        return total

    def _topic(self, subject: str) -> str:
        return topic_of(self._conn.prefix, subject)

    async def subjects(self, subject_filter: str) -> dict[str, int]:
        """The message count of each subject matching ``subject_filter``: a stream info, paged (nats-server
        answers at most 100,000 subjects per request, sorted; a subject created or deleted between two pages
        may be missed, as in any listing)."""
        counts: dict[str, int] = {}
        while True:
            answer = await self._conn.call(
                "stream info", partial(self._subjects_page, subject_filter, len(counts))
            )
            state = answer.get("state")
            page = state.get("subjects") if isinstance(state, dict) else None
            total = answer.get("total")
            before = len(counts)
            counts.update(page or {})
            if not isinstance(total, int) or len(counts) >= total or len(counts) == before:
                return counts

    async def _subjects_page(self, subject_filter: str, offset: int) -> dict[str, object]:
        conn = self._conn
        msg = await conn.nc.request(
            f"$JS.API.STREAM.INFO.{conn.stream}",
            json.dumps({"subjects_filter": subject_filter, "offset": offset}).encode(),
            timeout=conn.options.timeout_s,
        )
        answer: dict[str, object] = json.loads(msg.data)
        if "error" in answer:
            raise StoreError(f"NATS store {conn.shown}: stream info: {answer['error']}")
        return answer

    async def tail(self, flt: Filter) -> Event | None:
        if flt.matcher is None:
            return await self.last_on(flt.subject)
        topics = {self._topic(s) for s in await self.subjects(flt.subject)}
        lasts = await asyncio.gather(
            *(self.last_on(f"{self._conn.prefix}.{t}.*") for t in sorted(topics) if flt.matches(t))
        )
        found = [e for e in lasts if e is not None]
        return max(found, key=lambda e: e.seq) if found else None

    async def topics(self) -> list[TopicInfo]:
        counts: dict[str, int] = {}
        for subject, n in (await self.subjects(f"{self._conn.prefix}.>")).items():
            topic = self._topic(subject)
            counts[topic] = counts.get(topic, 0) + n
        names = sorted(counts)
        lasts = await asyncio.gather(*(self.last_on(f"{self._conn.prefix}.{t}.*") for t in names))
        return [
            TopicInfo(topic=t, count=counts[t], last_seq=last.seq, last_ts=last.ts)
            for t, last in zip(names, lasts, strict=True)
            if last is not None
        ]

    async def latest_by_key(self, topic: str, keys: list[str]) -> dict[str, Event]:
        prefix = self._conn.prefix
        wanted = list(dict.fromkeys(keys))
        found = await asyncio.gather(*(self.last_on(subject_of(prefix, topic, k)) for k in wanted))
        # The subject names a 128-bit digest of the key: check the key itself all the same.
        return {k: e for k, e in zip(wanted, found, strict=True) if e is not None and e.key == k}

    async def get_event(self, event_id: str, topic: str | None) -> Event | None:
        """The event ``event_id`` of ``topic`` (a scan of that topic's subjects), or without a topic the
        oldest event carrying the id (a scan of the stream). A topic that is not a valid topic has none."""
        if topic is None:
            flt = Filter(f"{self._conn.prefix}.>", None)
        else:
            try:
                validate_topic(topic)
            except TopicError:
                return None  # never let it reach a subject (no wildcards in a lookup)
            flt = Filter(f"{self._conn.prefix}.{topic}.*", None)
        async for event in self.read(flt, 0, None):
            if event.id == event_id and (topic is None or event.topic == topic):
                return event
        return None
