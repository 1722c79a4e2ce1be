"""The gateway's WebSocket port on picows (``ws_server = "picows"``), a Cython WebSocket library that
takes about a third of aiohttp's CPU per frame (docs/benchmarks.md, "Hot path, third round").

The upgrade follows the rules of the aiohttp port (:mod:`outboxhub.gateway.server`,
:mod:`outboxhub.gateway.listener`): the same :class:`~outboxhub.gateway.listener.ConnectionLimiter`
admits or aborts each TCP connection before any byte is read (``max_connections``,
``max_connections_per_ip``); a connection that has not completed its upgrade request within
``header_timeout_s`` is closed (and logged like a refusal); an Origin outside ``allowed_origins`` gets 403
with the same text, a shutting-down hub 503, a request that is not a WebSocket upgrade 426, another path
404. Each upgraded socket is a :class:`PicowsSocket` served by the same
:class:`~outboxhub.gateway.connection.Connection` as on aiohttp.

picows pushes frames to a callback; :class:`PicowsSocket` turns them into the pull interface of
:class:`~outboxhub.gateway.transport.WebSocket` with a deque and one future (set only while the reader
waits). It reassembles fragmented messages (bounded by the hard limit, twice ``max_frame_bytes``, like
aiohttp's ``max_msg_size``: beyond it the socket is closed with 1009), answers pings (and stops reading
a peer's pings while its write buffer is full), pings a
peer idle for 30 s and cuts it off when nothing comes back within 15 s (a timer per socket, not
picows' auto-ping task: ≈ 1.2 KB less per idle connection), and makes ``send_text`` wait while
the transport is paused (its write buffer above the high-water mark), so a peer that does not read stops
the connection's writer instead of growing the hub's memory.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import deque
from typing import Any, Final

import picows
import picows.picows
from multidict import CIMultiDict, CIMultiDictProxy

from outboxhub.gateway import server as gateway_server
from outboxhub.gateway.listener import ConnectionLimiter
from outboxhub.gateway.server import HARD_LIMIT_FACTOR, Gateway
from outboxhub.gateway.transport import BINARY, CLOSED, ERROR, TEXT, DirectReader, Message

__all__ = ["PicowsServer", "PicowsSocket"]

_DRAIN_POLL_S: Final = 0.01
"""How often a socket paused by :meth:`PicowsSocket._watch_buffer` checks whether its buffer drained."""

log = logging.getLogger("outboxhub.gateway.connection")

_WSProtocol: Any = getattr(picows.picows, "WSProtocol")  # noqa: B009 - not in picows' stubs
_READ_BUFFER: Final = 2048
"""Initial read buffer per connection (picows' default is 16 KiB; it grows for larger frames)."""
_READ_MAX: Final = 1 << 16
"""Most bytes taken from the socket by one read (see :meth:`_Limited.get_buffer`)."""
_INBOUND_MAX: Final = 1 << 16
"""Bytes of received messages the reader has not taken yet beyond which the socket stops being read
(aiohttp's reader stops at the same 64 KiB)."""

_T_TEXT: Final = picows.WSMsgType.TEXT
_T_BINARY: Final = picows.WSMsgType.BINARY
_T_CONT: Final = picows.WSMsgType.CONTINUATION
_T_CLOSE: Final = picows.WSMsgType.CLOSE
_T_PING: Final = picows.WSMsgType.PING
_CLOSED: Final[Message] = (CLOSED, None)
_MAX_HEADER: Final = 14  # bytes of a WebSocket frame header at most (server frames are not masked: 10)
_TEXT_HEADER_16: Final = struct.Struct(">HH").pack  # FIN + text, 126, a 16-bit length (unmasked: server side)
_CLOSE_NORMAL: Final = 1000
_CLOSE_PROTOCOL_ERROR: Final = 1002
_CLOSE_INVALID_TEXT: Final = 1007
_CLOSE_TOO_BIG: Final = 1009


class _QuietLog(logging.LoggerAdapter[logging.Logger]):
    """picows logs every accepted connection at INFO and every peer's protocol error at ERROR; neither is
    the hub's news (aiohttp logs neither). Not a ``Logger``, so picows does not create one per socket."""

    def info(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self.log(logging.DEBUG, msg, *args, **kwargs)

    def error(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self.log(logging.INFO, msg, *args, **kwargs)


_LOG: Final = _QuietLog(logging.getLogger("outboxhub.gateway.picows"))


_NO_HEADERS: Final = CIMultiDictProxy(CIMultiDict[str]())


def _forget_handshake(transport: picows.WSTransport) -> None:
    """picows keeps the upgrade request and our 101 response on the transport for the socket's life; the
    hub reads neither after the upgrade, so their headers (≈ 1.5 KB per idle connection) go."""
    for message in (transport.request, transport.response):
        if message is not None:
            message.headers = _NO_HEADERS  # type: ignore[assignment] # read-only: nothing writes them now


class PicowsSocket(picows.WSListener):
    """One upgraded picows WebSocket as a :class:`~outboxhub.gateway.transport.WebSocket`."""

    __slots__ = (
        "_beat", "_close_sent", "_closing", "_direct", "_frames", "_gone", "_hard_limit", "_heartbeat_s",
        "_high", "_inbound", "_loop", "_on_connected", "_parts", "_parts_kind", "_parts_size", "_paused",
        "_pinged", "_pong_held", "_reading", "_seen", "_transport", "_waiter", "peer", "took",
    )  # fmt: skip

    def __init__(self, hard_limit: int, on_connected: Any) -> None:
        super().__init__()
        self._hard_limit = hard_limit
        self._on_connected = on_connected
        self._transport: picows.WSTransport | None = None
        self._frames: deque[Message] | None = None  # None while empty and the reader waits (idle memory)
        self._inbound = 0  # bytes of the messages in _frames
        self._reading = True  # False while reading is paused (see _sync_reading)
        self._pong_held = False  # a pong was written while the write buffer was full
        self._waiter: asyncio.Future[None] | None = None  # the reader waits for a message
        self._paused: asyncio.Future[None] | None = None  # the transport's write buffer is full
        self._closing: asyncio.Future[None] | None = None  # our close frame waits for the peer's
        self._parts: list[bytes] | None = None  # a fragmented message being reassembled
        self._parts_kind = TEXT
        self._parts_size = 0
        self._close_sent = False
        self._gone = False
        self._heartbeat_s = gateway_server.HEARTBEAT_S
        self._beat: asyncio.TimerHandle | None = None
        self._seen = False  # a frame arrived since the last heartbeat tick
        self._pinged = False  # a ping went out and nothing has come back yet
        self._high = 0  # the transport's write-buffer high-water mark (read once: nothing changes it)
        # Kept: on Python 3.11 asyncio.get_running_loop() is a getpid system call, and the reader asks for
        # a future each time it waits for a frame.
        self._loop: asyncio.AbstractEventLoop | None = None
        self.peer: str | None = None
        self._direct: DirectReader | None = None  # takes text messages while the reader waits (set_direct)
        self.took = False  # the direct reader took a message in the read being handed over

    # -- picows callbacks -------------------------------------------------------------------------------

    def on_ws_connected(self, transport: picows.WSTransport) -> None:
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        self._high = transport.underlying_transport.get_write_buffer_limits()[1]
        peer = transport.underlying_transport.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, tuple) and peer else None
        on_connected, self._on_connected = self._on_connected, None
        _forget_handshake(transport)
        self._beat = self._loop.call_later(self._heartbeat_s, self._heartbeat)
        on_connected(self)

    def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
        self._seen = True
        kind = frame.msg_type
        if self._close_sent and kind is not _T_CLOSE:  # nothing after our close frame is read (nor held)
            return
        if kind is _T_TEXT or kind is _T_BINARY:
            if self._parts is not None:
                self._fail(_CLOSE_PROTOCOL_ERROR, "a new message began inside a fragmented one")
            elif not frame.fin:
                self._parts = [frame.get_payload_as_bytes()]
                self._parts_kind = TEXT if kind is _T_TEXT else BINARY
                self._parts_size = frame.payload_size
            elif kind is _T_TEXT:
                try:
                    text = frame.get_payload_as_utf8_text()
                except UnicodeDecodeError:
                    self._fail(_CLOSE_INVALID_TEXT, "text frame is not valid UTF-8")
                    return
                # While the reader waits with nothing queued, the connection may take the message here:
                # no wake-up of the reader's task, no new future for its next wait.
                direct, waiter = self._direct, self._waiter
                if direct is not None and waiter is not None and not waiter.done() and direct.take_now(text):
                    self.took = True
                else:
                    self._push((TEXT, text))
            else:
                self._push((BINARY, frame.get_payload_as_bytes()))
        elif kind is _T_CONT:
            self._continuation(frame)
        elif kind is _T_PING:
            transport.send_pong(frame.get_payload_as_bytes())
            self._watch_buffer()
            if self._paused is not None:  # a peer that pings and never reads: stop reading its pings
                self._pong_held = True
                self._sync_reading()
        elif kind is _T_CLOSE:
            self._peer_closed()
        # a PONG only counts as a sign of life (_seen)

    def on_ws_disconnected(self, transport: picows.WSTransport) -> None:
        self._gone = True
        direct, self._direct = self._direct, None
        if self.took and direct is not None:  # (gone within a read: its burst is still handed over)
            self.took = False
            direct.read_done()
        if self._beat is not None:
            self._beat.cancel()
            self._beat = None
        self._push(_CLOSED)
        for name in ("_paused", "_closing"):
            future = getattr(self, name)
            if future is not None and not future.done():
                future.set_result(None)

    def pause_writing(self) -> None:
        if self._paused is None:
            self._paused = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        paused, self._paused = self._paused, None
        if paused is not None and not paused.done():
            paused.set_result(None)
        if self._pong_held:
            self._pong_held = False
            self._sync_reading()

    # -- the WebSocket interface ------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once a close frame was sent (ours or our answer to the peer's) or the socket is gone."""
        return self._close_sent or self._gone

    async def receive(self) -> Message:
        """The next message; :data:`~outboxhub.gateway.transport.CLOSED` once the socket is gone."""
        frames = self._frames
        while not frames:
            if self._gone:
                return _CLOSED
            self._frames = frames = None  # an idle socket keeps no deque (≈ 600 B)
            loop = self._loop or asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None
            frames = self._frames
        message = frames.popleft()
        if message[1] is not None:
            self._inbound -= len(message[1])
            if not self._reading:
                self._sync_reading()
        return message

    def caught_up(self) -> bool:
        """True when every message received so far has been taken by :meth:`receive`."""
        return not self._frames

    def set_direct(self, reader: DirectReader | None) -> None:
        self._direct = None if self._gone else reader

    def read_done(self) -> None:
        """The end of a read in which the direct reader took messages (called by :class:`_Limited`)."""
        self.took = False
        direct = self._direct
        if direct is not None:
            direct.read_done()

    async def send_text(self, data: bytes) -> None:
        """Write one text frame; wait while the transport is paused (see the module docstring)."""
        transport = self._transport
        if transport is None or self._gone or self._close_sent:
            raise ConnectionResetError("the WebSocket is closed")
        transport.send(_T_TEXT, data)
        self._watch_buffer()
        paused = self._paused
        if paused is not None:
            await paused

    def send_now(self, data: bytes) -> bool:
        """Write one text frame if it cannot take the write buffer past its high-water mark; else False,
        nothing written (the send queue's writer then sends it with :meth:`send_text`, which waits while
        paused, the frame still counted in the queue's byte budget until it has left)."""
        transport = self._transport
        if transport is None or self._gone or self._close_sent:
            raise ConnectionResetError("the WebSocket is closed")
        underlying = transport.underlying_transport
        if (
            self._paused is not None
            or underlying.get_write_buffer_size() + len(data) + _MAX_HEADER > self._high
        ):
            return False
        transport.send(_T_TEXT, data)
        return True

    def send_all_now(self, frames: list[bytes]) -> int:
        """Write the longest run of ``frames`` (text frames) that cannot take the write buffer past its
        high-water mark, all in one write (one ``send``); returns how many were written."""
        transport = self._transport
        if transport is None or self._gone or self._close_sent:
            raise ConnectionResetError("the WebSocket is closed")
        underlying = transport.underlying_transport
        if self._paused is not None:
            return 0
        room = self._high - underlying.get_write_buffer_size()
        parts: list[bytes] = []
        for data in frames:
            size = len(data)
            room -= size + _MAX_HEADER
            if room < 0 or size > 0xFFFF:  # (a frame that large is above any high-water mark set here)
                break
            parts.append(bytes((0x81, size)) if size < 126 else _TEXT_HEADER_16(0x817E, size))
            parts.append(data)
        if parts:
            underlying.write(b"".join(parts))
        return len(parts) // 2

    async def close(self, code: int, message: bytes) -> None:
        """Send a close frame, wait for the peer's (the caller bounds the wait), then disconnect."""
        transport = self._transport
        if transport is None or self._gone:
            return
        self._drop_inbound()  # the reader has stopped reading
        if not self._close_sent:
            self._close_sent = True
            transport.send_close(code, message)  # type: ignore[arg-type] # any int code (4001, 4003)
            self._closing = asyncio.get_running_loop().create_future()
        if self._closing is not None and not self._closing.done():
            await self._closing
        transport.disconnect()

    def abort(self) -> None:
        """Drop the TCP connection at once."""
        if self._transport is not None:
            self._transport.disconnect(graceful=False)

    def _watch_buffer(self) -> None:
        """Pause this socket's writer when the transport's buffer is above its high-water mark, and watch
        it drain. CPython 3.12's selector transport does not call ``pause_writing`` from ``writelines``,
        which picows writes with, so on that loop the transport never pauses its protocol by itself."""
        transport = self._transport
        if transport is None or self._paused is not None:
            return
        if transport.underlying_transport.get_write_buffer_size() > self._high:
            self.pause_writing()
            asyncio.get_running_loop().call_later(_DRAIN_POLL_S, self._poll_drain)

    def _poll_drain(self) -> None:
        transport = self._transport
        if self._paused is None or self._gone or transport is None:
            return
        underlying = transport.underlying_transport
        if underlying.get_write_buffer_size() <= underlying.get_write_buffer_limits()[0]:
            self.resume_writing()
        else:
            asyncio.get_running_loop().call_later(_DRAIN_POLL_S, self._poll_drain)

    def write_buffer_size(self) -> int:
        """Bytes written to the socket and not yet taken by the kernel."""
        transport = self._transport
        return 0 if transport is None else transport.underlying_transport.get_write_buffer_size()

    # -- internals --------------------------------------------------------------------------------------

    def _heartbeat(self) -> None:
        transport = self._transport
        if self._gone or transport is None:
            return
        loop = asyncio.get_running_loop()
        if self._seen:
            self._seen = self._pinged = False
            self._beat = loop.call_later(self._heartbeat_s, self._heartbeat)
        elif self._pinged:  # nothing came back (aiohttp does the same: drop it, the peer sees 1006)
            log.info(
                "connection from %s: no pong within %gs; disconnecting", self.peer, self._heartbeat_s / 2
            )
            self._beat = None
            self.abort()
        else:
            transport.send_ping()
            self._pinged = True
            self._beat = loop.call_later(self._heartbeat_s / 2, self._heartbeat)

    def _push(self, message: Message) -> None:
        frames = self._frames
        if frames is None:
            frames = self._frames = deque()
        frames.append(message)
        if message[1] is not None:
            self._inbound += len(message[1])
            if self._inbound > _INBOUND_MAX and self._reading:
                self._sync_reading()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _drop_inbound(self) -> None:
        """Our close frame is out: forget the messages nobody will read (ERROR and CLOSED stay) and read
        the socket again (what comes now is dropped, and the peer's close frame must get through)."""
        frames = self._frames
        if self._inbound and frames is not None:
            kept = [m for m in frames if m[1] is None or m[0] == ERROR]
            frames.clear()
            frames.extend(kept)
            self._inbound = sum(len(m[1]) for m in kept if m[1] is not None)
        self._sync_reading()

    def _sync_reading(self) -> None:
        """Read the socket unless the reader has more than _INBOUND_MAX bytes of messages to take, or a
        pong waits behind a full write buffer (pings from a peer that never reads would otherwise grow
        it without bound). After our close frame, always read: nothing is kept, and the peer's close
        frame must get through."""
        want = not self._gone and (
            self._close_sent or (self._inbound <= _INBOUND_MAX and not self._pong_held)
        )
        if want != self._reading and self._transport is not None and not self._gone:
            self._reading = want
            underlying = self._transport.underlying_transport
            if want:
                underlying.resume_reading()
            else:
                underlying.pause_reading()

    def _continuation(self, frame: picows.WSFrame) -> None:
        parts = self._parts
        if parts is None:
            self._fail(_CLOSE_PROTOCOL_ERROR, "continuation frame without a fragmented message")
            return
        self._parts_size += frame.payload_size
        if self._parts_size >= self._hard_limit:
            self._parts = None
            self._fail(_CLOSE_TOO_BIG, f"message is {self._hard_limit} bytes or more")
            return
        parts.append(frame.get_payload_as_bytes())
        if not frame.fin:
            return
        self._parts = None
        data = b"".join(parts)
        if self._parts_kind == BINARY:
            self._push((BINARY, data))
            return
        try:
            self._push((TEXT, data.decode()))
        except UnicodeDecodeError:
            self._fail(_CLOSE_INVALID_TEXT, "text message is not valid UTF-8")

    def _peer_closed(self) -> None:
        transport = self._transport
        assert transport is not None
        if not self._close_sent:  # the peer began the close: answer it (aiohttp answers with 1000)
            self._close_sent = True
            transport.send_close(_CLOSE_NORMAL)  # type: ignore[arg-type]
        closing = self._closing
        if closing is not None and not closing.done():
            closing.set_result(None)
        transport.disconnect()
        self._push(_CLOSED)

    def _fail(self, code: int, why: str) -> None:
        """A protocol error of the peer: close with ``code`` and report it as ERROR."""
        transport = self._transport
        assert transport is not None
        if not self._close_sent:
            self._close_sent = True
            transport.send_close(code, why.encode()[:120])  # type: ignore[arg-type]
        transport.disconnect()
        self._push((ERROR, why))


class _Limited(asyncio.BufferedProtocol):
    """Wraps picows' protocol for one connection: admits it through the limiter or aborts it, and tells a
    header timeout from a peer that left."""

    __slots__ = ("_ip", "_limiter", "_route", "_since", "head_done", "inner", "socket")

    def __init__(self, limiter: ConnectionLimiter, route: Any) -> None:
        self._limiter = limiter
        self._route = route
        self._ip: str | None = None
        self._since = 0.0
        self.head_done = False  # picows parsed the upgrade request
        self.inner: Any = None
        self.socket: PicowsSocket | None = None  # once upgraded

    def upgrade(self, request: picows.WSUpgradeRequest) -> Any:
        self.head_done = True
        routed = self._route(request)
        if isinstance(routed, PicowsSocket):
            self.socket = routed
        return routed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._ip = self._limiter.accept(transport)
        if self._ip is not None:
            self._since = asyncio.get_running_loop().time()
            self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        ip, self._ip = self._ip, None
        if ip is not None:
            self._limiter.closed(ip, self._since, head_done=self.head_done)
            self.inner.connection_lost(exc)

    def get_buffer(self, sizehint: int) -> Any:
        # picows doubles its read buffer whenever one read leaves it over 90 % full, and never shrinks it:
        # a peer sending big frames faster than the hub parses them grew a connection's buffer to what
        # the kernel had queued (4-8 MB on loopback). Reads of at most _READ_MAX bytes let it grow only
        # to fit the frame being read (about twice the frame's size at most).
        view = self.inner.get_buffer(sizehint)
        return view if len(view) <= _READ_MAX else view[:_READ_MAX]

    def buffer_updated(self, nbytes: int) -> None:
        self.inner.buffer_updated(nbytes)  # picows hands every complete frame of this read to the socket
        socket = self.socket
        if socket is not None and socket.took:
            socket.read_done()

    def eof_received(self) -> bool | None:
        return bool(self.inner.eof_received()) if self._ip is not None else None

    def pause_writing(self) -> None:
        if self._ip is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self._ip is not None:
            self.inner.resume_writing()


def _response(status: int, text: str, headers: dict[str, str] | None = None) -> Any:
    response = picows.WSUpgradeResponse.create_error_response(status, text.encode(), headers)
    response.headers["Content-Type"] = "text/plain; charset=utf-8"
    return picows.WSUpgradeResponseWithListener(response, None)


class PicowsServer:
    """The WebSocket port on picows: upgrade rules, connection limits and one
    :class:`~outboxhub.gateway.connection.Connection` task per socket."""

    def __init__(self, gateway: Gateway, limiter: ConnectionLimiter) -> None:
        self.gateway = gateway
        self.limiter = limiter
        self._hard_limit = gateway.settings.max_frame_bytes * HARD_LIMIT_FACTOR
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> int:
        """Listen on ``host``:``port``; the bound port."""
        loop = asyncio.get_running_loop()
        settings = self.gateway.settings
        limiter, route, hard_limit = self.limiter, self._route, self._hard_limit

        def protocol() -> asyncio.BaseProtocol:
            limited = _Limited(limiter, route)
            limited.inner = _WSProtocol(
                None, None, False, limited.upgrade, _LOG,
                True,  # disconnect_on_exception
                settings.header_timeout_s,
                False, 20, 20, picows.WSAutoPingStrategy.PING_WHEN_IDLE,  # auto-ping off: see _heartbeat
                False,  # enable_auto_pong: PicowsSocket answers pings (bounded by the write buffer)
                hard_limit - 1, None, _READ_BUFFER,  # max_frame_size: aiohttp refuses from the limit on
            )  # fmt: skip
            return limited

        self._server = await loop.create_server(protocol, host, port)
        return int(self._server.sockets[0].getsockname()[1])

    def stop_listening(self) -> None:
        """Accept no more connections (the open ones are closed by :meth:`Gateway.shutdown`)."""
        if self._server is not None:
            self._server.close()

    async def close(self, timeout_s: float) -> None:
        """Wait (up to ``timeout_s``) for the connection tasks to end, then cancel the rest."""
        self.stop_listening()
        tasks = list(self._tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout_s)
            for task in pending:
                task.cancel()

    def _route(self, request: picows.WSUpgradeRequest) -> Any:
        if request.path.split(b"?", 1)[0] != b"/":
            return _response(404, "404: Not Found")
        headers = request.headers
        refused = self.gateway.upgrade_refusal(headers.get("Origin"), headers.get("Host", ""))
        if refused is not None:
            return _response(*refused)
        if headers.get("Upgrade", "").lower() != "websocket":
            return _response(
                426,
                "this is the outboxhub WebSocket gateway: connect with a WebSocket client\n",
                {"Upgrade": "websocket"},
            )
        return PicowsSocket(self._hard_limit, self._connected)

    def _connected(self, socket: PicowsSocket) -> None:
        task = asyncio.get_running_loop().create_task(self.gateway.serve(socket, socket.peer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
