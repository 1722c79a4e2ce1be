"""Coalescing of ACKs per consumer group: one store round trip for every ack that arrives meanwhile.

The first ack of a quiet group goes to the store at once (no added latency); acks that arrive while that
call is in progress are sent together by the next call. Under load this turns N acks into a handful of
``store.ack(pattern, group, ids)`` transactions, which is what keeps consume throughput near publish
throughput on SQLite.

Each ack names its delivery (``EventRef``: id and, when known, seq) and the member settling it; one flush
sends one ``store.ack`` per member in the batch (the store settles only what that member may settle).

No task or coroutine runs a flush: it starts from a ``call_soon`` callback (as a task's first step would,
so acks of one loop iteration still share a call) and moves on from done-callbacks of the futures that
``StoreBackend.ack_soon`` returns (on SQLite the writer's own future, already resolved when the ACK
committed inline). A task per flush was ~6 % of the loop thread end to end, where most acks flush alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from functools import partial

from outboxhub.store.backend import StoreBackend
from outboxhub.store.base import EventRef, Store

__all__ = ["AckBatcher"]

_log = logging.getLogger("outboxhub.bus.core")

_Acks = list[tuple[EventRef, "asyncio.Future[bool]"]]


class AckBatcher:
    """Sends the acks of one ``(pattern, group)`` to the store in batches.

    ``is_local(seq)`` tells whether this process handed the delivery out (used to answer per ack when the
    store only returns a count); ``on_acked(refs)`` runs after each successful store call.
    """

    __slots__ = (
        "_busy",
        "_calls",
        "_group",
        "_idle",
        "_is_local",
        "_loop",
        "_max_batch",
        "_on_acked",
        "_pattern",
        "_queue",
        "_store",
    )

    def __init__(
        self,
        store: Store,
        pattern: str,
        group: str,
        *,
        is_local: Callable[[int], bool],
        on_acked: Callable[[Sequence[EventRef]], None],
        max_batch: int = 1000,
    ) -> None:
        self._store = store
        self._pattern = pattern
        self._group = group
        self._is_local = is_local
        self._on_acked = on_acked
        self._max_batch = max_batch
        self._queue: list[tuple[EventRef, str | None, asyncio.Future[bool]]] = []
        self._calls: list[tuple[str | None, _Acks]] = []  # the batch's store calls not yet made, in order
        self._busy = False  # a flush is scheduled or a store call is in flight
        self._idle: asyncio.Future[None] | None = None  # made by ``drain``, resolved when no longer busy
        # Taken on the first ack: asyncio.get_running_loop() costs a getpid() system call per call on
        # CPython 3.11, which was 4 % of the event loop thread's samples while consuming (one per ack).
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def busy(self) -> bool:
        return self._busy

    async def ack(self, ref: EventRef, member: str | None = None) -> bool:
        """Ack one delivery as ``member`` (None: unchecked); True when it was pending and settled.

        When a store call's count is neither 0 nor all of it, an ack counts as settled when this process
        handed its delivery out (the store reports a count, not which rows).
        """
        return await self.submit(ref, member)

    def submit(self, ref: EventRef, member: str | None = None) -> asyncio.Future[bool]:
        """Queue one ack (as :meth:`ack`) and return the future of its result, resolved after the store
        call that carries it returns (no coroutine or task per ack). Must run on the event loop thread."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        self._queue.append((ref, member, waiter))
        if not self._busy:
            self._busy = True
            loop.call_soon(self._next)
        return waiter

    async def drain(self) -> None:
        """Wait until every ack queued so far has reached the store (or failed)."""
        if not self._busy:
            return
        if self._idle is None:
            assert self._loop is not None
            self._idle = self._loop.create_future()
        await asyncio.shield(self._idle)

    def _next(self) -> None:
        """Make the next store call, or end the flush when nothing is left. A call whose future is already
        done (an ACK committed inline) is answered here, as an ``await`` of it would not yield either."""
        while True:
            if not self._calls:
                if not self._queue:
                    self._busy = False
                    idle, self._idle = self._idle, None
                    if idle is not None and not idle.done():
                        idle.set_result(None)
                    return
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
                by_member: dict[str | None, _Acks] = {}
                for ref, member, waiter in batch:
                    by_member.setdefault(member, []).append((ref, waiter))
                self._calls = list(by_member.items())
            member, acks = self._calls.pop(0)
            refs = list(dict.fromkeys(ref for ref, _ in acks))
            local = {ref for ref in refs if ref.seq is not None and self._is_local(ref.seq)}
            try:
                done = self._ack_soon(refs, member)
            except Exception as exc:
                self._failed(refs, acks, exc)
                continue
            if not done.done():
                done.add_done_callback(partial(self._returned, acks, refs, local))
                return
            self._answer(done, acks, refs, local)

    def _ack_soon(self, refs: list[EventRef], member: str | None) -> asyncio.Future[int]:
        store = self._store
        if isinstance(store, StoreBackend):
            return store.ack_soon(self._pattern, self._group, refs, member=member)
        return asyncio.ensure_future(store.ack(self._pattern, self._group, refs, member=member))

    def _returned(
        self, acks: _Acks, refs: list[EventRef], local: set[EventRef], done: asyncio.Future[int]
    ) -> None:
        try:
            self._answer(done, acks, refs, local)
        finally:
            self._next()

    def _answer(
        self, done: asyncio.Future[int], acks: _Acks, refs: list[EventRef], local: set[EventRef]
    ) -> None:
        if done.cancelled():
            for _, waiter in acks:
                waiter.cancel()
            return
        exc = done.exception()
        if exc is not None:
            self._failed(refs, acks, exc)
            return
        count = done.result()
        answered: set[EventRef] = set()  # a second ack of one delivery in the same batch settles nothing
        for ref, waiter in acks:
            pending = ref not in answered and (count == len(refs) or (count > 0 and ref in local))
            answered.add(ref)
            if not waiter.done():
                waiter.set_result(pending)
        try:
            self._on_acked(refs)
        except Exception:
            _log.exception("on_acked of %s::%s failed", self._pattern, self._group)

    def _failed(self, refs: list[EventRef], acks: _Acks, exc: BaseException) -> None:
        _log.warning("ack of %d events for %s::%s failed: %s", len(refs), self._pattern, self._group, exc)
        for _, waiter in acks:
            if not waiter.done():
                waiter.set_exception(exc)
