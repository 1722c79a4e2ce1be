"""The lightest hub client: raw WebSocket (picows) plus the pure codec of :mod:`outboxhub.protocol.codec`.

It is the counterpart of nats-py's raw publish: no reconnects, no per-publish future. Replies come back in
request order (docs/protocol.md), so a FIFO of send times is all it needs to time every publish; ``window``
bounds the requests in flight (1 = one publish at a time). Every reply is decoded with
:func:`~outboxhub.protocol.codec.decode_server_frame`, as a real client would.

The reader is picows' frame callback (the library the hub serves with): it decodes each reply, times it and
wakes the task waiting for room (or for that request's future) through a future, as nats-py's reader wakes a
``js.publish`` — the same hand-off, without aiohttp's reader task and message queue in between (≈ 8 µs of
client CPU per round trip less; docs/benchmarks.md, "Hot path, ninth round: one publish at a time on
SQLite"). A fragmented message from the hub (it sends none) closes the connection with 1003.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Final

import aiohttp
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from outboxhub.bench.stats import LatencyHistogram
from outboxhub.protocol.codec import (
    Ack,
    Auth,
    ClientFrame,
    ErrFrame,
    EventFrame,
    OkFrame,
    decode_server_frame,
    encode_client_frame,
)

__all__ = ["EventHandler", "RawClient", "connect_many", "new_session"]

EventHandler = Callable[[EventFrame, int], None]
"""Called with each EVENT and its receive time (``perf_counter_ns``); the client ACKs it afterwards."""

_TEXT: Final = WSMsgType.TEXT
_CLOSE: Final = WSMsgType.CLOSE
_MAX_FRAME: Final = 1 << 30  # the hub bounds its frames; the bench reads whatever it is sent
_CLOSE_TIMEOUT_S: Final = 5.0


def new_session() -> aiohttp.ClientSession:
    """An HTTP session for the hub's ops port (the WebSocket clients do not use it)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))


class RawClient(WSListener):
    """One authenticated connection. Use :meth:`connect`; replies and EVENTs are read by picows' callback."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, window: int = 1) -> None:
        self.window = window
        self.latency = LatencyHistogram()
        self.ok = 0
        self.errors: list[str] = []
        self.on_event: EventHandler | None = None
        self.ack_events = True
        self._loop = loop
        self._transport: WSTransport | None = None
        self._closed = False
        self._pending: deque[tuple[int, asyncio.Future[OkFrame] | None]] = deque()
        self._room: asyncio.Future[None] | None = None
        self._idle: asyncio.Future[None] | None = None

    @classmethod
    async def connect(cls, url: str, token: str, *, window: int = 1) -> RawClient:
        """Open ``url`` and AUTH with ``token``."""
        loop = asyncio.get_running_loop()
        _, client = await ws_connect(lambda: cls(loop, window=window), url, max_frame_size=_MAX_FRAME)
        assert isinstance(client, RawClient)
        await client.request(Auth(token=token))
        return client

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet answered."""
        return len(self._pending)

    async def send(self, data: bytes) -> None:
        """Send an encoded request frame and time its reply (into :attr:`latency`)."""
        self._pending.append((time.perf_counter_ns(), None))
        self._send(data)

    async def wait_room(self) -> None:
        """Return once fewer than ``window`` requests are in flight."""
        while len(self._pending) >= self.window:
            self._check_open()
            self._room = self._loop.create_future()
            await self._room

    async def drain(self) -> None:
        """Return once every request has been answered."""
        while self._pending:
            self._check_open()
            self._idle = self._loop.create_future()
            await self._idle

    async def submit(self, data: bytes) -> asyncio.Future[OkFrame]:
        """Send an encoded request frame; the future resolves with its OK (``RuntimeError`` on ERR)."""
        future: asyncio.Future[OkFrame] = self._loop.create_future()
        self._pending.append((time.perf_counter_ns(), future))
        self._send(data)
        return future

    async def request(self, frame: ClientFrame, *, timeout_s: float = 30.0) -> OkFrame:
        """Send ``frame`` and wait for its reply; ``RuntimeError`` on ERR."""
        future = await self.submit(encode_client_frame(frame))
        return await asyncio.wait_for(future, timeout_s)

    async def close(self) -> None:
        """Close the socket (a CLOSE frame, then the TCP connection once the hub answers or in 5 s)."""
        transport = self._transport
        if transport is None:
            return
        transport.send_close(WSCloseCode.OK)
        try:
            await asyncio.wait_for(transport.wait_disconnected(), _CLOSE_TIMEOUT_S)
        except TimeoutError:
            transport.disconnect()

    def _send(self, data: bytes) -> None:
        self._check_open()
        assert self._transport is not None
        self._transport.send(_TEXT, data)

    def _check_open(self) -> None:
        if self._closed:
            raise ConnectionError("the connection closed with requests in flight")

    # -- picows' callbacks ---------------------------------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        self._transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind is not _TEXT:
            if kind is _CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()
            return  # PING is answered by picows; the hub sends nothing else
        if not frame.fin:
            transport.send_close(WSCloseCode.UNSUPPORTED_DATA, b"fragmented message")
            transport.disconnect()
            return
        reply = decode_server_frame(frame.get_payload_as_bytes())
        if type(reply) is EventFrame:
            now = time.perf_counter_ns()
            if self.on_event is not None:
                self.on_event(reply, now)
            if self.ack_events and reply.group is not None:
                ack = Ack(topic=reply.topic, group=reply.group, id=reply.event.id)
                transport.send(_TEXT, encode_client_frame(ack))
            return
        pending = self._pending
        sent_ns, future = pending.popleft()
        if future is not None:
            if type(reply) is OkFrame:
                future.set_result(reply)
            else:
                assert isinstance(reply, ErrFrame)
                future.set_exception(RuntimeError(f"hub refused the request: {reply.code}: {reply.msg}"))
        elif type(reply) is OkFrame:
            self.ok += 1
            self.latency.record_ns(time.perf_counter_ns() - sent_ns)
        else:
            assert isinstance(reply, ErrFrame)
            self.errors.append(f"{reply.code}: {reply.msg}")
        room = self._room
        if room is not None and len(pending) < self.window and not room.done():
            room.set_result(None)
            self._room = None
        idle = self._idle
        if idle is not None and not pending and not idle.done():
            idle.set_result(None)
            self._idle = None

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self._closed = True
        for waiter in (self._room, self._idle):
            if waiter is not None and not waiter.done():
                waiter.set_exception(ConnectionError("the connection closed"))
        pending = self._pending
        while pending:
            _, future = pending.popleft()
            if future is not None and not future.done():
                future.set_exception(ConnectionError("the connection closed before the reply"))


async def connect_many(
    url: str,
    token: str,
    n: int,
    *,
    window: int = 1,
    parallel: int = 50,
    into: list[RawClient] | None = None,
) -> list[RawClient]:
    """Open ``n`` authenticated connections, ``parallel`` at a time, appending each to ``into`` (a new
    list by default) as soon as it is ready; return that list."""
    clients: list[RawClient] = [] if into is None else into

    async def one() -> None:
        clients.append(await RawClient.connect(url, token, window=window))

    for start in range(0, n, parallel):
        await asyncio.gather(*(one() for _ in range(min(parallel, n - start))))
    return clients
