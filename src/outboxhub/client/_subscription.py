"""A subscription on the client side: a queue of deliveries, consumed by handler workers or ``async for``.

The reader task puts each ``EVENT`` in the queue of its subscription (never blocking the reader: a grouped
subscription is bounded by the hub's ``max_in_flight``; an ephemeral one drops beyond ``max_pending``).
Consumers take deliveries out, decode typed payloads (a payload that does not decode is NACKed with the
reason and skipped), and settle them: a handler that returns ACKs, one that raises NACKs.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Final, Generic, Protocol, TypeAlias, TypeVar

from outboxhub.client._messages import Message, SubscribeContext
from outboxhub.client._outcomes import Terminate
from outboxhub.client._topic import PayloadError, Topic
from outboxhub.protocol.codec import Subscribe, SubscribeOpts

__all__ = ["Handler", "Subscription"]

log = logging.getLogger("outboxhub.client")

T = TypeVar("T")

Handler: TypeAlias = Callable[[T, SubscribeContext], Awaitable[None] | None]
"""``handler(payload_or_event, ctx)``, sync or async: returning ACKs the event, raising NACKs it."""

_MAX_REASON: Final = 1000


class _Host(Protocol):
    """What a subscription needs from its client."""

    async def _activate(self, sub: Subscription[Any]) -> None: ...

    async def _deactivate(self, sub: Subscription[Any]) -> None: ...

    async def _settle(
        self,
        ctx: SubscribeContext,
        *,
        ack: bool,
        reason: str | None,
        delay_ms: int | None,
        confirm: bool,
        terminal: bool = False,
    ) -> None: ...

    async def _extend(self, ctx: SubscribeContext) -> None: ...


class _End:
    __slots__ = ("error",)

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


def failure_reason(exc: BaseException) -> str:
    """The NACK reason for a handler that raised ``exc``: ``"<Type>: <text>"``, kept short."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 1] + "…"


