"""What a subscriber receives: the delivery context, and messages with their ack verbs (nats.py style)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from outboxhub.model import Event

__all__ = ["Message", "SubscribeContext"]

T = TypeVar("T")


class _Settler(Protocol):
    """The client side of settling a delivery (implemented by the client)."""

    async def _settle(
        self,
        ctx: SubscribeContext,
        *,
        ack: bool,
        reason: str | None,
        delay_ms: int | None,
        confirm: bool,
        terminal: bool = False,
    ) -> None:
        """Send ACK/NACK for ``ctx``; with ``confirm``, wait for the hub's reply (raising on ERR)."""

    async def _extend(self, ctx: SubscribeContext) -> None:
        """Send EXTEND for ``ctx`` and wait for the hub's OK (raising on ERR)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscribeContext:
    """One delivery: the stored event, the subscription it came through, and its attempt number.

    ``pattern`` is the subscription's pattern and ``event.topic`` the concrete topic. ``group`` is None
    for an ephemeral (live-only, unacked) subscription. ``attempt`` starts at 1.
    """

    event: Event
    pattern: str
    group: str | None
    attempt: int

    @property
    def redelivered(self) -> bool:
        """True when this event was delivered before (``attempt > 1``)."""
        return self.attempt > 1

    @property
    def id(self) -> str:
        return self.event.id

    @property
    def topic(self) -> str:
        return self.event.topic

    @property
    def seq(self) -> int:
        return self.event.seq

    @property
    def ts(self) -> int:
        return self.event.ts

    @property
    def key(self) -> str | None:
        return self.event.key

    @property
    def headers(self) -> dict[str, str]:
        return self.event.headers or {}


class Message(Generic[T]):
    """A delivered event with its (decoded) payload, to be settled with :meth:`ack` or :meth:`nack`.

    ``payload`` is the decoded ``T`` for a typed subscription and the raw JSON value otherwise.
    Settle each message once; an unsettled message is redelivered after the group's ``ack_timeout_ms``.
    For ephemeral subscriptions (no group) ack and nack do nothing.
    """

    __slots__ = ("_settled", "_settler", "context", "payload")

    def __init__(self, payload: T, context: SubscribeContext, settler: _Settler) -> None:
        self.payload = payload
        self.context = context
        self._settler = settler
        self._settled: str | None = None

    def __repr__(self) -> str:
        c = self.context
        return f"<Message {c.topic} seq={c.seq} id={c.id} attempt={c.attempt}>"

    @property
    def event(self) -> Event:
        """The stored event (raw payload, id, seq, ts, key, headers, ...)."""
        return self.context.event

    @property
    def attempt(self) -> int:
        return self.context.attempt

    @property
    def redelivered(self) -> bool:
        return self.context.redelivered

    @property
    def settled(self) -> bool:
        """True once :meth:`ack` or :meth:`nack` was called."""
        return self._settled is not None

    def _claim(self, verb: str) -> None:
        if self._settled is not None:
            raise RuntimeError(f"message {self.context.id} was already {self._settled}ed; settle it once")
        self._settled = verb

    async def ack(self) -> None:
        """Tell the hub this event is done. Returns once the ACK is sent (see :meth:`double_ack`)."""
        self._claim("ack")
        await self._settler._settle(self.context, ack=True, reason=None, delay_ms=None, confirm=False)

    async def double_ack(self) -> None:
        """ACK and wait until the hub confirms it; raises :class:`HubError` if the hub refuses it or the
        connection drops first (the event is then redelivered)."""
        self._claim("ack")
        await self._settler._settle(self.context, ack=True, reason=None, delay_ms=None, confirm=True)

    async def nack(self, *, reason: str | None = None, delay_ms: int | None = None) -> None:
        """Ask for a redelivery after ``delay_ms`` (default: the group's backoff); ``reason`` is recorded
        in the dead-letter headers if this was the last attempt."""
        if delay_ms is not None and delay_ms < 0:
            raise ValueError(f"delay_ms must be >= 0, got {delay_ms}")
        self._claim("nack")
        await self._settler._settle(self.context, ack=False, reason=reason, delay_ms=delay_ms, confirm=False)

    async def terminate(self, reason: str = "terminated by the consumer") -> None:
        """Dead-letter this event now with ``reason``: no more attempts (a terminal NACK; in a handler,
        ``raise Terminate(reason)`` does the same)."""
        self._claim("terminate")
        await self._settler._settle(
            self.context, ack=False, reason=reason, delay_ms=None, confirm=False, terminal=True
        )

    async def in_progress(self) -> None:
        """Still working on it: push this delivery's ack deadline to now + the subscription's
        ``ack_timeout_ms`` (an ``EXTEND``), so it is not redelivered meanwhile. Call it again before each
        timeout for long work. Waits for the hub's OK; raises :class:`BadRequest` when the delivery is no
        longer this connection's (it timed out already, or was settled). A no-op without a group."""
        if self._settled is not None:
            raise RuntimeError(f"message {self.context.id} was already {self._settled}ed")
        if self.context.group is not None:
            await self._settler._extend(self.context)
