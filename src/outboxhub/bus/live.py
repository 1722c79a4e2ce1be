"""Ephemeral (group-less) subscriptions: live events only, no stored state, no acks.

One reader task serves every caught-up live subscription: on each wake-up it scans the log once after its
position (with the one pattern when all subscriptions share it, else ``**``) and offers each event to the
subscriptions whose pattern matches. A subscription that refuses an event (its send queue is full) or is
paused leaves that shared path and remembers its position; on ``resume()`` it catches up from the log with
its own scans, then rejoins. So a slow live subscriber neither loses events while connected nor slows the
others, and N live subscribers cost one scan per commit, not N.

A subscription's position ``pos`` means: every matching event with ``seq <= pos`` was offered (or came
before the subscription). Positions only grow, and the reader offers an event only when ``seq > pos``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from outboxhub.bus.subscription import DeliverFn, Subscription
from outboxhub.bus.wakeup import Backoff, Wakeup
from outboxhub.errors import StoreUnavailable
from outboxhub.model import Delivery, Event
from outboxhub.store.base import Store
from outboxhub.topics import compile_pattern

__all__ = ["LiveFanout", "LiveSubscription"]

_log = logging.getLogger("outboxhub.bus.core")

Matcher = Callable[[str], bool]


class LiveSubscription(Subscription):
    """An ephemeral subscription: offered every matching event committed after it subscribed."""

    __slots__ = ("_catch_up", "_closed", "_deliver", "_fanout", "_matches", "_paused", "joined", "pos")

    def __init__(self, fanout: LiveFanout, pattern: str, member: str, deliver: DeliverFn, pos: int) -> None:
        super().__init__(pattern, None, member)
        self._fanout = fanout
        self._deliver = deliver
        self._matches: Matcher = compile_pattern(pattern).match
        self._paused = False
        self._closed = False
        self._catch_up: asyncio.Task[None] | None = None
        self.joined = False  # on the shared reader's path
        self.pos = pos

    @property
    def in_flight(self) -> int:
        return 0

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def closed(self) -> bool:
        return self._closed

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        if self._paused and not self._closed:
            self._paused = False
            if not self.joined:
                self._fanout.catch_up(self)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._fanout.leave(self)
        task, self._catch_up = self._catch_up, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def offer(self, event: Event) -> bool:
        """Offer one event; False when it was refused (the subscription is then paused)."""
        try:
            accepted = self._deliver(Delivery(event=event, attempt=1, deadline=0))
        except Exception:
            _log.exception(
                "deliver callback of live subscription %s to %s raised; pausing it", self.member, self.pattern
            )
            accepted = False
        if accepted:
            self.pos = event.seq
        else:
            self._paused = True
        return accepted


class LiveFanout:
    """The shared reader behind every live subscription of one bus."""

    def __init__(self, store: Store, *, batch: int, poll_interval_s: float) -> None:
        self._store = store
        self._batch = batch
        self._poll_interval_s = poll_interval_s
        self._pos = 0  # every event with seq <= _pos was offered to the joined subscriptions
        self._joined: dict[str, list[LiveSubscription]] = {}  # pattern -> joined subscriptions
        self._all: set[LiveSubscription] = set()
        self._wakeup = Wakeup()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def count(self) -> int:
        return len(self._all)

    def notify(self, seq: int) -> None:
        """A commit happened (newest seq ``seq``)."""
        if self._joined and seq > self._pos:
            self._wakeup.set()

    async def subscribe(self, pattern: str, member: str, deliver: DeliverFn) -> LiveSubscription:
        pos = await self._store.last_seq()
        if self._closed:
            raise RuntimeError("the bus was closed while subscribing")
        sub = LiveSubscription(self, pattern, member, deliver, pos)
        self._all.add(sub)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="outboxhub-live-fanout")
        self._join_or_catch_up(sub)
        return sub

    def catch_up(self, sub: LiveSubscription) -> None:
        if sub._catch_up is None and not sub.closed:
            sub._catch_up = asyncio.get_running_loop().create_task(
                self._catch_up_run(sub), name=f"outboxhub-live-catch-up-{sub.member}"
            )

    def leave(self, sub: LiveSubscription) -> None:
        self._all.discard(sub)
        self._unjoin(sub)

    async def close(self) -> None:
        self._closed = True
        subs = list(self._all)
        await asyncio.gather(*(sub.close() for sub in subs), return_exceptions=True)
        task, self._task = self._task, None
        if task is not None:
            self._wakeup.set()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    # -- joining and leaving the shared path --------------------------------------------------------------

    def _join_or_catch_up(self, sub: LiveSubscription) -> None:
        if not self._joined:
            # Nobody is on the shared path: it may move (either way) to this subscription's position.
            self._pos = sub.pos
        if sub.pos >= self._pos:
            sub.joined = True
            self._joined.setdefault(sub.pattern, []).append(sub)
            self._wakeup.set()
        else:
            self.catch_up(sub)

    def _unjoin(self, sub: LiveSubscription) -> None:
        if not sub.joined:
            return
        sub.joined = False
        subs = self._joined.get(sub.pattern)
        if subs is not None:
            subs.remove(sub)
            if not subs:
                del self._joined[sub.pattern]

    # -- the shared reader --------------------------------------------------------------------------------

    async def _run(self) -> None:
        errors = Backoff()
        while not self._closed:
            if not self._joined:
                await self._wakeup.wait(None)
                continue
            scanned = next(iter(self._joined)) if len(self._joined) == 1 else "**"
            after = self._pos
            try:
                events = await self._store.scan(scanned, after_seq=after, limit=self._batch)
            except Exception as exc:
                delay = errors.next()
                _log.warning(
                    "live fan-out: scan failed (%s: %s); retrying in %.2fs",
                    type(exc).__name__,
                    exc,
                    delay,
                    exc_info=not isinstance(exc, StoreUnavailable),
                )
                await self._wakeup.wait(delay)
                continue
            errors.reset()
            if self._pos != after or (scanned != "**" and list(self._joined) != [scanned]):
                continue  # the path moved, or another pattern joined a one-pattern scan: read again
            self._dispatch(events)
            if len(events) < self._batch:
                await self._wakeup.wait(self._poll_interval_s)

    def _dispatch(self, events: list[Event]) -> None:
        for event in events:
            for subs in list(self._joined.values()):
                if not subs or not subs[0]._matches(event.topic):
                    continue
                for sub in list(subs):
                    if event.seq <= sub.pos or sub.closed:
                        continue
                    if sub.paused:
                        # Paused since the last event it was offered: it resumes from the log.
                        sub.pos = max(sub.pos, event.seq - 1)
                        self._unjoin(sub)
                    elif not sub.offer(event) or sub.paused:
                        self._unjoin(sub)
            self._pos = event.seq

    # -- a subscription catching up on its own ------------------------------------------------------------

    async def _catch_up_run(self, sub: LiveSubscription) -> None:
        errors = Backoff()
        try:
            while not sub.closed and not sub.paused:
                if sub.pos >= self._pos or not self._joined:
                    self._join_or_catch_up(sub)  # joins: nothing is left to catch up
                    return
                horizon = self._pos
                try:
                    events = await self._store.scan(sub.pattern, after_seq=sub.pos, limit=self._batch)
                except Exception as exc:
                    delay = errors.next()
                    _log.warning(
                        "live subscription %s to %s: scan failed (%s); retrying in %.2fs",
                        sub.member,
                        sub.pattern,
                        exc,
                        delay,
                        exc_info=not isinstance(exc, StoreUnavailable),
                    )
                    await asyncio.sleep(delay)
                    continue
                errors.reset()
                for event in events:
                    if event.seq <= sub.pos:
                        continue
                    if not sub.offer(event) or sub.paused or sub.closed:
                        return
                if len(events) < self._batch:
                    # Every matching event up to what the shared reader had read when we started has
                    # now been offered.
                    sub.pos = max(sub.pos, horizon)
        finally:
            sub._catch_up = None
