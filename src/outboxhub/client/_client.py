"""``HubClient``: the SDK's front. Publishing (pipelined, idempotent ids), subscriptions with handlers or
``async for``, typed topics; the socket, reconnects and token refresh are the :class:`~._link.Link`'s."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Final, TypeVar, Unpack, overload

from outboxhub import tracing
from outboxhub.client._backoff import Backoff
from outboxhub.client._exceptions import HubConnectionError, HubError, NotAuthenticated, TooLarge
from outboxhub.client._link import Link
from outboxhub.client._messages import SubscribeContext
from outboxhub.client._options import (
    HandlerOptions,
    PublishOptions,
    StreamOptions,
    check_url,
    positive,
    str_list,
    subscribe_opts,
)
from outboxhub.client._outcomes import InboxRunner
from outboxhub.client._subscription import Handler, InboxHandler, Subscription
from outboxhub.client._token import TokenSource
from outboxhub.client._topic import Topic, encode_payload
from outboxhub.client._window import Window
from outboxhub.ids import new_id
from outboxhub.model import Event, NewEvent, PublishResult
from outboxhub.protocol.codec import (
    MAX_FRAME_SIZE,
    Ack,
    ClientFrame,
    Extend,
    Nack,
    Publish,
    PublishOpts,
    SubscribeOpts,
    Unsubscribe,
    encode_client_frame,
)

__all__ = ["DEFAULT_URL", "HubClient", "connect"]

log = logging.getLogger("outboxhub.client")

T = TypeVar("T")
C = TypeVar("C")

DEFAULT_URL: Final = "ws://127.0.0.1:8090/"
"""Where ``outboxhub serve`` listens by default."""


class HubClient:
    """An async client of one outboxhub hub.

    ``token`` is a JWT, or a provider (sync or async callable returning one) that is asked again at every
    reconnect and before the token expires, so long-lived clients keep working with short-lived tokens.

    Use it as an async context manager (or call :meth:`connect` and :meth:`close`)::

        async with HubClient("ws://127.0.0.1:8090/", token) as client:
            result = await client.publish("process.state", {"state": "up"})

    Options:

    * ``reconnect``: re-establish a dropped connection, waiting ``backoff`` between attempts, forever
      unless ``max_reconnect_attempts`` is set;
    * ``max_in_flight``: unconfirmed publishes at once (more wait their turn);
    * ``connect_timeout_s``: bound on connect plus AUTH;
    * ``retry_unavailable``: re-send, with the same id, a publish the hub answered ``unavailable`` or
      ``not_authenticated`` (it had no effect) instead of raising; it and every later unconfirmed publish
      are held back and re-sent in their original order after one ``backoff`` delay;
    * ``heartbeat_s``: ping interval that detects a dead link;
    * ``max_frame_bytes``: larger publishes raise :class:`TooLarge` before anything is sent (set it to
      the hub's limit).
    """

    def __init__(
        self,
        url: str,
        token: TokenSource,
        *,
        reconnect: bool = True,
        backoff: Backoff = Backoff(),  # noqa: B008 - frozen
        max_reconnect_attempts: int | None = None,
        max_in_flight: int = 1024,
        connect_timeout_s: float = 10.0,
        retry_unavailable: bool = True,
        heartbeat_s: float | None = 20.0,
        max_frame_bytes: int = MAX_FRAME_SIZE,
    ) -> None:
        self._url = check_url(url)
        if isinstance(token, str) and not token:
            raise ValueError("token must not be empty")
        positive("max_in_flight", max_in_flight)
        positive("max_reconnect_attempts", max_reconnect_attempts)
        positive("max_frame_bytes", max_frame_bytes)
        self._max_frame_bytes = max_frame_bytes
        if not connect_timeout_s > 0:
            raise ValueError(f"connect_timeout_s must be > 0, got {connect_timeout_s}")
        self._inflight = Window(max_in_flight)
        self._link = Link(
            self._url,
            token,
            reconnect=reconnect,
            backoff=backoff,
            max_reconnect_attempts=max_reconnect_attempts,
            connect_timeout_s=connect_timeout_s,
            retry_unavailable=retry_unavailable,
            heartbeat_s=heartbeat_s,
        )

    def __repr__(self) -> str:
        state = "closed" if self._link.closing else "ready" if self._link.ready else "connecting"
        return f"<HubClient {self._url} {state}>"

    # -- properties -----------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self._url

    @property
    def connected(self) -> bool:
        """True while the connection is up, authenticated and resumed."""
        return self._link.ready

    @property
    def exp(self) -> int | None:
        """Expiry (epoch seconds) of the current token, as the hub reported it at AUTH."""
        return self._link.exp

    @property
    def subject(self) -> str | None:
        """The token's subject (``sub``), as the hub reported it at AUTH."""
        return self._link.subject

    @property
    def reconnects(self) -> int:
        """How many times the connection was re-established."""
        return self._link.reconnects

    @property
    def token_refreshes(self) -> int:
        """How many times the token was refreshed on an open connection."""
        return self._link.token_refreshes

    # -- lifecycle ------------------------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect and authenticate. Raises :class:`HubConnectionError` when the hub cannot be reached
        and :class:`AuthFailed` when it refuses the token (no retry: those are configuration errors)."""
        await self._link.start()

    async def __aenter__(self) -> HubClient:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def drain(self, timeout_s: float = 10.0) -> None:
        """Close gracefully: unsubscribe everything (running handlers finish and settle), wait up to
        ``timeout_s`` for unconfirmed publishes, then :meth:`close`."""
        try:
            async with asyncio.timeout(timeout_s):
                for sub in list(self._link.subs.values()):
                    await sub.unsubscribe()
                pending = self._link.pending_publishes()
                if pending:
                    await asyncio.wait(pending)
        except TimeoutError:
            log.warning("drain: gave up after %.1f s; closing", timeout_s)
        await self.close()

    async def close(self) -> None:
        """Close now: handlers are cancelled, unconfirmed publishes fail with :class:`ClientClosed`
        (they may or may not have been stored), undelivered events go back to the hub. Idempotent."""
        if not self._link.closing:
            self._link.closing = True  # refuse new calls while the handlers stop
            for sub in list(self._link.subs.values()):
                sub._end()
                await sub._stop_workers(cancel=True)
            self._link.subs.clear()
        await self._link.close()

    # -- publish --------------------------------------------------------------------------------------

    @overload
    async def publish(
        self, topic: Topic[T], payload: T, **options: Unpack[PublishOptions]
    ) -> PublishResult: ...

    @overload
    async def publish(
        self, topic: str, payload: Any = None, **options: Unpack[PublishOptions]
    ) -> PublishResult: ...

    async def publish(
        self,
        topic: Topic[Any] | str,
        payload: Any = None,
        *,
        id: str | None = None,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
        tags: Sequence[str] | None = None,
        caused_by: Sequence[str] | None = None,
    ) -> PublishResult:
        """Publish one event and return its confirmation once the hub has stored it durably.

        ``topic`` is a concrete topic name or a :class:`Topic` (whose payload type ``payload`` must have).
        ``id`` makes the publish idempotent; one is generated (UUIDv7) when not given, and it is what
        makes re-sending after a reconnect safe. Many publishes may be in flight at once (pipelined).

        Publishes go out in call order, and retries (after ``unavailable``, or a reconnect) re-send the
        unconfirmed ones in that order, never one on its own. Publishes in flight together are stored in
        call order unless the hub refuses one and stores a later one already on its way; await a publish
        before starting the next, or use :meth:`publish_batch` with a key, when the order must hold.

        Raises a :class:`HubError` subclass when the hub refuses it (:class:`Forbidden`,
        :class:`BadRequest`, ...), ``TypeError`` when the payload is not JSON-encodable, and
        ``TopicError`` for a topic that is not concrete.
        """
        if isinstance(topic, Topic):
            name, body = topic.name, topic.encode(payload)
        else:
            name, body = topic, encode_payload(payload)
        self._link.check_usable()
        rid = self._link.next_rid()
        opts = PublishOpts(
            id=id if id is not None else new_id(),
            key=key,
            headers=_headers(headers),
            tags=str_list("tags", tags),
            caused_by=str_list("caused_by", caused_by),
        )
        data = encode_client_frame(Publish(rid=rid, topic=name, payload=body, opts=opts))
        if len(data) > self._max_frame_bytes:
            # Checked here because a frame far beyond the hub's limit makes it close the connection, and
            # re-sending it after the reconnect would do that again.
            raise TooLarge(
                "too_large",
                f"PUBLISH frame is {len(data)} bytes; the limit is {self._max_frame_bytes} bytes "
                "(max_frame_bytes, which should match the hub's)",
            )
        async with self._inflight:
            return await self._link.publish(rid, data)

    async def publish_batch(
        self, events: Sequence[NewEvent], *, keep_key_order: bool = True
    ) -> list[PublishResult]:
        """Publish ``events`` and return their confirmations in the same order.

        This makes a client an outbox drain sink (``outboxhub drain --url …``): events keep their ids, so
        a batch re-sent after a crash or reconnect is deduplicated by the hub.

        Order: **the events of one key are stored in batch order, always** (through retried refusals,
        reconnects and hub restarts). The batch goes out in order, pipelined, except that an event with a
        ``key`` is sent only once the hub has confirmed the batch's previous event with that key (the
        events after it wait too, so sending stays in batch order). Events of different keys, or without
        a key, are stored in batch order unless the hub refuses one and stores a later one that was already
        on its way (see :meth:`publish`). A batch of distinct keys is thus fully pipelined; a batch of one
        key takes one round trip per event. ``keep_key_order=False`` pipelines every event (for callers
        that need no order, such as an outbox drainer without ``ordered_by_key``).

        At the first error that is not retried (``Forbidden``, ``TooLarge``, a lost link with reconnect
        off, ...) nothing more is sent, the events still in flight are abandoned (they may or may not be
        stored) and that error is raised; an event whose predecessor of the same key failed is never sent.
        """
        tasks: list[asyncio.Task[PublishResult]] = []
        failed: list[asyncio.Task[PublishResult]] = []

        def settled(task: asyncio.Task[PublishResult]) -> None:
            if not task.cancelled() and task.exception() is not None:
                failed.append(task)

        last_of_key: dict[str, asyncio.Task[PublishResult]] = {}
        try:
            for event in events:
                earlier = last_of_key.get(event.key) if keep_key_order and event.key is not None else None
                if earlier is not None:
                    if not earlier.done():
                        await asyncio.wait((earlier,))
                    earlier.result()  # raises if it failed: then nothing more is sent
                if failed:
                    failed[0].result()
                task = asyncio.create_task(self._publish_event(event))
                task.add_done_callback(settled)
                tasks.append(task)
                if event.key is not None:
                    last_of_key[event.key] = task
            return list(await asyncio.gather(*tasks))
        finally:
            unfinished = [task for task in tasks if not task.done()]
            for task in unfinished:
                task.cancel()
            if unfinished:
                await asyncio.wait(unfinished)

    async def _publish_event(self, event: NewEvent) -> PublishResult:
        return await self.publish(
            event.topic,
            event.payload,
            id=event.id,
            key=event.key,
            headers=event.headers,
            tags=event.tags,
            caused_by=event.caused_by,
        )

    # -- subscribe ------------------------------------------------------------------------------------

    @overload
    async def subscribe(
        self, topic: Topic[T], group: str | None, handler: Handler[T], **options: Unpack[HandlerOptions]
    ) -> Subscription[Any]: ...

    @overload
    async def subscribe(
        self, topic: str, group: str | None, handler: Handler[Event], **options: Unpack[HandlerOptions]
    ) -> Subscription[Any]: ...

    @overload
    async def subscribe(
        self,
        topic: Topic[T],
        group: str,
        handler: InboxHandler[T, C],
        *,
        inbox: InboxRunner[C],
        **options: Unpack[HandlerOptions],
    ) -> Subscription[Any]: ...

    @overload
    async def subscribe(
        self,
        topic: str,
        group: str,
        handler: InboxHandler[Event, C],
        *,
        inbox: InboxRunner[C],
        **options: Unpack[HandlerOptions],
    ) -> Subscription[Any]: ...

    async def subscribe(
        self,
        topic: Topic[Any] | str,
        group: str | None,
        handler: Handler[Any] | InboxHandler[Any, Any],
        *,
        inbox: InboxRunner[Any] | None = None,
        start: str | int | None = None,
        max_in_flight: int | None = None,
        ack_timeout_ms: int | None = None,
        max_deliver: int | None = None,
        ordered_by_key: bool | None = None,
        concurrency: int = 1,
        nack_delay_ms: int | None = None,
    ) -> Subscription[Any]:
        """Run ``handler(payload, ctx)`` for every event matching ``topic`` in consumer ``group``.

        With a :class:`Topic` the handler gets the decoded payload; with a pattern string, the
        :class:`~outboxhub.model.Event`. ``ctx`` is the :class:`SubscribeContext` (event, attempt, ...).
        The handler may be sync or async; returning ACKs the event, raising NACKs it with the exception
        text as reason (redelivered after ``nack_delay_ms``, default the group's backoff). A payload that
        does not decode is NACKed without calling the handler. ``group=None`` subscribes ephemerally (live
        events only, no acks). Up to ``concurrency`` handler calls run at once. Options ``start``
        (earliest, latest, a seq, ``"seq:N"``, ``"ts:MS"``), ``max_in_flight``, ``ack_timeout_ms``,
        ``max_deliver`` and ``ordered_by_key`` are those of SUBSCRIBE in ``docs/protocol.md``.

        ``raise Retry(delay_ms=…)`` from the handler NACKs with that delay. With ``inbox`` (an
        :class:`outboxhub.inbox.Inbox`; a group is required) the handler is ``handler(payload, ctx, db)``
        and runs inside the inbox's transaction, which also records the delivery; the ACK follows the
        commit, and a delivery recorded before is ACKed without running the handler (docs/client.md).
        """
        sub = self._new_subscription(
            topic,
            group,
            subscribe_opts(start, max_in_flight, ack_timeout_ms, max_deliver, ordered_by_key),
            handler=handler,
            concurrency=concurrency,
            nack_delay_ms=nack_delay_ms,
            inbox=inbox,
        )
        await self._activate(sub)
        return sub

    @overload
    def messages(
        self, topic: Topic[T], group: str | None = None, **options: Unpack[StreamOptions]
    ) -> Subscription[T]: ...

    @overload
    def messages(
        self, topic: str, group: str | None = None, **options: Unpack[StreamOptions]
    ) -> Subscription[Any]: ...

    def messages(
        self,
        topic: Topic[Any] | str,
        group: str | None = None,
        *,
        start: str | int | None = None,
        max_in_flight: int | None = None,
        ack_timeout_ms: int | None = None,
        max_deliver: int | None = None,
        ordered_by_key: bool | None = None,
        max_pending: int = 10_000,
    ) -> Subscription[Any]:
        """Iterate over the events matching ``topic`` in ``group`` as :class:`Message` objects::

            async with client.messages(STATE, "ops") as stream:
                async for msg in stream:
                    ...
                    await msg.ack()

        Subscribes on ``async with`` entry or on the first ``async for`` step; ``async with`` (or
        :meth:`Subscription.unsubscribe`) also ends it. ``msg.payload`` is decoded for a :class:`Topic`
        (undecodable payloads are NACKed and skipped) and the raw JSON value for a pattern string. An
        ephemeral stream (``group=None``) keeps at most ``max_pending`` undelivered events, dropping
        newer ones beyond that. Options as for :meth:`subscribe`.
        """
        return self._new_subscription(
            topic,
            group,
            subscribe_opts(start, max_in_flight, ack_timeout_ms, max_deliver, ordered_by_key),
            max_pending=max_pending,
        )

    def _new_subscription(
        self,
        topic: Topic[Any] | str,
        group: str | None,
        opts: SubscribeOpts | None,
        *,
        handler: Handler[Any] | InboxHandler[Any, Any] | None = None,
        concurrency: int = 1,
        nack_delay_ms: int | None = None,
        max_pending: int = 10_000,
        inbox: InboxRunner[Any] | None = None,
    ) -> Subscription[Any]:
        typed = topic if isinstance(topic, Topic) else None
        sub: Subscription[Any] = Subscription(
            self,
            pattern=topic.name if isinstance(topic, Topic) else topic,
            group=group,
            topic=typed,
            opts=opts,
            handler=handler,
            concurrency=concurrency,
            nack_delay_ms=nack_delay_ms,
            max_pending=max_pending,
            inbox=inbox,
        )
        sub.subscribe_frame()  # checks the pattern and the group name now, with a clear error
        return sub

    async def _activate(self, sub: Subscription[Any]) -> None:
        link = self._link
        link.check_usable()
        current = link.subs.get(sub.key)
        if current is not None and current is not sub:
            raise ValueError(
                f"this client is already subscribed to {sub.pattern!r} with group {sub.group!r}; "
                "unsubscribe that subscription first"
            )
        link.subs[sub.key] = sub
        try:
            for attempt in itertools.count():
                try:
                    await link.request(sub.subscribe_frame())
                    break
                except (HubConnectionError, NotAuthenticated):
                    # The socket dropped before the OK, or the hub dropped our session on it (it is about
                    # to close it). SUBSCRIBE is idempotent: ask again, on the next socket if need be.
                    if not link.can_retry:
                        raise
                    await asyncio.sleep(link.backoff.delay(attempt))
        except BaseException:
            if link.subs.get(sub.key) is sub:
                del link.subs[sub.key]
            raise
        sub._start()

    async def _deactivate(self, sub: Subscription[Any]) -> None:
        link = self._link
        if link.subs.get(sub.key) is not sub:
            return
        del link.subs[sub.key]
        if link.ready:
            try:
                await link.request_now(Unsubscribe(topic=sub.pattern, group=sub.group))
            except HubError as exc:  # gone with the socket anyway
                log.debug("UNSUBSCRIBE %s %s: %s", sub.pattern, sub.group, exc)

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
        """Send ACK or NACK for a delivery. Without ``confirm`` a refusal is only logged; a delivery that
        cannot be settled (socket down) is redelivered by the hub anyway."""
        if ctx.group is None:
            return
        # seq names the delivery when two topics under the pattern carry the same id
        seq = ctx.event.seq if ctx.event.seq > 0 else None
        frame: ClientFrame = (
            Ack(topic=ctx.pattern, group=ctx.group, id=ctx.id, seq=seq)
            if ack
            else Nack(
                topic=ctx.pattern,
                group=ctx.group,
                id=ctx.id,
                seq=seq,
                reason=reason,
                delay_ms=None if terminal else delay_ms,
                terminal=terminal,
            )
        )
        if not confirm:
            await self._link.fire(frame)
        elif not self._link.ready:
            raise HubConnectionError("not connected; the event will be redelivered")
        else:
            await self._link.request_now(frame)

    async def _extend(self, ctx: SubscribeContext) -> None:
        """Send EXTEND for a delivery and wait for the OK (``Message.in_progress``)."""
        if ctx.group is None:
            return
        if not self._link.ready:
            raise HubConnectionError("not connected; the event will be redelivered")
        seq = ctx.event.seq if ctx.event.seq > 0 else None
        await self._link.request_now(Extend(topic=ctx.pattern, group=ctx.group, id=ctx.id, seq=seq))


def _headers(headers: Mapping[str, str] | None) -> dict[str, str] | None:
    """The event's headers: the caller's, plus the current trace context (``outboxhub.tracing``)."""
    traced = tracing.inject(headers)
    return dict(traced) if traced is not None else None


async def connect(url: str, token: TokenSource, **options: Any) -> HubClient:
    """A connected :class:`HubClient` (``options`` as for its constructor); close it when done, or use
    ``async with await connect(...) as client``."""
    client = HubClient(url, token, **options)
    await client.connect()
    return client
