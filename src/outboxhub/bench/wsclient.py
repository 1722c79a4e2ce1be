"""The lightest hub client: raw WebSocket (aiohttp) plus the pure codec of :mod:`outboxhub.protocol.codec`.

It is the counterpart of nats-py's raw publish: no reconnects, no per-publish future. Replies come back in
request order (docs/protocol.md), so a FIFO of send times is all it needs to time every publish; ``window``
bounds the requests in flight (1 = one publish at a time). Every reply is decoded with
:func:`~outboxhub.protocol.codec.decode_server_frame`, as a real client would.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

import aiohttp

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

_TEXT = aiohttp.WSMsgType.TEXT


def new_session() -> aiohttp.ClientSession:
    """A session without a connection limit (an open WebSocket holds its connection)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))


class RawClient:
    """One authenticated connection. Use :meth:`connect`; read with the internal reader task."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, *, window: int = 1) -> None:
        self.ws = ws
        self.window = window
        self.latency = LatencyHistogram()
        self.ok = 0
        self.errors: list[str] = []
        self.on_event: EventHandler | None = None
        self.ack_events = True
        self._pending: deque[tuple[int, asyncio.Future[OkFrame] | None]] = deque()
        self._room: asyncio.Future[None] | None = None
        self._idle: asyncio.Future[None] | None = None
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def connect(
        cls, session: aiohttp.ClientSession, url: str, token: str, *, window: int = 1
    ) -> RawClient:
        """Open ``url``, AUTH with ``token`` and start reading."""
        ws = await session.ws_connect(url, max_msg_size=0, compress=0, autoping=True)
        client = cls(ws, window=window)
        client._reader = asyncio.get_running_loop().create_task(client._read())
        await client.request(Auth(token=token))
        return client

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet answered."""
        return len(self._pending)

    async def send(self, data: bytes) -> None:
        """Send an encoded request frame and time its reply (into :attr:`latency`)."""
        self._pending.append((time.perf_counter_ns(), None))
        await self.ws.send_frame(data, _TEXT)

    async def wait_room(self) -> None:
        """Return once fewer than ``window`` requests are in flight."""
        while len(self._pending) >= self.window:
            if self._reader is None or self._reader.done():
                raise ConnectionError("the connection closed with requests in flight")
            self._room = asyncio.get_running_loop().create_future()
            await self._room

    async def drain(self) -> None:
        """Return once every request has been answered."""
        while self._pending:
            if self._reader is None or self._reader.done():
                raise ConnectionError("the connection closed with requests in flight")
            self._idle = asyncio.get_running_loop().create_future()
            await self._idle

    async def submit(self, data: bytes) -> asyncio.Future[OkFrame]:
        """Send an encoded request frame; the future resolves with its OK (``RuntimeError`` on ERR)."""
        future: asyncio.Future[OkFrame] = asyncio.get_running_loop().create_future()
        self._pending.append((time.perf_counter_ns(), future))
        await self.ws.send_frame(data, _TEXT)
        return future

    async def request(self, frame: ClientFrame, *, timeout_s: float = 30.0) -> OkFrame:
        """Send ``frame`` and wait for its reply; ``RuntimeError`` on ERR."""
        future = await self.submit(encode_client_frame(frame))
        return await asyncio.wait_for(future, timeout_s)

    async def _read(self) -> None:
        ws = self.ws
        pending = self._pending
        try:
            while True:
                msg = await ws.receive()
                if msg.type is not _TEXT:
                    return
                frame = decode_server_frame(msg.data)
                if type(frame) is EventFrame:
                    now = time.perf_counter_ns()
                    if self.on_event is not None:
                        self.on_event(frame, now)
                    if self.ack_events and frame.group is not None:
                        ack = Ack(topic=frame.topic, group=frame.group, id=frame.event.id)
                        await ws.send_frame(encode_client_frame(ack), _TEXT)
                    continue
                sent_ns, future = pending.popleft()
                if future is not None:
                    if isinstance(frame, OkFrame):
                        future.set_result(frame)
                    else:
                        assert isinstance(frame, ErrFrame)
                        future.set_exception(
                            RuntimeError(f"hub refused the request: {frame.code}: {frame.msg}")
                        )
                elif isinstance(frame, OkFrame):
                    self.ok += 1
                    self.latency.record_ns(time.perf_counter_ns() - sent_ns)
                else:
                    assert isinstance(frame, ErrFrame)
                    self.errors.append(f"{frame.code}: {frame.msg}")
                room = self._room
                if room is not None and len(pending) < self.window and not room.done():
                    room.set_result(None)
                    self._room = None
                idle = self._idle
                if idle is not None and not pending and not idle.done():
                    idle.set_result(None)
                    self._idle = None
        finally:
            for waiter in (self._room, self._idle):
                if waiter is not None and not waiter.done():
                    waiter.set_exception(ConnectionError("the connection closed"))
            while pending:
                _, future = pending.popleft()
                if future is not None and not future.done():
                    future.set_exception(ConnectionError("the connection closed before the reply"))

    async def close(self) -> None:
        """Close the socket and stop reading."""
        await self.ws.close()
        if self._reader is not None:
            try:
                await asyncio.wait_for(self._reader, 5)
            except (TimeoutError, ConnectionError, asyncio.CancelledError):
                self._reader.cancel()


async def connect_many(
    session: aiohttp.ClientSession,
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
        clients.append(await RawClient.connect(session, url, token, window=window))

    for start in range(0, n, parallel):
        await asyncio.gather(*(one() for _ in range(min(parallel, n - start))))
    return clients
