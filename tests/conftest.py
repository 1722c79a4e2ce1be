"""Shared fixtures: a real hub on free ports over an SQLite file, token minting, a small WebSocket client.

* ``hub`` — a running :class:`~outboxhub.app.Hub` (HS256 secret :data:`TEST_SECRET`, SQLite in
  ``tmp_path``, WS and ops ports chosen by the OS); ``hub_factory(**settings)`` makes more, with any
  :class:`~outboxhub.config.Settings` field overridden. All are closed at the end of the test.
* ``token(**kw)`` (fixture over :func:`make_token`) — an HS256 token for :data:`TEST_SECRET` (scopes, TTL,
  audience, issuer, policy as needed).
* ``ws_connect(url, token=...)`` — a :class:`WsClient` (JSON frames, rid-matched requests, EVENT
  buffering, close codes), closed at the end of the test.
* ``mongo_server`` — the session's MongoDB server (:mod:`outboxhub.testing.mongo`).

A database test server that cannot be had (``outboxhub.testing.unavailable``) skips the test, or fails it
under ``CI=true``: CI must never pass by skipping the PostgreSQL or MongoDB tests.

Service-bound tests: a test that needs a server or program from outside the Python environment carries its
marker — ``postgres``, ``mysql``, ``nats``, ``node`` or ``browser`` (Chromium) — and with it, added here,
``services``. ``make test`` runs ``-m 'not services and not wheel and not ws_aiohttp'`` on the supported
Pythons other than .venv's (``ws_aiohttp``: a gateway-facing test's aiohttp variant, see ``ws_server``).
A test that reaches ``outboxhub.testing.unavailable`` without a service marker (or ``mongo``) fails whatever
``CI`` says, naming the marker it lacks, so a wrongly unmarked test cannot hide in a skip.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import aiohttp
import msgspec
import pytest

from outboxhub.app import Hub, start_hub
from outboxhub.auth.jwt import mint_token
from outboxhub.config import Settings
from outboxhub.testing import set_unavailable_handler

if TYPE_CHECKING:
    from outboxhub.testing.mongo import MongoServer

__all__ = [
    "ALL_SCOPES",
    "TEST_SECRET",
    "HubFactory",
    "TokenFactory",
    "WsClient",
    "WsConnect",
    "hub_settings",
    "make_token",
]

TEST_SECRET = "outboxhub-test-secret-" + "0123456789abcdef" * 3  # > 64 bytes: fine for HS256..HS512
ALL_SCOPES: tuple[str, ...] = ("publish:**", "subscribe:**", "ops:read", "ops:write")
DEFAULT_SCOPES: tuple[str, ...] = ("publish:**", "subscribe:**")

# Settings read the environment; these must not leak into tests from the developer's shell or CI.
_ENV_PREFIXES = ("OUTBOXHUB_",)
# The original TypeScript hub's unprefixed variables, which Settings also reads.
_LEGACY_ENV = ("MONGO_URL", "WS_PORT", "OPS_PORT", "JWT_SECRET", "JWT_JWKS_URL", "JWT_AUD", "JWT_ISS")


def make_token(
    *,
    sub: str = "tester",
    scopes: Sequence[str] = DEFAULT_SCOPES,
    ttl_s: int = 300,
    secret: str = TEST_SECRET,
    audience: str | None = None,
    issuer: str | None = None,
    policy: Mapping[str, Any] | None = None,
) -> str:
    """An HS256 token the test hub accepts."""
    return mint_token(
        secret, sub=sub, scopes=scopes, ttl_s=ttl_s, audience=audience, issuer=issuer, policy=policy
    )


def hub_settings(tmp_path: Path, name: str = "hub", **overrides: Any) -> Settings:
    """Settings for a test hub: SQLite file in ``tmp_path``, loopback, free ports, :data:`TEST_SECRET`."""
    values: dict[str, Any] = {
        "store": f"sqlite:///{tmp_path / f'{name}.db'}",
        "host": "127.0.0.1",
        "ws_port": 0,
        "ops_port": 0,
        "jwt_secret": TEST_SECRET,
        "jwt_jwks_url": None,
        "jwt_aud": None,
        "jwt_iss": None,
        "allowed_origins": [],
        "outbox": [],
    }
    values.update(overrides)
    return Settings(**values)


# The markers of tests that need something outside the Python environment; each such test also gets
# ``services``. ``mongo`` is not one: the nx-27017 stand-in is a dev-extra package started by the tests.
SERVICE_MARKERS: tuple[str, ...] = ("postgres", "mysql", "nats", "node", "browser")
# Markers that allow a test to ask outboxhub.testing for a server.
_SERVER_MARKERS = (*SERVICE_MARKERS, "mongo")
_current: list[pytest.Item] = []


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if any(item.get_closest_marker(name) for name in SERVICE_MARKERS):
            item.add_marker(pytest.mark.services)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Any:
    _current.append(item)
    try:
        return (yield)
    finally:
        _current.remove(item)


def _skip_or_fail(message: str) -> NoReturn:
    item = _current[-1] if _current else None
    if item is not None and not any(item.get_closest_marker(name) for name in _SERVER_MARKERS):
        pytest.fail(
            f"{message}; and {item.nodeid} is not marked as needing it: add the marker "
            f"({', '.join(_SERVER_MARKERS)}) so that runs without services deselect it",
            pytrace=False,
        )
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


set_unavailable_handler(_skip_or_fail)


@pytest.fixture(scope="session")
def mongo_server() -> MongoServer:
    """The session's MongoDB server: ``OUTBOXHUB_TEST_MONGO_URL`` or the nx-27017 stand-in."""
    from outboxhub.testing.mongo import require_mongo

    return require_mongo()


