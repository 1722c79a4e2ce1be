"""Coalescing of ACKs per consumer group: one store round trip for every ack that arrives meanwhile.

The first ack of a quiet group goes to the store at once (no added latency); acks that arrive while that
call is in progress are sent together by the next call. Under load this turns N acks into a handful of
``store.ack(pattern, group, ids)`` transactions, which is what keeps consume throughput near publish
throughput on SQLite.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from outboxhub.store.base import Store

__all__ = ["AckBatcher"]

_log = logging.getLogger("outboxhub.bus.core")


class AckBatcher:
    """Sends the acks of one ``(pattern, group)`` to the store in batches.

    ``is_local(id)`` tells whether this process handed the event out (used to answer per id when the store
    only returns a count); ``on_acked(ids)`` runs after each successful batch.
    """

    __slots__ = ("_group", "_is_local", "_max_batch", "_on_acked", "_pattern", "_queue", "_store", "_task")

    def __init__(
        self,
        store: Store,
        pattern: str,
        group: str,
        *,
        is_local: Callable[[str], bool],
        on_acked: Callable[[Sequence[str]], None],
        max_batch: int = 1000,
    ) -> None:
        self._store = store
        self._pattern = pattern
        self._group = group
        self._is_local = is_local
        self._on_acked = on_acked
        self._max_batch = max_batch
        self._queue: list[tuple[str, asyncio.Future[bool]]] = []
        self._task: asyncio.Task[None] | None = None

    @property
    def busy(self) -> bool:
        return self._task is not None

    async def ack(self, event_id: str) -> bool:
        """Ack one event; True when it was pending for the group.

        When a batch's count is neither 0 nor all of it, an id counts as pending when this process handed
        it out (the store reports a count, not which ids).
        """
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.append((event_id, waiter))
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._flush(), name=f"outboxhub-acks-{self._pattern}::{self._group}"
            )
        return await waiter

    async def drain(self) -> None:
        """Wait until every ack queued so far has reached the store (or failed)."""
        while self._task is not None:
            await asyncio.wait({self._task})

    async def _flush(self) -> None:
        try:
            while self._queue:
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
                ids = list(dict.fromkeys(event_id for event_id, _ in batch))
                local = {event_id for event_id in ids if self._is_local(event_id)}
                try:
                    count = await self._store.ack(self._pattern, self._group, ids)
                except Exception as exc:
                    _log.warning(
                        "ack of %d events for %s::%s failed: %s", len(ids), self._pattern, self._group, exc
                    )
                    for _, waiter in batch:
                        if not waiter.done():
                            waiter.set_exception(exc)
                    continue
                answered: set[str] = set()  # a second ack of one id in the same batch settles nothing
                for event_id, waiter in batch:
                    pending = event_id not in answered and (
                        count == len(ids) or (count > 0 and event_id in local)
                    )
                    answered.add(event_id)
                    if not waiter.done():
                        waiter.set_result(pending)
                self._on_acked(ids)
        finally:
            self._task = None
