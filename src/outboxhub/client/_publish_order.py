"""The order of publishes on a :class:`~outboxhub.client._link.Link`, through refusals and reconnects.

* **Publishes go out in call order, and retries keep it.** ``_publishes`` is in the order the publishes
  were first sent. ``ERR unavailable`` or ``not_authenticated`` (no effect: the store is down, the hub is
  shutting down or dropped the session), and ``rate_limited`` with ``retry_after_ms`` (a publish quota
  or rate limit: the hold then lasts ``retry_after_ms``), do not retry that publish on its own: the link
  *holds* —
  nothing more is sent — and after one shared backoff delay, once every publish still on its way has
  been answered, it re-sends all unconfirmed publishes (the refused one and every later one) in that
  order, then publishes made meanwhile. A reconnect re-sends the same way. So the hub always receives
  the copies it acts on in call order; what it cannot be stopped from doing is storing a later publish
  that was already on its way when it refused an earlier one (``HubClient.publish_batch`` chains the
  events of a key to rule that out).
* **Socket generations.** Each new socket bumps ``_gen``. A pending publish remembers the generation it
  was last sent on (0: to be sent); the resume step and the end of a hold (both ``_send_unsent``) send
  everything not sent on the current generation, and only then let publishes go straight out again, so
  a publish made meanwhile is neither lost, nor sent twice, nor sent ahead of an older one.

Nothing here is public (``tests/test_client_exports.py`` pins the SDK's names).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from typing import TYPE_CHECKING, Any, Final

from outboxhub.client._exceptions import HubError, error_from_code
from outboxhub.model import PublishResult
from outboxhub.protocol.codec import ErrFrame, OkFrame

if TYPE_CHECKING:
    from outboxhub.client._backoff import Backoff

__all__: list[str] = []

log = logging.getLogger("outboxhub.client")

# Refusals that say the request had no effect and may succeed later. ``not_authenticated`` on a socket
# that did authenticate means the hub has dropped the session (shutting down, token just expired) and
# is about to close it; the request goes out again on the next socket.
_NO_EFFECT: Final = frozenset({"unavailable", "not_authenticated"})


def _no_effect(frame: ErrFrame) -> bool:
    """A refusal that had no effect and may pass later: ``unavailable``, ``not_authenticated``, or
    ``rate_limited`` with ``retry_after_ms`` (a publish rate limit or quota: wait that long)."""
    return frame.code in _NO_EFFECT or (frame.code == "rate_limited" and frame.retry_after_ms is not None)


class Flow(enum.Enum):
    """What happens to a new publish (``Link._flow``)."""

    SENDING = "sent at once"
    HOLDING = "held back after a refusal, until the shared delay is over and every reply due has come"
    RESENDING = "queued behind the unsent ones being re-sent in order (end of a hold, or a resume)"


class PendingPublish:
    __slots__ = ("data", "future", "sent_gen")

    def __init__(self, data: bytes, future: asyncio.Future[PublishResult]) -> None:
        self.data = data
        self.future = future
        self.sent_gen = 0  # the socket generation it was last sent on and awaits a reply from; 0: to send


class PublishOrder:
    """The publish side of :class:`~outboxhub.client._link.Link` (its base class): pending publishes,
    holds after a refusal, in-order re-sends. The attributes are set by ``Link.__init__``."""

    _publishes: dict[int, PendingPublish]  # by rid, in the order first sent
    _flow: Flow
    _hold_timer: asyncio.TimerHandle | None
    _hold_over: bool  # the shared delay of the current hold has passed
    _holds: int  # holds since a publish was last confirmed outside one: the backoff attempt
    _backoff: Backoff
    _retry_unavailable: bool
    _gen: int
    ready: bool
    closing: bool

    def check_usable(self) -> None:
        raise NotImplementedError

    async def _send(self, data: bytes) -> bool:
        raise NotImplementedError

    def _spawn(self, coro: Any) -> None:
        raise NotImplementedError

    def pending_publishes(self) -> list[asyncio.Future[PublishResult]]:
        return [p.future for p in self._publishes.values()]

    async def publish(self, rid: int, data: bytes) -> PublishResult:
        """Send an encoded PUBLISH (carrying ``rid``) and wait for its confirmation, across reconnects."""
        self.check_usable()
        future: asyncio.Future[PublishResult] = asyncio.get_running_loop().create_future()
        pending = PendingPublish(data, future)
        self._publishes[rid] = pending
        try:
            if self.ready and self._flow is Flow.SENDING:
                pending.sent_gen = self._gen
                await self._send(data)  # if it fails, the reader sees the close; resent on reconnect
            # else it waits its turn: the resume or the end of the hold sends it after the older ones
            return await future
        finally:
            del self._publishes[rid]

    async def _send_unsent(self, gen: int) -> bool:
        """Send, in their original order, the unconfirmed publishes not sent on socket ``gen`` (and those
        published meanwhile), then let publishes go straight out again. Stops early when a refusal starts
        a new hold (True) or when socket ``gen`` is gone (False)."""
        if gen != self._gen:  # a task spawned for a socket that has gone: the new one's resume does this
            return False
        self._flow = Flow.RESENDING
        while True:
            todo = [p for p in self._publishes.values() if p.sent_gen != gen and not p.future.done()]
            if not todo:
                break
            for pending in todo:
                if gen != self._gen:
                    return False
                if self._flow is not Flow.RESENDING:  # a refusal started a new hold: it re-sends the rest
                    return True
                if pending.future.done():
                    continue
                pending.sent_gen = gen
                if not await self._send(pending.data):
                    return False
        # No await between the last check above and here: nothing is left unsent.
        if gen == self._gen:
            self._flow = Flow.SENDING
        return True

    def _on_published(self, rid: int, pending: PendingPublish, frame: OkFrame | ErrFrame) -> None:
        future = pending.future
        if future.done():
            return
        if isinstance(frame, OkFrame):
            fields = frame.fields
            try:
                result = PublishResult(
                    id=fields["id"], seq=fields["seq"], duplicate=bool(fields.get("duplicate", False))
                )
            except KeyError as exc:
                future.set_exception(HubError("bad_reply", f"PUBLISH reply without {exc.args[0]!r}"))
            else:
                future.set_result(result)
                if self._flow is Flow.SENDING:
                    self._holds = 0
        elif self._retry_unavailable and not self.closing and _no_effect(frame):
            # The hub did nothing with it. It must not overtake the publishes after it: hold them all.
            pending.sent_gen = 0
            if self._flow is not Flow.HOLDING:
                self._start_hold(rid, frame)
        else:
            future.set_exception(error_from_code(frame.code, frame.msg))

    # -- holding publishes back after a refusal -------------------------------------------------------

    def _start_hold(self, rid: int, frame: ErrFrame) -> None:
        """Stop sending publishes; re-send the unconfirmed ones in order after one backoff delay."""
        self._flow = Flow.HOLDING
        self._hold_over = False
        if frame.retry_after_ms is not None:  # over a quota: the hub says when it will pass
            delay = frame.retry_after_ms / 1000
        else:
            delay = self._backoff.delay(self._holds)
            self._holds += 1
        log.info(
            "publish %d: %s (%s); holding back %d unconfirmed publishes, re-sending them in order in %.2f s",
            rid,
            frame.code,
            frame.msg,
            sum(not p.future.done() for p in self._publishes.values()),
            delay,
        )
        self._hold_timer = asyncio.get_running_loop().call_later(delay, self._hold_elapsed)

    def _hold_elapsed(self) -> None:
        self._hold_timer = None
        self._hold_over = True
        self._end_hold()

    def _end_hold(self) -> None:
        """Re-send once the delay is over and no publish is still on its way: a reply still due could be
        a refusal, and that publish must go out again before the ones after it."""
        if self._flow is not Flow.HOLDING or not self._hold_over or not self.ready:
            return  # not connected: the resume of the next socket re-sends them
        gen = self._gen
        if any(p.sent_gen == gen and not p.future.done() for p in self._publishes.values()):
            return
        self._flow = Flow.RESENDING
        self._spawn(self._send_unsent(gen))

    def _cancel_hold(self) -> None:
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None
        self._hold_over = False
