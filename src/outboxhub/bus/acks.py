"""Coalescing of ACKs per consumer group: one store round trip for every ack that arrives meanwhile.

The first ack of a quiet group goes to the store at once (no added latency); acks that arrive while that
call is in progress are sent together by the next call. Under load this turns N acks into a handful of
``store.ack(pattern, group, ids)`` transactions, which is what keeps consume throughput near publish
throughput on SQLite.

Each ack names its delivery (``EventRef``: id and, when known, seq) and the member settling it; one flush
sends one ``store.ack`` per member in the batch (the store settles only what that member may settle).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from outboxhub.store.base import EventRef, Store

__all__ = ["AckBatcher"]

_log = logging.getLogger("outboxhub.bus.core")


class AckBatcher:
    """Sends the acks of one ``(pattern, group)`` to the store in batches.

    ``is_local(seq)`` tells whether this process handed the delivery out (used to answer per ack when the
    store only returns a count); ``on_acked(refs)`` runs after each successful store call.
    """

    __slots__ = (
        "_group",
        "_is_local",
        "_loop",
        "_max_batch",
        "_on_acked",
        "_pattern",
        "_queue",
        "_store",
        "_task",
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
        self._task: asyncio.Task[None] | None = None
        # Taken on the first ack: asyncio.get_running_loop() costs a getpid() system call per call on
        # CPython 3.11, which was 4 % of the event loop thread's samples while consuming (one per ack).
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def busy(self) -> bool:
        return self._task is not None

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
        if self._task is None:
            self._task = loop.create_task(
                self._flush(), name=f"outboxhub-acks-{self._pattern}::{self._group}"
            )
        return waiter

    async def drain(self) -> None:
        """Wait until every ack queued so far has reached the store (or failed)."""
        while self._task is not None:
            await asyncio.wait({self._task})

    async def _flush(self) -> None:
        try:
            while self._queue:
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
                by_member: dict[str | None, list[tuple[EventRef, asyncio.Future[bool]]]] = {}
                for ref, member, waiter in batch:
                    by_member.setdefault(member, []).append((ref, waiter))
                for member, acks in by_member.items():
                    await self._send(member, acks)
        finally:
            self._task = None

    async def _send(self, member: str | None, acks: list[tuple[EventRef, asyncio.Future[bool]]]) -> None:
        refs = list(dict.fromkeys(ref for ref, _ in acks))
        local = {ref for ref in refs if ref.seq is not None and self._is_local(ref.seq)}
        try:
            count = await self._store.ack(self._pattern, self._group, refs, member=member)
        except Exception as exc:
            _log.warning("ack of %d events for %s::%s failed: %s", len(refs), self._pattern, self._group, exc)
            for _, waiter in acks:
                if not waiter.done():
                    waiter.set_exception(exc)
            return
        answered: set[EventRef] = set()  # a second ack of one delivery in the same batch settles nothing
        for ref, waiter in acks:
            pending = ref not in answered and (count == len(refs) or (count > 0 and ref in local))
            answered.add(ref)
            if not waiter.done():
                waiter.set_result(pending)
        self._on_acked(refs)
