"""What a gateway :class:`~outboxhub.gateway.connection.Connection` needs from its WebSocket, and the
aiohttp implementation of it (the picows one is :mod:`outboxhub.gateway.picowsserver`).

A socket hands the connection whole messages as ``(kind, data)`` pairs from :meth:`WebSocket.receive`:
:data:`TEXT` (``data`` a ``str``), :data:`BINARY` (``bytes``), :data:`ERROR` (a protocol error the library
already answered, e.g. 1009 for a frame beyond the hard limit; ``data`` says what) and :data:`CLOSED`
(the peer closed, or the socket is gone). Fragmented messages arrive reassembled; pings are answered by
the library. :meth:`WebSocket.send_text` writes one text frame and suspends while the socket's write
buffer is above its high-water mark, which is what bounds a connection's memory against a peer that
does not read.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol

from aiohttp import WSMsgType, web

__all__ = ["BINARY", "CLOSED", "ERROR", "TEXT", "AiohttpSocket", "DirectReader", "Message", "WebSocket"]

CLOSED: Final = 0
TEXT: Final = 1
BINARY: Final = 2
ERROR: Final = 3

Message = tuple[int, Any]
"""``(kind, data)``: see the module docstring."""

_CLOSED: Final[Message] = (CLOSED, None)


class DirectReader(Protocol):
    """Takes a text message in the socket's own callback instead of waking the task waiting in
    :meth:`WebSocket.receive`."""

    def take_now(self, text: str) -> bool:
        """Handle ``text`` now (True), or leave it to be queued for :meth:`WebSocket.receive` (False)."""
        ...

    def read_done(self) -> None:
        """The socket read that brought messages taken by :meth:`take_now` has been fully handed over."""
        ...


class WebSocket(Protocol):
    """One server-side WebSocket, as a :class:`~outboxhub.gateway.connection.Connection` uses it."""

    def send_text(self, data: bytes) -> Awaitable[Any]:
        """Write one text frame (UTF-8 bytes); suspends while the socket's write buffer is full and raises
        once the socket is gone."""
        ...

    @property
    def send_now(self) -> Callable[[bytes], bool] | None:
        """Write one text frame at once unless that would wait (then False, nothing written), raising once
        the socket is gone; None when the socket writes only through :meth:`send_text`."""
        ...

    @property
    def send_all_now(self) -> Callable[[list[bytes]], int] | None:
        """Write the longest run of the given text frames that need not wait, in one write, returning how
        many were written (raising once the socket is gone); None when the socket has no such call."""
        ...

    @property
    def closed(self) -> bool:
        """True once a close frame was exchanged or the socket is gone."""
        ...

    async def receive(self) -> Message:
        """The next message (see the module docstring); :data:`CLOSED` from then on once closed."""
        ...

    def set_direct(self, reader: DirectReader | None) -> None:
        """Offer text messages that arrive while :meth:`receive` waits (nothing queued before them) to
        ``reader`` first (None: stop); a socket may ignore this and queue every message."""
        ...

    def caught_up(self) -> bool:
        """True when :meth:`receive` has handed out every message received so far (its next call waits for
        the peer); False while messages wait, or when the socket cannot tell."""
        ...

    async def close(self, code: int, message: bytes) -> None:
        """Send a close frame with ``code`` and ``message``, wait for the peer's (the caller bounds the
        wait), then close the TCP connection."""
        ...

    def abort(self) -> None:
        """Drop the TCP connection at once, without waiting for the send buffer to empty."""
        ...

    def write_buffer_size(self) -> int:
        """Bytes written to the socket and not yet taken by the kernel."""
        ...


class AiohttpSocket:
    """:class:`WebSocket` over aiohttp's ``WebSocketResponse`` (the ``ws_server = "aiohttp"`` gateway and
    the ops port's ``/ws``)."""

    __slots__ = ("_transport", "_ws", "send_text")

    send_now: Final = None  # aiohttp writes a frame only through a coroutine
    send_all_now: Final = None

    def __init__(self, ws: web.WebSocketResponse, transport: asyncio.Transport | None) -> None:
        self._ws = ws
        self._transport = transport
        self.send_text: Callable[[bytes], Awaitable[Any]] = functools.partial(
            ws.send_frame, opcode=WSMsgType.TEXT
        )

    @property
    def closed(self) -> bool:
        return self._ws.closed

    async def receive(self) -> Message:
        msg = await self._ws.receive()
        kind = msg.type
        if kind is WSMsgType.TEXT:
            return TEXT, msg.data
        if kind is WSMsgType.BINARY:
            return BINARY, msg.data
        if kind is WSMsgType.ERROR:  # e.g. a frame beyond the hard limit: aiohttp closes with 1009
            return ERROR, msg.data
        return _CLOSED  # CLOSE, CLOSING, CLOSED

    def caught_up(self) -> bool:
        return False  # aiohttp does not say whether a message is waiting

    def set_direct(self, reader: DirectReader | None) -> None:
        pass  # aiohttp reads through a coroutine: every message is queued for receive()

    async def close(self, code: int, message: bytes) -> None:
        await self._ws.close(code=code, message=message)

    def abort(self) -> None:
        # transport.close() (what aiohttp does on a failed close) waits for the send buffer to empty,
        # which never happens with a peer that does not read; abort() drops the connection at once.
        if self._transport is not None:
            self._transport.abort()

    def write_buffer_size(self) -> int:
        return 0 if self._transport is None else self._transport.get_write_buffer_size()
