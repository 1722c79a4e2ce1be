"""The blocking counterpart of :meth:`HubClient.messages` for :class:`SyncHubClient`: a subscription to
iterate from a plain thread, and messages whose settle verbs block.

Every call runs on the client's loop thread (``run_coroutine_threadsafe``), so the async subscription's
queue is the only buffer: a group's deliveries are bounded by ``max_in_flight`` (the hub sends no more
until some are settled), an ephemeral stream's by ``max_pending`` (newer events dropped beyond it), as in
the async API. A wait for the next message that times out stays pending and is taken up by the next
:meth:`SyncSubscription.receive`, so a timeout never loses a message that arrived just then.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Generic, Protocol, TypeVar

from outboxhub.client._exceptions import ClientClosed
from outboxhub.client._messages import Message, SubscribeContext
from outboxhub.client._subscription import Subscription
from outboxhub.model import Event

__all__ = ["SyncMessage", "SyncSubscription"]

T = TypeVar("T")
R = TypeVar("R")


class _Owner(Protocol):
    """What a blocking subscription needs from its :class:`SyncHubClient`."""

    @property
    def _loop(self) -> asyncio.AbstractEventLoop: ...

    def _call(self, coro: Coroutine[Any, Any, R], timeout_s: float | None) -> R: ...

    def _forget(self, stream: SyncSubscription[Any]) -> None: ...


class SyncMessage(Generic[T]):
    """A delivered event, settled with blocking :meth:`ack` / :meth:`nack` (the verbs of :class:`Message`).

    Each verb runs on the client's loop thread and returns once it is done there (sent, or confirmed for
    :meth:`double_ack` and :meth:`in_progress`); ``timeout_s`` bounds the wait (default: the subscription's).
    Any thread may settle a message, once; a second settle raises ``RuntimeError``.
    """

    __slots__ = ("_message", "_owner", "_timeout_s")

    def __init__(self, message: Message[T], owner: _Owner, timeout_s: float | None) -> None:
        self._message = message
        self._owner = owner
        self._timeout_s = timeout_s

    def __repr__(self) -> str:
        return repr(self._message)

    @property
    def payload(self) -> T:
        """The decoded ``T`` for a typed subscription, the raw JSON value otherwise."""
        return self._message.payload

    @property
    def context(self) -> SubscribeContext:
        return self._message.context

    @property
    def event(self) -> Event:
        """The stored event (raw payload, id, seq, ts, key, headers, ...)."""
        return self._message.event

    @property
    def attempt(self) -> int:
        return self._message.attempt

    @property
    def redelivered(self) -> bool:
        return self._message.redelivered

    @property
    def settled(self) -> bool:
        """True once a settle verb was called."""
        return self._message.settled

    def _run(self, coro: Coroutine[Any, Any, None], timeout_s: float | None) -> None:
        self._owner._call(coro, self._timeout_s if timeout_s is None else timeout_s)

    def ack(self, *, timeout_s: float | None = None) -> None:
        """Tell the hub this event is done (see :meth:`Message.ack`)."""
        self._run(self._message.ack(), timeout_s)

    def double_ack(self, *, timeout_s: float | None = None) -> None:
        """ACK and block until the hub confirms it (see :meth:`Message.double_ack`)."""
        self._run(self._message.double_ack(), timeout_s)

    def nack(
        self, *, reason: str | None = None, delay_ms: int | None = None, timeout_s: float | None = None
    ) -> None:
        """Ask for a redelivery after ``delay_ms`` (default: the group's backoff; :meth:`Message.nack`)."""
        self._run(self._message.nack(reason=reason, delay_ms=delay_ms), timeout_s)

    def terminate(
        self, reason: str = "terminated by the consumer", *, timeout_s: float | None = None
    ) -> None:
        """Dead-letter this event now (see :meth:`Message.terminate`)."""
        self._run(self._message.terminate(reason), timeout_s)

    def in_progress(self, *, timeout_s: float | None = None) -> None:
        """Push this delivery's ack deadline (an ``EXTEND``; see :meth:`Message.in_progress`)."""
        self._run(self._message.in_progress(), timeout_s)


class SyncSubscription(Generic[T]):
    """A ``(pattern, group)`` subscription of a :class:`SyncHubClient`, iterated from a plain thread::

        with hub.messages("jobs.*", "workers", max_in_flight=10) as stream:
            for msg in stream:
                handle(msg.payload)
                msg.ack()

    Made by :meth:`SyncHubClient.messages`; subscribes on ``with`` entry or the first :meth:`receive`
    (``for``), and :meth:`unsubscribe` (or leaving the ``with`` block) ends it: the hub redelivers what was
    left unsettled. Iteration blocks until the next message and ends when the subscription does; closing
    the client ends it with :class:`ClientClosed`, from any thread. Take messages from one thread at a
    time; settling and :meth:`unsubscribe` may come from any thread.
    """

    def __init__(self, subscription: Subscription[T], owner: _Owner, timeout_s: float | None) -> None:
        self._sub = subscription
        self._owner = owner
        self._timeout_s = timeout_s
        self._taking = threading.Lock()
        self._waiting: concurrent.futures.Future[Message[T]] | None = None
        """The wait for the next message, kept across a :meth:`receive` that timed out."""
        self._ended = False
        self._closed = False

    def __repr__(self) -> str:
        return f"<SyncSubscription {self.pattern!r} group={self.group!r}>"

    @property
    def pattern(self) -> str:
        return self._sub.pattern

    @property
    def group(self) -> str | None:
        return self._sub.group

    @property
    def buffered(self) -> int:
        """Deliveries received from the hub and not yet taken (at most ``max_in_flight`` for a group,
        ``max_pending`` without one)."""
        return self._sub._queue.qsize()

    @property
    def dropped(self) -> int:
        """Ephemeral deliveries dropped because ``max_pending`` were already waiting."""
        return self._sub.dropped

    def subscribe(self) -> None:
        """Subscribe now (blocking until the hub confirms), instead of at the first :meth:`receive`."""
        self._check()
        self._owner._call(self._sub.__aenter__(), self._timeout_s)

    def receive(self, timeout_s: float | None = None) -> SyncMessage[T] | None:
        """The next message, blocking up to ``timeout_s`` (None: until one comes); None once the
        subscription ended. Raises ``TimeoutError`` when nothing came in time (the subscription goes on),
        :class:`ClientClosed` after the client's :meth:`~SyncHubClient.close`, and what ends the async
        subscription (a connection that failed for good). Messages are taken by one thread at a time: a
        second one waits for the first, within its ``timeout_s`` too."""
        if not self._taking.acquire(timeout=-1 if timeout_s is None else timeout_s):
            raise TimeoutError(f"another thread is taking messages from {self.pattern!r}")
        try:
            return self._take(timeout_s)
        finally:
            self._taking.release()

    def _take(self, timeout_s: float | None) -> SyncMessage[T] | None:
        self._check()
        if self._ended:
            return None
        if self._waiting is None:
            self._waiting = asyncio.run_coroutine_threadsafe(anext(self._sub), self._owner._loop)
        try:
            message = self._waiting.result(timeout_s)
        except concurrent.futures.TimeoutError:
            raise TimeoutError(f"no message on {self.pattern!r} within {timeout_s} s") from None
        except StopAsyncIteration:
            self._waiting = None
            self._ended = True
            return None
        except concurrent.futures.CancelledError:
            self._waiting = None
            self._check()
            self._ended = True
            return None
        except BaseException:
            self._waiting = None
            raise
        self._waiting = None
        return SyncMessage(message, self._owner, self._timeout_s)

    def __iter__(self) -> SyncSubscription[T]:
        return self

    def __next__(self) -> SyncMessage[T]:
        message = self.receive()
        if message is None:
            raise StopIteration
        return message

    def unsubscribe(self) -> None:
        """End the subscription (a :meth:`receive` waiting in another thread returns None) and tell the
        hub, which redelivers what was left unsettled. Idempotent; nothing to do after the client closed."""
        if self._ended or self._closed:
            return
        self._ended = True
        self._stop_waiting()
        self._owner._forget(self)
        self._owner._call(self._sub.unsubscribe(), self._timeout_s)

    def _client_closed(self) -> None:
        """The client is closing: every wait ends with :class:`ClientClosed`."""
        self._closed = True
        self._stop_waiting()

    def _stop_waiting(self) -> None:
        waiting = self._waiting
        if waiting is not None:
            waiting.cancel()  # wakes the receiving thread now; a message taken meanwhile is redelivered

    def _check(self) -> None:
        if self._closed:
            raise ClientClosed(f"the SyncHubClient was closed; the subscription to {self.pattern!r} ended")

    def __enter__(self) -> SyncSubscription[T]:
        self.subscribe()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.unsubscribe()