HubFactory = Callable[..., Awaitable[Hub]]
TokenFactory = Callable[..., str]


@pytest.fixture
def token() -> TokenFactory:
    """``token(sub=..., scopes=[...], ttl_s=..., audience=..., issuer=..., policy=...)`` for the test hub.

    A fixture rather than an import: test directories have no package, so ``conftest`` is not importable
    by a stable name.
    """
    return make_token


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove outboxhub's environment variables, and the original TypeScript hub's unprefixed ones
    (``MONGO_URL``, ``WS_PORT``, …), for this test."""
    for name in list(os.environ):
        if name.startswith(_ENV_PREFIXES) or name in _LEGACY_ENV:
            monkeypatch.delenv(name)


WS_SERVERS: tuple[str, ...] = ("aiohttp", "picows")


@pytest.fixture
def ws_server(request: pytest.FixtureRequest) -> str | None:
    """The ``ws_server`` of the test hubs: None (the default setting), or each of :data:`WS_SERVERS` in a
    module that sets ``BOTH_WS_SERVERS = True`` (the modules that face the gateway's WebSocket port)."""
    return getattr(request, "param", None)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if getattr(metafunc.module, "BOTH_WS_SERVERS", False) and "ws_server" in metafunc.fixturenames:
        # The aiohttp variants carry ``ws_aiohttp``: the cross-version runs of ``make test`` deselect them
        # (the full run has them); picows, a C extension, runs on every supported Python.
        params = [pytest.param(name, marks=getattr(pytest.mark, f"ws_{name}")) for name in WS_SERVERS]
        metafunc.parametrize("ws_server", params, indirect=True)


@pytest.fixture
async def hub_factory(tmp_path: Path, clean_env: None, ws_server: str | None) -> AsyncIterator[HubFactory]:
    """Start hubs with ``await hub_factory(**settings_overrides)``; all are closed after the test."""
    hubs: list[Hub] = []

    async def make(**overrides: Any) -> Hub:
        if ws_server is not None:
            overrides.setdefault("ws_server", ws_server)
        started = await start_hub(hub_settings(tmp_path, f"hub{len(hubs)}", **overrides))
        hubs.append(started)
        return started

    yield make
    for started in reversed(hubs):
        await started.close()


@pytest.fixture
async def hub(hub_factory: HubFactory) -> Hub:
    """A running hub with default limits."""
    return await hub_factory()


class WsClosed(Exception):
    """The server closed the WebSocket; ``code`` is its close code."""

    def __init__(self, code: int | None) -> None:
        super().__init__(f"WebSocket closed with code {code}")
        self.code = code


class WsClient:
    """A test client speaking JSON frames. ``request`` adds a rid and waits for the matching reply,
    keeping EVENT frames (and rid-less replies) that arrive meanwhile for :meth:`next_event` / :meth:`recv`.
    """

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.events: deque[dict[str, Any]] = deque()
        self.others: deque[dict[str, Any]] = deque()
        self._rids = itertools.count(1)

    async def send(self, frame: Mapping[str, Any] | str | bytes) -> None:
        """Send a frame: a dict as JSON text, a str as text verbatim, bytes as a binary frame."""
        if isinstance(frame, bytes):
            await self.ws.send_bytes(frame)
        elif isinstance(frame, str):
            await self.ws.send_str(frame)
        else:
            await self.ws.send_str(msgspec.json.encode(frame).decode())

    async def _read(self, wait_s: float) -> dict[str, Any]:
        msg = await self.ws.receive(timeout=wait_s)
        if msg.type is aiohttp.WSMsgType.TEXT:
            frame: dict[str, Any] = msgspec.json.decode(msg.data)
            return frame
        if msg.type is aiohttp.WSMsgType.CLOSE:
            # the code in the server's close frame (ws.close_code may say 1006 when answering the close
            # failed because the server had already dropped the TCP connection)
            raise WsClosed(int(msg.data))
        if msg.type in (aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
            raise WsClosed(self.ws.close_code)
        raise AssertionError(f"unexpected WebSocket message {msg.type!r}: {msg.data!r}")

    async def recv(self, wait_s: float = 10.0) -> dict[str, Any]:
        """The next non-EVENT frame (replies without rid included), in arrival order."""
        if self.others:
            return self.others.popleft()
        while True:
            frame = await self._read(wait_s)
            if frame.get("op") == "EVENT":
                self.events.append(frame)
            else:
                return frame

    async def recv_any(self, wait_s: float = 10.0) -> dict[str, Any]:
        """The next frame of any kind straight from the socket (ignores the buffers)."""
        return await self._read(wait_s)

    async def next_event(self, wait_s: float = 10.0) -> dict[str, Any]:
        """The next EVENT frame."""
        if self.events:
            return self.events.popleft()
        while True:
            frame = await self._read(wait_s)
            if frame.get("op") == "EVENT":
                return frame
            self.others.append(frame)

    async def request(self, op: str, wait_s: float = 10.0, **fields: Any) -> dict[str, Any]:
        """Send ``{op, rid, **fields}`` and return the reply carrying that rid."""
        rid = f"r{next(self._rids)}"
        await self.send({"op": op, "rid": rid, **fields})
        while True:
            frame = await self._read(wait_s)
            if frame.get("op") == "EVENT":
                self.events.append(frame)
            elif frame.get("rid") == rid:
                return frame
            else:
                self.others.append(frame)

    async def auth(self, token: str) -> dict[str, Any]:
        reply = await self.request("AUTH", token=token)
        assert reply["op"] == "OK", reply
        return reply

    async def wait_closed(self, wait_s: float = 10.0) -> int | None:
        """Read (and keep) frames until the server closes; return the close code."""
        try:
            while True:
                frame = await self._read(wait_s)
                (self.events if frame.get("op") == "EVENT" else self.others).append(frame)
        except WsClosed as closed:
            return closed.code

    async def close(self) -> None:
        await self.ws.close()


WsConnect = Callable[..., Awaitable[WsClient]]


@pytest.fixture
async def ws_connect() -> AsyncIterator[WsConnect]:
    """``await ws_connect(url, token=None, headers=None)``: a connected :class:`WsClient` (AUTHed when a
    token is given). Every client and the session are closed after the test."""
    session = aiohttp.ClientSession()
    clients: list[WsClient] = []

    async def connect(
        url: str, *, token: str | None = None, headers: Mapping[str, str] | None = None
    ) -> WsClient:
        ws = await session.ws_connect(url, headers=headers, max_msg_size=0, autoclose=True)
        client = WsClient(ws)
        clients.append(client)
        if token is not None:
            await client.auth(token)
        return client

    yield connect
    for client in clients:
        if not client.ws.closed:
            await asyncio.wait_for(client.close(), 5)
    await session.close()
