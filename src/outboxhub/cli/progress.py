"""Progress of ``outboxhub drain``: a live status line on a terminal, a periodic log line otherwise.

:class:`DrainProgress` is handed to ``run_drainers(on_start=...)``; it then reads the drainers' counters
(published, dead) and their outboxes' pending counts every ``interval_s`` and reports records/s since the
last report. On a terminal (``stream.isatty()``) it rewrites one line on stderr every second; otherwise it
logs ``drain: ...`` at INFO every 30 seconds, so a service's log is not flooded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from typing import Final, TextIO

from outboxhub.errors import OutboxClosed, OutboxhubError
from outboxhub.outbox import Drainer

__all__ = ["LOG_INTERVAL_S", "TTY_INTERVAL_S", "DrainProgress", "format_progress"]

log = logging.getLogger("outboxhub.drain")

TTY_INTERVAL_S: Final = 1.0
LOG_INTERVAL_S: Final = 30.0


def format_progress(rate: float, published: int, pending: int | None, dead: int) -> str:
    """``1234.5 records/s, 10000 published, 42 pending, 0 dead`` (pending ``?`` when unreadable)."""
    shown = "?" if pending is None else str(pending)
    return f"{rate:.1f} records/s, {published} published, {shown} pending, {dead} dead"


class DrainProgress:
    """Reports the progress of the drainers it is given (``on_start``) until :meth:`stop`."""

    def __init__(self, stream: TextIO | None = None, *, interval_s: float | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.live = self.stream.isatty()
        self.interval_s = interval_s or (TTY_INTERVAL_S if self.live else LOG_INTERVAL_S)
        self._drainers: list[Drainer] = []
        self._task: asyncio.Task[None] | None = None
        self._last = (time.monotonic(), 0)

    def on_start(self, drainers: list[Drainer]) -> None:
        self._drainers = drainers
        self._last = (time.monotonic(), sum(d.published for d in drainers))
        self._task = asyncio.get_running_loop().create_task(self._run(), name="outboxhub-drain-progress")

    async def line(self) -> str:
        """One report (and the rate since the last); :class:`OutboxClosed` once the drainers stopped."""
        published = sum(d.published for d in self._drainers)
        pending: int | None = 0
        dead = 0
        for drainer in self._drainers:
            try:
                stats = await drainer.outbox.stats()
            except OutboxClosed:
                raise
            except (OutboxhubError, OSError):
                pending = None
                continue
            if pending is not None:
                pending += stats.pending
            dead += stats.dead
        now = time.monotonic()
        then, before = self._last
        self._last = (now, published)
        rate = (published - before) / (now - then) if now > then else 0.0
        return format_progress(rate, published, pending, dead)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                text = await self.line()
            except OutboxClosed:
                return  # the drainers stopped and closed their outboxes: nothing left to report on
            if self.live:
                self.stream.write(f"\r\x1b[2K{text}")
                self.stream.flush()
            else:
                log.info("drain: %s", text)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            if self.live:
                self.stream.write("\n")
                self.stream.flush()
