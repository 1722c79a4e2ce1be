"""``StoreBackend``: what every store backend shares, so each backend holds only what differs.

The base class implements the ``Store`` methods whose argument handling is the same everywhere (closing
once, the closed check, commit listeners, preparing events for ``publish``/``publish_batch``, empty
inputs, the default ``now``) and calls one hook per backend for the work: ``_shutdown``, ``_append``,
``_scan``, ``_latest_by_key``, ``_claim``, ``_ack``, ``_nack``, ``_extend`` (a claim and a NACK arrive as one
``ClaimRequest`` / ``NackRequest`` of ``store/lifecycle.py``, ``now`` resolved). Methods that are a plain call
in every backend (``get_event``, ``tail``, ``groups``, ``cursor``, ...) are written in the backend.

Adding a backend: subclass ``StoreBackend``, implement the hooks and the remaining ``Store`` methods, run
claims through the ``ClaimPlan`` of ``ClaimRequest.plan()``, expose ``open_store(url, **options)`` and
register the URL scheme in ``store/__init__.py``; then add it to ``BACKENDS`` in
``tests/contract/conftest.py``.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar, TypeVar

from outboxhub.errors import StoreUnavailable
from outboxhub.ids import now_ms
from outboxhub.model import Delivery, Event, NewEvent, PublishResult
from outboxhub.store.base import CommitListener, EventRef, TopicListener, refs_of
from outboxhub.store.codec import Prepared, prepare
from outboxhub.store.lifecycle import ClaimRequest, ExtendRequest, NackRequest
from outboxhub.store.listeners import CommitListeners

__all__ = ["StoreBackend"]

_T = TypeVar("_T")


def _done(result: _T) -> asyncio.Future[_T]:
    """A future already answered with ``result`` (an early answer of the ``*_soon`` methods; it asks for the
    running loop, which on Python 3.11 is a getpid system call, so only off their hot path)."""
    future: asyncio.Future[_T] = asyncio.get_running_loop().create_future()
    future.set_result(result)
    return future


def _failed(error: BaseException) -> asyncio.Future[_T]:
    """A future already failed with ``error`` (as :func:`_done`)."""
    future: asyncio.Future[_T] = asyncio.get_running_loop().create_future()
    future.set_exception(error)
    return future


class StoreBackend(ABC):
    """The shared half of a ``Store`` implementation (see the module docstring).

    ``label`` names the backend in messages (``"<label> <url> is closed"``); ``newer_only`` is passed to
    ``CommitListeners``. ``url`` must already be masked.
    """

    label: ClassVar[str]

    def __init__(self, url: str, *, newer_only: bool) -> None:
        self._url = url
        self._commits = CommitListeners(logging.getLogger(type(self).__module__), newer_only=newer_only)
        self._closed = False
        self._closing: asyncio.Future[None] | None = None

    @property
    def url(self) -> str:
        return self._url

    async def close(self) -> None:
        """Stop accepting work, then ``_shutdown`` once; concurrent and later calls wait for that one."""
        if self._closing is None:
            self._closed = True
            self._closing = asyncio.ensure_future(self._shutdown())
        await asyncio.shield(self._closing)

    @abstractmethod
    async def _shutdown(self) -> None:
        """Flush pending writes and release connections (called once)."""

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailable(f"{self.label} {self._url} is closed")

    # -- commit listeners ---------------------------------------------------------------------------------

    def add_commit_listener(self, listener: CommitListener) -> None:
        self._commits.add(listener)

    def remove_commit_listener(self, listener: CommitListener) -> None:
        self._commits.remove(listener)

    def add_topic_listener(self, listener: TopicListener) -> None:
        self._commits.add_topics(listener)

    def remove_topic_listener(self, listener: TopicListener) -> None:
        self._commits.remove_topics(listener)

    def _committed(self, last_seq: int, topics: frozenset[str] | None = None) -> None:
        """Events up to ``last_seq`` committed; ``topics``: the topics written, None when not known."""
        self._commits.notify(last_seq, topics)

    # -- events -------------------------------------------------------------------------------------------

    async def publish(self, event: NewEvent) -> PublishResult:
        self._check_open()
        results = await self._append([prepare(event)])
        return results[0]

    async def publish_batch(self, events: Sequence[NewEvent]) -> list[PublishResult]:
        self._check_open()
        if not events:
            return []
        return await self._append([prepare(event) for event in events])

    def publish_soon(self, events: Sequence[NewEvent]) -> asyncio.Future[list[PublishResult]]:
        """:meth:`publish_batch` as the future of its results (an error is set on it), from
        :meth:`_append_soon`. Must run on the event loop thread."""
        try:
            if self._closed:
                self._check_open()
            rows = [prepare(events[0])] if len(events) == 1 else [prepare(event) for event in events]
        except Exception as exc:
            return _failed(exc)
        if not rows:
            return _done([])
        return self._append_soon(rows)

    def _append_soon(self, rows: list[Prepared]) -> asyncio.Future[list[PublishResult]]:
        """:meth:`_append` as a future; a backend whose writer hands out futures returns that future
        instead (no task per publish)."""
        return asyncio.ensure_future(self._append(rows))

    @abstractmethod
    async def _append(self, rows: list[Prepared]) -> list[PublishResult]:
        """Append prepared events in one group commit; return once durable (results in order)."""

    async def scan(
        self,
        pattern: str,
        *,
        after_seq: int = 0,
        since_ts: int | None = None,
        until_ts: int | None = None,
        limit: int = 1000,
    ) -> list[Event]:
        self._check_open()
        return await self._scan(pattern, after_seq, since_ts, until_ts, limit)

    @abstractmethod
    async def _scan(
        self, pattern: str, after_seq: int, since_ts: int | None, until_ts: int | None, limit: int
    ) -> list[Event]: ...

    async def latest_by_key(self, topic: str, keys: Sequence[str]) -> dict[str, Event]:
        self._check_open()
        if not keys:
            return {}
        return await self._latest_by_key(topic, list(keys))

    @abstractmethod
    async def _latest_by_key(self, topic: str, keys: list[str]) -> dict[str, Event]: ...

    # -- consumer groups ----------------------------------------------------------------------------------

    def check_group_options(self, group: str, *, ordered_by_key: bool) -> None:  # noqa: B027 - a default
        """Every option is supported unless a backend says otherwise (``Store.check_group_options``)."""

    async def claim(
        self,
        pattern: str,
        group: str,
        member: str,
        *,
        limit: int,
        ack_timeout_ms: int,
        max_deliver: int,
        ordered_by_key: bool = False,
        now: int | None = None,
    ) -> list[Delivery]:
        self._check_open()
        request = ClaimRequest(
            pattern=pattern,
            group=group,
            member=member,
            limit=limit,
            ack_timeout_ms=ack_timeout_ms,
            max_deliver=max_deliver,
            ordered=ordered_by_key,
            now=now_ms() if now is None else now,
        )
        return await self._claim(request)

    @abstractmethod
    async def _claim(self, request: ClaimRequest) -> list[Delivery]:
        """Run the claim (``request.plan()``, a ``ClaimPlan`` of ``store/lifecycle.py``) atomically."""

    async def ack(
        self, pattern: str, group: str, event_ids: Sequence[str | EventRef], *, member: str | None = None
    ) -> int:
        self._check_open()
        if not event_ids:
            return 0
        return await self._ack(pattern, group, refs_of(event_ids), member)

    def ack_soon(
        self, pattern: str, group: str, refs: Sequence[EventRef], *, member: str | None = None
    ) -> asyncio.Future[int]:
        """:meth:`ack` as the future of its count (an error is set on it), from :meth:`_ack_soon`. Must run
        on the event loop thread."""
        try:
            self._check_open()
        except Exception as exc:
            return _failed(exc)
        if not refs:
            return _done(0)
        return self._ack_soon(pattern, group, list(refs), member)

    def _ack_soon(
        self, pattern: str, group: str, refs: list[EventRef], member: str | None
    ) -> asyncio.Future[int]:
        """:meth:`_ack` as a future; a backend whose writer hands out futures returns that future instead
        (no task per ACK)."""
        return asyncio.ensure_future(self._ack(pattern, group, refs, member))

    @abstractmethod
    async def _ack(self, pattern: str, group: str, refs: list[EventRef], member: str | None) -> int:
        """Settle ``refs`` for the group as ``member`` (``may_settle``; a ref without seq only when its id
        matches exactly one row the member may settle); return how many rows were removed."""

    async def nack(
        self,
        pattern: str,
        group: str,
        event_id: str | EventRef,
        *,
        max_deliver: int,
        member: str | None = None,
        delay_ms: int | None = None,
        reason: str | None = None,
        now: int | None = None,
        terminal: bool = False,
    ) -> bool:
        self._check_open()
        ref = refs_of([event_id])[0]
        request = NackRequest(
            pattern=pattern,
            group=group,
            event_id=ref.id,
            max_deliver=max_deliver,
            delay_ms=delay_ms,
            reason=reason,
            now=now_ms() if now is None else now,
            seq=ref.seq,
            member=member,
            terminal=terminal,
        )
        return await self._nack(request)

    @abstractmethod
    async def _nack(self, request: NackRequest) -> bool:
        """Run the NACK (``request.trigger()``, ``plan_nack`` of ``store/lifecycle.py``) atomically, on the
        row ``request`` names and ``request.member`` may settle (as ``_ack`` finds it)."""

    async def extend(
        self,
        pattern: str,
        group: str,
        event_id: str | EventRef,
        *,
        ack_timeout_ms: int,
        now: int | None = None,
        member: str | None = None,
    ) -> bool:
        self._check_open()
        ref = refs_of([event_id])[0]
        request = ExtendRequest(
            pattern=pattern,
            group=group,
            event_id=ref.id,
            ack_timeout_ms=ack_timeout_ms,
            member=member,
            now=now_ms() if now is None else now,
            seq=ref.seq,
        )
        return await self._extend(request)

    @abstractmethod
    async def _extend(self, request: ExtendRequest) -> bool:
        """Run the ``extend`` transition (``ExtendRequest`` of ``store/lifecycle.py``) as one conditional
        write."""
