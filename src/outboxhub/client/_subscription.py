"""A subscription on the client side: a queue of deliveries, consumed by handler workers or ``async for``.

The reader task puts each ``EVENT`` in the queue of its subscription (never blocking the reader: a grouped
subscription is bounded by the hub's ``max_in_flight``; an ephemeral one drops beyond ``max_pending``).
Consumers take deliveries out, decode typed payloads (a payload that does not decode is NACKed with the
reason and skipped), and settle them: a handler that returns ACKs, one that raises NACKs (``Retry`` with
its delay). With an inbox the handler runs inside the inbox's transaction, and a delivery the inbox has
recorded before is ACKed without running it. With ``opentelemetry-api`` installed each handler call runs
in a consumer span linked to the trace context in the event's headers (``outboxhub.tracing``).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Final, Generic, Protocol, TypeAlias, TypeVar

from outboxhub import tracing
from outboxhub.client._messages import Message, SubscribeContext
from outboxhub.client._outcomes import InboxRunner, Retry, Terminate
from outboxhub.client._topic import PayloadError, Topic
from outboxhub.protocol.codec import Subscribe, SubscribeOpts

__all__ = ["Handler", "InboxHandler", "Subscription"]

log = logging.getLogger("outboxhub.client")

T = TypeVar("T")

Handler: TypeAlias = Callable[[T, SubscribeContext], Awaitable[None] | None]
"""``handler(payload_or_event, ctx)``, sync or async: returning ACKs the event, raising NACKs it."""

C = TypeVar("C")

InboxHandler: TypeAlias = Callable[[T, SubscribeContext, C], Awaitable[None] | None]
"""``handler(payload_or_event, ctx, db)`` for ``subscribe(..., inbox=...)``: ``db`` is the connection or
session of the inbox's transaction (sync for a synchronous inbox, async for an asynchronous one)."""

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
        handler: Callable[..., Awaitable[None] | None] | None = None,
        concurrency: int = 1,
        nack_delay_ms: int | None = None,
        max_pending: int = 10_000,
        inbox: InboxRunner[Any] | None = None,
    ) -> None:
        if inbox is not None:
            _check_inbox(inbox, handler, group)
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
        self._inbox = inbox
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
        while True:
            try:
                msg = await self._next()
            except Exception:  # the client failed for good; it reports the error itself
                return
            if msg is None:
                return
            try:
                ctx = msg.context
                with tracing.consumer_span(
                    ctx.topic, ctx.id, ctx.event.headers, group=ctx.group, attempt=ctx.attempt
                ):
                    await self._call(msg)
            except Retry as exc:
                log.debug("handler for %r asked to retry event %s: %s", self.pattern, msg.context.id, exc)
                if not msg.settled:
                    await msg.nack(reason=failure_reason(exc), delay_ms=exc.delay_ms)
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

    async def _call(self, msg: Message[T]) -> None:
        """Run the handler on ``msg`` (in the inbox's transaction, if any)."""
        handler = self._handler
        assert handler is not None
        payload = msg.payload if self.topic is not None else msg.event
        ctx = msg.context
        if self._inbox is None:
            result = handler(payload, ctx)
            if inspect.isawaitable(result):
                await result
            return
        assert ctx.group is not None
        if not await self._inbox.run(ctx.group, ctx.topic, ctx.id, lambda db: handler(payload, ctx, db)):
            log.debug("event %s of %s was processed before (inbox); ACK", ctx.id, ctx.topic)

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


def _check_inbox(inbox: InboxRunner[Any], handler: Callable[..., Any] | None, group: str | None) -> None:
    if handler is None:
        raise ValueError("inbox= needs a handler: the inbox runs it in its transaction")
    if group is None:
        raise ValueError("inbox= needs a consumer group: ephemeral deliveries are not acknowledged")
    if not callable(getattr(inbox, "run", None)):
        raise TypeError(f"inbox must be an outboxhub.inbox.Inbox, got {type(inbox).__name__}")
    is_async = inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004 - an object with an async __call__
    )
    if is_async and not inbox.asynchronous:
        raise TypeError(
            f"{type(inbox).__name__} runs the handler in a worker thread with a synchronous connection: "
            "make the handler a plain def (or use an async inbox: AsyncPsycopgInbox, AsyncSqlAlchemyInbox)"
        )
