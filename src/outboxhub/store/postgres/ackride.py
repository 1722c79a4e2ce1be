"""Small ACKs that ride on the next publish statement instead of committing alone (schema version 8).

End to end, each event costs two transactions: the publish (with the waiting member's parked claim,
``parked.py``) and, a fraction of a millisecond later, the member's ACK, a ``DELETE`` of its ``pending`` row
committed on its own (asynchronously: it flushes no WAL, but it is one more statement, snapshot and commit
record for the server, and one more round trip for the hub). So while the last two publishes came less than
``RIDE_S`` apart (the next one is due soon; unlike SQLite's riders there is no parked-claim condition: here
the member's claim is out of the parking lot during the very statement its ACK would wait for), a small
ACK (every ref with its seq, at most ``RIDE_REFS`` of them) waits here for the next publish statement and
runs inside it (``publish_claim_acks``): first, before the publish takes the seq counter's lock, each
ACK in a subtransaction of its own that waits at most 1 ms for a row lock. An ACK that fails there changes
nothing and is sent alone, where it fails (or succeeds) by itself; so is every rider of a publish statement
that fails. When no publish comes within ``RIDE_S`` the riders are sent alone, as they would have been at
once. The answer to an ACK (its count) is given only after the commit that carries it; what waits is the
answer, never a publish, and an ACK lost in a crash before that commit was never answered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from outboxhub.store.base import EventRef

__all__ = ["RIDE_MAX", "RIDE_REFS", "RIDE_S", "AckJob", "AckRiders", "settle_from"]

RIDE_S: Final = 0.002
"""Longest an ACK waits for a publish to ride on (at 1,000 events/s the next publish comes within 1 ms)."""

RIDE_MAX: Final = 16
"""Most ACKs waiting at once: one more sends them all alone now (a publish carries at most this many)."""

RIDE_REFS: Final = 16
"""Most refs of an ACK that may ride (a larger one is sent alone at once)."""


@dataclass(slots=True)
class AckJob:
    """One ACK waiting for a publish; ``answer`` gets its count after the commit that carries it."""

    pattern: str
    group: str
    refs: list[EventRef]
    member: str | None
    answer: asyncio.Future[int]


class AckRiders:
    """The waiting ACKs of one store (event loop thread only); ``send_alone`` sends one on its own."""

    __slots__ = ("_gap", "_jobs", "_last", "_loop", "_send_alone", "_timer")

    def __init__(self, send_alone: Callable[[AckJob], None]) -> None:
        self._send_alone = send_alone
        self._jobs: list[AckJob] = []
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last = float("-inf")  # loop time of the last publish
        self._gap = float("inf")  # between the last two publishes

    def __len__(self) -> int:
        return len(self._jobs)

    def _time(self) -> float:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop.time()

    def published(self) -> None:
        """A publish was handed to the store's writer."""
        now = self._time()
        self._gap = now - self._last
        self._last = now

    def may_ride(self, refs: Sequence[EventRef]) -> bool:
        """Whether an ACK of ``refs`` should wait: small, every ref with its seq, and the next publish likely
        within ``RIDE_S`` (the last two came that close, the last one less than ``RIDE_S`` ago)."""
        if self._gap > RIDE_S or len(refs) > RIDE_REFS or any(ref.seq is None for ref in refs):
            return False
        return self._time() - self._last <= RIDE_S

    def add(self, pattern: str, group: str, refs: list[EventRef], member: str | None) -> asyncio.Future[int]:
        """Queue an ACK (``may_ride`` said yes); the future of its count."""
        self._time()
        assert self._loop is not None
        answer: asyncio.Future[int] = self._loop.create_future()
        jobs = self._jobs
        jobs.append(AckJob(pattern, group, refs, member, answer))
        if len(jobs) >= RIDE_MAX:
            self.send_alone(self.take())
        elif self._timer is None:
            self._timer = self._loop.call_later(RIDE_S, self._due)
        return answer

    def take(self) -> list[AckJob]:
        """The waiting ACKs, in the order they came (for the next publish statement)."""
        jobs, self._jobs = self._jobs, []
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        return jobs

    def answer(self, jobs: Sequence[AckJob], counts: Sequence[int | None]) -> None:
        """After the commit that carried ``jobs``: each one's count, or None to send it alone."""
        for job, count in zip(jobs, counts, strict=True):
            if count is None:
                self._send_alone(job)
            elif not job.answer.done():
                job.answer.set_result(count)

    def send_alone(self, jobs: Sequence[AckJob]) -> None:
        """Send ``jobs`` on their own (no publish came, or the statement that carried them failed)."""
        for job in jobs:
            self._send_alone(job)

    def _due(self) -> None:
        self._timer = None
        self.send_alone(self.take())


def settle_from(answer: asyncio.Future[int], done: asyncio.Future[int]) -> None:
    """Copy the outcome of ``done`` to ``answer`` (a done callback)."""
    if answer.done():
        return
    if done.cancelled():
        answer.cancel()
    elif (exc := done.exception()) is not None:
        answer.set_exception(exc)
    else:
        answer.set_result(done.result())
