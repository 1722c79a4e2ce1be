"""Wake-up signalling and retry backoff for the bus's loops.

``Wakeup`` is a latched flag with a single waiter: ``set()`` from anywhere on the event loop thread,
``await wait(timeout)`` from the one task that owns it. A ``set()`` that happens while the owner is busy
is kept, so the next ``wait`` returns at once and no notification is ever lost between "checked for work"
and "went to sleep". It costs one future and one timer handle per sleep (``asyncio.wait_for`` would cost a
task), which matters when every commit wakes every idle member.
"""

from __future__ import annotations

import asyncio

from outboxhub.retry import BackoffPolicy, Retries

__all__ = ["Backoff", "Wakeup"]


class Wakeup:
    """A latched wake-up flag for one waiting task."""

    __slots__ = ("_flag", "_loop", "_timer", "_waiter")

    def __init__(self) -> None:
        self._flag = False
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None  # the running wait's timeout
        # The owner's loop, taken on the first wait: asyncio.get_running_loop() is a getpid() system call
        # per call on CPython 3.11, and an idle member waits once per event it is woken for.
        self._loop: asyncio.AbstractEventLoop | None = None

    def set(self) -> None:
        """Wake the waiter now, or make its next ``wait`` return immediately."""
        self._flag = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def wake_within(self, seconds: float, *, slack_s: float = 0.0) -> bool:
        """Make the running wait time out ``seconds`` from now at the latest: its timer is kept when it fires
        by then (or ``slack_s`` later), else re-armed. False when no wait is running (nothing done)."""
        waiter, loop, timer = self._waiter, self._loop, self._timer
        if waiter is None or waiter.done() or loop is None:
            return False
        if timer is not None:
            if timer.when() - loop.time() <= seconds + slack_s:
                return True
            timer.cancel()
        self._timer = loop.call_later(max(0.0, seconds), _expire, waiter)
        return True

    @property
    def pending(self) -> bool:
        """A ``set()`` is latched: the next ``wait`` returns at once."""
        return self._flag

    async def wait(self, timeout_s: float | None) -> bool:
        """Sleep until ``set()`` or ``timeout_s`` seconds (None: no limit); True when woken by ``set()``.

        The flag is cleared on return either way.
        """
        if self._flag:
            self._flag = False
            return True
        if timeout_s is not None and timeout_s <= 0:
            return False
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiter = waiter
        self._timer = loop.call_later(timeout_s, _expire, waiter) if timeout_s is not None else None
        try:
            await waiter
        finally:
            self._waiter = None
            timer, self._timer = self._timer, None
            if timer is not None:
                timer.cancel()
        woken = self._flag
        self._flag = False
        return woken


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Backoff(Retries):
    """The bus loops' retry delays: ``initial_s``, doubling per failure, at most ``cap_s``, no jitter
    (the rule is :class:`outboxhub.retry.BackoffPolicy`)."""

    __slots__ = ()

    def __init__(self, *, initial_s: float = 0.05, cap_s: float = 2.0) -> None:
        super().__init__(BackoffPolicy(base=min(initial_s, cap_s), cap=cap_s))
