"""A blocking facade for scripts and sync services: a :class:`HubClient` running on an event loop in a
background thread (publish, and consume with :meth:`SyncHubClient.messages`)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar, Unpack, overload

from outboxhub.client._client import HubClient
from outboxhub.client._exceptions import ClientClosed
from outboxhub.client._options import PublishOptions, StreamOptions
from outboxhub.client._subscription import Subscription
from outboxhub.client._sync_messages import SyncSubscription
from outboxhub.client._token import TokenSource
from outboxhub.client._topic import Topic
from outboxhub.model import PublishResult

__all__ = ["SyncHubClient", "connect_sync"]

T = TypeVar("T")
R = TypeVar("R")


class SyncHubClient:
    """Blocking ``publish``, ``messages`` and ``close`` over a :class:`HubClient`; made by
    :func:`connect_sync`.

    Safe to call from any thread (calls are handed to the client's own loop thread). ``timeout_s`` bounds
    each call; on timeout the publish is abandoned (it may still be stored).
    """

    def __init__(self, client: HubClient, loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
        self._client = client
        self._loop = loop
        self._thread = thread
        self._closed = False
        self._streams: set[SyncSubscription[Any]] = set()
        self._streams_lock = threading.Lock()

    @property
    def client(self) -> HubClient:
        """The underlying async client (use it only from coroutines run on its loop)."""
        return self._client

    def _call(self, coro: Coroutine[Any, Any, R], timeout_s: float | None) -> R:
        if self._closed:
            coro.close()
            raise ClientClosed("this SyncHubClient is closed")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout_s)
        except TimeoutError:
            future.cancel()
            raise

    @overload
    def publish(
        self,
        topic: Topic[T],
        payload: T,
        *,
        timeout_s: float | None = 30.0,
        **options: Unpack[PublishOptions],
    ) -> PublishResult: ...

    @overload
    def publish(
        self,
        topic: str,
        payload: Any = None,
        *,
        timeout_s: float | None = 30.0,
        **options: Unpack[PublishOptions],
    ) -> PublishResult: ...

    def publish(
        self,
        topic: Topic[Any] | str,
        payload: Any = None,
        *,
        timeout_s: float | None = 30.0,
        **options: Unpack[PublishOptions],
    ) -> PublishResult:
        """Publish one event and block until the hub confirms it (see :meth:`HubClient.publish`; the same
        keyword options, and ``timeout_s``)."""
        return self._call(self._client.publish(topic, payload, **options), timeout_s)

    @overload
    def messages(
        self,
        topic: Topic[T],
        group: str | None = None,
        *,
        timeout_s: float | None = 30.0,
        **options: Unpack[StreamOptions],
    ) -> SyncSubscription[T]: ...

    @overload
    def messages(
        self,
        topic: str,
        group: str | None = None,
        *,
        timeout_s: float | None = 30.0,
        **options: Unpack[StreamOptions],
    ) -> SyncSubscription[Any]: ...

    def messages(
        self,
        topic: Topic[Any] | str,
        group: str | None = None,
        *,
        timeout_s: float | None = 30.0,
        **options: Unpack[StreamOptions],
    ) -> SyncSubscription[Any]:
        """Consume the events matching ``topic`` in ``group`` from this thread, blocking::

            with hub.messages("jobs.*", "workers", max_in_flight=10) as stream:
                for msg in stream:
                    handle(msg.payload)
                    msg.ack()

        The options are those of :meth:`HubClient.messages` (``start``, ``max_in_flight``,
        ``ack_timeout_ms``, ``max_deliver``, ``ordered_by_key``, ``max_pending``); ``timeout_s`` bounds each
        blocking call on the hub (subscribing, every ``ack``/``nack``, unsubscribing), not the wait for the
        next message (:meth:`SyncSubscription.receive` takes its own). A group buffers at most
        ``max_in_flight`` deliveries for a slow consumer; :meth:`close` ends every stream with
        :class:`ClientClosed`."""

        async def make() -> Subscription[Any]:
            return self._client.messages(topic, group, **options)

        stream = SyncSubscription(self._call(make(), timeout_s), self, timeout_s)
        with self._streams_lock:
            self._streams.add(stream)
        return stream

    def _forget(self, stream: SyncSubscription[Any]) -> None:
        with self._streams_lock:
            self._streams.discard(stream)

    def close(self) -> None:
        """Close the client and stop its thread; a stream's :meth:`~SyncSubscription.receive` waiting in any
        thread raises :class:`ClientClosed`. Idempotent."""
        if self._closed:
            return
        with self._streams_lock:
            streams, self._streams = self._streams, set()
        for stream in streams:
            stream._client_closed()
        try:
            self._call(self._client.close(), 30.0)
        finally:
            self._closed = True
            _stop_loop(self._loop, self._thread, 30.0)

    def __enter__(self) -> SyncHubClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def connect_sync(url: str, token: TokenSource, *, timeout_s: float = 30.0, **options: Any) -> SyncHubClient:
    """Connect a :class:`HubClient` on a background thread and return its blocking facade::

        with connect_sync("ws://127.0.0.1:8090/", token) as hub:
            hub.publish("jobs.done", {"job": 42})

    ``options`` are those of :class:`HubClient`. Raises what :meth:`HubClient.connect` raises.
    """
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="outboxhub-sync-client", daemon=True)
    thread.start()
    try:

        async def make() -> HubClient:
            client = HubClient(url, token, **options)
            await client.connect()
            return client

        client = asyncio.run_coroutine_threadsafe(make(), loop).result(timeout_s)
    except BaseException:
        _stop_loop(loop, thread, timeout_s)
        raise
    return SyncHubClient(client, loop, thread)


def _stop_loop(loop: asyncio.AbstractEventLoop, thread: threading.Thread, timeout_s: float) -> None:
    """Stop ``loop`` (running forever on ``thread``), wait up to ``timeout_s`` for the thread, close it."""
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout_s)
    loop.close()
