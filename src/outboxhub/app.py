"""The hub process: store, bus and token verifier behind two aiohttp apps.

* the **WS port** serves the gateway at ``/``;
* the **ops port** serves the same gateway at ``/ws`` (for same-origin browsers such as the dashboard),
  ``/healthz``, and whatever route installers add (the ops API and dashboard plug in there).

:func:`start_hub` binds both (port 0 picks a free port) and returns a running :class:`Hub`;
:meth:`Hub.close` shuts down gracefully. :func:`serve` is the blocking ``outboxhub serve``.

This module is the composition root: it imports the layers below it (store, bus, gateway, ops, the outbox
drainers) and wires them together; none of them imports it. The ops layer sees a :class:`Hub` through
:class:`outboxhub.ops.HubView`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import secrets
import signal
import sys
from collections.abc import Awaitable, Callable, Iterable
from typing import Final

from aiohttp import web

from outboxhub import __version__
from outboxhub.auth.jwt import AuthConfig, TokenVerifier, mint_token
from outboxhub.bus.core import Bus
from outboxhub.config import Settings
from outboxhub.errors import OutboxhubError
from outboxhub.gateway.listener import ConnectionLimiter, LimitedSite, runner_options
from outboxhub.gateway.picowsserver import PicowsServer
from outboxhub.gateway.server import Gateway
from outboxhub.ops import OPS, HubMetrics, install_ops
from outboxhub.outbox import Drainer, DrainerMetrics, DrainerSettings, run_drainers
from outboxhub.store import open_store
from outboxhub.store.base import Store, mask_url

__all__ = ["DEV_SCOPES", "Hub", "RouteInstaller", "auth_config", "serve", "start_hub"]

log = logging.getLogger("outboxhub.app")

RouteInstaller = Callable[[web.Application, "Hub"], None]
"""Adds routes to the ops app before it starts: ``installer(ops_app, hub)``."""

DEV_SCOPES: Final = ("publish:**", "subscribe:**", "ops:read", "ops:write")
_DEV_TOKEN_TTL_S: Final = 24 * 3600
_SHUTDOWN_TIMEOUT_S: Final = 10.0

_GC_YOUNG_THRESHOLD: Final = 10_000
"""Net allocations of container objects between two young-generation collections (CPython: 700). The hub
makes almost no reference cycles, but with 700 every delivery or publish in flight at a collection was
promoted, and full collections of the whole heap ran every 0.5 s under load (issue #16: 17 % of the event
loop thread while consuming, none of it reclaiming anything)."""


_GIL_SWITCH_INTERVAL_S: Final = 0.0005
"""How long a thread waiting for the GIL waits before it asks the running one to drop it (CPython: 5 ms).
The SQLite writer thread gives the GIL up for every statement it runs and must then wait for the event loop
thread to let go of it: at 5 ms, under pipelined 4 KiB publishes, the writer spent about a quarter of its
time in such waits, more than waiting for work, while the loop held the publishes waiting for its commit
(docs/benchmarks.md, "Hot path, fifth round")."""


def _settle_gil() -> None:
    """Hand the GIL over to a waiting thread after :data:`_GIL_SWITCH_INTERVAL_S` (process-wide: the hub's
    own process only, from :func:`serve`)."""
    sys.setswitchinterval(_GIL_SWITCH_INTERVAL_S)


def _settle_gc() -> None:
    """After start-up: move everything allocated so far out of the collector's sight (``gc.freeze``: it is
    module and application state that lives as long as the process) and collect the young generation less
    often. Objects still die by reference count at once; only garbage in reference cycles waits longer."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(_GC_YOUNG_THRESHOLD, middle, old)


