"""Small ACKs that ride on the next write batch of the event loop thread instead of committing alone.

End to end, each event costs two write transactions on the loop thread: the publish (with the waiting
member's parked claim) and, a fraction of a millisecond later, the member's ACK. The ACK's own commit is
a ``BEGIN IMMEDIATE`` (file locks), a ``PRAGMA data_version``, its ``DELETE`` and a ``COMMIT`` that writes
the pending pages to the WAL, the same pages the next publish's claim writes again. So while a claim is
parked (a member waits for the next event) and the last two publishes came less than ``RIDE_S`` apart (the
next one is due soon), a small ACK waits here for the next batch that runs on the loop thread, and runs
inside it, first, in a SAVEPOINT of its own (its failure is its own; ``writer.py``). When no batch comes
within ``RIDE_S`` it commits on its own, as it would have at once. At lower rates ACKs do not wait: each
would pay a timer and still commit alone. Its future resolves only after the COMMIT that carries it, as
always: what waits is the answer, never durability.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Final

__all__ = ["RIDE_MAX", "RIDE_S", "Riders"]

RIDE_S: Final = 0.002
"""Longest an ACK waits for a batch to ride on (at 1,000 events/s the next publish comes within 1 ms)."""

RIDE_MAX: Final = 16
"""Most ACK jobs waiting at once: one more commits them all now (a batch carries at most this many)."""


class Riders:
    """The waiting ACK jobs of one writer (event loop thread only); ``flush`` commits them on their own."""

    __slots__ = ("_flush", "_gap", "_jobs", "_last", "_timer")

    def __init__(self, flush: Callable[[list[Any]], None]) -> None:
        self._flush = flush
        self._jobs: list[Any] = []
        self._timer: asyncio.TimerHandle | None = None
        self._last = float("-inf")  # loop time of the last publish
        self._gap = float("inf")  # between the last two publishes

    def published(self, now: float) -> None:
        """A publish was handed to the writer at loop time ``now``."""
        self._gap = now - self._last
        self._last = now

    def worth_waiting(self, now: float) -> bool:
        """Whether the next publish is likely within ``RIDE_S``: the last two came that close, the last one
        less than ``RIDE_S`` ago."""
        return self._gap <= RIDE_S and now - self._last <= RIDE_S

    def __len__(self) -> int:
        return len(self._jobs)

    def add(self, loop: asyncio.AbstractEventLoop, job: Any) -> None:
        jobs = self._jobs
        jobs.append(job)
        if len(jobs) >= RIDE_MAX:
            self._due()
        elif self._timer is None:
            self._timer = loop.call_later(RIDE_S, self._due)

    def take(self) -> list[Any]:
        """The waiting jobs, in the order they came (they run before the batch's own jobs)."""
        jobs, self._jobs = self._jobs, []
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        return jobs

    def _due(self) -> None:
        jobs = self.take()
        if jobs:
            self._flush(jobs)