class Subscription(Generic[T]):
    """One ``(pattern, group)`` subscription of a :class:`HubClient`.

    Made by :meth:`HubClient.subscribe` (a handler runs for each event) or :meth:`HubClient.messages`
    (iterate with ``async for``; subscribed on first use or on ``async with``). End it with
    :meth:`unsubscribe`; the client re-subscribes it by itself after a reconnect.
    """

    def __init__(
        self,
        host: _Host,
        *,
        pattern: str,
        group: str | None,
        topic: Topic[T] | None,
        opts: SubscribeOpts | None,
        handler: Handler[Any] | None = None,
        concurrency: int = 1,
        nack_delay_ms: int | None = None,
        max_pending: int = 10_000,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        if nack_delay_ms is not None and nack_delay_ms < 0:
            raise ValueError(f"nack_delay_ms must be >= 0, got {nack_delay_ms}")
        self._host = host
        self.pattern = pattern
        self.group = group
        self.topic = topic
        self.opts = opts
        self._handler = handler
        self._concurrency = concurrency
        self._nack_delay_ms = nack_delay_ms
        self._max_pending = max_pending
        self._queue: asyncio.Queue[SubscribeContext | _End] = asyncio.Queue()
        self._workers: list[asyncio.Task[None]] = []
        self._started = False  # activation was asked for (subscribe sent or about to be)
        self._ended = False
        self.dropped = 0
        """Ephemeral deliveries dropped because ``max_pending`` were already waiting."""

    def __repr__(self) -> str:
        state = "ended" if self._ended else "active" if self._started else "new"
        return f"<Subscription {self.pattern!r} group={self.group!r} {state}>"

    @property
    def key(self) -> tuple[str, str | None]:
        return (self.pattern, self.group)

    @property
    def active(self) -> bool:
        """True between subscribing and :meth:`unsubscribe` (or the client's close)."""
        return self._started and not self._ended

    def subscribe_frame(self) -> Subscribe:
        return Subscribe(topic=self.pattern, group=self.group, opts=self.opts)

    # -- called by the client ---------------------------------------------------------------------------

    def _deliver(self, ctx: SubscribeContext) -> None:
        """Queue one delivery (from the reader task; never blocks)."""
        if self._ended:
            return
        if self.group is None and self._queue.qsize() >= self._max_pending:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning(
                    "ephemeral subscription %r is %d events behind; dropped %d (a group has flow control)",
                    self.pattern,
                    self._max_pending,
                    self.dropped,
                )
            return
        self._queue.put_nowait(ctx)

    def _forget_unsettled(self) -> None:
        """The connection dropped: queued grouped deliveries will come again, so drop these copies."""
        if self.group is None or self._ended:
            return
        while not self._queue.empty():
            self._queue.get_nowait()

    def _start(self) -> None:
        self._started = True
        if self._handler is not None and not self._workers:
            self._workers = [
                asyncio.get_running_loop().create_task(
                    self._work(), name=f"outboxhub-handler-{self.pattern}-{self.group}-{i}"
                )
                for i in range(self._concurrency)
            ]

    def _end(self, error: BaseException | None = None) -> None:
        """Stop taking deliveries; consumers see the end (or ``error``) after what they are working on."""
        if self._ended:
            return
        self._ended = True
        while not self._queue.empty():  # unsettled deliveries are released by the hub when we go
            self._queue.get_nowait()
        self._queue.put_nowait(_End(error))

    async def _stop_workers(self, *, cancel: bool) -> None:
        workers, self._workers = self._workers, []
        if cancel:
            for task in workers:
                task.cancel()
        if workers:
            await asyncio.gather(*workers, return_exceptions=True)

    # -- consuming ------------------------------------------------------------------------------------

    async def _next(self) -> Message[T] | None:
        while True:
            item = await self._queue.get()
            if isinstance(item, _End):
                self._queue.put_nowait(item)  # every other consumer must see the end too
                if item.error is not None:
                    raise item.error
                return None
            if self.topic is None:
                return Message(item.event.payload, item, self._host)
            try:
                payload = self.topic.decode(item.event.payload)
            except PayloadError as exc:
                # Decoding fails the same way on every attempt: dead-letter it now (a terminal NACK).
                reason = f"{exc} (topic {item.topic}, event {item.id})"
                log.warning("dead-lettering %s (terminal NACK): %s", item.id, reason)
                await self._host._settle(
                    item, ack=False, reason=reason, delay_ms=None, confirm=False, terminal=True
                )
                continue
            return Message(payload, item, self._host)

    async def _work(self) -> None:
        handler = self._handler
        assert handler is not None
        typed = self.topic is not None
        while True:
            try:
                msg = await self._next()
            except Exception:  # the client failed for good; it reports the error itself
                return
            if msg is None:
                return
            try:
                result = handler(msg.payload if typed else msg.event, msg.context)
                if inspect.isawaitable(result):
                    await result
            except Terminate as exc:
                log.warning(
                    "handler for %r terminated event %s: %s", self.pattern, msg.context.id, exc.reason
                )
                if not msg.settled:
                    await msg.terminate(exc.reason[:_MAX_REASON])
            except Exception as exc:
                log.warning(
                    "handler for %r failed on event %s (attempt %d); NACK",
                    self.pattern,
                    msg.context.id,
                    msg.attempt,
                    exc_info=True,
                )
                if not msg.settled:
                    await msg.nack(reason=failure_reason(exc), delay_ms=self._nack_delay_ms)
            else:
                if not msg.settled:
                    await msg.ack()

    # -- public ---------------------------------------------------------------------------------------

    async def unsubscribe(self) -> None:
        """Stop the handlers (letting the ones running finish and settle) and end the subscription on the
        hub; the hub redelivers whatever was left unsettled. Idempotent."""
        if self._ended:
            return
        self._end()
        await self._stop_workers(cancel=False)
        await self._host._deactivate(self)

    def __aiter__(self) -> Subscription[T]:
        if self._handler is not None:
            raise RuntimeError("this subscription runs a handler; it cannot also be iterated")
        return self

    async def __anext__(self) -> Message[T]:
        if not self._started and not self._ended:
            await self._host._activate(self)
        msg = await self._next()
        if msg is None:
            raise StopAsyncIteration
        return msg

    async def __aenter__(self) -> Subscription[T]:
        if not self._started and not self._ended:
            await self._host._activate(self)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.unsubscribe()