class Hub:
    """A running hub. Built by :func:`start_hub`; close with :meth:`close`.

    ``jwt_secret`` is the secret tokens are signed with (the configured one, or the random one of this
    run in development mode). ``metrics`` is the ops layer's :class:`HubMetrics` once it is installed
    (None without it). ``on_close`` callbacks (e.g. outbox drainers) run after the gateway closed and
    before the bus and the store do.
    """

    def __init__(self, *, settings: Settings, store: Store, bus: Bus, verifier: TokenVerifier) -> None:
        self.settings = settings
        self.store = store
        self.bus = bus
        self.verifier = verifier
        self.gateway = Gateway(bus=bus, verifier=verifier, settings=settings)
        self.jwt_secret: str | None = settings.jwt_secret
        self.metrics: HubMetrics | None = None
        self.on_close: list[Callable[[], Awaitable[None]]] = []
        self.drainers: list[Drainer] = []  # the outbox drainers of settings.outbox, in that order
        self.ws_app = web.Application()
        self.ops_app = web.Application()
        self.ws_port = 0
        self.ops_port = 0
        self._runners: list[web.AppRunner] = []
        self._sites: list[web.BaseSite] = []
        self._picows: PicowsServer | None = None  # the WS port when settings.ws_server == "picows"
        self.limiters: dict[str, ConnectionLimiter] = {}  # "ws" and "ops": open connections per port
        self._closed = False

    def drainer_metrics(self) -> list[tuple[str, DrainerMetrics]]:
        """Each outbox drainer's counters with the outbox's name (its URL, password masked), in
        ``settings.outbox`` order; empty when this hub drains nothing. Read by ``/metrics``."""
        return [
            (mask_url(url), d.metrics) for url, d in zip(self.settings.outbox, self.drainers, strict=False)
        ]

    @property
    def ws_url(self) -> str:
        """The WebSocket URL clients connect to (``ws://host:ws_port/``)."""
        return f"ws://{_url_host(self.settings.host)}:{self.ws_port}/"

    @property
    def ops_url(self) -> str:
        """The ops base URL, which is also the dashboard (``http://host:ops_port/``)."""
        return f"http://{_url_host(self.settings.host)}:{self.ops_port}/"

    async def _start(self, installers: Iterable[RouteInstaller]) -> None:
        self.ws_app.router.add_get("/", self.gateway.handle)
        self.ops_app.router.add_get("/ws", self.gateway.handle)
        self.ops_app.router.add_get("/healthz", self._healthz)
        for install in installers:
            install(self.ops_app, self)
        ops = self.ops_app.get(OPS)
        self.metrics = None if ops is None else ops.metrics
        s = self.settings
        ports = [("ws", self.ws_app, s.ws_port), ("ops", self.ops_app, s.ops_port)]
        if s.ws_server == "picows":
            self.ws_port = await self._start_picows()
            ports = ports[1:]
        for name, app, port in ports:
            runner = web.AppRunner(
                app,
                access_log=None,
                shutdown_timeout=_SHUTDOWN_TIMEOUT_S,
                **runner_options(s.header_timeout_s),
            )
            await runner.setup()
            self._runners.append(runner)
            self.limiters[name] = limiter = self._limiter(name)
            site = LimitedSite(runner, s.host, port, limiter=limiter)
            await site.start()
            self._sites.append(site)
        if self._picows is None:
            self.ws_port = int(self._runners[0].addresses[0][1])
        self.ops_port = int(self._runners[-1].addresses[0][1])
        log.info("gateway on %s, ops on %s, store %s", self.ws_url, self.ops_url, self.store.url)

    async def _start_picows(self) -> int:
        self.limiters["ws"] = limiter = self._limiter("ws")
        self._picows = PicowsServer(self.gateway, limiter)
        return await self._picows.start(self.settings.host, self.settings.ws_port)

    def _limiter(self, name: str) -> ConnectionLimiter:
        s = self.settings
        return ConnectionLimiter(
            name,
            max_total=s.max_connections,
            max_per_ip=s.max_connections_per_ip,
            header_timeout_s=s.header_timeout_s,
        )

    async def _healthz(self, request: web.Request) -> web.Response:
        try:
            await self.store.ping()
        except Exception as exc:
            return web.json_response({"status": "unavailable", "error": str(exc)}, status=503)
        return web.json_response({"status": "ok"})

    async def close(self) -> None:
        """Graceful shutdown: stop accepting connections, let in-flight publishes finish and be answered,
        close every WebSocket with 1001, run ``on_close`` callbacks, then close the bus and the store.
        Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._picows is not None:
            self._picows.stop_listening()
        for site in self._sites:
            with contextlib.suppress(Exception):
                await site.stop()
        try:
            await self.gateway.shutdown()
        except Exception:
            log.exception("gateway shutdown failed")
        if self._picows is not None:
            await self._picows.close(_SHUTDOWN_TIMEOUT_S)
        for callback in self.on_close:
            try:
                await callback()
            except Exception:
                log.exception("on_close callback %r failed", callback)
        for runner in self._runners:
            with contextlib.suppress(Exception):
                await runner.cleanup()
        await _close_all(self.bus.close, self.verifier.close, self.store.close)


async def _close_all(*closers: Callable[[], Awaitable[None]]) -> None:
    for close in closers:
        try:
            await close()
        except Exception:
            log.exception("closing %r failed", close)


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def auth_config(settings: Settings) -> AuthConfig:
    """The token checks of these settings (secret or JWKS, aud, iss, leeway); ``outboxhub doctor`` checks
    the same ``AuthConfig`` (``ConfigError`` when unusable)."""
    return AuthConfig(
        secret=settings.jwt_secret,
        jwks_url=settings.jwt_jwks_url,
        audience=settings.jwt_aud,
        issuer=settings.jwt_iss,
        leeway_s=settings.jwt_leeway_s,
        jwks_cooldown_s=settings.jwks_cooldown_s,
        jwks_ttl_s=settings.jwks_ttl_s,
        max_policy_rules=settings.max_policy_rules,
    )


async def start_hub(
    settings: Settings,
    *,
    ops_routes: RouteInstaller | Iterable[RouteInstaller] | None = None,
) -> Hub:
    """Open the store, start the bus, bind the WS and ops ports and return the running hub.

    In development mode (no JWT secret and no JWKS URL) a random secret is generated for this run; it is
    ``hub.jwt_secret`` (and ``hub.settings.jwt_secret``). ``ops_routes`` are installers that add routes to
    the ops app before it starts; None (the default) installs :func:`outboxhub.ops.install_ops`.
    """
    if settings.dev_mode:
        settings = settings.model_copy(update={"jwt_secret": secrets.token_urlsafe(48)})
    verifier = TokenVerifier(auth_config(settings))
    installers: list[RouteInstaller]
    if ops_routes is None:  # the default: the ops API, metrics and dashboard (pass [] for none)
        installers = [install_ops]
    elif callable(ops_routes):
        installers = [ops_routes]
    else:
        installers = list(ops_routes)
    store: Store | None = None
    bus: Bus | None = None
    hub: Hub | None = None
    try:
        store = await open_store(settings.store)
        bus = Bus(store, poll_interval_s=settings.poll_interval_s)
        await bus.start()
        hub = Hub(settings=settings, store=store, bus=bus, verifier=verifier)
        if settings.outbox and settings.outbox_drain:
            await _start_drainers(hub)
        await hub._start(installers)
    except BaseException:
        if hub is not None:
            await hub.close()
        else:
            closers = [verifier.close]
            if bus is not None:
                closers.insert(0, bus.close)
            if store is not None:
                closers.append(store.close)
            await _close_all(*closers)
        raise
    return hub


def _drainer_settings(settings: Settings) -> DrainerSettings:
    """The ``DrainerSettings`` of ``outboxhub serve --outbox``: the ``outbox_*`` settings, else defaults."""
    return DrainerSettings(
        batch_size=settings.outbox_batch_size,
        max_attempts=settings.outbox_max_attempts,
        ordered_by_key=settings.outbox_ordered_by_key,
    )


async def _start_drainers(hub: Hub) -> None:
    """Drain every ``settings.outbox`` URL into the hub's bus. Each outbox is opened (and its table created)
    before this returns, so a bad URL or an unreachable database fails the start; the drainers stop, and
    release their claims, when the hub closes."""
    started = asyncio.Event()
    settings = _drainer_settings(hub.settings)

    def on_start(drainers: list[Drainer]) -> None:
        hub.drainers = drainers
        started.set()

    task = asyncio.create_task(
        run_drainers(hub.settings.outbox, hub.bus, settings, on_start=on_start), name="drainers"
    )
    waiter = asyncio.create_task(started.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        waiter.cancel()
        task.result()  # raises what stopped the drainers (bad URL, database down)
        raise OutboxhubError("the outbox drainers stopped as soon as they started")

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    hub.on_close.append(stop)


# -- outboxhub serve -----------------------------------------------------------------------------------


def serve(settings: Settings, *, ops_routes: RouteInstaller | Iterable[RouteInstaller] | None = None) -> None:
    """Run the hub until SIGTERM or SIGINT, then shut down gracefully (blocking; uses uvloop if present).

    Prints plain lines on stdout: in development mode ``warning: ...`` and ``token: JWT`` (a 24 h dev token
    with every scope), then ``ws: URL`` and, last, ``dashboard: URL``. A start-up failure (bad store URL,
    port in use) prints ``error: ...`` on stderr and exits with status 1.
    """
    _settle_gil()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        import uvloop

        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        loop_factory = None
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            code = runner.run(_serve(settings, ops_routes))
    except (asyncio.CancelledError, KeyboardInterrupt):
        print("stopped before the graceful shutdown finished", file=sys.stderr, flush=True)
        code = 1
    if code:
        raise SystemExit(code)


async def _serve(settings: Settings, ops_routes: RouteInstaller | Iterable[RouteInstaller] | None) -> int:
    dev = settings.dev_mode
    try:
        hub = await start_hub(settings, ops_routes=ops_routes)
    except (OutboxhubError, OSError) as exc:
        print(f"error: cannot start the hub: {exc}", file=sys.stderr, flush=True)
        return 1
    _settle_gc()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            stop.set()
        elif main is not None:  # a second signal: stop waiting for the graceful part
            main.cancel()

    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, on_signal)
    lines = [f"outboxhub {__version__}", f"store: {mask_url(hub.settings.store)}"]
    if dev:
        assert hub.jwt_secret is not None
        token = mint_token(
            hub.jwt_secret,
            sub="dev",
            scopes=DEV_SCOPES,
            ttl_s=_DEV_TOKEN_TTL_S,
            audience=settings.jwt_aud,
            issuer=settings.jwt_iss,
        )
        lines += [
            "warning: development mode: no JWT secret or JWKS URL is configured, so this run uses a random "
            "secret and the token below (sub 'dev', every scope, 24 h). Configure OUTBOXHUB_JWT_SECRET or "
            "OUTBOXHUB_JWT_JWKS_URL before exposing the hub.",
            f"token: {token}",
        ]
    lines += [f"ws: {hub.ws_url}", f"dashboard: {hub.ops_url}"]  # the dashboard line comes last
    print("\n".join(lines), flush=True)
    try:
        await stop.wait()
        print("shutting down", flush=True)
    finally:
        await hub.close()
    return 0
