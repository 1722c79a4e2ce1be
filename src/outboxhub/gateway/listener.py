"""The listening sockets of the hub: connection limits per port and per client IP.

aiohttp accepts every TCP connection it is offered, and each one holds a file descriptor until the peer
goes away. Two defences, on both ports (WebSocket and ops):

* **Header-read timeout.** aiohttp's ``keepalive_timeout`` is armed when a connection is accepted and
  after each response, and only disarmed once a complete request head has been parsed: a peer that sends
  nothing, or trickles its headers, is closed when it fires. :func:`runner_options` sets it to
  ``header_timeout_s``; a connection closed that way before its first request head is logged (rate
  limited, like the refusals below). (An upgraded WebSocket is then governed by ``auth_timeout_s`` and
  the heartbeat.)
* **Connection limits.** :class:`LimitedSite` is a ``TCPSite`` whose protocol factory first asks a
  :class:`ConnectionLimiter`: beyond ``max_connections`` open connections on the port, or
  ``max_connections_per_ip`` from one address, the new connection is aborted at once, before aiohttp
  sees it, and a warning is logged (at most once per :data:`LOG_EVERY_S` per port, with a count).

The picows WS port (:mod:`outboxhub.gateway.picowsserver`) puts the same :class:`ConnectionLimiter` in
front of picows' protocol and uses picows' handshake timeout as the header-read timeout.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any, Final

from aiohttp import web

__all__ = ["LOG_EVERY_S", "ConnectionLimiter", "LimitedSite", "runner_options"]

log = logging.getLogger("outboxhub.gateway.listener")

LOG_EVERY_S: Final = 10.0
"""At most one "limit reached" warning per port in this many seconds (the count of refusals is kept)."""


def runner_options(header_timeout_s: float) -> dict[str, Any]:
    """Options for ``web.AppRunner`` that make ``header_timeout_s`` the header-read (and idle keep-alive)
    timeout of every HTTP connection."""
    return {"keepalive_timeout": header_timeout_s}


class ConnectionLimiter:
    """Open connections of one listening port, in total and per client IP."""

    def __init__(self, name: str, *, max_total: int, max_per_ip: int, header_timeout_s: float = 0.0) -> None:
        self.name = name
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self.header_timeout_s = header_timeout_s
        self.open = 0
        self.refused = 0
        self.timed_out = 0  # connections closed without a complete request head after header_timeout_s
        self._per_ip: Counter[str] = Counter()
        self._unlogged = 0
        self._last_log = float("-inf")
        self._unlogged_timeouts = 0
        self._last_timeout_log = float("-inf")

    def per_ip(self, ip: str) -> int:
        """Open connections from ``ip``."""
        return self._per_ip[ip]

    def admit(self, ip: str, now: float) -> bool:
        """Count a new connection from ``ip``; False (nothing counted, a warning logged) when over a
        limit."""
        if self.open >= self.max_total:
            self._refuse(now, f"{self.open} connections are open (max_connections {self.max_total})", ip)
            return False
        if self._per_ip[ip] >= self.max_per_ip:
            self._refuse(
                now,
                f"{self._per_ip[ip]} connections are open from it (max_connections_per_ip {self.max_per_ip})",
                ip,
            )
            return False
        self.open += 1
        self._per_ip[ip] += 1
        return True

    def release(self, ip: str) -> None:
        """Forget a connection counted by :meth:`admit`."""
        self.open -= 1
        self._per_ip[ip] -= 1
        if self._per_ip[ip] <= 0:
            del self._per_ip[ip]

    def accept(self, transport: asyncio.BaseTransport) -> str | None:
        """Admit a new connection by its peer's IP and return that IP; abort it (None) when over a limit."""
        peer = transport.get_extra_info("peername")
        ip = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        if self.admit(ip, asyncio.get_running_loop().time()):
            return ip
        assert isinstance(transport, asyncio.Transport)
        transport.abort()
        return None

    def closed(self, ip: str, since: float, *, head_done: bool) -> None:
        """Release a connection admitted by :meth:`accept` at loop time ``since``; one that closed without a
        complete request head after ``header_timeout_s`` is counted as timed out (not a peer that left)."""
        self.release(ip)
        if not head_done and self.header_timeout_s > 0:
            now = asyncio.get_running_loop().time()
            if now - since >= self.header_timeout_s * 0.99:
                self.head_timed_out(ip, now)

    def head_timed_out(self, ip: str, now: float) -> None:
        """Record a connection closed because its request head did not arrive in time (logged like a
        refusal: at most one line per :data:`LOG_EVERY_S`)."""
        self.timed_out += 1
        self._unlogged_timeouts += 1
        if now - self._last_timeout_log >= LOG_EVERY_S:
            log.warning(
                "%s port: closed a connection from %s that sent no complete request head within %gs "
                "(header_timeout_s) (%d closed since the last such line)",
                self.name,
                ip,
                self.header_timeout_s,
                self._unlogged_timeouts,
            )
            self._last_timeout_log = now
            self._unlogged_timeouts = 0

    def _refuse(self, now: float, why: str, ip: str) -> None:
        self.refused += 1
        self._unlogged += 1
        if now - self._last_log >= LOG_EVERY_S:
            log.warning(
                "%s port: refused a connection from %s: %s (%d refused since the last such line)",
                self.name,
                ip,
                why,
                self._unlogged,
            )
            self._last_log = now
            self._unlogged = 0


class _Limited(asyncio.Protocol):
    """Wraps aiohttp's protocol for one connection: admits it through the limiter or aborts it."""

    __slots__ = ("_head_done", "_inner", "_ip", "_limiter", "_since", "_tail")

    def __init__(self, inner: asyncio.Protocol, limiter: ConnectionLimiter) -> None:
        self._inner = inner
        self._limiter = limiter
        self._ip: str | None = None
        self._since = 0.0
        self._head_done = False  # the first request head (up to its blank line) has arrived
        self._tail = b""  # the last bytes read while waiting for it (the blank line may be split)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._ip = self._limiter.accept(transport)
        if self._ip is not None:
            self._since = asyncio.get_running_loop().time()
            self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        ip, self._ip = self._ip, None
        if ip is not None:
            self._limiter.closed(ip, self._since, head_done=self._head_done)
            self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._ip is None:
            return
        if not self._head_done:
            seen = self._tail + data
            if b"\r\n\r\n" in seen:
                self._head_done, self._tail = True, b""
            else:
                self._tail = seen[-3:]
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._ip is not None else None

    def pause_writing(self) -> None:
        if self._ip is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._ip is not None:
            self._inner.resume_writing()


class LimitedSite(web.BaseSite):
    """A TCP site (like ``web.TCPSite``) whose connections pass through ``limiter`` first."""

    __slots__ = ("_host", "_limiter", "_port")

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *, limiter: ConnectionLimiter) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self._limiter = limiter

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()  # registers the site with its runner
        server = self._runner.server
        assert server is not None
        limiter = self._limiter

        def protocol() -> asyncio.Protocol:
            return _Limited(server(), limiter)

        self._server = await asyncio.get_running_loop().create_server(
            protocol, self._host, self._port, backlog=self._backlog
        )
