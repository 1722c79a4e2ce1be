"""The in-flight window of :class:`~outboxhub.client.HubClient`: how many publishes await their reply at once.

Nothing here is public (``tests/test_client_exports.py`` pins the SDK's names).
"""

from __future__ import annotations

import asyncio
from collections import deque

__all__: list[str] = []


class Window:
    """A FIFO counting semaphore with O(1) release: bounds the publishes in flight.

    Not ``asyncio.Semaphore``: on Python 3.11 its release scans every waiter, which makes a burst of
    tens of thousands of waiting publishes quadratic.
    """

    def __init__(self, size: int) -> None:
        self._free = size
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def __aenter__(self) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # a releasing publish hands its slot over
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # got the slot, then was cancelled: pass it on
                self._release()
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        self._release()

    def _release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1
